"""Uncertainty of measured accuracies: interval values, paired tests and ranking noise against hand-computed cases."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest

from nas.errors import ConfigError
from nas.uncertainty import (
    above_chance,
    bootstrap_recall_interval,
    chance_p_value,
    cochran_q,
    holm_rejects,
    homogeneity,
    mcnemar,
    pack_hits,
    tied_with_best,
    unpack_hits,
    wilson_interval,
)

Z95 = 1.959963984540054


# -- Wilson --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("successes", "n", "level", "expected"), [
    (5, 10, 0.95, (0.2366, 0.7634)),          # the textbook case (Newcombe 1998, table I)
    (8, 10, 0.95, (0.4902, 0.9433)),          # centre 0.7167, half-width 0.2266
    (5, 10, 0.90, (0.2693, 0.7307)),          # z = 1.6449
    (0, 10, 0.95, (0.0, Z95**2 / (10 + Z95**2))),  # at 0 the upper bound is z^2 / (n + z^2): 0.2775
    (10, 10, 0.95, (10 / (10 + Z95**2), 1.0)),
    (0, 0, 0.95, (0.0, 1.0)),                 # nothing measured: no information
])
def test_wilson_interval_against_hand_computed_values(successes, n, level, expected):
    assert wilson_interval(successes, n, level) == pytest.approx(expected, abs=5e-5)


def test_wilson_interval_is_vectorised_and_exact_at_the_ends():
    low, high = wilson_interval(np.array([0, 5, 8, 10]), np.array([10, 10, 10, 10]))
    assert low == pytest.approx([0.0, 0.2366, 0.4902, 0.7225], abs=5e-5)
    assert high == pytest.approx([0.2775, 0.7634, 0.9433, 1.0], abs=5e-5)
    assert low[0] == 0.0 and high[-1] == 1.0
    # One image of 400 is a quarter point; the interval at 1/400 still reaches 1.4 %.
    assert wilson_interval(1, 400) == pytest.approx((0.00044, 0.01402), abs=1e-5)


def test_wilson_interval_rejects_impossible_counts_and_levels():
    with pytest.raises(ValueError, match="successes <= n"):
        wilson_interval(11, 10)
    with pytest.raises(ConfigError, match="level"):
        wilson_interval(1, 10, level=95)


# -- bootstrap over images ---------------------------------------------------------------------------------


def test_bootstrap_weights_captions_and_resamples_whole_images():
    # Image 0 has one caption (a hit), image 1 three (misses). Resampling the two images gives recall 1
    # ({0, 0}, p 1/4), 0 ({1, 1}, p 1/4) or 1/4 ({0, 1}: one hit in four captions, p 1/2), never 1/2.
    hits, images = [True, False, False, False], [0, 1, 1, 1]
    assert bootstrap_recall_interval(hits, images) == (0.0, 1.0)
    assert bootstrap_recall_interval(hits, images, level=0.4) == (0.25, 0.25)


def test_bootstrap_interval_accounts_for_captions_sharing_an_image():
    # 20 images with 10 captions each; an image's captions all hit or all miss: 20 draws, not 200.
    images = np.repeat(np.arange(20), 10)
    hits = np.repeat(np.arange(20) % 2 == 0, 10)
    low, high = bootstrap_recall_interval(hits, images)
    per_image = wilson_interval(10, 20)
    per_caption = wilson_interval(100, 200)
    assert low == pytest.approx(per_image[0], abs=0.05) and high == pytest.approx(per_image[1], abs=0.05)
    assert high - low > 2.5 * (per_caption[1] - per_caption[0])


def test_bootstrap_is_seeded_and_falls_back_to_wilson_when_nothing_varies():
    rng = np.random.default_rng(0)
    images = rng.integers(0, 50, 150)
    hits = rng.random(150) < 0.3
    assert bootstrap_recall_interval(hits, images, seed=3) == bootstrap_recall_interval(hits, images, seed=3)
    assert bootstrap_recall_interval(hits, images, seed=3) != bootstrap_recall_interval(hits, images, seed=4)
    all_hit = np.ones(150, dtype=bool)
    assert bootstrap_recall_interval(all_hit, images) == wilson_interval(len(np.unique(images)),
                                                                         len(np.unique(images)))
    with pytest.raises(ValueError, match="image indices"):
        bootstrap_recall_interval(hits, images[:-1])


# -- paired comparisons --------------------------------------------------------------------------------


def _pair(both: int, only_a: int, only_b: int, neither: int) -> tuple[np.ndarray, np.ndarray]:
    a = [True] * both + [True] * only_a + [False] * only_b + [False] * neither
    b = [True] * both + [False] * only_a + [True] * only_b + [False] * neither
    return np.array(a), np.array(b)


@pytest.mark.parametrize(("only_a", "only_b", "p_value"), [
    (0, 5, 2 / 2**5),               # all five disagreements one way: 2 * (1/2)^5
    (6, 0, 2 / 2**6),
    (1, 4, 2 * (1 + 5) / 2**5),     # 2 * P(X <= 1), X ~ Bin(5, 1/2)
    (3, 3, 1.0),
    (0, 0, 1.0),                    # no disagreement: nothing to tell them apart
])
def test_mcnemar_is_the_exact_binomial_test_on_the_disagreements(only_a, only_b, p_value):
    hits_a, hits_b = _pair(both=40, only_a=only_a, only_b=only_b, neither=300)
    assert mcnemar(hits_a, hits_b) == pytest.approx(p_value)


def test_mcnemar_needs_the_same_items():
    with pytest.raises(ValueError, match="same items"):
        mcnemar([True, False], [True])


def test_one_image_apart_is_a_tie_ten_is_not():
    best, one_less = _pair(both=200, only_a=1, only_b=0, neither=199)  # 201/400 against 200/400
    _, ten_less = _pair(both=191, only_a=10, only_b=0, neither=199)
    assert tied_with_best([best, one_less, ten_less]) == [True, True, False]


def test_holm_holds_the_family_of_comparisons_with_the_best():
    best, six_less = _pair(both=50, only_a=6, only_b=0, neither=44)    # p = 1/32 each
    # Alone, p = 0.031 < 0.05 separates each; two comparisons at once need the smaller under 0.025.
    assert tied_with_best([best, six_less, six_less], correction="none") == [True, False, False]
    assert tied_with_best([best, six_less, six_less]) == [True, True, True]
    _, ten_less = _pair(both=46, only_a=10, only_b=0, neither=44)      # p = 1/512 <= 0.025, then 1/32 <= 0.05
    assert tied_with_best([best, ten_less, six_less]) == [True, False, False]
    assert holm_rejects([0.01, 0.04, 0.03], alpha=0.05) == [True, False, False]  # 0.03 > 0.05 / 2 stops it
    assert tied_with_best([best, None, six_less]) == [True, None, False]
    assert tied_with_best([None, six_less]) == [True, None]
    with pytest.raises(ConfigError, match="correction"):
        tied_with_best([best, six_less], correction="bonferroni")


# -- chance --------------------------------------------------------------------------------------------


def test_above_chance_is_a_one_sided_exact_binomial_test():
    assert chance_p_value(5, 5, 0.5) == pytest.approx(1 / 32)
    assert chance_p_value(4, 5, 0.5) == pytest.approx(6 / 32)
    assert above_chance(5, 5, 0.5) and not above_chance(4, 5, 0.5)
    # 400 images, 80 classes: 5 right is chance; P(X >= 10) summed term by term.
    chance = 1 / 80
    tail = 1 - sum(math.comb(400, i) * chance**i * (1 - chance) ** (400 - i) for i in range(10))
    assert chance_p_value(10, 400, chance) == pytest.approx(tail)
    assert above_chance(np.array([5, 9, 12]), 400, chance).tolist() == [False, False, True]
    assert chance_p_value(0, 0, chance) == 1.0


# -- noise in a ranking --------------------------------------------------------------------------------


def test_homogeneity_is_pearsons_chi_square_on_the_two_by_k_table():
    # 30/100 against 50/100: expected 40 and 60 per column; X^2 = 2 * 100/40 + 2 * 100/60 = 25/3.
    result = homogeneity([30, 50], [100, 100])
    assert (result.statistic, result.dof, result.method) == (pytest.approx(25 / 3), 1, "chi-square")
    assert result.p_value == pytest.approx(math.erfc(math.sqrt(25 / 6)))  # chi-square with 1 dof
    assert result.distinguishable()
    assert homogeneity([20, 20, 20], [100, 100, 100]).p_value == 1.0
    assert homogeneity([0, 0], [400, 400]).p_value == 1.0  # everyone at zero: nothing to rank
    assert homogeneity([7], [400]).p_value == 1.0


def test_homogeneity_with_small_counts_is_the_exact_conditional_test():
    successes, n = [0, 1, 5], [10, 10, 10]  # expected 2 hits a candidate: chi-square is not trusted
    result = homogeneity(successes, n, seed=1)
    assert result.method == "monte-carlo exact"
    # Freeman-Halton: every table with the same margins, weighted by its hypergeometric probability.
    observed = result.statistic
    exact = 0.0
    for table in itertools.product(range(7), repeat=3):
        if sum(table) != 6:
            continue
        probability = math.prod(math.comb(10, x) for x in table) / math.comb(30, 6)
        rate = 6 / 30
        statistic = sum((x - rate * 10) ** 2 / (rate * 10) + (x - rate * 10) ** 2 / ((1 - rate) * 10) for x in table)
        exact += probability if statistic >= observed - 1e-9 else 0.0
    assert result.p_value == pytest.approx(exact, abs=0.01)
    assert homogeneity(successes, n, seed=1) == result
    assert homogeneity(successes, n, exact=False).method == "chi-square"


def test_cochran_q_against_a_hand_computed_case_and_mcnemar():
    # 3 candidates x 4 items. Candidate totals 4, 2, 1 (T = 7); item totals 2, 1, 3, 1.
    # Q = (k-1)(k sum C^2 - T^2) / (k T - sum R^2) = 2 (63 - 49) / (21 - 15) = 14/3; p = exp(-Q/2) (2 dof).
    hits = np.array([[1, 1, 1, 1], [1, 0, 1, 0], [0, 0, 1, 0]], dtype=bool)
    result = cochran_q(hits)
    assert (result.statistic, result.dof) == (pytest.approx(14 / 3), 2)
    assert result.p_value == pytest.approx(math.exp(-7 / 3))
    # For two candidates Q is McNemar's chi-square (b - c)^2 / (b + c).
    a, b = _pair(both=20, only_a=1, only_b=5, neither=10)
    assert cochran_q(np.stack([a, b])).statistic == pytest.approx(16 / 6)
    assert cochran_q(np.stack([a, a])).p_value == 1.0


# -- storage -------------------------------------------------------------------------------------------


def test_pack_hits_is_one_bit_an_item_in_base64():
    assert pack_hits([True, False, True]) == "oA=="  # 0b10100000 = 0xA0
    hits = np.random.default_rng(0).random(401) < 0.5
    packed = pack_hits(hits)
    assert len(packed) == 4 * math.ceil(51 / 3)  # 51 bytes
    assert np.array_equal(unpack_hits(packed, 401), hits)
    assert unpack_hits(pack_hits([]), 0).shape == (0,)
    with pytest.raises(ValueError, match="need"):
        unpack_hits(packed, 500)
    with pytest.raises(ValueError, match="one-dimensional"):
        pack_hits(np.ones((2, 2), dtype=bool))
