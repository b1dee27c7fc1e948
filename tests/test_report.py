"""The report: the paper's data file and its claims (which must hold on the paper's own numbers), the checks,
and the markdown of a real results database beside the paper (tests/study_helpers.py)."""

from __future__ import annotations

import re
import subprocess

import pandas as pd
import pytest
import yaml
from study_helpers import DESIGN

from nas.errors import ConfigError
from nas.report import PAPER, Claim, check, load_paper, report, verdicts
from nas.results import ResultStore
from nas.select import measurements


@pytest.fixture(scope="module")
def paper():
    return load_paper()


@pytest.fixture(scope="module")
def store(design_results) -> ResultStore:
    return ResultStore.open(design_results, readonly=True)


def test_the_paper_file_holds_the_benchmark_and_its_claims_hold_on_it(paper):
    assert len(paper.benchmark) == 48 and set(paper.benchmark.samples) == {128_000_000, 512_000_000, 1_280_000_000}
    table = paper.table()
    for claim in paper.claims:
        if claim.order and all(label in paper.models for label in claim.named):
            assert check(claim, table, names=paper.models).outcome == "reproduced", claim.id
        elif claim.monotonic:
            cost = paper.benchmark.drop_duplicates("model").set_index("model").image_gmacs
            assert check(claim, paper.table(list(claim.paper) or None), cost=cost).outcome == "reproduced", claim.id


def test_checks_count_budgets_and_margins():
    table = pd.DataFrame({1: [0.5, 0.4, 0.3], 2: [0.6, 0.62, 0.5], 3: [0.7, None, 0.6]}, index=["a", "b", "c"])
    order = check(Claim("x", "a > b > c", order=(("a",), ("b",), ("c",))), table)
    assert (order.held, order.of, order.outcome) == (1, 2, "partly") and order.margin == pytest.approx(-0.02)
    tiers = check(Claim("x", "a, b > c", order=(("a", "b"), ("c",))), table)
    assert (tiers.held, tiers.of) == (2, 2) and tiers.margin == pytest.approx(0.1)
    data = check(Claim("x", "data", monotonic="samples_seen"), table)
    assert (data.held, data.of, data.describe()) == (3, 3, "reproduced (3/3 models, margin +10.0 pts)")
    cost = check(Claim("x", "size", monotonic="image_gmacs"), table, cost=pd.Series({"a": 3, "b": 2, "c": 1}))
    assert (cost.held, cost.of) == (2, 3)  # b beats the larger a at budget 2
    assert check(Claim("x", "none", order=(("a",), ("z",))), table).outcome == "not measured"


def test_verdicts_on_the_design_study(paper, store):
    found = {claim.id: (ours, theirs) for claim, ours, theirs in verdicts(paper, measurements(store), "zeroshot_top1")}
    assert "model_scaling_monotonic" not in found  # the size ladder is another study's
    assert found["hybrid_beats_vit"][0].outcome == "reproduced"
    assert found["mbconv_beats_convnext"][0].outcome == "reproduced"
    geglu, published = found["geglu_beats_mlp"]
    assert (geglu.held, geglu.of) == (2, 4) and published is None  # MLP-d12 wins from 9000 samples on
    data, theirs = found["data_scaling_monotonic"]
    assert (data.held, data.of) == (7, 8)  # GeGLU-d12 falls at the last budget; 4C has one budget
    assert (theirs.held, theirs.of) == (16, 16)


def test_report_sets_the_study_beside_the_paper(paper, store):
    text = report(store, paper, {"group:family": "figures/group_family.png", "scaling": "figures/scaling.png"})
    assert text.startswith("# Study report: vitamin_design_choices")
    assert "| hybrids beat the plain ViT | reproduced (4/4 budgets" in text
    assert "| GeGLU at depth 14 beats MLP at depth 12 (matched) | partly (2/4 budgets" in text
    assert "design choice (no published accuracies)" in text
    vitamin_s = paper.benchmark[paper.benchmark.model == "ViTamin-S"].imagenet
    row = next(line for line in text.splitlines() if line.startswith("| ViTamin | `C8x2"))
    assert all(f"| {value:.1f} |" in row + " |" for value in vitamin_s)  # the paper's numbers, from its data file
    assert "| 4C | vit_b16_mbconv_4c_glu | 1.315 | 1.306 |" in text
    assert "![family](figures/group_family.png)" in text and "![scaling](figures/scaling.png)" in text
    assert re.search(r"MLP-d12 is best, but not distinguishable from GeGLU-d12", text)
    assert "mid-schedule" in text  # the budgets are rungs of one schedule


def test_a_study_of_none_of_the_papers_models_has_no_paper_columns(paper, store):
    """A user's own study: its tables in image GMACs, as everywhere, and no column of '-' for the paper."""
    import dataclasses

    text = report(store, dataclasses.replace(paper, models={}))
    assert "## Tables beside the paper" not in text and "nothing to set beside the paper's numbers" in text
    header = next(line for line in text.splitlines() if line.startswith("| label | arch |"))
    assert "image GMACs" in header and "paper" not in header and "MMACs" not in text


def test_report_says_when_each_budget_was_a_run_of_its_own(paper, design_results, tmp_path):
    import shutil

    shutil.copy(design_results / "study.db", tmp_path / "study.db")
    store = ResultStore.open(tmp_path)
    study = store.meta("study")  # the same study with each budget in a run of its own
    store.set_meta("study", {**study, "budget": {**study["budget"], "schedule": "per_budget"},
                             "train": {**study["train"], "warmup": 2}})  # 1k-sample runs need a short warmup
    text = report(store, paper)
    assert "each budget is a run of its own" in text and "mid-schedule" not in text


def test_report_refuses_a_loss(paper, store):
    with pytest.raises(ConfigError, match="accuracies"):
        report(store, paper, metric="loss")


def test_report_command_links_the_plotted_figures(design_results, design_figures, cli):
    """The `report` command's one run as a real subprocess (the others run in process)."""
    out = design_figures.parent / "report.md"
    run = subprocess.run([*cli, "report", str(design_results), "--no-plot", "--out", str(out)], capture_output=True,
                         text=True)
    assert run.returncode == 0, run.stderr
    links = re.findall(r"!\[[^]]*\]\(([^)]+)\)", out.read_text())
    assert len(links) == len(list(design_figures.glob("*.png")))
    assert all((out.parent / link).is_file() for link in links)


def test_report_command_links_figures_kept_in_a_folder_of_their_own(design_results, design_figures, run_cli,
                                                                     tmp_path):
    out = tmp_path / "results" / "design.md"  # several studies' reports in one folder, each with its figures
    run = run_cli("report", design_results, "--no-plot", "--out", out, "--figures", design_figures)
    assert run.returncode == 0, run.stderr
    links = re.findall(r"!\[[^]]*\]\(([^)]+)\)", out.read_text())
    assert len(links) == len(list(design_figures.glob("*.png"))) and all(link.startswith("../") for link in links)
    assert all((out.parent / link).is_file() for link in links)


@pytest.mark.parametrize("change, field", [
    (lambda raw: raw.pop("claims"), None),
    (lambda raw: raw["families"].update({"P-T/mlp": ["ViT-H/14"]}), "families.P-T/mlp"),
    (lambda raw: raw["claims"].append({"id": "x", "text": "x", "order": ["a"]}), "claims[10].order"),
    (lambda raw: raw["claims"].append({"id": "x", "text": "x"}), "claims[10]"),
    (lambda raw: raw.update(metric="top5"), "metric"),
])
def test_a_bad_paper_file_names_the_field(tmp_path, change, field):
    raw = yaml.safe_load(PAPER.read_text())
    change(raw)
    path = tmp_path / "paper.yaml"
    path.write_text(yaml.safe_dump(raw))
    with pytest.raises(ConfigError) as info:
        load_paper(path)
    assert info.value.source == str(path) and info.value.field == field


def test_report_command_bad_paper_exits_2(design_results, tmp_path, run_cli):
    run = run_cli("report", design_results, "--paper", tmp_path / "none.yaml")
    assert run.returncode == 2 and "none.yaml: no such file" in run.stderr


def test_fidelity_command_prints_rung_and_size_correlations(design_results, cli):
    """The `fidelity` command's one run as a real subprocess."""
    run = subprocess.run([*cli, "fidelity", str(design_results), "--no-proxies"], capture_output=True, text=True)
    assert run.returncode == 0, run.stderr
    lines = run.stdout.splitlines()
    assert lines[0].split()[:3] == ["cheap", "expensive", "candidates"]
    assert any(line.split()[:2] == ["1,000", "3,000"] for line in lines)  # the first rung against the next
    assert any(line.startswith("image_gmacs") for line in lines) and not any(line.startswith("naswot")
                                                                              for line in lines)


def test_the_report_repeats_the_fidelity_table_and_the_hybrid_caveat(paper, store):
    text = report(store, paper)
    assert "## Fidelity: do cheap measurements rank" in text and "image_params_m" in text
    assert "Caveat: N-N-T/geglu is not the family of the paper's ConvNeXt-T, ConvNeXt-B, ConvNeXt-XL (P-N-N-N-N)" \
        in text
    extrapolated = text.split("## Extrapolated to ")[1].split("\n## ")[0]
    assert "An extrapolation a decade beyond the data" in extrapolated
    assert "read at ten times the largest" in extrapolated


def write_seeded_results(directory, correct: dict[tuple[str, int | None], int], items: int = 400) -> ResultStore:
    """The design study's ViTamin, CoAtNet and ViT measured at its largest budget with seeds 0 (the study's own,
    stored as None) and 1: each run right on the first `correct[label, seed]` of the same `items` eval images."""
    import dataclasses
    import json

    from nas.cost import cost
    from nas.study import load_study
    from nas.uncertainty import pack_hits, wilson_interval

    study = load_study(DESIGN)
    study = dataclasses.replace(study, repeats=dataclasses.replace(study.repeats, seeds=(1,)))
    store = ResultStore.create(directory, study)
    archs, budget = dict(zip(study.labels, study.archs)), study.budget.rungs[-1]
    for number, ((label, seed), k) in enumerate(correct.items()):
        trial_id = f"t{number:02d}"
        store.add_trial(trial_id, archs[label], cost(archs[label], study.text).metrics(), number=number,
                        schedule=budget, seed=seed)
        low, high = wilson_interval(k, items)
        store.record_rung(trial_id, {"budget": budget, "samples_seen": budget, "zeroshot_top1": k / items,
                                     "zeroshot_top1_n": items, "zeroshot_top1_low": low, "zeroshot_top1_high": high},
                          rung=study.budget.rung_of(budget), hits=json.dumps({"zeroshot_top1": pack_hits(
                              [i < k for i in range(items)])}))
        store.update_trial(trial_id, status="completed")
    return store


def test_a_chain_with_one_link_reversed_is_reversed_not_indistinguishable(paper, tmp_path):
    # both seeds: CoAtNet 60 % > ViTamin 50 % > ViT 40 %, each gap significant: ViTamin > CoAtNet > ViT fails at
    # its first link although its second holds; the eval set tells, so the finding is not "not distinguishable"
    store = write_seeded_results(tmp_path, {("ViTamin", None): 200, ("CoAtNet", None): 240, ("ViT", None): 160,
                                            ("ViTamin", 1): 198, ("CoAtNet", 1): 240, ("ViT", 1): 160})
    found = {claim.id: ours for claim, ours, _ in verdicts(paper, measurements(store), "zeroshot_top1")}
    ordering = found["vitamin_coatnet_vit"]
    assert (ordering.held, ordering.reversed, ordering.outcome) == (0, 1, "reversed")
    # ViTamin - CoAtNet: -10.0 and -10.5 points (paired, same images); mean -10.25, sd 0.354, se 0.25, t(1) = 12.706:
    # [-13.43, -7.07], wider than the eval noise of the mean (+-2.10): every seed agrees and 0 is out: it holds
    assert ordering.margin == pytest.approx(-0.1025)
    assert (ordering.low, ordering.high) == pytest.approx((-0.1025 - 0.031766, -0.1025 + 0.031766), abs=1e-5)
    assert "Not (or not at every budget) reproduced: ViTamin > CoAtNet > ViT" in report(store, paper)


def test_a_finding_holds_only_where_every_seed_agrees_and_the_report_shows_the_seeds(paper, tmp_path):
    # seed 0: ViTamin 60 % > CoAtNet 50 % > ViT 40 %, each gap significant; seed 1: ViTamin right on only 2 images
    # more than CoAtNet (McNemar p = 0.5), so ViTamin > CoAtNet cannot be told at that budget. ViTamin - ViT is
    # +20 and +10.5 points: both seeds agree, but with two seeds the t interval over them (t(1) = 12.706, se
    # 4.75 points) is [-45.8, +76.9]: the hybrids' lead over ViT is not shown to survive the seed
    store = write_seeded_results(tmp_path, {("ViTamin", None): 240, ("CoAtNet", None): 200, ("ViT", None): 160,
                                            ("ViTamin", 1): 202, ("CoAtNet", 1): 200, ("ViT", 1): 160})
    found = {claim.id: ours for claim, ours, _ in verdicts(paper, measurements(store), "zeroshot_top1")}
    assert found["hybrid_beats_vit"].outcome != "reproduced"
    ordering = found["vitamin_coatnet_vit"]
    assert ordering.outcome == "not distinguishable" and ordering.margin == pytest.approx(0.0525)  # the seed mean
    assert ordering.seed_dependent == 0  # the seeds agree in sign: not seed-dependent
    assert ordering.low < ordering.margin < ordering.high and ordering.low < 0  # and that paired difference's interval
    text = report(store, paper)
    assert "- seeds: 0, 1 (every candidate; the tables give the mean over seeds)" in text
    assert "- data: synthetic scenes (simple, 64 px, 128,000 captioned images), not DataComp" in text
    assert "## Run-to-run noise" in text and "largest 9.5 pts (ViTamin at 36k)" in text
    assert "| ViTamin | 36k | 60.0 (seed 0), 50.5 (seed 1) | 9.5 |" in text
    assert "| ViT | 36k | 40.0 (seed 0), 40.0 (seed 1) | 0.0 |" in text


def test_the_csv_of_every_run_names_each_candidate_seed_and_interval(tmp_path, cli):
    """The `results` command's one run as a real subprocess (the others run in process)."""
    write_seeded_results(tmp_path, {("ViTamin", None): 240, ("ViTamin", 1): 202, ("ViT", None): 160}).close()
    run = subprocess.run([*cli, "results", str(tmp_path), "--csv", str(tmp_path / "runs.csv")], capture_output=True,
                         text=True)
    assert run.returncode == 0, run.stderr
    rows = pd.read_csv(tmp_path / "runs.csv")
    assert rows.label.tolist() == ["ViTamin", "ViTamin", "ViT"] and rows.seed.isna().tolist() == [True, False, True]
    assert rows.zeroshot_top1_n.tolist() == [400] * 3 and (rows.zeroshot_top1_low < rows.zeroshot_top1).all()
    assert list(rows.columns).index("label") == list(rows.columns).index("arch_name") - 1


def test_a_finding_whose_seeds_point_different_ways_is_seed_dependent(paper, tmp_path):
    # ViTamin - CoAtNet: +10 points with seed 0, -10 with seed 1, each far outside its eval noise (paired se 1.5
    # points): Cochran's Q = 88.9 on 1 dof. The report says seed-dependent, never "not distinguishable" alone.
    store = write_seeded_results(tmp_path, {("ViTamin", None): 240, ("CoAtNet", None): 200, ("ViT", None): 160,
                                            ("ViTamin", 1): 180, ("CoAtNet", 1): 220, ("ViT", 1): 160})
    found = {claim.id: ours for claim, ours, _ in verdicts(paper, measurements(store), "zeroshot_top1")}
    ordering = found["vitamin_coatnet_vit"]
    assert (ordering.held, ordering.reversed, ordering.seed_dependent) == (0, 0, 1)
    assert "(seed-dependent at 1)" in ordering.describe()
