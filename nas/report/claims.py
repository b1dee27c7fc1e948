"""Checking a claim: the same code decides whether a finding holds on a study's results and on the paper's
published numbers (`check`), and `verdicts` gives both sides of every claim that applies to a study."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pandas as pd

from nas.report.paper import Claim, Paper
from nas.seeds import HOLDS, ONE_SEED, SEED_DEPENDENT, SeedComparison
from nas.seeds import compare as compare_seeds
from nas.uncertainty import PairedDifference, paired_difference


@dataclass(frozen=True)
class Verdict:
    """How a claim fares on one side, over `of` comparisons (budgets, or candidates for data scaling): it holds at
    `held`, is reversed at `reversed`, and at the rest the data cannot tell (at `seed_dependent` of them, because
    the seeds disagree). On a study with one seed, a comparison counts when McNemar's test on the same eval images
    rejects (5 %: eval noise only); where runs were repeated with other seeds, when the per-seed paired
    differences give "holds" (`nas.seeds.compare`: every seed agrees and the t interval over seeds excludes 0);
    on the paper's published numbers, which come without their noise, the sign of the difference decides. A
    comparison of several pairs (a chain A > B > C) holds where every pair holds and is reversed where any pair
    is. `margin` is the smallest gap in the claimed direction (metric points, negative where it fails): where the
    study kept per-image hits, the mean over seeds of the paired difference with its 95 % interval (over seeds
    with two or more, else the one seed's eval interval), else the difference of the (seed-mean) accuracies."""

    held: int
    of: int
    margin: float | None
    unit: str
    reversed: int = 0
    low: float | None = None
    high: float | None = None
    seed_dependent: int = 0

    @property
    def unclear(self) -> int:
        return self.of - self.held - self.reversed

    @property
    def outcome(self) -> str:
        if not self.of:
            return "not measured"
        if self.held == self.of:
            return "reproduced"
        if self.reversed == self.of:
            return "reversed"
        if not self.held and not self.reversed:
            return "not distinguishable"
        return "partly" if self.held else "not reproduced"

    def describe(self, reference: bool = False) -> str:
        """`reproduced (3/3 budgets, margin +1.2 pts [0.4, 2.0])`; for the paper itself, `holds` instead."""
        if not self.of:
            return "not measured"
        word = self.outcome
        if reference:
            word = {"reproduced": "holds", "reversed": "does not hold", "partly": "partly",
                    "not distinguishable": "does not hold", "not reproduced": "does not hold"}[word]
        counts = f"{self.held}/{self.of} {self.unit}"
        if self.reversed:
            counts += f", reversed at {self.reversed}"
        if self.unclear and not reference:
            counts += f", not distinguishable at {self.unclear}"
            if self.seed_dependent:
                counts += f" (seed-dependent at {self.seed_dependent})"
        margin = ""
        if self.margin is not None:
            margin = f", margin {100 * self.margin:+.1f} pts"
            if self.low is not None:
                margin += f" [{100 * self.low:+.1f}, {100 * self.high:+.1f}]"
        return f"{word} ({counts}{margin})"


#: `compare((label, budget), (label, budget))`: the first's metric minus the second's on the same eval items, one
#: paired difference per seed both were measured with (none where no per-item hits were kept).
Compare = Callable[[tuple[str, float], tuple[str, float]], list[PairedDifference]]


def check(claim: Claim, table: pd.DataFrame, names: dict[str, str] | None = None,
          cost: pd.Series | None = None, compare: Compare | None = None) -> Verdict:
    """The claim on `table` (metric by name and budget, larger is better). `names` maps the claim's labels to
    the table's rows (identity by default); `cost` is the column a `monotonic` claim on a cost rises with;
    `compare` gives the paired differences of two measurements, one per seed (None or none: the sign of the
    difference decides)."""
    names = names or {}
    tally = _Tally(table, compare)
    if claim.order:
        tiers = [[names.get(label, label) for label in tier] for tier in claim.order]
        for budget in table.columns:
            values = [table[budget].reindex(tier) for tier in tiers]
            if not any(v.isna().any() for v in values):
                tally.comparison([((u, budget), (lo, budget)) for upper, lower in zip(tiers, tiers[1:])
                                  for u in upper for lo in lower])
        return tally.verdict("budgets")
    if claim.monotonic == "samples_seen":
        for label, values in table.iterrows():
            budgets = list(values.dropna().index)
            if len(budgets) >= 2:
                tally.comparison([((label, b), (label, a)) for a, b in zip(budgets, budgets[1:])])
        return tally.verdict("models")
    if cost is not None:
        for budget in table.columns:
            labels = list(cost.reindex(table[budget].dropna().index).sort_values().index)
            if len(labels) >= 2:
                tally.comparison([((b, budget), (a, budget)) for a, b in zip(labels, labels[1:])])
    return tally.verdict("budgets")


class _Tally:
    """Counts comparisons (each a list of better-than pairs that must all hold) as held, reversed or unclear."""

    def __init__(self, table: pd.DataFrame, compare: Compare | None):
        self.table, self.compare = table, compare
        self.held = self.reversed = self.of = self.seed_dependent = 0
        self.smallest: tuple[float, SeedComparison | None] | None = None

    def comparison(self, pairs: list[tuple[tuple[str, float], tuple[str, float]]]) -> None:
        signs, dependent = [], False
        for better, worse in pairs:
            gap = float(self.table.loc[better]) - float(self.table.loc[worse])
            seeds = self.compare(better, worse) if self.compare else []
            paired = compare_seeds(dict(enumerate(seeds))) if seeds else None
            margin = paired.mean if paired else gap
            if self.smallest is None or margin < self.smallest[0]:
                self.smallest = (margin, paired)
            if paired is None:
                signs.append(1 if gap > 0 else -1)
            elif paired.verdict in (HOLDS, ONE_SEED):
                signs.append(1 if paired.mean > 0 else -1)
            else:
                signs.append(0)
                dependent |= paired.verdict == SEED_DEPENDENT
        self.of += 1
        self.held += all(sign > 0 for sign in signs)
        self.reversed += any(sign < 0 for sign in signs)
        self.seed_dependent += dependent and not any(sign < 0 for sign in signs)

    def verdict(self, unit: str) -> Verdict:
        if self.smallest is None:
            return Verdict(0, 0, None, unit)
        gap, paired = self.smallest
        return Verdict(self.held, self.of, gap, unit, self.reversed, paired.low if paired else None,
                       paired.high if paired else None, self.seed_dependent)


def study_table(frame: pd.DataFrame, metric: str) -> pd.DataFrame:
    """The metric by label (rows, in study order) and budget (columns); the mean where an arch ran twice."""
    table = frame.pivot_table(index="label", columns="budget", values=metric).sort_index(axis=1)
    return table.reindex(list(dict.fromkeys(frame.label)))


def paired_measurements(frame: pd.DataFrame, metric: str) -> Compare:
    """Paired differences between the study's measurements (label, budget) from their per-item eval hits, one per
    seed that both were measured with."""
    from nas.compare import hits

    found: dict[tuple[str, float], dict[Any, Any]] = {}
    for row in frame.itertuples():
        found.setdefault((row.label, row.budget), {}).setdefault(trial_seed(row.seed), hits(row, metric))

    def compare(better: tuple[str, float], worse: tuple[str, float]) -> list[PairedDifference]:
        a, b = found.get(better, {}), found.get(worse, {})
        return [paired_difference(a[seed], b[seed]) for seed in a
                if seed in b and a[seed] is not None and b[seed] is not None and len(a[seed]) == len(b[seed])]

    return compare


def trial_seed(value: Any) -> Any:
    """A trial's seed: None (the study's own) or the repeat's."""
    return None if value is None or (isinstance(value, float) and math.isnan(value)) else int(value)


def verdicts(paper: Paper, frame: pd.DataFrame, metric: str) -> list[tuple[Claim, Verdict, Verdict | None]]:
    """Each claim that applies to the study (all its labels measured): the study's verdict and the paper's
    (None where the paper published no numbers for it: a design choice)."""
    table = study_table(frame, metric)
    costs = frame.drop_duplicates("label").set_index("label")
    paper_cost = paper.benchmark.drop_duplicates("model").set_index("model").image_gmacs
    compare = paired_measurements(frame, metric)
    results = []
    for claim in paper.claims:
        if any(label not in table.index for label in claim.named):
            continue
        rows = table.loc[list(claim.labels)] if claim.labels else table
        cost = costs[claim.monotonic] if claim.monotonic in costs else None
        ours = check(claim, rows, cost=cost, compare=compare)
        theirs = None
        if claim.order and all(label in paper.models for label in claim.named):
            theirs = check(claim, paper.table(), names=paper.models)
        elif claim.monotonic:
            models = list(claim.paper) or None
            theirs = check(claim, paper.table(models), cost=paper_cost)
        results.append((claim, ours, theirs))
    return results

