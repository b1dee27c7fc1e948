"""Seed-level uncertainty (`nas.seeds`) and the no-learning rule (`nas.learning`) against hand-computed cases."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from nas import status
from nas.learning import did_not_learn, failure_rate
from nas.seeds import (
    HOLDS,
    NOT_DISTINGUISHABLE,
    ONE_SEED,
    SEED_DEPENDENT,
    compare,
    compare_hits,
    ranked,
    seed_mean,
    seed_spread,
    seed_table,
)
from nas.uncertainty import PairedDifference

Z95 = 1.959963984540054


def difference(d: float, half: float, p: float = 0.5) -> PairedDifference:
    return PairedDifference(d, d - half, d + half, p, 1000)


# -- a candidate's value over its seeds ------------------------------------------------------------------------
def test_the_seed_mean_has_a_t_interval_over_seeds():
    # two seeds, 30 % and 34 %: mean 32 %, sd 0.028284, se 0.02, t(0.975, 1 dof) = 12.7062 -> +-25.41 points
    two = seed_mean([0.30, 0.34], [0, 1])
    assert two.mean == pytest.approx(0.32) and two.k == 2 and not two.eval_only
    assert (two.low, two.high) == pytest.approx((0.32 - 0.254124, 0.32 + 0.254124), abs=1e-6)
    # three seeds, 20/30/40 %: sd 0.1, se 0.057735, t(0.975, 2) = 4.302653 -> +-24.84 points
    three = seed_mean([0.2, 0.3, 0.4])
    assert (three.low, three.high) == pytest.approx((0.3 - 0.248414, 0.3 + 0.248414), abs=1e-6)
    # an accuracy's interval stays in [0, 1]
    assert seed_mean([0.01, 0.05]).low == 0.0


def test_one_seed_keeps_its_eval_interval_and_says_so():
    one = seed_mean([0.3], [0], eval_interval=(0.27, 0.33))
    assert one.eval_only and (one.low, one.high) == (0.27, 0.33)
    assert math.isnan(seed_mean([0.3]).low)  # no interval known: unknown, never a point


# -- two designs compared seed by seed ---------------------------------------------------------------------------
def test_a_difference_every_seed_agrees_on_holds():
    # +5, +5, +6 points: mean 5.333, sd 0.5774, se 0.3333, t(2) = 4.302653 -> [3.899, 6.768]
    result = compare({0: difference(0.05, 0.02), 1: difference(0.05, 0.02), 2: difference(0.06, 0.02)})
    assert result.verdict == HOLDS and not result.eval_only
    assert (result.low, result.high) == pytest.approx((0.053333 - 0.014342, 0.053333 + 0.014342), abs=1e-5)


def test_seeds_significant_in_opposite_directions_are_seed_dependent():
    # the case: +13.6 and -5.5 points, each far outside its eval noise. Per-seed se = half / 1.96;
    # weights 1/se^2 = 2,964 and 9,604; pooled -0.995 points; Q = 63.14 + 19.49 = 82.6 on 1 dof: p = 9.9e-20
    result = compare({0: difference(0.136, 0.036), 1: difference(-0.055, 0.020)})
    assert result.verdict == SEED_DEPENDENT
    assert result.heterogeneity_p == pytest.approx(9.9e-20, rel=0.01)
    assert result.low < 0 < result.high


def test_seeds_within_their_eval_noise_are_not_distinguishable():
    result = compare({0: difference(0.01, 0.03), 1: difference(-0.005, 0.03)})
    assert result.verdict == NOT_DISTINGUISHABLE and result.heterogeneity_p > 0.05
    # the same sign on two seeds whose interval over seeds includes 0: not a finding, and not seed-dependent
    assert compare({0: difference(0.02, 0.005), 1: difference(0.08, 0.005)}).verdict == NOT_DISTINGUISHABLE


def test_one_seed_is_eval_noise_only_and_never_holds():
    significant = compare({0: difference(0.05, 0.02, p=0.001)})
    assert significant.eval_only and significant.verdict == ONE_SEED
    assert "eval noise only" in significant.describe()
    assert compare({0: difference(0.01, 0.02, p=0.4)}).verdict == NOT_DISTINGUISHABLE


def test_per_seed_differences_come_from_paired_hits():
    # 100 items per seed; seed 0: A alone right on 12, B alone on 2 -> +10 points; seed 1: 11 and 2 -> +9 points;
    # mean 9.5, sd 0.7071, se 0.5, t(1) = 12.7062 -> [3.15, 15.85] points: holds
    def hits(only_a: int, only_b: int, both: int) -> tuple[np.ndarray, np.ndarray]:
        a = np.zeros(100, bool)
        b = np.zeros(100, bool)
        a[:only_a] = True
        b[only_a:only_a + only_b] = True
        a[50:50 + both] = b[50:50 + both] = True
        return a, b

    (a0, b0), (a1, b1) = hits(12, 2, 30), hits(11, 2, 30)
    result = compare_hits({0: a0, 1: a1, 2: a1}, {0: b0, 1: b1})
    assert result.seeds == (0, 1) and [d.difference for d in result.differences] == pytest.approx([0.10, 0.09])
    assert result.verdict == HOLDS
    assert (result.mean, result.low, result.high) == pytest.approx((0.095, 0.095 - 0.063531, 0.095 + 0.063531),
                                                                   abs=1e-5)
    assert compare_hits({0: a0}, {1: b1}) is None


# -- a study's seed spread and seed table ------------------------------------------------------------------------
def test_seed_spread_pools_the_repeated_candidates():
    frame = pd.DataFrame({"arch_id": ["a", "a", "b", "b", "c"], "budget": [100] * 5,
                          "seed": [None, 1, None, 1, None], "acc": [0.30, 0.34, 0.20, 0.30, 0.5]})
    spread = seed_spread(frame, "acc", own_seed=0)
    # variances 0.0008 and 0.005, one dof each: SD sqrt(0.0029) = 5.385 points; ranges 4 and 10 points
    assert spread.sd == pytest.approx(math.sqrt(0.0029)) and spread.pairs == 2
    assert (spread.median_range, spread.largest_range) == pytest.approx((0.07, 0.10))
    assert seed_spread(frame[frame.arch_id == "c"], "acc", own_seed=0) is None
    table = seed_table(frame.assign(acc_low=0.45, acc_high=0.55), "acc", own_seed=0).set_index("arch_id")
    assert table.loc["a", "seeds"] == 2 and table.loc["a", "mean"] == pytest.approx(0.32)
    assert table.loc["c", "seeds"] == 1 and (table.loc["c", "low"], table.loc["c", "high"]) == (0.45, 0.55)


# -- the no-learning rule ------------------------------------------------------------------------------------------
#: benchmarks/tables/tabular_tiny.csv (batch 32, reduction factor 3): the training loss at each rung of the run that
#: stayed near chance (C32x1-C64x2-T192x3h12-mlp@64, seed 1) and of the slowest learner among the other 39 runs
#: (C32x1-N64x1-T192x4h12-mlp@64, seed 0), which ended 46 % below ln 32.
BUDGETS = (2884, 4160, 6000, 8653, 12481, 18000)
STUCK = dict(zip(BUDGETS, (3.36127, 2.83445, 2.87808, 3.11982, 2.99237, 2.83514)))
SLOW = dict(zip(BUDGETS, (3.46666, 2.88517, 2.79286, 2.80739, 2.47412, 1.88851)))


def test_a_run_that_stayed_near_the_start_is_caught_and_a_slow_learner_is_not():
    reason = did_not_learn(STUCK, batch_size=32, reduction_factor=3)
    assert reason is not None and "12,481" in reason  # caught where its loss rose over a ladder step
    for end in range(1, len(BUDGETS) + 1):
        assert did_not_learn({b: SLOW[b] for b in BUDGETS[:end]}, batch_size=32, reduction_factor=3) is None
    assert did_not_learn({b: STUCK[b] for b in BUDGETS[:4]}, batch_size=32, reduction_factor=3) is None
    # a run that converged stops falling far below the start; SigLIP's loss is not judged
    assert did_not_learn({6000: 1.0, 18000: 0.99}, batch_size=32, reduction_factor=3) is None
    assert did_not_learn(STUCK, batch_size=32, reduction_factor=3, loss="siglip") is None


def test_the_failure_rate_has_a_wilson_interval():
    rate = failure_rate([status.COMPLETED] * 7 + [status.DID_NOT_LEARN, status.STOPPED_EARLY, status.OOM,
                                                  status.RUNNING])
    # 1 of 9 judged runs: Wilson 95 % [0.0199, 0.4350]
    assert (rate.failed, rate.runs) == (1, 9)
    assert (rate.low, rate.high) == pytest.approx((0.01988, 0.43503), abs=1e-4)
    assert "1 of 9 runs" in rate.line()


def test_candidates_rank_by_their_seed_mean():
    # A's first seed is the best single run (40 %), but its seeds' mean (30 %) is below B's one seed (35 %):
    # the leaderboard's winner, select's finalists and export --best go by the mean
    frame = pd.DataFrame({"arch_id": ["a", "a", "b"], "budget": [100] * 3, "seed": [None, 1, None],
                          "zeroshot_top1": [0.40, 0.20, 0.35]})
    table = ranked(frame, "zeroshot_top1", own_seed=0)
    assert list(table.arch_id) == ["b", "a"] and list(table.seeds) == [1, 2]
    assert ranked(frame.rename(columns={"zeroshot_top1": "loss"}), "loss", own_seed=0).arch_id[0] == "a"
