"""Which candidates the eval set can tell apart, on a real results database holding per-item hits: intervals,
ties by McNemar's test, results at chance, Pareto points a tie makes indistinguishable, a noisy first rung, and
the report's claims counted only where the difference is significant."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from nas.arch import Arch, Stage, Transformer
from nas.compare import annotate, first_rung_noise, front_ties, hits, with_interval
from nas.cost import cost
from nas.evaluate import retrieval_chance
from nas.leaderboard import results_report
from nas.presets import TextTower
from nas.report import Claim, check, paired_measurements
from nas.results import ResultStore
from nas.study import study_from_dict
from nas.uncertainty import pack_hits, paired_difference, wilson_interval

REPO = Path(__file__).resolve().parents[1]
TEXT = TextTower(width=64, layers=2, heads=2, context_length=32)
N = 400  # eval images; chance top-1 is 1/80


def tower(width: int) -> Arch:
    return Arch(stem_width=16, image_size=64, embed_dim=64, stages=(Stage("mbconv", 1, 16),),
                transformer=Transformer(width=width, depth=2, heads=width // 16))


def correct(count: int, offset: int = 0) -> np.ndarray:
    """`count` hits among N items, starting at `offset` (two vectors with the same offset share their hits)."""
    vector = np.zeros(N, dtype=bool)
    vector[offset:offset + count] = True
    return vector


def record(store: ResultStore, trial_id: str, arch: Arch, number: int, budget: int, rung: int,
           vector: np.ndarray) -> None:
    store.add_trial(trial_id, arch, cost(arch, TEXT).metrics(), number=number, schedule=900)
    accuracy = float(vector.mean())
    low, high = wilson_interval(int(vector.sum()), N)
    metrics = {"budget": budget, "samples_seen": budget, "zeroshot_top1": accuracy, "zeroshot_top1_n": N,
               "zeroshot_top1_low": low, "zeroshot_top1_high": high, "zeroshot_top1_chance": 1 / 80}
    store.record_rung(trial_id, metrics, rung=rung, hits=json.dumps({"zeroshot_top1": pack_hits(vector)}))
    store.update_trial(trial_id, status="completed")


@pytest.fixture
def store(tmp_path) -> ResultStore:
    study = study_from_dict({"name": "demo", "space": str(REPO / "search_spaces" / "tiny.yaml"),
                             "data": {"urls": str(tmp_path / "shards"), "zeroshot": str(tmp_path / "zeroshot")},
                             "text": dataclasses.asdict(TEXT), "objectives": {"zeroshot_top1": "max",
                                                                            "image_gmacs": "min"},
                             "trials": 4, "train": {"batch_size": 32, "warmup": 1},
                             "budget": {"min_samples": 100, "max_samples": 900, "reduction_factor": 3}})
    store = ResultStore.create(tmp_path, study)
    # at 900 samples: `best` 100/400; `near` one image fewer (a tie), and cheaper; `far` 40/400; `guess` at chance
    for number, (name, width, count) in enumerate([("best", 128, 100), ("near", 64, 99), ("far", 96, 40),
                                                   ("guess", 80, 5)]):
        record(store, name, tower(width), number, 900, 2, correct(count))
    return store


def test_leaderboard_rows_carry_interval_size_ties_and_chance(store):
    board = annotate(store.leaderboard(), "zeroshot_top1").set_index("trial_id")
    assert board.loc["best", "tie"] == "best" and board.loc["near", "tie"] == "tie"  # one image apart
    assert board.loc["far", "tie"] == "" and board.loc["guess", "tie"] == ""
    assert bool(board.loc["guess", "at_chance"]) and not board.loc["far", "at_chance"]
    text = results_report(store)
    assert "zeroshot_top1 % [95 % CI]" in text and "25.0 [21.0, 29.5]" in text  # Wilson at 100/400
    best_row = next(line for line in text.splitlines() if line.lstrip().startswith("0 "))
    near_row = next(line for line in text.splitlines() if line.lstrip().startswith("1 "))
    assert " 400 " in best_row and best_row.rstrip().split("  ")[-1].strip() != "tie"
    assert "tie" in near_row
    assert "at chance" in next(line for line in text.splitlines() if line.lstrip().startswith("3 "))
    assert "McNemar" in text


def test_a_front_point_a_tie_makes_indistinguishable_is_marked(store):
    front = store.pareto_front(budget=900)
    assert set(front.trial_id) == {"best", "near"}  # near is cheaper; best is one image better
    marks = dict(zip(front.trial_id, front_ties(front, "zeroshot_top1", "image_gmacs")))
    assert marks == {"near": "", "best": "#1"}


def test_a_first_rung_within_noise_is_told(store, tmp_path):
    for number, (name, width) in enumerate([("a", 48), ("b", 112), ("c", 144)], start=10):
        record(store, name, tower(width), number, 100, 0, correct(10 + number % 2, offset=number))
    budget, test = first_rung_noise(store.frame(), "zeroshot_top1")
    assert budget == 100 and not test.distinguishable()
    assert "CANNOT be told from noise" in results_report(store)
    for number, (name, width, count) in enumerate([("d", 160, 10), ("e", 176, 120)], start=20):
        record(store, name, tower(width), number, 100, 0, correct(count))
    assert first_rung_noise(store.frame(), "zeroshot_top1")[1].distinguishable()


def test_hits_round_trip_through_the_database(store):
    row = store.frame(budget=900).set_index("trial_id").loc["near"]
    assert np.array_equal(hits(row.to_dict(), "zeroshot_top1"), correct(99))
    assert with_interval(0.25, 0.21, 0.295) == "25.0 [21.0, 29.5]" and with_interval(None, None, None) == "-"


def test_report_claims_count_only_significant_differences():
    claim = Claim("x", "A beats B", order=(("A",), ("B",)))
    table = pd.DataFrame({100: [0.2525, 0.25], 900: [0.50, 0.30]}, index=["A", "B"])
    vectors = {("A", 100): correct(101), ("B", 100): correct(100), ("A", 900): correct(200), ("B", 900): correct(120)}
    def compare(a, b):  # one seed: one paired difference per comparison
        return [paired_difference(vectors[a], vectors[b])]

    verdict = check(claim, table, compare=compare)
    assert (verdict.held, verdict.of, verdict.unclear) == (1, 2, 1)  # one image apart at 100: cannot tell
    assert verdict.outcome == "partly" and verdict.margin == pytest.approx(0.0025)
    assert verdict.low < 0 < verdict.high  # the smallest gap's interval covers zero
    assert "not distinguishable at 1" in verdict.describe()
    alone = check(claim, table[[100]], compare=compare)
    assert alone.outcome == "not distinguishable"
    assert check(claim, table[[100]]).outcome == "reproduced"  # without the hits, only the sign could decide


def test_paired_measurements_come_from_the_stored_hits(store):
    frame = store.frame().assign(label=lambda f: f.trial_id)
    compare = paired_measurements(frame, "zeroshot_top1")
    [difference] = compare(("best", 900), ("near", 900))  # one seed
    assert difference.difference == pytest.approx(1 / N) and not difference.significant()
    assert all(d.significant() for d in compare(("best", 900), ("far", 900)))
    assert compare(("best", 900), ("nobody", 900)) == []


def test_retrieval_chance_by_hand():
    # 3 images, 4 captions (image 1 has two): a random ranking of the 4 captions
    chance = retrieval_chance(np.array([0, 1, 1, 2]), 3, ks=(1, 2))
    assert chance["text_to_image_R@1"] == pytest.approx(1 / 3) and chance["text_to_image_R@2"] == pytest.approx(2 / 3)
    # image 0 or 2 (one caption of 4): 1/4 at k=1, 1/2 at k=2; image 1 (two of 4): 1/2 at k=1, 1 - 1/6 at k=2
    assert chance["image_to_text_R@1"] == pytest.approx((0.25 + 0.5 + 0.25) / 3)
    assert chance["image_to_text_R@2"] == pytest.approx((0.5 + 5 / 6 + 0.5) / 3)


def test_zero_cost_proxies_and_size_are_ranked_against_the_measurement(store):
    from nas.fidelity import study_fidelity

    rows = {row.cheap: row for row in study_fidelity(store, proxies=("naswot",))}
    assert set(rows) == {"image_params_m", "image_gmacs", "naswot"} and rows["naswot"].candidates == 4
    assert all(row.expensive == 900 and -1 <= row.spearman <= 1 for row in rows.values())
    assert study_fidelity(store, proxies=None)[0].cheap == "image_params_m"  # none scored: size only


def test_figures_draw_each_accuracy_with_its_interval(store):
    from matplotlib.collections import LineCollection

    from plots.pareto import pareto_front
    from plots.search import pareto_fronts

    ax = pareto_fronts(store.frame(), "image_gmacs", "zeroshot_top1").axes[0]
    bars = [c for c in ax.collections if isinstance(c, LineCollection)]
    assert bars and sum(len(c.get_segments()) for c in bars) == 4  # one bar per candidate measured
    (segment,) = [s for c in bars for s in c.get_segments() if abs(s[1][1] - 0.295) < 0.001]
    assert segment[0][1] == pytest.approx(wilson_interval(100, N)[0])  # best: its Wilson interval
    assert pareto_front(store.at_budget(900), axes={"image_gmacs": "min"}).axes[0].containers
