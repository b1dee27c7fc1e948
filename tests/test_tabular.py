"""The tabular benchmark (benchmarks/tabular.py) on a tiny setting: a real search of two towers, no early
stopping, evaluations between the ladder's rungs, the first candidate repeated with a second seed."""

from __future__ import annotations

import json
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from search_helpers import SPACE, tower, write_study

from nas.compare import hits
from nas.errors import ConfigError
from nas.proxies import zero_cost_scores
from nas.seeds import compare_hits
from nas.space import SearchSpace
from nas.study import Study, load_study
from nas.uncertainty import mcnemar, pack_hits

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
import tabular  # noqa: E402

ARCHS = [tower(32, 1), tower(64, 2, block="convnext")]
STUDIES = Path(__file__).resolve().parents[1] / "studies"


def tabular_study(directory: Path, data: Path, **fields) -> Study:
    budget = {"min_samples": 64, "max_samples": 256, "reduction_factor": 2, "early_stopping": "none", "between": 1}
    return load_study(write_study(directory, data, **{
        "algorithm": "fixed", "archs": [a.to_dict() for a in ARCHS], "trials": len(ARCHS),
        "objectives": {"zeroshot_top1": "max"}, "budget": budget, "repeats": {"seeds": [1], "fraction": 0.5},
        "data": {"urls": str(data / "shards"), "zeroshot": str(data / "eval" / "zeroshot")},
        "resources": {"cpus": 1, "concurrency": 2}, **fields}))


@pytest.mark.slow
def test_a_tiny_table_has_every_candidate_at_every_rung_and_a_second_seed(local_ray, search_data, tmp_path):
    study = tabular_study(tmp_path / "study", search_data)
    assert study.budget.rungs == (64, 91, 128, 181, 256) and study.trials == 3
    store = tabular.run(study, tmp_path / "out")
    assert tabular.main(["--from-run", str(tmp_path / "out"), "--csv", str(tmp_path / "t.csv")]) == 0
    frame = pd.read_csv(tmp_path / "t.csv")
    assert set(frame.arch_id) == {a.arch_id for a in ARCHS} and (frame.candidate_id == frame.arch_id).all()
    runs = frame.groupby(["arch_id", "seed"]).budget.apply(tuple)
    assert len(runs) == 3 and all(b == study.budget.rungs for b in runs)  # every run at every rung
    repeated = ARCHS[0].arch_id  # the first listed candidate: half of two
    assert sorted(frame[frame.arch_id == repeated].seed.unique()) == [0, 1]
    assert set(frame[frame.arch_id != repeated].seed) == {0}
    first, second = (frame[(frame.arch_id == repeated) & (frame.seed == s)].loss.to_numpy() for s in (0, 1))
    assert (first != second).any()  # another initialisation and data order
    assert (frame.zeroshot_top1_n == 2 * 80).all()  # 2 images per class of the tests' data
    assert ((frame.zeroshot_top1_low <= frame.zeroshot_top1) & (frame.zeroshot_top1 <= frame.zeroshot_top1_high)).all()
    assert (frame.samples_seen >= frame.budget).all() and (frame.status == "completed").all()
    for row in frame.itertuples():  # every run's hits at every rung, as many as its eval set holds
        assert hits(row, "zeroshot_top1").mean() == pytest.approx(row.zeroshot_top1)
    for arch in ARCHS:
        rows = frame[frame.arch_id == arch.arch_id]
        assert (rows.arch_name == arch.name()).all() and (rows.image_size == 32).all()
        assert rows.naswot.iloc[0] == pytest.approx(zero_cost_scores(arch)["naswot"], rel=1e-5)
    assert store.study().repeats.seeds == (1,)

    # a trial cut off (an interrupted search, or one still running) is not a candidate of the table
    cut = next(t for t in store.trials() if t["arch_id"] != repeated)
    store.update_trial(cut["trial_id"], status="interrupted")
    assert set(tabular.table(store).arch_id) == {repeated}
    # one that did not learn stays, with its status: reading the table takes it out (`tabular.read_table`)
    store.update_trial(cut["trial_id"], status="did_not_learn")
    kept = tabular.table(store)
    out = kept[kept.status == "did_not_learn"]
    assert set(out.arch_id) == {cut["arch_id"]} and out.seed.nunique() == 1
    assert [(c, s) for c, _, s, _ in tabular.learned(kept, study).flagged] == [(cut["arch_id"], out.seed.iloc[0])]


def test_a_table_needs_listed_candidates_and_no_early_stopping(tmp_path):
    data = tmp_path / "data"
    with pytest.raises(ConfigError, match="early_stopping: none"):
        tabular.check_study(tabular_study(tmp_path, data, budget={"min_samples": 64, "max_samples": 256}))
    searched = load_study(write_study(tmp_path, data, algorithm="random", trials=2))
    with pytest.raises(ConfigError, match="lists its candidates"):
        tabular.check_study(searched)


def test_the_tabular_study_extends_the_quickstart_and_covers_the_space_evenly():
    study = load_study(Path(__file__).resolve().parents[1] / "studies" / "tabular_tiny.yaml")
    quickstart = load_study(Path(__file__).resolve().parents[1] / "studies" / "quickstart.yaml")
    tabular.check_study(study)
    assert replace(study.train, rungs=()) == replace(quickstart.train, rungs=())  # the quickstart's recipe
    assert study.data == quickstart.data and study.text == quickstart.text
    assert set(quickstart.budget.rungs) < set(study.budget.rungs) and study.budget.max_samples == \
        quickstart.budget.max_samples
    assert len(study.archs) >= 32 and study.repeats.count(len(study.archs)) >= len(study.archs) / 4
    blocks = {(a.stages[0].block, a.stages[1].block) for a in study.archs}
    assert len(blocks) == 6  # every pair of stage blocks the space offers
    assert {a.transformer.depth for a in study.archs} == {2, 3, 4}
    assert {a.stages[0].width for a in study.archs} == {16, 24, 32}


def test_the_v2_study_trains_every_candidate_of_the_tiny_table_with_three_seeds_on_5000_images(tmp_path):
    study, tiny = load_study(STUDIES / "tabular_v2.yaml"), load_study(STUDIES / "tabular_tiny.yaml")
    tabular.check_study(study)
    assert study.archs == tiny.archs and study.train == tiny.train and study.budget == tiny.budget
    assert study.data.source == replace(tiny.data.source, urls=study.data.source.urls,
                                        metadata=study.data.source.metadata)  # only the eval set grows
    assert study.data.synthetic.zeroshot_per_class * 80 >= 5000 and study.budget.max_samples >= 18_000
    assert [seed for _, _, seed in study.runs].count(None) == 32 and len(study.runs) == 96
    assert study.repeats.not_learned == 1 and study.confirm.top == 0
    pilot = tmp_path / "pilot.yaml"  # the pilot the study file describes
    pilot.write_text(f"name: pilot\nextends: {STUDIES / 'tabular_v2.yaml'}\ntrials: 8\n"
                     "budget: {max_samples: 54000}\n")
    pilot = load_study(pilot)
    assert pilot.archs == study.archs[:8] and len(pilot.runs) == 24 and 18_000 in pilot.budget.rungs
    assert pilot.data == study.data


def test_a_candidate_is_the_tower_at_the_spaces_full_resolution():
    arch = tower(32, image_size=32)
    at_64 = arch.replace(image_size=64).arch_id

    def space(image_size) -> SearchSpace:
        return SearchSpace({**SPACE, "image_size": image_size})

    assert tabular.candidate_id(arch, space([32, 64])) == \
        tabular.candidate_id(arch.replace(image_size=64), space([32, 64])) == at_64
    assert tabular.candidate_id(arch, space(64)) == at_64
    assert tabular.candidate_id(arch, space({"low": 32, "high": 64, "step": 32})) == at_64
    unset = SearchSpace({k: v for k, v in SPACE.items() if k != "image_size"})  # the resolution left open
    assert tabular.candidate_id(arch, unset) == arch.arch_id


def test_fidelity_ranks_cheaper_tables_of_the_same_candidates_against_the_full_one():
    ids = [f"c{i}" for i in range(6)]
    truth = [0.10, 0.30, 0.20, 0.50, 0.40, 0.60]

    def frame(values: dict[int, list[float]], image_size: int = 64, mask_ratio: float = 0.0,
              seed: int = 0) -> pd.DataFrame:
        return pd.DataFrame([{"candidate_id": c, "seed": seed, "budget": budget, "zeroshot_top1": v[i],
                              "image_size": image_size, "mask_ratio": mask_ratio, "image_params_m": float(i),
                              "image_gmacs": 1.0 - i / 10, "naswot": -truth[i]} for budget, v in values.items()
                             for i, c in enumerate(ids)])

    reversed_order = [1 - t for t in truth]
    full = pd.concat([frame({100: reversed_order, 900: truth}), frame({900: truth}, seed=1)])  # seeds agree
    low = frame({100: [t / 2 for t in truth]}, image_size=32)  # the same order: a perfect proxy
    masked = frame({100: reversed_order}, mask_ratio=0.5)
    rows = {r.cheap: r for r in tabular.fidelity(full, [low, masked], n_bootstrap=200)}
    assert {"100", "32 px 100", "64 px, mask 0.5 100", "another seed", "image_params_m", "image_gmacs", "naswot",
            "synflow"} - set(rows) == {"synflow"}  # no synflow column in these tables
    assert rows["another seed"].spearman == pytest.approx(1.0) and rows["another seed"].candidates == 6
    assert rows["32 px 100"].spearman == pytest.approx(1.0) and rows["32 px 100"].top_overlap == 1.0
    assert rows["100"].spearman == pytest.approx(-1.0) and rows["64 px, mask 0.5 100"].spearman == pytest.approx(-1)
    assert rows["naswot"].spearman == pytest.approx(-1.0) and all(r.expensive == 900 for r in rows.values())
    assert rows["image_gmacs"].spearman == pytest.approx(-rows["image_params_m"].spearman)  # larger predicts better



def test_fidelity_intervals_hold_the_tables_seed_noise():
    """Twelve candidates measured twice at the full budget, and a 32 px table ranking them as their truth: seeds
    that disagree widen the interval over seeds that agree, and a one-seed table's interval is over candidates."""
    truth = np.linspace(0.1, 0.5, 12)

    def table(spread: float, seeds: int = 2, image_size: int = 64) -> pd.DataFrame:
        return pd.DataFrame([{"candidate_id": f"c{i}", "arch_id": f"c{i}", "seed": s, "budget": 900,
                              "zeroshot_top1": t + spread * (-1) ** s, "image_size": image_size,
                              "mask_ratio": 0.0} for i, t in enumerate(truth) for s in range(seeds)])

    cheap = table(0.0, seeds=1, image_size=32)
    agree, disagree, single = (tabular.fidelity(full, [cheap], n_bootstrap=300)[0]
                               for full in (table(0.0), table(0.05), table(0.0, seeds=1)))
    assert agree.cheap == disagree.cheap == "32 px 900" and agree.spearman == disagree.spearman == pytest.approx(1)
    assert disagree.spearman_low < agree.spearman_low - 0.05 and disagree.kendall_low < agree.kendall_low - 0.05
    assert (single.spearman_low, single.spearman_high) == pytest.approx((agree.spearman_low, agree.spearman_high))
    assert tabular.table_intervals(table(0.05)).repeated == 12 and tabular.table_intervals(table(0.0, 1)) is None
    half = pd.concat([table(0.05)[lambda f: f.candidate_id.isin(["c0", "c1", "c2"])], table(0.0, seeds=1)])
    intervals = tabular.table_intervals(half.drop_duplicates(["candidate_id", "seed"]))
    assert (intervals.repeated, intervals.single) == (3, 9) and intervals.seed_sd == pytest.approx(0.1 / 2 ** 0.5)
    assert "9 with one, whose truth is drawn with the pooled seed SD 7.07 pts" in intervals.line()


def seeded_table(values: dict[str, list[float]], n: int = 400, budget: int = 900,
                 right: str = "first") -> pd.DataFrame:
    """A table at one budget: candidate -> its seeds' accuracies, each run's hits packed as the results database
    keeps them (JSON by metric); `right`: the first items are the ones a run gets right (a better run gets right
    every item a worse one does), or random items."""
    rng = np.random.default_rng(1)
    rows = []
    for i, (candidate, accuracies) in enumerate(values.items()):
        for seed, accuracy in enumerate(accuracies):
            k = round(accuracy * n)
            hit = np.arange(n) < k if right == "first" else np.isin(np.arange(n), rng.permutation(n)[:k])
            rows.append({"candidate_id": candidate, "arch_id": candidate, "arch_name": f"tower {i}", "seed": seed,
                         "status": "completed", "budget": budget, "zeroshot_top1": k / n, "zeroshot_top1_n": n,
                         "loss": 1.0, "hits": json.dumps({"zeroshot_top1": pack_hits(hit)})})
    return pd.DataFrame(rows)


def test_hits_stored_in_the_table_read_back_for_a_paired_test(tmp_path):
    frame = seeded_table({"a": [0.50, 0.52], "b": [0.30, 0.31]}, right="random")
    frame.to_csv(tmp_path / "t.csv", index=False, float_format="%.6g")
    back = tabular.read_table(tmp_path / "t.csv", load_study(STUDIES / "tabular_v2.yaml")).frame
    for written, read in zip(frame.itertuples(), back.itertuples()):
        assert np.array_equal(hits(written, "zeroshot_top1"), hits(read, "zeroshot_top1"))
        assert hits(read, "zeroshot_top1").mean() == pytest.approx(read.zeroshot_top1)
    a, b = (hits(back[(back.candidate_id == c) & (back.seed == 0)].iloc[0].to_dict(), "zeroshot_top1") for c in "ab")
    assert mcnemar(a, b) < 1e-4  # 50 % against 30 % of 400 images
    assert compare_hits({0: a}, {0: b}).verdict == "one seed"


def test_a_perfectly_repeatable_table_ranks_the_same_on_every_seed_and_knows_its_best():
    """Eight candidates 8 points apart, each seed within half a point of the others."""
    frame = seeded_table({f"c{i}": [0.2 + 0.08 * i + 0.0025 * s for s in (0, 2, 1)] for i in range(8)})
    found = tabular.repeatability(frame, 900, n_bootstrap=200)
    assert found.repeated == 8 and [(r.cheap, r.expensive) for r in found.pairs] == \
        [("seed 0", 1), ("seed 0", 2), ("seed 1", 2)]
    assert all(r.spearman == pytest.approx(1.0) and r.spearman_low > 0.5 for r in found.pairs)
    assert found.best == "tower 7" and found.verdicts == ("holds",) * 7 and found.distinguishable == 7
    assert found.p_best > 0.99 and found.seed_sd == pytest.approx(0.0025, rel=0.2)
    text = tabular.format_repeatability(frame)
    assert "at 900 samples: 8 candidates" in text and "distinguishable from the best, tower 7: 7 of 7" in text


def test_a_table_of_pure_noise_has_no_repeatable_ranking():
    """Eight candidates of one true accuracy, each seed's measurement off it by a seed-sized noise."""
    rng = np.random.default_rng(0)
    frame = seeded_table({f"c{i}": list(0.3 + 0.03 * rng.standard_normal(3)) for i in range(8)}, right="random")
    found = tabular.repeatability(frame, 900, n_bootstrap=200)
    assert all(r.spearman_low < 0 < r.spearman_high for r in found.pairs)
    assert found.p_best < 0.7 and found.distinguishable < 4
    assert tabular.repeatability(frame[frame.seed == 0], 900) is None  # one seed: nothing to repeat
