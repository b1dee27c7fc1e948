"""The supernet: a subnet computes what its stand-alone tower computes with the weights it inherits, costs what
the cost model says, trains by the sandwich rule, resumes after a kill and exports to open_clip."""

from __future__ import annotations

import csv
import functools
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
import torch
from search_helpers import write_study

from nas.arch import Arch
from nas.cost import cost
from nas.data import zeroshot_set
from nas.export import load_open_clip
from nas.metrics import SUPERNET
from nas.models import build_clip
from nas.results import ResultStore
from nas.space import SearchSpace
from nas.study import load_study
from nas.supernet import Supernet, SupernetConfig, load_supernet, train_supernet
from nas.supernet.evolution import evolve, within_limits
from nas.supernet.rank import SubnetScorer
from nas.supernet.sandwich import SandwichTrainer
from nas.supernet.supernet import STAGE_PREFIX, slice_weight, supernet_key
from nas.train.checkpoint import load_checkpoint
from nas.train.runtime import setup_runtime
from nas.train_config import TrainConfig

#: fp32 on CPU: a subnet and its stand-alone tower agree to this (the issue's bar).
TOLERANCE = 1e-5


@pytest.fixture(scope="module")
def tiny(repo) -> Supernet:
    """The supernet of search_spaces/tiny.yaml at 32 px: MBConv or ConvNeXt, then MBConv, ConvNeXt or attention,
    then a Transformer with a GeGLU or plain MLP."""
    return Supernet(SearchSpace.load(repo / "search_spaces" / "tiny.yaml"), SupernetConfig(image_size=32)).eval()


def _middle(supernet: Supernet, block: str):
    """A subnet whose second stage is `block`, neither the largest nor the smallest of them."""
    archs = sorted((a for a in supernet.candidates if a.stages[1].block == block),
                   key=lambda a: supernet.cost(a).image_macs)
    return archs[len(archs) // 2]


def _inputs(supernet: Supernet, batch: int = 3) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(0)
    size, text = supernet.image_size, supernet.text_tower
    return (torch.randn(batch, 3, size, size, generator=generator),
            torch.randint(1, text.vocab_size, (batch, text.context_length), generator=generator))


@pytest.mark.parametrize("block", ["convnext", "mbconv", "attention"])
def test_a_subnet_computes_what_its_standalone_tower_computes(tiny, block):
    arch = _middle(tiny, block)
    assert arch not in (tiny.largest, tiny.smallest)
    model = build_clip(arch, tiny.text_tower, init_weights=False)
    model.load_state_dict(tiny.subnet_state_dict(arch), strict=True)
    model.eval()
    images, texts = _inputs(tiny)
    with torch.no_grad():
        ours, theirs = tiny(images, texts, arch), model(images, texts)
    for key in ("image_features", "text_features"):
        assert torch.allclose(ours[key], theirs[key], atol=TOLERANCE, rtol=0), key
    # the subnet's weights are the first channels of the largest ones, on its stage's path
    stage = f"{STAGE_PREFIX}1.0."
    for key, weight in model.visual.state_dict().items():
        if key.startswith(stage):
            shared = tiny.get_parameter(f"image.{STAGE_PREFIX}1.{block}.0.{key[len(stage):]}")
            assert torch.equal(weight, shared[tuple(slice(0, n) for n in weight.shape)]), key
    # query, key and value each keep the first heads of the largest Transformer's
    width, shared = arch.transformer.width, tiny.get_parameter("image.trunk.blocks.0.attn.qkv.weight")
    widest = shared.shape[0] // 3
    qkv = model.visual.trunk.blocks[0].attn.qkv.weight
    for i in range(3):
        assert torch.equal(qkv[i * width:(i + 1) * width], shared[i * widest:i * widest + width, :width])


def test_paths_and_sizes_change_what_a_subnet_computes(tiny):
    images, texts = _inputs(tiny)
    archs = [_middle(tiny, block) for block in ("convnext", "mbconv", "attention")] + [tiny.largest, tiny.smallest]
    with torch.no_grad():
        features = [tiny.encode_image(arch, images) for arch in archs]
    for i in range(len(features)):
        for j in range(i):
            assert not torch.allclose(features[i], features[j], atol=1e-3)


def test_a_subnet_costs_what_the_cost_model_says(tiny):
    for block in ("convnext", "mbconv", "attention"):
        arch = _middle(tiny, block)
        assert tiny.cost(arch) == cost(arch, tiny.text_tower)
        assert sum(w.numel() for w in tiny.subnet_weights(arch).values()) == tiny.cost(arch).image_params
    assert tiny.cost(tiny.largest).image_macs == max(tiny.cost(a).image_macs for a in tiny.candidates)


def test_a_sandwich_step_updates_the_shared_weights_of_every_sampled_subnet(repo):
    torch.manual_seed(0)
    supernet = Supernet(SearchSpace.load(repo / "search_spaces" / "tiny.yaml"),
                        SupernetConfig(image_size=32, random_subnets=2))
    trainer = SandwichTrainer(supernet, TrainConfig(samples=8, batch_size=4, warmup=0, drop_path=0.0),
                              setup_runtime("fp32", "cpu"))
    before = {name: p.detach().clone() for name, p in supernet.named_parameters()}
    loss = trainer.train_step([_inputs(supernet, batch=4)])
    assert torch.isfinite(loss)
    sampled = trainer.sampled
    assert len(sampled) == 4 and sampled[:2] == (supernet.largest, supernet.smallest)
    changed = {name: p.detach() for name, p in supernet.named_parameters()}
    for arch in sampled:
        for key, meta in supernet.skeleton(arch).state_dict(keep_vars=True).items():
            name = f"image.{supernet_key(arch, key)}"
            assert not torch.equal(slice_weight(changed[name], meta.shape, key),
                                   slice_weight(before[name], meta.shape, key)), (arch.name(), key)
    assert not torch.equal(changed["logit_scale"], before["logit_scale"])
    assert not torch.equal(changed["text.token_embedding.weight"], before["text.token_embedding.weight"])


def _study(tmp_path, search_data, samples: int, drop_path: float = 0.0):
    """A study over the search tests' space: batches of 16 read in this process, a checkpoint every step."""
    return write_study(tmp_path / "study", search_data,
                       data={"urls": str(search_data / "shards"), "workers": 0},
                       train={"batch_size": 16, "warmup": 1, "lr": 0.002, "checkpoint_every": 16,
                              "drop_path": drop_path},
                       budget={"min_samples": samples, "max_samples": samples, "early_stopping": "none"})


@pytest.fixture(scope="module")
def trained(tmp_path_factory, search_data):
    """A supernet of the search tests' space trained for two sandwich steps."""
    base = tmp_path_factory.mktemp("supernet")
    result = train_supernet(load_study(_study(base, search_data, 32)), SupernetConfig(random_subnets=1),
                            base / "run", report_to=None)
    assert (result.status, result.samples_seen, result.step) == ("completed", 32, 2)
    return base / "run"


def test_export_round_trips_through_load_open_clip(trained, tmp_path, run_cli):
    supernet = load_supernet(trained)
    arch = supernet.candidates[1]
    (tmp_path / "arch.json").write_text(arch.to_json())
    run = run_cli("supernet", "export", trained, "--arch", tmp_path / "arch.json", "--out", tmp_path / "export")
    assert run.returncode == 0, run.stderr
    assert f"exported {arch.name()}" in run.stdout
    model, _, _ = load_open_clip(tmp_path / "export")
    model.eval()
    images, texts = _inputs(supernet)
    with torch.no_grad():
        ours = supernet(images, texts, arch)
        theirs = {"image_features": model.encode_image(images, normalize=True),
                  "text_features": model.encode_text(texts, normalize=True)}
    for key in ("image_features", "text_features"):
        assert torch.allclose(ours[key], theirs[key], atol=TOLERANCE, rtol=0), key
    assert torch.equal(model.logit_scale, supernet.logit_scale)


def test_rank_writes_a_csv_with_intervals_and_a_pareto_front(trained, tmp_path, run_cli, search_data):
    run = run_cli("supernet", "rank", trained, "--samples", 5, "--eval", search_data / "eval", "--out", tmp_path)
    assert run.returncode == 0, run.stderr
    assert "5 of 16 subnets scored" in run.stdout and "Pareto front" in run.stdout
    assert "retrieval captions" in run.stdout and "text_to_image_R@1 % [95 %]" in run.stdout
    with open(tmp_path / "ranking.csv") as f:
        ranking = list(csv.DictReader(f))
    with open(tmp_path / "pareto.csv") as f:
        front = list(csv.DictReader(f))
    assert len(ranking) == 5 and len({r["arch_id"] for r in ranking}) == 5
    top1 = [float(r["zeroshot_top1"]) for r in ranking]
    assert top1 == sorted(top1, reverse=True)
    for row in ranking:
        assert float(row["zeroshot_top1_low"]) <= float(row["zeroshot_top1"]) <= float(row["zeroshot_top1_high"])
        assert int(row["zeroshot_top1_n"]) == 160
        for metric in ("image_to_text_R@5", "text_to_image_R@1"):  # the eval directory has a retrieval set
            assert float(row[f"{metric}_low"]) <= float(row[metric]) <= float(row[f"{metric}_high"]), metric
            assert int(row[f"{metric}_n"]) > 0
        assert Arch.from_json(row["arch"]).arch_id == row["arch_id"]
    assert front and {r["arch_id"] for r in front} == {r["arch_id"] for r in ranking if r["pareto"] == "True"}
    points = [(float(r["zeroshot_top1"]), float(r["image_gmacs"])) for r in ranking]

    def dominated(a):
        return any(b[0] >= a[0] and b[1] <= a[1] and b != a for b in points)

    assert [r["pareto"] == "True" for r in ranking] == [not dominated(p) for p in points]


def test_an_evolutionary_search_keeps_the_subnets_within_the_limits_and_repeats_with_its_seed(
        trained, tmp_path, run_cli, search_data):
    supernet = load_supernet(trained)
    gmacs = sorted(supernet.cost(a).image_gmacs for a in supernet.candidates)
    limit = gmacs[len(gmacs) // 2]
    run = run_cli("supernet", "rank", trained, "--search", "evolution", "--max-gmacs", limit, "--max-params", 100,
                  "--population", 3, "--generations", 2, "--seed", 3, "--eval", search_data / "eval", "--out", tmp_path)
    assert run.returncode == 0, run.stderr
    assert "scored by NSGA-II (3 x 2;" in run.stdout and "Pareto front" in run.stdout
    with open(tmp_path / "ranking.csv") as f:
        ranking = list(csv.DictReader(f))
    within = {a.arch_id for a in within_limits(supernet, max_gmacs=limit)}
    assert 2 <= len(ranking) <= 6 and {r["arch_id"] for r in ranking} <= within
    for row in ranking:
        assert float(row["zeroshot_top1_low"]) <= float(row["zeroshot_top1"]) <= float(row["zeroshot_top1_high"])
    assert any(r["pareto"] == "True" for r in ranking) and (tmp_path / "pareto.csv").exists()
    # the same seed proposes the same subnets (the scorer cached: the second search scores nothing again)
    scorer = functools.cache(SubnetScorer(supernet, zeroshot_set(search_data / "eval" / "zeroshot", 32)))
    archs = within_limits(supernet, max_gmacs=limit, max_params_m=100)
    first, again = (evolve(supernet, scorer, archs, population=3, generations=2, seed=3) for _ in range(2))
    assert [r["arch_id"] for r in first.records] == [r["arch_id"] for r in again.records]
    assert first.proposals == again.proposals
    assert {r["arch_id"] for r in first.records} == {r["arch_id"] for r in ranking}  # what the command kept


def test_an_evolutionary_search_refuses_limits_no_subnet_meets_in_one_line(trained, tmp_path, run_cli, search_data):
    run = run_cli("supernet", "rank", trained, "--search", "evolution", "--max-gmacs", 1e-9,
                  "--eval", search_data / "eval", "--out", tmp_path / "x")
    assert run.returncode == 2 and len(run.stderr.strip().splitlines()) == 1
    assert "--max-gmacs" in run.stderr and not (tmp_path / "x").exists()


def test_fidelity_ranks_the_supernet_score_beside_the_zero_cost_ones(trained, tmp_path, run_cli, search_data):
    """Four measured candidates, all subnets of the supernet: its score is ranked against their measurement."""
    supernet = load_supernet(trained)
    study = load_study(write_study(tmp_path / "study", search_data))
    store = ResultStore.create(tmp_path / "out", study)
    for number, arch in enumerate(supernet.candidates[::5]):
        store.add_trial(f"t{number}", arch, cost(arch, study.text).metrics(), number=number)
        store.record_rung(f"t{number}", {"budget": 256, "samples_seen": 256, "zeroshot_top1": 0.1 * number}, rung=0)
        store.update_trial(f"t{number}", status="completed")
    store.close()
    run = run_cli("fidelity", tmp_path / "out", "--no-proxies", "--supernet", trained)
    assert run.returncode == 0, run.stderr
    rows = {line.split()[0]: line.split() for line in run.stdout.splitlines() if line.split()}
    assert {"image_params_m", "image_gmacs", SUPERNET} <= set(rows)
    assert rows[SUPERNET][1:3] == ["256", "4"]  # the budget, and every candidate (each is a subnet)
    assert "--supernet RUN" in run_cli("fidelity", "--help").stdout


def test_export_refuses_an_arch_of_another_space(trained, tmp_path, run_cli, repo):
    other = SearchSpace.load(repo / "search_spaces" / "tiny.yaml").sample(0)
    (tmp_path / "other.json").write_text(other.to_json())
    run = run_cli("supernet", "export", trained, "--arch", tmp_path / "other.json", "--out", tmp_path / "x")
    assert run.returncode == 2 and len(run.stderr.strip().splitlines()) == 1
    assert "other.json" in run.stderr and not (tmp_path / "x").exists()


def test_train_refuses_a_resolution_the_space_lacks_in_one_line(tmp_path, search_data, run_cli):
    study = _study(tmp_path, search_data, 32)
    run = run_cli("supernet", "train", study, "--out", tmp_path / "run", "--image-size", 48)
    assert run.returncode == 2 and len(run.stderr.strip().splitlines()) == 1
    assert "image_size" in run.stderr and "48" in run.stderr and not (tmp_path / "run").exists()
    for command in ("train", "rank", "export"):
        assert "examples:" in run_cli("supernet", command, "--help").stdout


@pytest.mark.subprocess
def test_a_killed_run_resumes_from_its_newest_checkpoint(cli, tmp_path, search_data, run_cli, one_thread):
    """Killed mid-run, resumed, it ends where the uninterrupted run ends: drop-path masks and random subnets
    are seeded by the step, though the resumed stream draws from the global generator as it starts."""
    study, out = _study(tmp_path, search_data, 64, drop_path=0.1), tmp_path / "run"
    args = ["supernet", "train", str(study), "--random-subnets", "1", "--no-progress", "--report-to", "none"]
    process = subprocess.Popen([*cli, *args, "--out", str(out)], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                               text=True)
    checkpoint, deadline = out / "checkpoint.pt", time.time() + 120
    while time.time() < deadline and process.poll() is None and not checkpoint.exists():
        time.sleep(0.05)
    process.send_signal(signal.SIGKILL)
    _, stderr = process.communicate()
    assert process.returncode == -signal.SIGKILL, f"the run ended before it could be killed: {stderr[-2000:]}"
    newest = load_checkpoint(checkpoint)["samples_seen"]
    assert 16 <= newest < 64

    run = run_cli(*args, "--out", out)
    assert run.returncode == 0, run.stderr
    assert f"resumed from {newest:,} samples seen" in run.stdout
    assert "completed" in run.stdout and "64 samples seen in 4 steps" in run.stdout
    assert run_cli(*args, "--out", tmp_path / "uninterrupted").returncode == 0
    resumed, uninterrupted = load_checkpoint(checkpoint), load_checkpoint(tmp_path / "uninterrupted" / "checkpoint.pt")
    assert resumed["samples_seen"] == uninterrupted["samples_seen"] == 64
    for name, tensor in uninterrupted["model"].items():
        assert torch.allclose(resumed["model"][name], tensor, atol=1e-6, rtol=0), name


def test_the_benchmark_ranks_a_tables_candidates_with_table_level_intervals_and_fine_tunes_its_pick(
        trained, tmp_path, search_data, capsys):
    """benchmarks/supernet.py on a hand-made table of eight of the supernet's subnets (four with two seeds, two
    budgets): the CSV holds every candidate with its intervals, the report the agreement, compute and regret."""
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
    import supernet as benchmark

    study = write_study(tmp_path / "study", search_data,
                        data={"urls": str(search_data / "shards"), "zeroshot": str(search_data / "eval" / "zeroshot"),
                              "workers": 0},
                        train={"batch_size": 16, "warmup": 1, "lr": 0.002, "checkpoint_every": 16},
                        budget={"min_samples": 16, "max_samples": 32, "early_stopping": "none"})
    archs = load_supernet(trained).candidates[::2]
    rows = [{"candidate_id": arch.arch_id, "arch_id": arch.arch_id, "arch_name": arch.name(), "arch": arch.to_json(),
             "image_size": arch.image_size, "mask_ratio": 0.0, "seed": seed, "status": "completed", "budget": budget,
             "samples_seen": budget, "zeroshot_top1": 0.1 + 0.05 * i + 0.01 * seed - (0.02 if budget == 16 else 0),
             "zeroshot_top1_n": 160, "loss": 0.5, "wall_s": budget / 8, "image_gmacs": 0.01 * i,
             "image_params_m": 0.1 * i, "naswot": float(-i), "synflow": float(i % 3)}
            for i, arch in enumerate(archs) for seed in range(1 + (i % 2)) for budget in (16, 32)]
    pd.DataFrame(rows).to_csv(tmp_path / "table.csv", index=False)
    args = ["--run", trained, "--table", tmp_path / "table.csv", "--study", study, "--samples", 3,
            "--finetune-samples", 16, "--out", tmp_path / "out", "--work", tmp_path / "work"]
    assert benchmark.main([str(a) for a in args]) == 0
    csv_rows = pd.read_csv(tmp_path / "out" / "supernet.csv")
    assert set(csv_rows.candidate_id) == {a.arch_id for a in archs} and csv_rows.pick.sum() == csv_rows.best.sum() == 1
    assert (csv_rows.truth_low <= csv_rows.truth).all() and (csv_rows.truth <= csv_rows.truth_high).all()
    assert (csv_rows.truth_low < csv_rows.truth_high).any()  # the second seeds, and the pooled SD for one-seed ones
    assert (csv_rows.supernet_top1_low <= csv_rows.supernet_top1).all() and (csv_rows.supernet_top1_n == 160).all()
    assert sorted(csv_rows.seeds) == [1] * 4 + [2] * 4 and "top1_at_16" in csv_rows and "naswot" in csv_rows
    text = (tmp_path / "out" / "supernet.md").read_text()
    assert "python benchmarks/supernet.py --run" in text and "Spearman at least 0.6" in text
    for label in ("supernet (inherited weights)", "| 16 |", "naswot", "image_gmacs"):
        assert label in text, label
    assert "CPU seconds not recorded" in text or "cpu_s" in (trained / "metrics.jsonl").read_text()
    assert "Fine-tuned from its inherited weights for 16 samples" in text and "(n = 160, Wilson)" in text
    assert (tmp_path / "out" / "supernet" / "score_vs_truth.png").stat().st_size > 0
    assert len(pd.read_csv(tmp_path / "work" / "rank" / "ranking.csv")) == 3
    capsys.readouterr()
    # a candidate that is no subnet of the supernet (another space's arch) is named, exit 2
    other = SearchSpace.load(Path(__file__).resolve().parents[1] / "search_spaces" / "tiny.yaml").sample(0)
    rows[0] |= {"arch": other.to_json(), "candidate_id": other.arch_id}
    pd.DataFrame(rows[:1] + [r for r in rows if r["candidate_id"] != archs[0].arch_id]).to_csv(
        tmp_path / "other.csv", index=False)
    assert benchmark.main([str(a) for a in args[:2]] + ["--table", str(tmp_path / "other.csv"),
                                                      *map(str, args[4:])]) == 2
    assert other.name() in capsys.readouterr().err
