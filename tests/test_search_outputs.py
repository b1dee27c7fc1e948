"""What a search leaves its user, read from one real search (Ray Tune, Optuna, SQLite, tiny towers on CPU):
trained weights that open_clip loads and that score what the results database recorded, one TensorBoard run per
trial, and a selection that carries the trained weights. The search is the one every test process runs once
(`shared_search`, tests/conftest.py)."""

from __future__ import annotations

import json

import open_clip
import pytest
import torch
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from nas.cli import main
from nas.data import zeroshot_set
from nas.errors import ConfigError
from nas.evaluate import evaluate
from nas.export import furthest_trained, load_open_clip, trained
from nas.results import ResultStore
from nas.select import at_target, choose, write_selection
from nas.study import Study

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def searched(shared_search) -> tuple[Study, ResultStore]:
    """The search every test process runs once (`shared_search` in tests/conftest.py): TPE and ASHA over six
    archs of the tests' space, rungs at 64, 128 and 256 samples seen."""
    study, store, _ = shared_search
    return study, store


def test_the_exported_winner_scores_in_open_clip_what_the_search_recorded(searched, tmp_path, one_thread):
    study, store = searched
    best = trained(store, best=True)
    assert best.budget == max(store.budgets()) == 256
    export = tmp_path / "winner"
    assert main(["export", str(store.path.parent), "--best", "--out", str(export)]) == 0

    model, _, preprocess = load_open_clip(export)  # open_clip's loader, its preprocessing and its tokenizer
    tokenizer = open_clip.get_tokenizer(f"local-dir:{export}")
    measured = json.loads((export / "measured.json").read_text())
    on = measured["evaluated_on"]  # the export says what it was scored on
    assert on == {"zeroshot": study.data.zeroshot, "zeroshot_templates": None, "retrieval": study.data.retrieval}
    evaluation = evaluate(model, zeroshot=zeroshot_set(on["zeroshot"], transform=preprocess,
                                                       templates=on["zeroshot_templates"]), tokenizer=tokenizer)
    assert evaluation.metrics["zeroshot_top1"] == best.metrics["zeroshot_top1"]
    assert evaluation.metrics["zeroshot_top5"] == best.metrics["zeroshot_top5"]
    assert (measured["number"], measured["budget"], measured["arch_id"]) == (best.number, 256, best.arch.arch_id)
    assert measured["rung"] == "3/3"  # numbered as the CLI and `status` number rungs


def test_export_picks_a_trial_at_its_furthest_rung_and_names_what_exists(searched, tmp_path, capsys):
    _, store = searched
    trials = store.trials()
    furthest = {t["number"]: t["budget"] for t in trials}
    number = min(furthest, key=lambda n: (furthest[n], n))  # ASHA may have stopped it early
    assert main(["export", str(store.path.parent), "--trial", str(number), "--out", str(tmp_path / "t")]) == 0
    out = capsys.readouterr().out
    assert f"exported trial {number} " in out and f"at {furthest[number]:,} samples seen" in out
    kept = store.rungs(next(t["trial_id"] for t in trials if t["number"] == number))[-1]["checkpoint"]
    weights = torch.load(store.checkpoint_path(kept) / "checkpoint.pt", weights_only=True)["model"]
    model, _, _ = load_open_clip(tmp_path / "t")
    assert all(torch.equal(weights[k], v) for k, v in model.state_dict().items())

    reached = ", ".join(f"{b:,}" for b in store.budgets() if b <= furthest[number])
    with pytest.raises(ConfigError, match=f"was not measured at 100 samples seen; measured at: {reached}$"):
        trained(store, trial=number, budget=100)
    with pytest.raises(ConfigError, match=f"no trial 99; trials: {', '.join(map(str, sorted(furthest)))}$"):
        trained(store, trial=99)
    assert main(["export", str(store.path.parent), "--arch", "zzz", "--out", str(tmp_path / "x")]) == 2
    assert "'zzz' is not an arch of this search; arch_ids: " in capsys.readouterr().err


def test_each_trial_is_one_tensorboard_run_with_its_rungs(searched):
    study, store = searched
    runs = sorted(p for p in (store.path.parent / "tensorboard").iterdir())
    assert [p.name for p in runs] == sorted(f"{t['number']:03d}-{t['arch_name']}" for t in store.trials())
    for trial, run in zip(sorted(store.trials(), key=lambda t: t["number"]), runs):
        events = EventAccumulator(str(run), size_guidance={"scalars": 0})
        events.Reload()
        tags = events.Tags()["scalars"]
        assert {"train/loss", "train/lr", "train/logit_scale", "train/images_per_s", "train/data_wait_share",
                "rung/images_per_s", "rung/data_wait_share", "eval/zeroshot_top1_low",
                "eval/text_to_image_R@10"} <= set(tags)
        recorded = [(r["samples_seen"], r["metrics"]["zeroshot_top1"]) for r in store.rungs(trial["trial_id"])]
        assert [(e.step, e.value) for e in events.Scalars("eval/zeroshot_top1")] == \
            [(s, pytest.approx(v, abs=1e-7)) for s, v in recorded]
        steps = [e.step for e in events.Scalars("train/loss")]
        assert steps == sorted(set(steps)) and steps[-1] <= trial["samples_seen"]
    # the one TensorBoard tree: Ray's own loggers (CSV, JSON, TensorBoard copies in its trial directories) are off
    ray_files = {p.name for p in (store.path.parent / "ray").rglob("*") if p.is_file()}
    assert not {"progress.csv", "result.json", "params.json"} & ray_files
    assert not any(name.startswith("events.out.tfevents") for name in ray_files)


def test_select_writes_the_trained_weights_of_each_chosen_arch(searched, tmp_path):
    _, store = searched
    ranking = at_target(store, target_samples=1024, metric="loss")
    chosen = choose(ranking)
    assert chosen
    path = write_selection(store, ranking, chosen, tmp_path / "selection")
    for entry, prediction in zip(json.loads(path.read_text())["chosen"], chosen):
        kept = furthest_trained(store, prediction.arch.arch_id)
        assert entry["weights"] == {"trial": kept.number, "rung": kept.rung, "budget": kept.budget,
                                    "samples_seen": kept.samples_seen}
        model, _, _ = load_open_clip(entry["dir"])
        weights = torch.load(f"{kept.checkpoint}/checkpoint.pt", weights_only=True)["model"]
        assert all(torch.equal(weights[k], v) for k, v in model.state_dict().items())
