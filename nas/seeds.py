"""Seed-level uncertainty: a candidate's value over the seeds it was trained with, and two designs compared seed
by seed.

Training noise (the weights' initialisation and the data order) is larger than eval noise at the sizes a search
affords: in docs/results the median spread between two seeds of one candidate was 2.8 points against a
+-1.5-point eval interval. So wherever a candidate has two or more seeds:

- its value is the mean over seeds, with a Student t interval over the seeds' values (`seed_mean`): each seed's
  value carries its own eval noise, so the spread between seeds holds both, and the interval includes
  seed-to-seed variance. With two seeds it is wide (t = 12.7 on one degree of freedom): that is what two seeds
  can say. It is never narrower than the eval noise of the mean (seeds whose values happen to agree exactly
  give no zero-width interval): the half-width is at least z * sqrt(sum of the seeds' eval variances) / k.
- two designs are compared through their paired per-seed differences (`compare`): design A minus design B
  with the same seed, on the same eval images (a paired difference and McNemar's test per seed,
  `nas.uncertainty.paired_difference`), and a t interval over the seeds' differences. The verdict is
  - "holds": every seed's difference has the same sign and the interval over seeds excludes 0;
  - "seed-dependent": the seeds' differences point different ways and disagree by more than their eval noise
    explains (Cochran's heterogeneity Q over the per-seed differences, weighted by their eval variances,
    rejects at 5 %): which design wins depends on the seed;
  - "not distinguishable": otherwise.
- with one seed the interval covers eval noise only: `compare` says so (`eval_only`), its verdict is "one seed"
  where McNemar rejects (never "holds"), and `seed_spread` gives the study's measured seed-to-seed spread
  (over the candidates it did repeat) to read beside it.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
from scipy import stats

from nas.metrics import EVALUATED, direction
from nas.uncertainty import PairedDifference, paired_difference

HOLDS, SEED_DEPENDENT, NOT_DISTINGUISHABLE, ONE_SEED = "holds", "seed-dependent", "not distinguishable", "one seed"
#: Significance level of the per-seed tests and of the heterogeneity test.
ALPHA = 0.05
#: What one seed's interval covers, said wherever it stands in for a seed-level one.
EVAL_ONLY = "one seed: the interval covers eval noise only"


@dataclass(frozen=True)
class SeedMean:
    """A candidate's value over its seeds: the mean, its interval (a t interval over the seeds; with one seed, the
    eval interval given), the per-seed values and the seeds."""

    mean: float
    low: float
    high: float
    values: tuple[float, ...]
    seeds: tuple[int, ...]

    @property
    def k(self) -> int:
        return len(self.values)

    @property
    def eval_only(self) -> bool:
        return self.k < 2


def seed_mean(values: Sequence[float], seeds: Sequence[int] | None = None, *, eval_interval: tuple[float, float] |
              None = None, level: float = 0.95, bounds: tuple[float, float] | None = (0.0, 1.0),
              eval_halves: Sequence[float] | None = None) -> SeedMean:
    """The mean of per-seed `values` with a t interval over them (clipped to `bounds`: an accuracy stays in [0, 1]),
    never narrower than the seeds' eval intervals (`eval_halves`, each seed's half-width at `level`) allow; with
    one value, `eval_interval` (or none: NaN, unknown)."""
    values = [float(v) for v in values]
    if not values:
        raise ValueError("seed_mean needs at least one seed's value")
    seeds = tuple(int(s) for s in seeds) if seeds is not None else tuple(range(len(values)))
    mean = float(np.mean(values))
    if len(values) == 1:
        low, high = eval_interval if eval_interval is not None else (math.nan, math.nan)
    else:
        half = stats.t.ppf(0.5 + level / 2, len(values) - 1) * np.std(values, ddof=1) / math.sqrt(len(values))
        if eval_halves is not None and len(eval_halves) == len(values):
            half = max(half, math.sqrt(sum(h * h for h in eval_halves)) / len(values))
        low, high = mean - half, mean + half
        if bounds is not None:
            low, high = max(low, bounds[0]), min(high, bounds[1])
    return SeedMean(mean, float(low), float(high), tuple(values), seeds)


@dataclass(frozen=True)
class SeedComparison:
    """Design A minus design B, seed by seed: each seed's paired difference, their mean with its interval (a t
    interval over seeds; with one seed, that seed's eval interval), the heterogeneity test's p-value and the
    verdict."""

    differences: tuple[PairedDifference, ...]
    seeds: tuple[int, ...]
    mean: float
    low: float
    high: float
    heterogeneity_p: float
    verdict: str

    @property
    def eval_only(self) -> bool:
        return len(self.differences) < 2

    def describe(self) -> str:
        """`holds: +3.1 pts [+1.0, +5.2] over 3 seeds (+2.9, +3.5, +2.9)`, or the one-seed form."""
        per_seed = ", ".join(f"{100 * d.difference:+.1f}" for d in self.differences)
        interval = f"{100 * self.mean:+.1f} pts [{100 * self.low:+.1f}, {100 * self.high:+.1f}]"
        if self.eval_only:
            return f"{self.verdict}: {interval} ({EVAL_ONLY})"
        return f"{self.verdict}: {interval} over {len(self.differences)} seeds ({per_seed})"


def _se(difference: PairedDifference, level: float) -> float:
    return (difference.high - difference.low) / (2 * stats.norm.ppf(0.5 + level / 2))


def compare(differences: Mapping[int, PairedDifference], *, alpha: float = ALPHA, level: float = 0.95
            ) -> SeedComparison:
    """The verdict on per-seed paired differences (seed -> A minus B on the same items, `paired_difference`)."""
    if not differences:
        raise ValueError("compare needs at least one seed measured on both sides")
    seeds = tuple(sorted(differences))
    ds = tuple(differences[s] for s in seeds)
    values = np.array([d.difference for d in ds])
    if len(ds) == 1:
        (d,) = ds
        return SeedComparison(ds, seeds, d.difference, d.low, d.high, 1.0,
                              ONE_SEED if d.significant(alpha) else NOT_DISTINGUISHABLE)
    summary = seed_mean(values, seeds, level=level, bounds=None, eval_halves=[(d.high - d.low) / 2 for d in ds])
    variances = np.array([max(_se(d, level), 1e-12) ** 2 for d in ds])
    weights = 1 / variances
    pooled = float(np.sum(weights * values) / np.sum(weights))
    q = float(np.sum(weights * (values - pooled) ** 2))
    heterogeneity = float(stats.chi2.sf(q, len(ds) - 1))
    same_sign = bool(np.all(values > 0) or np.all(values < 0))
    if same_sign and (summary.low > 0 or summary.high < 0):
        verdict = HOLDS
    elif not same_sign and heterogeneity <= alpha:
        verdict = SEED_DEPENDENT
    else:
        verdict = NOT_DISTINGUISHABLE
    return SeedComparison(ds, seeds, summary.mean, summary.low, summary.high, heterogeneity, verdict)


def compare_hits(hits_a: Mapping[int, Any], hits_b: Mapping[int, Any], **options: Any) -> SeedComparison | None:
    """`compare` on per-item eval hits by seed (A's and B's, the same items): the seeds both have; None if none."""
    paired = {s: paired_difference(hits_a[s], hits_b[s]) for s in hits_a
              if s in hits_b and hits_a[s] is not None and hits_b[s] is not None and len(hits_a[s]) == len(hits_b[s])}
    return compare(paired, **options) if paired else None


@dataclass(frozen=True)
class SeedSpread:
    """How far a study's seeds of one candidate apart lie: the pooled seed-to-seed standard deviation over the
    (candidate, budget) pairs measured with several seeds, their count, and the median and largest range."""

    sd: float
    pairs: int
    median_range: float
    largest_range: float

    def line(self) -> str:
        return (f"seed-to-seed spread measured in this study: SD {100 * self.sd:.1f} pts, median range "
                f"{100 * self.median_range:.1f} pts, largest {100 * self.largest_range:.1f} pts, over {self.pairs} "
                "repeated (candidate, budget) pair(s)")


def seeds_of(frame: pd.DataFrame, own_seed: int) -> pd.Series:
    """Each row's seed: the trial's, or the study's `train.seed` where the trial ran with the recipe's (None)."""
    return frame.seed.map(lambda s: own_seed if s is None or (isinstance(s, float) and math.isnan(s)) else int(s))


def seed_spread(frame: pd.DataFrame, metric: str, own_seed: int) -> SeedSpread | None:
    """The seed spread of `metric` over the frame's (arch_id, budget) pairs with two or more seeds; None if none."""
    if frame.empty or metric not in frame:
        return None
    rows = frame.assign(seed=seeds_of(frame, own_seed)).dropna(subset=[metric])
    squares = dof = 0.0
    ranges = []
    for _, runs in rows.drop_duplicates(["arch_id", "budget", "seed"]).groupby(["arch_id", "budget"]):
        if len(runs) < 2:
            continue
        squares += float(np.var(runs[metric], ddof=1)) * (len(runs) - 1)
        dof += len(runs) - 1
        ranges.append(float(runs[metric].max() - runs[metric].min()))
    if not ranges:
        return None
    return SeedSpread(math.sqrt(squares / dof), len(ranges), float(np.median(ranges)), max(ranges))


def seed_table(frame: pd.DataFrame, metric: str, own_seed: int, level: float = 0.95) -> pd.DataFrame:
    """One row per (arch_id, budget): `seeds` (how many), `mean`, `low`, `high` (`seed_mean`; with one seed its
    eval interval `<metric>_low/_high`), `values` (per seed, in seed order) and the first row's other columns."""
    if frame.empty or metric not in frame:
        return frame.iloc[0:0].assign(seeds=[], mean=[], low=[], high=[], values=[])
    rows = frame.assign(seed=seeds_of(frame, own_seed)).dropna(subset=[metric])
    rows = rows.sort_values("seed", kind="stable").drop_duplicates(["arch_id", "budget", "seed"])
    records = []
    for _, runs in rows.groupby(["arch_id", "budget"], sort=False):
        first = runs.iloc[0]
        interval = (first.get(f"{metric}_low"), first.get(f"{metric}_high"))
        halves = None
        if f"{metric}_low" in runs and runs[[f"{metric}_low", f"{metric}_high"]].notna().all(axis=None):
            halves = list((runs[f"{metric}_high"] - runs[f"{metric}_low"]) / 2)
        summary = seed_mean(runs[metric], runs.seed, level=level, bounds=(0.0, 1.0) if metric in EVALUATED else None,
                            eval_interval=interval if not any(pd.isna(v) for v in interval) else None,
                            eval_halves=halves)
        records.append({**first.to_dict(), "seeds": summary.k, "mean": summary.mean, "low": summary.low,
                        "high": summary.high, "values": summary.values, "seed_list": summary.seeds})
    return pd.DataFrame.from_records(records)


def ranked(frame: pd.DataFrame, metric: str, own_seed: int) -> pd.DataFrame:
    """`seed_table` best first by the seed mean (the way `metric` is better): how the leaderboard's winner,
    `select`'s finalists and `export --best` rank candidates measured with several seeds."""
    table = seed_table(frame, metric, own_seed)
    return table.sort_values("mean", ascending=direction(metric) == "min", kind="stable").reset_index(drop=True)


def format_mean(metric: str, mean: float, low: float, high: float) -> str:
    """`25.0 [15.2, 34.8]` (an accuracy, in percent) or `2.31 [2.10, 2.52]`; the interval '-' where unknown."""
    scale, digits = (100.0, ".1f") if metric in EVALUATED else (1.0, ".4g")
    if low is None or pd.isna(low):
        return f"{scale * mean:{digits}}"
    return f"{scale * mean:{digits}} [{scale * low:{digits}}, {scale * high:{digits}}]"


def arch_means(frame: pd.DataFrame, metric: str, own_seed: int) -> tuple[pd.DataFrame, str]:
    """One row per arch of one budget's rows, as figures draw a candidate: `metric` the mean over its seeds with
    the seed-level interval as `<metric>_low/_high` (`seed_table`; one seed keeps its eval interval), throughput
    the best of its seeds' runs (best-of-N timing: a run beside other trials is slowed, never sped up); and a
    line saying what the points are."""
    table = seed_table(frame, metric, own_seed)
    if table.empty:
        return table, "no measurement"
    if "images_per_s" in frame:
        best = frame.groupby("arch_id").images_per_s.max()
        table["images_per_s"] = table.arch_id.map(best)
    table[metric], table[f"{metric}_low"], table[f"{metric}_high"] = table["mean"], table.low, table.high
    repeated = int((table.seeds > 1).sum())
    what = (f"mean over seeds for {repeated} of {len(table)} archs, bars over seeds" if repeated else
            "one seed each: bars cover eval noise only")
    return table, what
