"""Selection on a real results database (tests/study_helpers.py): per-budget Pareto fronts against GMACs,
parameters and throughput; laws extrapolated to a target with intervals; ties; the written open_clip configs."""

from __future__ import annotations

import json
import subprocess

import numpy as np
import pytest
from study_helpers import BUDGETS, DESIGN, LAWS, error

from nas.cost import cost
from nas.errors import ConfigError
from nas.export import load_open_clip, read_arch
from nas.pareto import minimization, pareto_mask
from nas.results import ResultStore
from nas.select import (
    COST_AXES,
    Prediction,
    at_target,
    choose,
    extrapolation_warnings,
    fronts,
    measurements,
    separation,
    write_selection,
)
from nas.study import load_study

CLEAN = ["MLP-d12", "ViTamin", "CoAtNet", "ConvNeXtHybrid", "ConvNeXt", "ViT"]  # exact power laws, best first at scale


@pytest.fixture(scope="module")
def store(design_results) -> ResultStore:
    return ResultStore.open(design_results, readonly=True)


def by_label(predictions) -> dict:
    return {p.label: p for p in predictions}


def test_measurements_carry_labels_compute_and_error(store):
    frame = measurements(store)
    assert set(frame.label) == set(LAWS)  # the out-of-memory trial measured nothing and is not a candidate
    assert np.allclose(frame.compute, frame.image_gmacs * frame.samples_seen)
    assert np.allclose(frame.error, 1 - frame.zeroshot_top1)
    assert len(set(store.study().label_of.values())) == len(LAWS)


def test_fronts_are_per_budget_and_per_cost_axis(store):
    front = fronts(store)
    assert set(front.axis) == set(COST_AXES) and set(front.budget) == set(BUDGETS)
    for (axis, budget), members in front.groupby(["axis", "budget"]):
        at = store.at_budget(budget)
        expected = at[pareto_mask(minimization(at, {"zeroshot_top1": "max", axis: COST_AXES[axis]}))]
        assert set(members.arch_id) == set(expected.arch_id)
    full = front[front.budget == BUDGETS[-1]]
    assert not {"8C", "4C"} & set(full.label)  # stopped early: never set against full-budget results
    fastest = store.at_budget(BUDGETS[-1]).images_per_s.max()
    assert fastest in set(full[full.axis == "images_per_s"].images_per_s)  # throughput is maximised


def test_each_arch_law_is_extrapolated_with_its_interval(store):
    ranking = at_target(store, target_samples=1e6)
    predicted = by_label(ranking)
    covered = 0
    for label in CLEAN:
        truth = 1 - error(label, 1e6)
        p = predicted[label]
        assert p.extrapolated and p.points == len(BUDGETS)
        assert p.value == pytest.approx(truth, abs=0.01)
        covered += p.lower <= truth <= p.upper
    assert covered >= len(CLEAN) - 1  # 95% intervals from four noisy points each
    order = [p.label for p in ranking if p.label in CLEAN]
    assert order[0] == "MLP-d12" and order[-1] == "ViT"  # MLP-d12 loses at small budgets, wins at scale
    assert {order[1], order[2]} == {"ViTamin", "CoAtNet"}


def test_candidates_whose_intervals_overlap_are_not_distinguishable(store):
    ranking = at_target(store, target_samples=1e6)
    predicted = by_label(ranking)
    assert predicted["ViTamin"].overlaps(predicted["CoAtNet"])
    assert not predicted["ViTamin"].overlaps(predicted["ConvNeXt"])
    chosen = choose(ranking)
    assert chosen[0].label == "MLP-d12"
    fitted = [p for p in ranking if p.fitted]
    assert [p for p in fitted if p.overlaps(chosen[0])] == chosen  # GeGLU-d12's poor law cannot be ruled out


def test_early_stopped_archs_have_no_law_and_rank_last(store):
    ranking = at_target(store, target_samples=1e6)
    assert [p.label for p in ranking[-2:]] == ["4C", "8C"]
    notes = {p.label: p.note for p in ranking[-2:]}
    assert "at least 3 points, got 1" in notes["4C"] and "got 2" in notes["8C"]
    assert all(np.isnan(p.value) and not p.fitted for p in ranking[-2:])


def test_an_accuracy_extrapolated_from_a_rising_error_stays_in_0_1(tmp_path):
    study = load_study(DESIGN)
    falling = ResultStore.create(tmp_path, study)
    arch = study.archs[0]
    falling.add_trial("t", arch, cost(arch, study.text).metrics())
    for rung, (budget, accuracy) in enumerate([(100, 0.3), (300, 0.1), (900, 0.02)]):
        falling.record_rung("t", {"budget": budget, "samples_seen": budget, "zeroshot_top1": accuracy}, rung=rung)
    falling.update_trial("t", status="completed")
    (prediction,) = at_target(falling, target_samples=1e6)
    assert prediction.value == prediction.lower == 0.0 and 0.0 <= prediction.upper <= 1.0


def test_a_finalist_with_two_seeds_is_extrapolated_through_its_seed_means(tmp_path):
    # seed 0 and seed 1 at 100, 300 and 900 samples: the law goes through the mean at each budget, so two seeds
    # at two budgets (a confirmed quickstart finalist) are two points, not four with repeated x
    study = load_study(DESIGN)
    store = ResultStore.create(tmp_path, study)
    arch = study.archs[0]
    for trial_id, seed, accuracies in (("a", None, (0.10, 0.20, 0.30)), ("b", 1, (0.14, 0.24, 0.34))):
        store.add_trial(trial_id, arch, cost(arch, study.text).metrics(), seed=seed)
        for rung, (budget, accuracy) in enumerate(zip((100, 300, 900), accuracies)):
            store.record_rung(trial_id, {"budget": budget, "samples_seen": budget, "zeroshot_top1": accuracy},
                              rung=rung)
        store.update_trial(trial_id, status="completed")
    (prediction,) = at_target(store, target_samples=900)
    assert prediction.points == 3 and prediction.value == pytest.approx(0.32, abs=0.01)
    store.update_trial("a", status="stopped_early")
    store.db.execute("DELETE FROM nas_rungs WHERE trial_id IN ('a', 'b') AND budget = 100")
    (two,) = at_target(store, target_samples=1e5)  # two budgets: no law, and no crash
    assert not two.fitted and two.points == 2


def test_without_a_law_candidates_rank_as_measured_at_the_furthest_common_budget(tmp_path, run_cli):
    """No candidate has budgets enough for a law: each is ranked by its value at the furthest budget two reached,
    with its eval-set interval and ties, nothing extrapolated; by arch and by family, in the command too."""
    study = load_study(DESIGN)
    one = ResultStore.create(tmp_path, study)
    results = {0: (300, 0.30, 0.25, 0.35), 1: (300, 0.28, 0.22, 0.33), 2: (300, 0.10, 0.07, 0.13),
               3: (100, 0.5, 0.4, 0.6)}
    for i, (budget, accuracy, low, high) in results.items():
        arch = study.archs[i]
        one.add_trial(f"t{i}", arch, cost(arch, study.text).metrics())
        one.record_rung(f"t{i}", {"budget": budget, "samples_seen": budget, "zeroshot_top1": accuracy,
                                  "zeroshot_top1_low": low, "zeroshot_top1_high": high}, rung=0)
        one.update_trial(f"t{i}", status="completed")
    one.close()
    store = ResultStore.open(tmp_path, readonly=True)
    ranking = at_target(store, target_samples=1e6)
    labels = [study.label_of[study.archs[i].arch_id] for i in range(4)]
    assert [p.label for p in ranking] == labels[:3] + labels[3:] and ranking[-1].note.startswith("not measured at 300")
    assert [p.target for p in ranking[:3]] == [300.0] * 3 and (ranking[0].lower, ranking[0].upper) == (0.25, 0.35)
    chosen = choose(ranking)
    assert chosen == ranking[:2]  # the first two's intervals overlap: a tie
    text = separation(ranking, chosen)
    assert "nothing was extrapolated" in text and f"{labels[0]} is best, not distinguishable from {labels[1]}" in text
    families = at_target(store, by="family")
    assert families and all(p.as_measured for p in families)
    run = run_cli("select", tmp_path, "--by", "family")
    assert run.returncode == 0 and "as measured at 300 samples seen (no law: not extrapolated)" in run.stdout


def test_target_gmacs_keeps_the_matched_candidates(store):
    kept = {p.label for p in at_target(store, target_samples=1e6, max_gmacs=0.008)}
    assert kept == set(LAWS) - {"4C"}  # 10.2 MMACs; the others are within 10% of 8
    strict = {p.label for p in at_target(store, target_samples=1e6, max_gmacs=0.0077, gmacs_tolerance=0)}
    assert strict == {"CoAtNet", "ConvNeXtHybrid", "GeGLU-d12", "8C"}


def test_a_compute_target_gives_each_arch_its_own_samples(store):
    for p in at_target(store, target_compute=3e4):
        assert p.target == pytest.approx(3e4 / p.image_gmacs)


def test_families_are_ranked_on_their_law_in_compute(store):
    ranking = at_target(store, by="family", target_samples=1e6, max_gmacs=0.008)
    assert ranking[0].key == "C-C-T/mlp" and all(p.target == pytest.approx(8e3) for p in ranking)
    vitamin = by_label(ranking)["C-C-T/geglu"]
    assert vitamin.points == 4 + 4 + 2 + 1  # every member and budget, early-stopped ones included
    assert vitamin.arch.name() == "C8x2-C16x4-T48x14h3-geglu@64"  # its best member at the full budget


@pytest.mark.parametrize("options, field", [
    ({"target_samples": 1e6, "target_compute": 1e4}, "--target-compute"),
    ({"by": "family", "target_samples": 1e6}, "--target-compute"),
    ({"by": "layer"}, "--by"),
    ({"metric": "image_to_text_R@1"}, "--metric"),
])
def test_bad_targets_name_the_option(store, options, field):
    with pytest.raises(ConfigError) as info:
        at_target(store, **options)
    assert info.value.field == field


def test_chosen_archs_without_a_checkpoint_load_in_open_clip_only_when_asked_untrained(store, tmp_path):
    import torch

    ranking = at_target(store, target_samples=1e6)
    chosen = choose(ranking)
    path = write_selection(store, ranking, chosen, tmp_path, samples=1e6)
    summary = json.loads(path.read_text())
    assert [c["label"] for c in summary["chosen"]] == [p.label for p in chosen]
    assert summary["target"] == {"samples": 1e6} and len(summary["ranking"]) == len(LAWS)
    first = summary["chosen"][0]
    assert first["lower"] <= first["value"] <= first["upper"] and first["fit"]["law"] == "power"
    arch, text = read_arch(first["dir"])
    assert arch == chosen[0].arch and text.width == 64
    assert first["weights"] is None and first["load"] is None  # this database kept no checkpoint
    with pytest.raises(ConfigError, match="holds no trained weights"):
        load_open_clip(first["dir"])
    model, _, preprocess = load_open_clip(first["dir"], untrained=True)
    with torch.no_grad():
        features = model.encode_image(torch.zeros(1, 3, 64, 64))
    assert features.shape == (1, arch.embed_dim)


def test_select_command_writes_the_choice(design_results, tmp_path, cli):
    """The `select` command's one run as a real subprocess (the others run in process)."""
    out = tmp_path / "choice"
    run = subprocess.run([*cli, "select", str(design_results), "--target-samples", "1e6", "--target-gmacs", "0.03",
                          "--out", str(out)], capture_output=True, text=True)
    assert run.returncode == 0, run.stderr
    assert "Pareto front of zeroshot_top1 against images_per_s" in run.stdout
    assert "MLP-d12 is best, but not distinguishable from" in run.stdout and "chosen: MLP-d12, " in run.stdout
    assert "no power law: the power law needs at least 3 points, got 2" in run.stdout
    chosen = json.loads((out / "selection.json").read_text())["chosen"]
    assert all((out / f"{i + 1:02d}-{c['arch_id']}" / "open_clip_config.json").is_file() for i, c in enumerate(chosen))
    assert f"{out / ('01-' + chosen[0]['arch_id'])}: no checkpoint of it was kept" in run.stdout


def prediction(label: str, value: float, lower: float, upper: float, fitted: bool = True, target: float = 1e6,
               measured: float = 1e5, gmacs: float = 0.03) -> Prediction:
    from nas.scaling import fit

    law = fit("power", [1e3, 1e4, 1e5], [0.9, 0.8, 0.7]) if fitted else None
    arch = load_study(DESIGN).archs[0]
    return Prediction(label, label, arch, gmacs, 1.0, target, measured, 3, value, lower, upper, fit=law,
                      note="" if fitted else "no power law")


def test_select_never_calls_a_winner_distinguishable_on_degenerate_or_missing_rivals():
    best = prediction("A", 0.2, 0.0, 0.3227)  # the interval is cut off at an accuracy of 0
    rival = prediction("B", 0.1, 0.05, 0.15, fitted=False)
    text = separation([best, rival], choose([best, rival]))
    assert "distinguishable from every" not in text and "only candidate with a law" in text
    sound, other = prediction("A", 0.30, 0.25, 0.35), prediction("B", 0.10, 0.05, 0.15)
    assert "distinguishable from every other fitted candidate" in separation([sound, other], choose([sound, other]))
    cut = prediction("B", 0.10, 0.0, 0.15)
    assert "cannot be claimed: B: interval cut off" in separation([sound, cut], choose([sound, cut]))
    close = prediction("B", 0.28, 0.22, 0.33)
    assert "not distinguishable from B" in separation([sound, close], choose([sound, close]))


def test_select_warns_when_the_target_is_more_than_a_decade_beyond_the_data():
    near, far = prediction("A", 0.3, 0.25, 0.35, target=1e6), prediction("B", 0.2, 0.1, 0.3, target=1e8)
    (samples,) = extrapolation_warnings([near], max_gmacs=None) or [None]
    assert samples is None  # exactly one decade: no warning
    warnings = extrapolation_warnings([near, far], max_gmacs=20)
    assert any("3.0 decades beyond the data for B" in w for w in warnings)
    assert any("--target-gmacs 20 is 2.8 decades beyond the largest candidate" in w for w in warnings)


@pytest.mark.parametrize("args, message", [
    (["select", "{missing}"], "no results database here"),
    (["select", "{db}", "--target-samples", "-5"], "must be > 0"),
    (["select", "{db}", "--by", "family", "--target-samples", "1e6"],
     "--target-compute: ranking families needs a target compute"),
])
def test_select_command_bad_input_exits_2(design_results, tmp_path, run_cli, args, message):
    args = [a.format(missing=tmp_path / "nowhere", db=design_results) for a in args]
    run = run_cli(*args)
    assert run.returncode == 2 and message in run.stderr


@pytest.mark.parametrize("command", ["select", "plot", "report", "fit"])
def test_every_command_has_help(run_cli, command):
    run = run_cli(command, "--help")
    assert run.returncode == 0 and "usage: vitamin-nas" in run.stdout
