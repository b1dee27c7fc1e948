"""How far a measured accuracy can be trusted: intervals, paired tests, chance, and noise in a ranking.

An accuracy measured on n eval items is a binomial proportion, and at the sizes a search can afford (a few
hundred images) one image is a quarter of a point; every comparison the toolkit makes (a leaderboard, a
Pareto front, an ASHA promotion) has to be read against that noise.

- `wilson_interval`: the score interval for a proportion (Wilson 1927), which, unlike the normal (Wald)
  interval, stays inside [0, 1] and does not collapse to a point at 0 or n successes.
- `bootstrap_recall_interval`: text-to-image recall is a mean over captions, but captions of one image are
  not independent draws, so images are resampled, each with all its captions (a cluster bootstrap).
- `mcnemar`, `tied_with_best`: two models scored on the same items are compared on the items where they
  disagree (exact binomial McNemar), which is far more sensitive than comparing two intervals.
- `above_chance`: whether a result is distinguishable from guessing (one-sided exact binomial test).
- `homogeneity`, `cochran_q`: whether a rung's candidates differ at all, or their ranking is noise.
- `pack_hits`, `unpack_hits`: per-item hits as short text, for the results database.
"""

from __future__ import annotations

import base64
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy import stats

from nas.errors import ConfigError

#: Resamples of a bootstrap interval: the 2.5 % and 97.5 % quantiles rest on 50 resamples each.
N_BOOTSTRAP = 2000
#: Resampled items gathered at once (bounds a bootstrap's memory on large eval sets).
_CHUNK_ITEMS = 4_000_000
#: Below this expected count in a cell, Pearson's chi-square is not trusted (Cochran's rule).
MIN_EXPECTED = 5.0


def _check_level(level: float) -> None:
    if not 0.0 < level < 1.0:
        raise ConfigError(f"must lie strictly between 0 and 1, got {level!r}", field="level")


def _scalar_or_array(value: np.ndarray) -> Any:
    return float(value) if np.ndim(value) == 0 else value


def wilson_interval(successes: Any, n: Any, level: float = 0.95) -> tuple[Any, Any]:
    """Wilson score interval of successes/n (floats for scalars, arrays for arrays); [0, 1] when n is 0."""
    _check_level(level)
    successes, n = np.asarray(successes, dtype=float), np.asarray(n, dtype=float)
    if np.any(n < 0) or np.any(successes < 0) or np.any(successes > n):
        raise ValueError(f"need 0 <= successes <= n, got successes={successes}, n={n}")
    z = stats.norm.ppf(0.5 + level / 2)
    with np.errstate(divide="ignore", invalid="ignore"):
        p = successes / n
        denominator = 1 + z**2 / n
        centre = (p + z**2 / (2 * n)) / denominator
        half = z / denominator * np.sqrt(p * (1 - p) / n + z**2 / (4 * n**2))
        low = np.where(n > 0, np.clip(centre - half, 0.0, 1.0), 0.0)
        high = np.where(n > 0, np.clip(centre + half, 0.0, 1.0), 1.0)
    # At 0 (or n) successes the bound is exactly 0 (or 1); rounding must not move it.
    low, high = np.where(successes == 0, 0.0, low), np.where(successes == n, 1.0, high)
    return _scalar_or_array(low), _scalar_or_array(high)


def bootstrap_recall_interval(hits: Any, images: Any, *, level: float = 0.95, n_bootstrap: int = N_BOOTSTRAP,
                              seed: int = 0) -> tuple[float, float]:
    """Percentile interval of the recall `mean(hits)` when item t belongs to image `images[t]`: images are
    resampled with replacement, each with all its items, so captions of one image count as one draw.

    With every item a hit (or none), resampling has nothing to vary and would give a point; then the
    Wilson interval over the images is returned, the count of independent draws the data rests on.
    """
    _check_level(level)
    hits = np.asarray(hits, dtype=bool).ravel()
    images = np.asarray(images).ravel()
    if len(hits) != len(images):
        raise ValueError(f"{len(hits)} hits but {len(images)} image indices")
    if len(hits) == 0:
        return 0.0, 1.0
    _, owner = np.unique(images, return_inverse=True)
    per_image_hits = np.bincount(owner, weights=hits)
    per_image_items = np.bincount(owner).astype(float)
    n_images = len(per_image_items)
    if hits.all() or not hits.any():
        return wilson_interval(n_images if hits.all() else 0, n_images, level)
    rng = np.random.default_rng(seed)
    recalls = []
    chunk = max(1, _CHUNK_ITEMS // n_images)
    for start in range(0, n_bootstrap, chunk):
        drawn = rng.integers(0, n_images, size=(min(chunk, n_bootstrap - start), n_images))
        recalls.append(per_image_hits[drawn].sum(axis=1) / per_image_items[drawn].sum(axis=1))
    low, high = np.quantile(np.concatenate(recalls), [(1 - level) / 2, (1 + level) / 2])
    return float(low), float(high)


def _paired(hits_a: Any, hits_b: Any) -> tuple[np.ndarray, np.ndarray]:
    a, b = np.asarray(hits_a, dtype=bool).ravel(), np.asarray(hits_b, dtype=bool).ravel()
    if a.shape != b.shape:
        raise ValueError(f"paired hits must score the same items: {len(a)} against {len(b)}")
    return a, b


def mcnemar(hits_a: Any, hits_b: Any) -> float:
    """Two-sided exact McNemar p-value: of the items exactly one model gets right, is the split 50/50?
    Items both get right or both miss say nothing about which model is better. 1.0 when none disagree."""
    a, b = _paired(hits_a, hits_b)
    only_a, only_b = int(np.count_nonzero(a & ~b)), int(np.count_nonzero(~a & b))
    if only_a + only_b == 0:
        return 1.0
    return float(stats.binomtest(only_a, only_a + only_b, 0.5).pvalue)


@dataclass(frozen=True)
class PairedDifference:
    """How much better model A scores than model B on the same items: the difference of their accuracies, its
    interval (Wald, for paired proportions: var = (b + c - (b - c)^2 / n) / n^2 with b, c the items only A, only
    B gets right) and McNemar's exact p-value. `significant` when the test rejects at alpha."""

    difference: float
    low: float
    high: float
    p_value: float
    n: int

    def significant(self, alpha: float = 0.05) -> bool:
        return self.p_value <= alpha


def paired_difference(hits_a: Any, hits_b: Any, level: float = 0.95) -> PairedDifference:
    """A's accuracy minus B's on the same items, with its interval and McNemar's p-value."""
    _check_level(level)
    a, b = _paired(hits_a, hits_b)
    n = len(a)
    only_a, only_b = int(np.count_nonzero(a & ~b)), int(np.count_nonzero(~a & b))
    difference = (only_a - only_b) / n if n else float("nan")
    se = np.sqrt(max(only_a + only_b - (only_a - only_b) ** 2 / n, 0.0)) / n if n else float("nan")
    z = stats.norm.ppf(0.5 + level / 2)
    return PairedDifference(difference, difference - z * se, difference + z * se, mcnemar(a, b), n)


def holm_rejects(p_values: Sequence[float], alpha: float = 0.05) -> list[bool]:
    """Holm's step-down: which of several hypotheses are rejected with the family-wise error held at alpha."""
    order = np.argsort(p_values, kind="stable")
    rejected = [False] * len(p_values)
    for rank, index in enumerate(order):
        if p_values[index] > alpha / (len(p_values) - rank):
            break
        rejected[index] = True
    return rejected


def tied_with_best(hits: Sequence[Any], *, alpha: float = 0.05, correction: str = "holm") -> list[bool | None]:
    """For candidates sorted best first (per-item hits on the same eval items), whether each is tied with
    the first: McNemar against it does not reject at `alpha`. The first is always tied with itself; a
    candidate without hits (None) gets None: unknown.

    `correction` "holm" holds the chance of calling any tie a difference at alpha over all the comparisons
    (a leaderboard makes many); "none" tests each pair at alpha on its own.
    """
    if correction not in ("holm", "none"):
        raise ConfigError(f"unknown correction {correction!r}; allowed: holm, none", field="correction")
    if not hits:
        return []
    if hits[0] is None:
        return [True] + [None] * (len(hits) - 1)
    compared = [i for i in range(1, len(hits)) if hits[i] is not None]
    p_values = [mcnemar(hits[0], hits[i]) for i in compared]
    rejected = holm_rejects(p_values, alpha) if correction == "holm" else [p <= alpha for p in p_values]
    tied: list[bool | None] = [True] + [None] * (len(hits) - 1)
    for index, reject in zip(compared, rejected):
        tied[index] = not reject
    return tied


def chance_p_value(successes: Any, n: Any, chance: float) -> Any:
    """One-sided exact binomial p-value of scoring at least `successes` of `n` by guessing at rate `chance`."""
    if not 0.0 <= chance <= 1.0:
        raise ValueError(f"chance must be a probability, got {chance!r}")
    successes, n = np.asarray(successes), np.asarray(n)
    return _scalar_or_array(stats.binom.sf(successes - 1, n, chance))


def above_chance(successes: Any, n: Any, chance: float, level: float = 0.95) -> Any:
    """Whether `successes` of `n` is more than guessing at rate `chance` explains (one-sided exact binomial
    test at 1 - level); a result that is not can be flagged "at chance"."""
    _check_level(level)
    result = np.asarray(chance_p_value(successes, n, chance)) < 1 - level
    return bool(result) if result.ndim == 0 else result


@dataclass(frozen=True)
class Homogeneity:
    """A test that every candidate has the same accuracy: when it does not reject, the ranking is noise."""

    statistic: float
    dof: int
    p_value: float
    method: str  # "chi-square", "monte-carlo exact" or "cochran-q"

    def distinguishable(self, alpha: float = 0.05) -> bool:
        return self.p_value <= alpha


def _pearson_statistic(successes: np.ndarray, n: np.ndarray) -> np.ndarray:
    """Pearson's chi-square of a 2 x k table (successes, failures per candidate); rows of `successes` are
    separate tables sharing the column totals `n`."""
    rate = successes.sum(axis=-1, keepdims=True) / n.sum()
    expected_hits, expected_misses = rate * n, (1 - rate) * n
    return (((successes - expected_hits) ** 2 / expected_hits)
            + ((n - successes - expected_misses) ** 2 / expected_misses)).sum(axis=-1)


def homogeneity(successes: Sequence[int], n: Sequence[int], *, exact: bool | None = None,
                n_resamples: int = 10_000, seed: int = 0) -> Homogeneity:
    """Test that k candidates (successes of n each) share one accuracy: Pearson's chi-square on the 2 x k
    table, k - 1 degrees of freedom.

    When an expected cell count is under 5 (`exact` None), or `exact` is True, the p-value is the
    conditional exact one, estimated from `n_resamples` tables drawn with the same margins (successes
    spread over the candidates as a multivariate hypergeometric), seeded. The test ignores that candidates
    are scored on the same items; with per-item hits, `cochran_q` uses that pairing.
    """
    successes, n = np.asarray(successes, dtype=float), np.asarray(n, dtype=float)
    if successes.shape != n.shape or successes.ndim != 1:
        raise ValueError("successes and n must be 1-D and of the same length")
    if np.any(successes < 0) or np.any(successes > n):
        raise ValueError(f"need 0 <= successes <= n, got {successes} of {n}")
    keep = n > 0
    successes, n = successes[keep], n[keep]
    total = successes.sum()
    dof = len(n) - 1
    if dof < 1 or total == 0 or total == n.sum():
        return Homogeneity(0.0, max(dof, 0), 1.0, "chi-square")
    statistic = float(_pearson_statistic(successes, n))
    rate = total / n.sum()
    if exact is None:
        exact = bool(min((rate * n).min(), ((1 - rate) * n).min()) < MIN_EXPECTED)
    if not exact:
        return Homogeneity(statistic, dof, float(stats.chi2.sf(statistic, dof)), "chi-square")
    rng = np.random.default_rng(seed)
    tables = rng.multivariate_hypergeometric(n.astype(np.int64), int(total), size=n_resamples)
    as_extreme = np.count_nonzero(_pearson_statistic(tables.astype(float), n) >= statistic * (1 - 1e-12))
    return Homogeneity(statistic, dof, (as_extreme + 1) / (n_resamples + 1), "monte-carlo exact")


def cochran_q(hits: Any) -> Homogeneity:
    """Cochran's Q: do k candidates scored on the same items (`hits`, candidates x items) share one
    accuracy? The paired counterpart of `homogeneity`: items every candidate gets right or every candidate
    misses carry no information, as in McNemar's test (which it equals for k = 2)."""
    hits = np.asarray(hits, dtype=float)
    if hits.ndim != 2:
        raise ValueError("hits must be candidates x items")
    k = hits.shape[0]
    per_candidate, per_item = hits.sum(axis=1), hits.sum(axis=0)
    total = per_candidate.sum()
    denominator = k * total - (per_item**2).sum()
    if k < 2 or denominator == 0:
        return Homogeneity(0.0, max(k - 1, 0), 1.0, "cochran-q")
    statistic = float((k - 1) * (k * (per_candidate**2).sum() - total**2) / denominator)
    return Homogeneity(statistic, k - 1, float(stats.chi2.sf(statistic, k - 1)), "cochran-q")


def pack_hits(hits: Any) -> str:
    """Per-item hits as base64 text, one bit an item (400 images: 68 characters)."""
    hits = np.asarray(hits, dtype=bool)
    if hits.ndim != 1:
        raise ValueError(f"hits must be one-dimensional, got shape {hits.shape}")
    return base64.b64encode(np.packbits(hits).tobytes()).decode("ascii")


def unpack_hits(packed: str, n: int) -> np.ndarray:
    """The `n` per-item hits that `pack_hits` wrote."""
    raw = np.frombuffer(base64.b64decode(packed, validate=True), dtype=np.uint8)
    if len(raw) != (n + 7) // 8:
        raise ValueError(f"packed hits hold {len(raw)} bytes, {n} items need {(n + 7) // 8}")
    return np.unpackbits(raw, count=n).astype(bool)
