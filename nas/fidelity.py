"""Does a cheap measurement rank candidates as the expensive one does?

Every multi-fidelity search bets that an early rung (or a smaller resolution, or a score computed at
initialisation) orders candidates as the full budget would; this module measures the bet on a study's own
results. For each pair (cheap, expensive), on the candidates measured at both:

- Spearman's rho and Kendall's tau-b, each with a percentile bootstrap interval over candidates (seeded):
  with a dozen candidates a rank correlation is itself noisy, and the interval says how much. Below
  `MIN_CANDIDATES` no interval is given: the pair says "too few candidates" with the exact permutation p-value;
  and an interval is never of zero width (a perfect ranking of six candidates is not a certainty);
- the top-k overlap: the share of the expensive top k (k a fraction of the candidates) that the cheap top k
  also holds;
- the promotions that would change: successive halving keeps the top 1/reduction_factor at a rung; of the
  candidates the cheap ranking keeps, how many would the expensive one not keep. (ASHA decides
  asynchronously, on the results in so far; this is the decision with all of them in.)
- for a cheap budget whose eval-set size is known, whether its candidates can be told apart at all
  (`nas.uncertainty.homogeneity`): a ranking the test cannot tell from noise promotes at random.

Accuracies on a few hundred images tie often. Ties are never broken by row order: a candidate tied at the
cut-off is kept with the probability a random tie-break gives it, so overlap and changed promotions are
expectations over tie-breaks (a cheap measurement that ties everyone scores as a random one).

Against a tabular benchmark's truth (a candidate's mean over its seeds), `table_agreement` gives Spearman and
Kendall with intervals that hold the table's own uncertainty: every bootstrap draw resamples the candidates and
each one's seeds (`table_draws`), and the same on the table's top 10 % by truth (`benchmarks/tabular.py
--fidelity`, `benchmarks/supernet.py`):

    agreement = table_agreement(runs, "score", "truth")   # a row per (candidate, seed) run; .spearman_low ...

Inputs are pandas frames with one row per (arch_id, fidelity), as `ResultStore.frame()` returns (an arch
measured twice at one fidelity keeps its first row); everything else is numpy. `study_fidelity(store)` runs it
on a study: its rungs, and the size and zero-cost scores of its candidates (`vitamin-nas fidelity RUN`).
"""

from __future__ import annotations

import itertools
import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
from scipy import stats

from nas import metrics, status
from nas.arch import Arch
from nas.errors import ConfigError
from nas.metrics import ZERO_COST
from nas.tables import format_table
from nas.uncertainty import N_BOOTSTRAP, homogeneity

if TYPE_CHECKING:
    from nas.results import ResultStore

#: Resampled candidate pairs held at once by Kendall's tau (bounds memory on large studies).
_CHUNK_PAIRS = 4_000_000
_DIRECTIONS = ("max", "min")

#: Fewer candidates than this get no interval on a rank correlation, only the exact permutation p-value. At 4 no
#: ranking reaches p < 0.05 (a perfect one: 2/24, two-sided), at 5 only a perfect one does (2/120), and a
#: bootstrap resample of 5 holds 3.4 distinct candidates on average, so its percentiles describe 3 or 4 points;
#: 6 is the first size where the test can reject with a swap (p = 0.017) and a resample holds 4 distinct ones.
#: Measured on 400 bivariate-normal samples each (Spearman 0.89): the percentile bootstrap alone covers 75 % at 5
#: candidates (a quarter of its intervals of zero width), 87 % at 6, 96 % at 8; widened to the Fisher-z interval
#: (`bootstrap_correlation`) it covers 99.5 % or more at 6 to 12 (98.5 % or more at Spearman 0.48).
MIN_CANDIDATES = 6


@dataclass(frozen=True)
class FidelityRow:
    """How well `cheap` (a budget, or a score column) ranks `candidates` as the budget `expensive` does."""

    cheap: int | float | str
    expensive: int | float
    candidates: int
    spearman: float
    spearman_low: float
    spearman_high: float
    kendall: float
    kendall_low: float
    kendall_high: float
    top_k: int                  # ceil(top_fraction x candidates), at least 1
    top_overlap: float          # expected share of the expensive top k in the cheap top k
    promoted: int               # how many the cheap ranking promotes (1/reduction_factor, at least 1)
    changed_promotions: float   # expected number of those the expensive ranking would not promote
    noise_p_value: float | None = None  # homogeneity of the cheap measurement; None for a score or unknown n
    spearman_p: float | None = None  # exact permutation p-values, below MIN_CANDIDATES (no interval there)
    kendall_p: float | None = None

    @property
    def too_few(self) -> bool:
        return self.candidates < MIN_CANDIDATES


def spearman(cheap: np.ndarray, expensive: np.ndarray) -> np.ndarray:
    """Spearman's rho of each row pair (average ranks for ties); NaN where a row is constant."""
    ranks_x = stats.rankdata(np.atleast_2d(cheap), axis=-1)
    ranks_y = stats.rankdata(np.atleast_2d(expensive), axis=-1)
    x = ranks_x - ranks_x.mean(axis=-1, keepdims=True)
    y = ranks_y - ranks_y.mean(axis=-1, keepdims=True)
    with np.errstate(divide="ignore", invalid="ignore"):
        return (x * y).sum(axis=-1) / np.sqrt((x * x).sum(axis=-1) * (y * y).sum(axis=-1))


def _signs(values: np.ndarray) -> np.ndarray:
    """sign(v_i - v_j) for every pair of each row, as int8 (a quarter of the memory of floats)."""
    above = values[:, :, None] > values[:, None, :]
    below = values[:, :, None] < values[:, None, :]
    return above.view(np.int8) - below.view(np.int8)


def kendall(cheap: np.ndarray, expensive: np.ndarray) -> np.ndarray:
    """Kendall's tau-b of each row pair (pairs tied on one side count on neither); NaN where a row is constant."""
    x, y = np.atleast_2d(cheap).astype(float), np.atleast_2d(expensive).astype(float)
    out = np.empty(len(x))
    chunk = max(1, _CHUNK_PAIRS // max(1, x.shape[1] ** 2))
    for start in range(0, len(x), chunk):
        sx, sy = _signs(x[start:start + chunk]), _signs(y[start:start + chunk])
        concordance = np.einsum("bij,bij->b", sx, sy, dtype=np.int64)
        with np.errstate(divide="ignore", invalid="ignore"):
            out[start:start + chunk] = concordance / np.sqrt(
                np.count_nonzero(sx, axis=(1, 2)) * np.count_nonzero(sy, axis=(1, 2)).astype(float))
    return out


_CORRELATIONS = {"spearman": spearman, "kendall": kendall}


def _correlation(method: str):
    correlation = _CORRELATIONS.get(method)
    if correlation is None:
        raise ConfigError(f"unknown method {method!r}; allowed: kendall, spearman", field="method")
    return correlation


def permutation_p(cheap: Sequence[float], expensive: Sequence[float], method: str = "spearman") -> float:
    """Exact two-sided permutation p-value of a rank correlation: the share of the n! orderings of `expensive`
    whose correlation with `cheap` is at least as far from 0 as the one observed (ties kept as they are). For
    the few candidates that get no interval (n! rows: at most 9 candidates)."""
    correlation = _correlation(method)
    x, y = np.asarray(cheap, dtype=float), np.asarray(expensive, dtype=float)
    if len(x) > 9:
        raise ValueError("an exact permutation p-value enumerates n! orderings: at most 9 candidates")
    value = float(correlation(x, y)[0])
    if math.isnan(value):
        return math.nan
    orders = np.array(list(itertools.permutations(range(len(y)))))
    permuted = correlation(np.broadcast_to(x, orders.shape), y[orders])
    return float(np.mean(np.abs(permuted) >= abs(value) - 1e-12))


def _one_swap(method: str, n: int) -> float:
    """The correlation of a ranking with one adjacent pair swapped: the closest a rank correlation on n
    candidates gets to a perfect 1 short of it."""
    return 1 - 12 / (n**3 - n) if method == "spearman" else 1 - 4 / (n * (n - 1))


def _fisher_interval(value: float, method: str, n: int, level: float) -> tuple[float, float]:
    """The Fisher-z interval of a rank correlation (variance (1 + r^2 / 2) / (n - 3) for Spearman, Bonett and
    Wright 2000; 0.437 / (n - 4) for Kendall, Fieller et al. 1957), |r| capped at the one-swap value so that a
    perfect ranking keeps a width."""
    r = float(np.clip(value, -_one_swap(method, n), _one_swap(method, n)))
    var = (1 + r * r / 2) / (n - 3) if method == "spearman" else 0.437 / (n - 4)
    half = stats.norm.ppf((1 + level) / 2) * math.sqrt(var)
    return math.tanh(math.atanh(r) - half), math.tanh(math.atanh(r) + half)


def bootstrap_correlation(cheap: Sequence[float], expensive: Sequence[float], method: str = "spearman", *,
                          n_bootstrap: int = N_BOOTSTRAP, seed: int = 0,
                          level: float = 0.95) -> tuple[float, float, float]:
    """A rank correlation and its interval: the percentile bootstrap over candidates (resampled with
    replacement, seeded; resamples in which one side is constant have no correlation and are left out), widened
    to hold the Fisher-z interval, so that it never has zero width (every resample of a perfect ranking is
    perfect). NaN for the interval below `MIN_CANDIDATES` (`permutation_p` then says what the data hold), and
    throughout when the data themselves have no correlation."""
    correlation = _correlation(method)
    x, y = np.asarray(cheap, dtype=float), np.asarray(expensive, dtype=float)
    value = float(correlation(x, y)[0])
    if math.isnan(value) or len(x) < MIN_CANDIDATES:
        return value, math.nan, math.nan
    drawn = np.random.default_rng(seed).integers(0, len(x), size=(n_bootstrap, len(x)))
    return value, *_widened(value, correlation(x[drawn], y[drawn]), method, len(x), level)


def _widened(value: float, draws: np.ndarray, method: str, n: int, level: float) -> tuple[float, float]:
    """The percentile interval of bootstrap `draws` of a rank correlation `value` on n candidates (draws with no
    correlation left out), widened to hold the Fisher-z interval and the value itself (redrawn noise only ever
    lowers a perfect ranking's correlation, so its draws can all lie below it)."""
    draws = draws[np.isfinite(draws)]
    low, high = np.quantile(draws, [(1 - level) / 2, (1 + level) / 2])
    fisher_low, fisher_high = _fisher_interval(value, method, n, level)
    return _holding(value, (min(low, fisher_low), max(high, fisher_high)))


def kept(values: Sequence[float], k: int) -> np.ndarray:
    """Each candidate's probability of being among the k highest `values` when ties at the cut-off are
    broken at random: 1 above the k-th value, 0 below, (places left) / (tied) at it."""
    values = np.asarray(values, dtype=float)
    if k <= 0:
        return np.zeros(len(values))
    if k >= len(values):
        return np.ones(len(values))
    cut = np.sort(values)[::-1][k - 1]
    above, tied = values > cut, values == cut
    return np.where(above, 1.0, np.where(tied, (k - above.sum()) / tied.sum(), 0.0))


def top_overlap(cheap: Sequence[float], expensive: Sequence[float], k: int) -> float:
    """Expected share of the expensive top k that the cheap top k holds (1: the same set; k/n: chance)."""
    return float((kept(cheap, k) * kept(expensive, k)).sum() / k)


def promotions(candidates: int, reduction_factor: float) -> int:
    """How many of `candidates` a rung promotes: the top 1/reduction_factor, at least one."""
    return max(1, int(candidates // reduction_factor))


def changed_promotions(cheap: Sequence[float], expensive: Sequence[float], reduction_factor: float) -> float:
    """Expected number of candidates the cheap ranking promotes that the expensive ranking would not."""
    k = promotions(len(cheap), reduction_factor)
    return float((kept(cheap, k) * (1 - kept(expensive, k))).sum())


def compare(cheap: Sequence[float], expensive: Sequence[float], *, cheap_label: int | float | str,
            expensive_label: int | float, top_fraction: float = 1 / 3, reduction_factor: float = 3,
            n_bootstrap: int = N_BOOTSTRAP, seed: int = 0, level: float = 0.95,
            noise_p_value: float | None = None, agreement: Agreement | None = None) -> FidelityRow:
    """One pair's row; both sides are aligned per candidate, higher meaning better (or predicted better). With
    `agreement` (`table_agreement` of the same pair), its Spearman and Kendall with their table-level intervals
    stand in for the bootstrap over candidates."""
    x, y = np.asarray(cheap, dtype=float), np.asarray(expensive, dtype=float)
    if x.shape != y.shape or x.ndim != 1:
        raise ValueError("cheap and expensive must be 1-D and aligned per candidate")
    if agreement is None:
        rho = bootstrap_correlation(x, y, "spearman", n_bootstrap=n_bootstrap, seed=seed, level=level)
        tau = bootstrap_correlation(x, y, "kendall", n_bootstrap=n_bootstrap, seed=seed, level=level)
    else:
        rho = agreement.spearman, agreement.spearman_low, agreement.spearman_high
        tau = agreement.kendall, agreement.kendall_low, agreement.kendall_high
    exact = ((permutation_p(x, y, "spearman"), permutation_p(x, y, "kendall")) if len(x) < MIN_CANDIDATES
             else (None, None))
    top_k = max(1, math.ceil(top_fraction * len(x)))
    return FidelityRow(cheap_label, expensive_label, len(x), *rho, *tau, top_k, top_overlap(x, y, top_k),
                       promotions(len(x), reduction_factor), changed_promotions(x, y, reduction_factor),
                       noise_p_value, *exact)


# ---- agreement with a table's truth, with the table's own uncertainty --------------------------------------------

#: The share of a table's candidates, best by truth, on which `table_agreement` also ranks.
TOP_FRACTION = 0.1


@dataclass(frozen=True)
class Agreement:
    """How a score ranks a table's candidates against their truth (each a mean over its runs), with 95 %
    intervals over redrawn tables (`table_agreement`): on every candidate, and on the `top_k` best by truth."""

    candidates: int
    repeated: int          # candidates with two or more runs: their runs are redrawn
    parametric: int        # candidates with one run whose truth was drawn with `seed_sd` (0 without it)
    spearman: float
    spearman_low: float
    spearman_high: float
    kendall: float
    kendall_low: float
    kendall_high: float
    top_k: int
    top_spearman: float
    top_spearman_low: float
    top_spearman_high: float
    top_kendall: float
    top_kendall_low: float
    top_kendall_high: float


def table_draws(groups: Sequence[np.ndarray], n_bootstrap: int = N_BOOTSTRAP, seed: int = 0, *,
                candidates: bool = True, seed_sd: float | None = None) -> np.ndarray:
    """Redrawn tables: `groups[c]` holds candidate c's runs, one row each, its columns what is averaged over
    them (column 0 the truth). Each of the `n_bootstrap` draws resamples the candidates with replacement (with
    `candidates`; else keeps them in order) and, for each drawn candidate, its runs with replacement, as many as
    it has, and averages their columns: an array (draws, candidates, columns). A candidate with one run keeps
    it; with `seed_sd`, its truth is drawn as that run plus a normal seed noise of that SD (the parametric term:
    a table's pooled seed spread standing in for the spread its one run cannot show)."""
    counts = np.array([len(g) for g in groups])
    if counts.min(initial=1) < 1:
        raise ValueError("every candidate needs a run")
    n, most, columns = len(groups), int(counts.max()), groups[0].shape[1]
    padded = np.zeros((n, most, columns))
    for index, group in enumerate(groups):
        padded[index, :len(group)] = group
    rng = np.random.default_rng(seed)
    picks = rng.integers(0, n, size=(n_bootstrap, n)) if candidates else np.broadcast_to(np.arange(n), (n_bootstrap, n))
    k = counts[picks]
    runs = np.minimum((rng.random((n_bootstrap, n, most)) * k[..., None]).astype(int), k[..., None] - 1)
    kept = (np.arange(most) < k[..., None])[..., None]
    means = np.where(kept, padded[picks[..., None], runs], 0.0).sum(axis=2) / k[..., None]
    if seed_sd:
        means[..., 0] += np.where(k == 1, rng.standard_normal(k.shape) * seed_sd, 0.0)
    return means


def _holding(value: float, interval: Sequence[float]) -> tuple[float, float]:
    return float(min(interval[0], value)), float(max(interval[1], value))


def table_agreement(runs: pd.DataFrame, score: str, truth: str, *, candidate: str = "candidate_id",
                    top_fraction: float = TOP_FRACTION, seed_sd: float | None = None,
                    n_bootstrap: int = N_BOOTSTRAP, seed: int = 0, level: float = 0.95) -> Agreement:
    """Spearman and Kendall between a score and a table's truth, with intervals that hold the table's own
    uncertainty, on every candidate and on the best `top_fraction` (at least one) by truth.

    `runs` has a row per run (candidate, seed) with its `truth` (the full budget's measurement) and its `score`:
    the run's own (an earlier rung of the same run: paired) or the candidate's (a proxy), repeated. A
    candidate's truth and score are their means over its runs; rows missing either are left out. The interval on
    every candidate redraws the candidates and each one's runs (`table_draws`), percentile, widened to hold the
    Fisher-z interval as `bootstrap_correlation`'s (so it never has zero width; where every candidate's runs
    agree it is the bootstrap over candidates alone); none below `MIN_CANDIDATES`. The top's redraws keep the
    candidates and redraw their runs, the top taken again in each draw by its redrawn truth: the interval is
    the table's seed noise alone (the top 10 % of a table is a handful of candidates), percentile, none below
    three. Every interval holds the value itself. `seed_sd` adds the parametric term of `table_draws` for
    candidates with one run."""
    frame = runs.dropna(subset=[score, truth])
    groups = [group[[truth, score]].to_numpy(dtype=float) for _, group in frame.groupby(candidate, sort=True)]
    if len(groups) < 2:
        raise ConfigError(f"{len(groups)} candidate(s) with both {truth} and {score}: nothing to rank",
                          field=score)
    means = np.array([group.mean(axis=0) for group in groups])
    n, k = len(groups), max(1, math.ceil(top_fraction * len(groups) - 1e-9))
    top = np.argsort(-means[:, 0], kind="stable")[:k]
    everyone = table_draws(groups, n_bootstrap, seed, seed_sd=seed_sd)
    seeds_only = table_draws(groups, n_bootstrap, seed + 1, candidates=False, seed_sd=seed_sd)
    order = np.argsort(-seeds_only[..., 0], axis=1, kind="stable")[:, :k]
    tops = np.take_along_axis(seeds_only, order[..., None], axis=1)
    found = []
    for method in ("spearman", "kendall"):
        correlation = _correlation(method)
        value = float(correlation(means[:, 1], means[:, 0])[0])
        interval = ((math.nan, math.nan) if math.isnan(value) or n < MIN_CANDIDATES else
                    _widened(value, correlation(everyone[..., 1], everyone[..., 0]), method, n, level))
        found.append((value, *interval))
    for method in ("spearman", "kendall"):
        correlation = _correlation(method)
        value = float(correlation(means[top, 1], means[top, 0])[0]) if k >= 2 else math.nan
        draws = correlation(tops[..., 1], tops[..., 0]) if k >= 2 else np.array([math.nan])
        draws = draws[np.isfinite(draws)]
        interval = ((math.nan, math.nan) if math.isnan(value) or k < 3 or not len(draws) else
                    _holding(value, np.quantile(draws, [(1 - level) / 2, (1 + level) / 2])))
        found.append((value, *interval))
    repeated = sum(len(group) > 1 for group in groups)
    parametric = n - repeated if seed_sd else 0
    (rho, tau, top_rho, top_tau) = found
    return Agreement(n, repeated, parametric, *rho, *tau, k, *top_rho, *top_tau)


def _directions(scores: Sequence[str] | Mapping[str, str]) -> dict[str, str]:
    directions = dict(scores) if isinstance(scores, Mapping) else dict.fromkeys(scores, "max")
    for name, direction in directions.items():
        if direction not in _DIRECTIONS:
            raise ConfigError(f"direction {direction!r} of score {name!r}; allowed: max, min", field="scores")
    return directions


def _require(frame: pd.DataFrame, columns: Sequence[str], field: str) -> None:
    missing = [c for c in columns if c not in frame.columns]
    if missing:
        raise ConfigError(f"no column {', '.join(map(repr, missing))} in the results; "
                          f"columns: {', '.join(map(str, frame.columns))}", field=field)


def fidelity_table(frame: pd.DataFrame, metric: str, *, fidelity: str = "budget", mode: str = "max",
                   scores: Sequence[str] | Mapping[str, str] = (), n_column: str | None = None,
                   top_fraction: float = 1 / 3, reduction_factor: float = 3, min_candidates: int = 3,
                   n_bootstrap: int = N_BOOTSTRAP, seed: int = 0, level: float = 0.95) -> list[FidelityRow]:
    """Every pair of fidelities (each against every larger one), then every score against every fidelity.

    `frame` has a row per (arch_id, `fidelity`) with `metric` (`mode` "max" or "min"); `scores` are
    per-arch columns (params, GMACs, zero-cost proxies), each predicting better when higher (a sequence)
    or in the direction given ({"gmacs": "max"}). With `n_column` (by default f"{metric}_n" when the frame
    has it) each budget pair also tests whether the cheap budget's candidates differ at all. Pairs with
    fewer than `min_candidates` common candidates are left out: their correlation says nothing.
    """
    if mode not in _DIRECTIONS:
        raise ConfigError(f"unknown mode {mode!r}; allowed: max, min", field="mode")
    directions = _directions(scores)
    if n_column is None and f"{metric}_n" in frame.columns:
        n_column = f"{metric}_n"
    _require(frame, ["arch_id"], "arch_id")
    _require(frame, [fidelity], "fidelity")
    _require(frame, [metric], "metric")
    _require(frame, list(directions), "scores")
    if n_column:
        _require(frame, [n_column], "n_column")
    measured = frame.dropna(subset=[metric]).drop_duplicates(["arch_id", fidelity], keep="first")
    sign = 1.0 if mode == "max" else -1.0
    wide = measured.pivot(index="arch_id", columns=fidelity, values=metric).astype(float) * sign
    sizes = measured.pivot(index="arch_id", columns=fidelity, values=n_column) if n_column else None
    levels = sorted(wide.columns)
    options = dict(top_fraction=top_fraction, reduction_factor=reduction_factor, n_bootstrap=n_bootstrap,
                   seed=seed, level=level)
    rows = []
    for index, cheap in enumerate(levels):
        for expensive in levels[index + 1:]:
            both = wide[[cheap, expensive]].dropna()
            if len(both) < min_candidates:
                continue
            noise = None
            if sizes is not None:
                n = sizes.loc[both.index, cheap].to_numpy(dtype=float)
                if np.all(np.isfinite(n)):
                    successes = np.rint(sign * both[cheap].to_numpy() * n)
                    noise = homogeneity(successes, n, seed=seed).p_value
            rows.append(compare(both[cheap], both[expensive], cheap_label=cheap, expensive_label=expensive,
                                noise_p_value=noise, **options))
    per_arch = frame.drop_duplicates("arch_id", keep="first").set_index("arch_id")
    for score, direction in directions.items():
        predicted = per_arch[score].astype(float) * (1.0 if direction == "max" else -1.0)
        for expensive in levels:
            both = pd.concat([predicted, wide[expensive]], axis=1, join="inner").dropna()
            if len(both) < min_candidates:
                continue
            rows.append(compare(both.iloc[:, 0], both.iloc[:, 1], cheap_label=score, expensive_label=expensive,
                                **options))
    return rows


def _number(value: float) -> str:
    return "n/a" if value is None or math.isnan(value) else f"{value:.2f}"


def format_correlation(value: float, low: float, high: float, candidates: int | None = None,
                       p_value: float | None = None) -> str:
    """'0.83 [0.40, 0.97] (12 candidates)', the interval rounded outward (a width never prints as none); below
    `MIN_CANDIDATES` (`p_value` given), '1.00, too few candidates (4): exact permutation p = 0.083', or in a
    table (no `candidates`) '1.00 (too few; exact p = 0.083)'; 'n/a' where a side was constant."""
    if p_value is not None and not math.isnan(value):
        if candidates is None:
            return f"{_number(value)} (too few; exact p = {p_value:.2g})"
        return f"{_number(value)}, too few candidates ({candidates}): exact permutation p = {p_value:.2g}"
    bounded = not (math.isnan(value) or math.isnan(low))
    outward = f"[{math.floor(low * 100 + 1e-9) / 100:.2f}, {math.ceil(high * 100 - 1e-9) / 100:.2f}]" if bounded else ""
    text = f"{_number(value)} {outward}" if bounded else _number(value)
    return text if candidates is None else f"{text} ({candidates} candidates)"


def _fidelity_label(value: int | float | str) -> str:
    if isinstance(value, str):
        return value
    return f"{int(value):,}" if float(value).is_integer() else f"{value:g}"


def _count(value: float) -> str:
    """An expected count to one decimal, whole numbers without one: '2', '1.5'."""
    return f"{value:.1f}".removesuffix(".0")


def fidelity_line(row: FidelityRow, alpha: float = 0.05) -> str:
    """One sentence per pair, for a search's or a report's summary."""
    rho = format_correlation(row.spearman, row.spearman_low, row.spearman_high, row.candidates, row.spearman_p)
    line = (f"{_fidelity_label(row.cheap)} -> {_fidelity_label(row.expensive)}: Spearman {rho}, "
            f"{_count(row.changed_promotions)} of {row.promoted} promotions would change")
    if row.noise_p_value is not None and row.noise_p_value > alpha:
        line += f"; the cheap ranking cannot be told from noise (p = {row.noise_p_value:.2f})"
    return line


def format_fidelity(rows: Sequence[FidelityRow]) -> str:
    """The table of `fidelity_table`, one line per pair."""
    headers = ("cheap", "expensive", "candidates", "spearman [95 %]", "kendall [95 %]", "top-k overlap",
               "changed promotions", "noise p")
    cells = [[_fidelity_label(r.cheap), _fidelity_label(r.expensive), r.candidates,
              format_correlation(r.spearman, r.spearman_low, r.spearman_high, p_value=r.spearman_p),
              format_correlation(r.kendall, r.kendall_low, r.kendall_high, p_value=r.kendall_p),
              f"{r.top_overlap:.2f} (top {r.top_k})", f"{_count(r.changed_promotions)} of {r.promoted}",
              "-" if r.noise_p_value is None else f"{r.noise_p_value:.3f}"] for r in rows]
    return format_table(headers, cells)


#: What a study's cheap predictors are, besides its earlier rungs: the analytic size, and the zero-cost proxies.
SIZE_SCORES = {"image_params_m": "max", "image_gmacs": "max"}


def study_fidelity(store: ResultStore, metric: str = "zeroshot_top1", proxies: Sequence[str] | None = ZERO_COST,
                   progress: bool = False, supernet: str | os.PathLike | None = None, **options) -> list[FidelityRow]:
    """`fidelity_table` of a study's results: every rung against every later one, then the image tower's
    parameters and GMACs (larger predicting better) and the zero-cost `proxies` (computed here for every arch
    the study measured, unless the study already scored them: a second or so per small tower, much more for deep
    ones) against every rung. `proxies=None`: only those the study scored. With `supernet` (a `vitamin-nas
    supernet train` run directory), also the zero-shot top-1 every measured arch that is one of its subnets gets
    with inherited weights on the study's zero-shot set (`metrics.SUPERNET`); without it, the scores a study with a
    `proxy` stored with its trials, when it has them."""
    study = store.study()
    frame = store.frame(status=status.MEASURED).dropna(subset=[metric])
    if frame.empty:
        return []
    archs = frame.drop_duplicates("arch_id").set_index("arch_id").arch
    if proxies is None:
        proxies = [p for p in ZERO_COST if p in frame and frame[p].notna().all()]
    missing = [p for p in proxies if p not in frame or frame[p].isna().any()]
    if missing:  # torch: only where scores are computed
        from tqdm import tqdm

        from nas.proxies import zero_cost_scores

        scores = {arch_id: zero_cost_scores(Arch.from_json(text), names=tuple(missing))
                  for arch_id, text in tqdm(archs.items(), total=len(archs), desc="zero-cost proxies",
                                            unit="arch", disable=not progress)}
        frame = frame.assign(**{p: frame.arch_id.map(lambda a, p=p: scores[a][p]) for p in missing})
    predictors = {**SIZE_SCORES, **{p: "max" for p in proxies}}
    if supernet is not None:
        from nas.supernet.rank import inherited_scores, study_scorer

        inherited = inherited_scores(study_scorer(study, supernet), map(Arch.from_json, archs))
        frame = frame.assign(**{metrics.SUPERNET: frame.arch_id.map(
            {arch_id: score[metrics.SUPERNET] for arch_id, score in inherited.items()})})
    if frame[metrics.SUPERNET].notna().any():  # computed here, or the study's `proxy` scored its trials
        predictors[metrics.SUPERNET] = "max"
    return fidelity_table(frame, metric, mode=metrics.direction(metric), scores=predictors,
                          reduction_factor=study.budget.reduction_factor, **options)
