"""Fidelity: rank agreement between a cheap and an expensive measurement, on hand-computed and synthetic tables."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from nas.errors import ConfigError
from nas.fidelity import (
    MIN_CANDIDATES,
    FidelityRow,
    bootstrap_correlation,
    changed_promotions,
    compare,
    fidelity_line,
    fidelity_table,
    format_correlation,
    format_fidelity,
    kendall,
    kept,
    permutation_p,
    promotions,
    spearman,
    table_agreement,
    table_draws,
    top_overlap,
)

BUDGETS = (1600, 4800, 14400)


def test_rank_correlations_against_hand_computed_values():
    # One swap in five: d = (1, 1, 1, 1, 0), rho = 1 - 6 * 4 / (5 * 24) = 0.8; 2 of 10 pairs discordant: tau 0.6.
    cheap, expensive = np.array([1, 2, 3, 4, 5.0]), np.array([2, 1, 4, 3, 5.0])
    assert spearman(cheap, expensive)[0] == pytest.approx(0.8)
    assert kendall(cheap, expensive)[0] == pytest.approx(0.6)
    assert np.isnan(spearman(cheap, np.ones(5))[0]) and np.isnan(kendall(np.ones(5), expensive)[0])


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_rank_correlations_match_scipy_with_ties(seed):
    rng = np.random.default_rng(seed)
    cheap = rng.integers(0, 6, size=(4, 15)).astype(float)  # quantised, as accuracies on few images are
    expensive = cheap + rng.integers(0, 4, size=(4, 15))
    rho, tau = spearman(cheap, expensive), kendall(cheap, expensive)
    for row in range(4):
        assert rho[row] == pytest.approx(stats.spearmanr(cheap[row], expensive[row]).statistic)
        assert tau[row] == pytest.approx(stats.kendalltau(cheap[row], expensive[row]).statistic)


def test_bootstrap_interval_of_a_rank_correlation_on_six_candidates():
    # Candidates 1 and 2 swap. Of the resamples, those that hold only candidates 1 and 2 rank them backwards
    # (rho -1): the 95 % interval reaches far down; 80 % reaches less far.
    cheap, expensive = [1, 2, 3, 4, 5, 6], [1, 3, 2, 4, 5, 6]
    rho, low, high = bootstrap_correlation(cheap, expensive)
    assert rho == pytest.approx(1 - 6 * 2 / 210) and low < 0.5 and high == 1.0
    assert low < bootstrap_correlation(cheap, expensive, level=0.8)[1] < rho
    assert bootstrap_correlation(cheap, expensive, "kendall")[0] == pytest.approx(13 / 15)
    assert bootstrap_correlation(cheap, expensive, seed=5) == bootstrap_correlation(cheap, expensive, seed=5)
    assert all(np.isnan(bootstrap_correlation([1] * 6, expensive)))
    with pytest.raises(ConfigError, match="method"):
        bootstrap_correlation(cheap, expensive, "pearson")


def test_too_few_candidates_get_the_exact_permutation_p_and_no_interval():
    # 4 candidates in the same order: 1 of 24 orderings is as concordant and 1 as discordant, p = 2/24; no
    # ranking of 4 can reach p < 0.05. Kendall's tau on one swap in 4: |tau| >= 2/3 in 8 of 24 orderings.
    assert permutation_p([1, 2, 3, 4], [1, 2, 3, 4]) == pytest.approx(2 / 24)
    assert permutation_p([1, 2, 3, 4], [1, 3, 2, 4], "kendall") == pytest.approx(8 / 24)
    assert permutation_p([1, 2, 3, 4, 5], [5, 4, 3, 2, 1]) == pytest.approx(2 / 120)
    assert permutation_p(np.arange(MIN_CANDIDATES), np.arange(MIN_CANDIDATES)) < 0.01
    rho, low, high = bootstrap_correlation([1, 2, 3, 4], [1, 2, 3, 4])
    assert rho == 1.0 and np.isnan(low) and np.isnan(high)  # never "1.00 [1.00, 1.00] (4 candidates)"
    row = compare([1, 2, 3, 4], [1, 2, 3, 4], cheap_label=6000, expensive_label=18000)
    assert row.too_few and row.spearman_p == pytest.approx(1 / 12) and row.kendall_p == pytest.approx(1 / 12)
    assert fidelity_line(row) == ("6,000 -> 18,000: Spearman 1.00, too few candidates (4): exact permutation "
                                  "p = 0.083, 0 of 1 promotions would change")
    assert "1.00 (too few; exact p = 0.083)" in format_fidelity([row])
    assert "[" not in format_fidelity([row]).splitlines()[2]


@pytest.mark.parametrize("n", [MIN_CANDIDATES, 12, 40])
def test_a_perfect_ranking_never_gets_a_zero_width_interval(n):
    for method in ("spearman", "kendall"):
        value, low, high = bootstrap_correlation(np.arange(n), np.arange(n), method)
        assert value == 1.0 and high == 1.0 and low < 1.0
        assert format_correlation(value, low, high).startswith("1.00 [0.") and "[1.00" not in format_correlation(
            value, low, high)
    assert bootstrap_correlation(np.arange(MIN_CANDIDATES), np.arange(MIN_CANDIDATES))[1] < 0.5


def test_kept_shares_the_places_left_among_ties_at_the_cut():
    assert kept([4, 3, 2, 1], 2).tolist() == [1, 1, 0, 0]
    assert kept([3, 2, 2, 2, 1], 2) == pytest.approx([1, 1 / 3, 1 / 3, 1 / 3, 0])
    assert kept([1, 2], 0).tolist() == [0, 0] and kept([1, 2], 5).tolist() == [1, 1]


def test_top_overlap_and_changed_promotions_by_hand():
    cheap, expensive = [6, 5, 4, 3, 2, 1], [6, 4, 5, 1, 3, 2]  # top two: {0, 1} against {0, 2}
    assert top_overlap(cheap, expensive, 2) == 0.5
    assert promotions(6, 3) == 2 and promotions(2, 3) == 1
    assert changed_promotions(cheap, expensive, 3) == 1.0  # candidate 1 goes up instead of candidate 2
    assert top_overlap([4, 3, 2, 1], [1, 2, 3, 4], 2) == 0.0 and changed_promotions([4, 3, 2, 1], [1, 2, 3, 4], 2) == 2
    # A cheap measurement that ties everyone promotes at random: overlap k/n, half the promotions change.
    assert top_overlap([1, 1, 1, 1], [4, 3, 2, 1], 2) == 0.5
    assert changed_promotions([1, 1, 1, 1], [4, 3, 2, 1], 2) == 1.0


def _frame(metric_at: dict[int, np.ndarray], **columns: np.ndarray) -> pd.DataFrame:
    """One row per (arch, budget); per-arch columns repeated on each of the arch's rows."""
    rows = []
    for budget, values in metric_at.items():
        for arch, value in enumerate(values):
            if not np.isnan(value):
                rows.append({"arch_id": f"a{arch:02d}", "budget": budget, "zeroshot_top1": value,
                             **{name: column[arch] for name, column in columns.items()}})
    return pd.DataFrame(rows)


def test_a_known_ranking_is_recovered_exactly():
    quality = np.random.default_rng(0).permutation(12) / 100.0
    frame = _frame({b: quality * np.log10(b) for b in BUDGETS}, params_m=quality * 7 + 1, loss_at_init=-quality)
    rows = fidelity_table(frame, "zeroshot_top1", scores={"params_m": "max", "loss_at_init": "min"})
    assert [(r.cheap, r.expensive) for r in rows] == [
        (1600, 4800), (1600, 14400), (4800, 14400), *((s, b) for s in ("params_m", "loss_at_init") for b in BUDGETS)]
    for row in rows:  # 12 candidates in the same order: 1, with an interval that still has a width
        assert (row.spearman, row.spearman_high, row.kendall, row.kendall_high) == (1.0, 1.0, 1.0, 1.0)
        assert 0.9 < row.spearman_low < 0.99 and 0.85 < row.kendall_low < 0.99 and not row.too_few
        assert (row.candidates, row.top_k, row.top_overlap) == (12, 4, 1.0)
        assert (row.promoted, row.changed_promotions, row.noise_p_value) == (4, 0.0, None)


def test_a_shuffled_ranking_is_about_zero_and_its_interval_covers_zero():
    rng = np.random.default_rng(1)
    cheap = rng.permutation(40) / 100.0
    expensive = rng.permutation(40) / 100.0
    (row,) = fidelity_table(_frame({1600: cheap, 14400: expensive}), "zeroshot_top1")
    assert abs(row.spearman) < 0.3 and row.spearman_low < 0 < row.spearman_high
    assert abs(row.kendall) < 0.2 and row.kendall_low < 0 < row.kendall_high
    assert row.spearman == pytest.approx(stats.spearmanr(cheap, expensive).statistic)
    assert row.changed_promotions > 5  # of 13 promoted, about 13 * 2/3 change by chance


def test_pairs_are_on_common_candidates_and_small_ones_are_left_out():
    nan = np.nan
    frame = _frame({1600: np.array([0.1, 0.2, 0.3, 0.4, 0.5, 0.6]), 4800: np.array([nan, 0.3, 0.2, 0.5, 0.6, nan]),
                    14400: np.array([nan, nan, nan, nan, 0.7, 0.8])})
    frame = pd.concat([frame, frame.iloc[[0]].assign(zeroshot_top1=0.9)])  # measured twice: the first stands
    rows = fidelity_table(frame, "zeroshot_top1")
    assert [(r.cheap, r.expensive, r.candidates) for r in rows] == [(1600, 4800, 4)]
    assert rows[0].spearman == pytest.approx(0.8)  # 2, 3, 4, 5 against 3, 2, 4, 5
    assert rows[0].too_few and np.isnan(rows[0].spearman_low) and rows[0].spearman_p == pytest.approx(8 / 24)
    (lower_is_better,) = fidelity_table(frame.assign(zeroshot_top1=-frame.zeroshot_top1), "zeroshot_top1",
                                        mode="min")
    assert lower_is_better == rows[0]


def test_a_cheap_rung_that_cannot_be_told_from_noise_says_so():
    n = np.full(12, 400)
    close = np.array([5, 6, 4, 7, 5, 6, 5, 4, 6, 7, 5, 6]) / 400  # 1.0 to 1.75 % on 400 images
    apart = np.linspace(4, 60, 12).round() / 400
    expensive = np.linspace(0.1, 0.3, 12)
    (noisy,) = fidelity_table(_frame({1600: close, 14400: expensive}, zeroshot_top1_n=n), "zeroshot_top1")
    (clear,) = fidelity_table(_frame({1600: apart, 14400: expensive}, zeroshot_top1_n=n), "zeroshot_top1")
    assert noisy.noise_p_value > 0.5 and clear.noise_p_value < 1e-6
    assert "cannot be told from noise" in fidelity_line(noisy)
    assert fidelity_line(clear) == ("1,600 -> 14,400: Spearman 1.00 [0.96, 1.00] (12 candidates), "
                                    "0 of 4 promotions would change")


def test_formatting():
    row = FidelityRow(1600, 14400, 12, 0.8312, 0.4071, 0.9655, 0.6, 0.3, 0.9, 4, 0.75, 4, 1.5, 0.2)
    assert format_correlation(0.8312, 0.4071, 0.9655, 12) == "0.83 [0.40, 0.97] (12 candidates)"  # outward
    assert format_correlation(1.0, 0.9996, 1.0, 40) == "1.00 [0.99, 1.00] (40 candidates)"
    assert format_correlation(np.nan, np.nan, np.nan) == "n/a"
    assert fidelity_line(row) == ("1,600 -> 14,400: Spearman 0.83 [0.40, 0.97] (12 candidates), 1.5 of 4 "
                                  "promotions would change; the cheap ranking cannot be told from noise (p = 0.20)")
    table = format_fidelity([row, FidelityRow("gmacs", 14400, 12, -0.1, -0.6, 0.5, -0.05, -0.5, 0.4, 4, 0.25, 4,
                                              3.0, None)]).splitlines()
    assert table[0].split() == ["cheap", "expensive", "candidates", "spearman", "[95", "%]", "kendall", "[95",
                                "%]", "top-k", "overlap", "changed", "promotions", "noise", "p"]
    assert table[2].split()[:4] == ["1,600", "14,400", "12", "0.83"] and table[2].endswith("0.200")
    assert "0.25 (top 4)" in table[3] and "3 of 4" in table[3] and table[3].endswith("-")


def test_bad_input_names_the_field():
    frame = _frame({1600: np.arange(4.0), 4800: np.arange(4.0)})
    with pytest.raises(ConfigError, match="metric.*no column 'zeroshot_top5'"):
        fidelity_table(frame, "zeroshot_top5")
    with pytest.raises(ConfigError, match="scores.*'gmacs'"):
        fidelity_table(frame, "zeroshot_top1", scores=["gmacs"])
    with pytest.raises(ConfigError, match="mode"):
        fidelity_table(frame, "zeroshot_top1", mode="maximise")
    with pytest.raises(ConfigError, match="scores"):
        fidelity_table(frame.assign(gmacs=1.0), "zeroshot_top1", scores={"gmacs": "up"})


def runs_table(truth, spread: float = 0.0, seeds: int = 3, score=None) -> pd.DataFrame:
    """A table's runs at the full budget: each candidate's seeds `spread` apart around its truth (their mean), and
    a per-candidate `score` (default the truth)."""
    score = truth if score is None else score
    offsets = np.linspace(-spread, spread, seeds) if seeds > 1 else np.zeros(1)
    return pd.DataFrame([{"candidate_id": f"c{i:02d}", "seed": s, "truth": t + offsets[s], "score": score[i]}
                         for i, t in enumerate(truth) for s in range(seeds)])


def test_table_agreement_of_the_truth_itself_is_one_and_seeds_that_agree_add_no_width():
    truth = np.linspace(0.1, 0.7, 30)
    found = table_agreement(runs_table(truth), "score", "truth", n_bootstrap=300)
    assert (found.candidates, found.repeated, found.parametric, found.top_k) == (30, 30, 0, 3)
    assert found.spearman == found.kendall == pytest.approx(1.0)
    # every candidate's seeds agree: the interval is the bootstrap over candidates alone (never of zero width)
    assert (found.spearman_low, found.spearman_high) == pytest.approx(
        bootstrap_correlation(truth, truth, n_bootstrap=300)[1:])
    assert found.spearman_low < 1 and found.spearman_high == 1
    # the top 10 %: nothing to redraw but seeds that agree, so a degenerate interval
    assert (found.top_spearman, found.top_spearman_low, found.top_spearman_high) == pytest.approx((1, 1, 1))
    assert (found.top_kendall, found.top_kendall_low, found.top_kendall_high) == pytest.approx((1, 1, 1))
    backwards = table_agreement(runs_table(truth, score=-truth), "score", "truth", n_bootstrap=300)
    assert backwards.spearman == backwards.kendall == backwards.top_spearman == pytest.approx(-1.0)
    assert backwards.spearman_high < -0.9 and backwards.top_kendall_high == pytest.approx(-1.0)


def test_seeds_that_disagree_widen_the_interval_and_one_seed_needs_the_parametric_term():
    truth = np.linspace(0.1, 0.7, 30)  # 0.0207 apart
    agree = table_agreement(runs_table(truth), "score", "truth", n_bootstrap=300)
    noisy = table_agreement(runs_table(truth, spread=0.05), "score", "truth", n_bootstrap=300)
    assert noisy.spearman == pytest.approx(1.0)  # the seed means are the truth: the same point estimate
    assert noisy.spearman_low < agree.spearman_low - 0.02 and noisy.kendall_low < agree.kendall_low - 0.05
    assert noisy.top_spearman_low < 0.5  # which candidates are the top 3, and their order, now vary
    single = runs_table(truth, seeds=1)
    alone = table_agreement(single, "score", "truth", n_bootstrap=300)
    assert alone.repeated == alone.parametric == 0 and alone.spearman_low == pytest.approx(agree.spearman_low)
    drawn = table_agreement(single, "score", "truth", seed_sd=0.05, n_bootstrap=300)
    assert drawn.parametric == 30 and drawn.spearman_low < alone.spearman_low - 0.02


def test_a_paired_score_is_averaged_over_the_same_redrawn_runs():
    """A cheap rung of the same runs: a run's score is its own truth halved, so every redrawn table ranks alike."""
    frame = runs_table(np.linspace(0.1, 0.7, 30), spread=0.05)
    found = table_agreement(frame.assign(score=frame.truth / 2), "score", "truth", n_bootstrap=300)
    assert found.spearman == pytest.approx(1.0) and found.spearman_low == pytest.approx(
        table_agreement(runs_table(np.linspace(0.1, 0.7, 30)), "score", "truth", n_bootstrap=300).spearman_low)
    assert found.top_spearman_low == pytest.approx(1.0)
    draws = table_draws([np.array([[0.2, 1.0]]), np.array([[0.4, 0.0], [0.6, 2.0]])], 500, candidates=False)
    assert draws.shape == (500, 2, 2) and np.all(draws[:, 0] == [0.2, 1.0])
    assert set(np.round(draws[:, 1, 0], 6)) == {0.4, 0.5, 0.6} and np.allclose(draws[:, 1, 1], 10 * draws[:, 1, 0] - 4)
