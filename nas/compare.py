"""Which measured candidates can be told apart: intervals, ties, chance, on a study's results.

Every accuracy a trial measures rests on an eval set of n items; the results database stores its interval
(`<metric>_low`, `<metric>_high`), its size (`<metric>_n`), what guessing scores (`<metric>_chance`) and the
per-item hits (`nas.uncertainty.pack_hits`), so that two candidates measured on the same items are compared
with a paired test (McNemar) rather than by whether their intervals overlap.

    frame = annotate(store.frame(budget=14_400), "zeroshot_top1")   # + columns `tie` and `at_chance`
    first_rung_noise(store.frame(), "zeroshot_top1")                  # can the first rung's ranking be trusted?
"""

from __future__ import annotations

import json
from typing import Any

import numpy as np
import pandas as pd

from nas.metrics import EVALUATED, direction
from nas.uncertainty import Homogeneity, above_chance, cochran_q, paired_difference, tied_with_best, unpack_hits

#: Significance level of every test here (ties, chance, noise).
ALPHA = 0.05
BEST, TIE = "best", "tie"


def hits(row: Any, metric: str) -> np.ndarray | None:
    """The per-item hits of `metric` in a results row (a frame row or a mapping), None where none were kept."""
    packed = row.get("hits") if isinstance(row, dict) else getattr(row, "hits", None)
    n = row.get(f"{metric}_n") if isinstance(row, dict) else getattr(row, f"{metric}_n", None)
    if not isinstance(packed, str) or n is None or pd.isna(n):
        return None
    text = json.loads(packed).get(metric)
    return unpack_hits(text, int(n)) if text else None


def annotate(frame: pd.DataFrame, metric: str, alpha: float = ALPHA) -> pd.DataFrame:
    """`frame` (one row per trial and rung) with `tie`: "best" for the best candidate of its budget, "tie" for
    those McNemar cannot tell from it (Holm-corrected over the budget's comparisons), else empty; and
    `at_chance`: the result is not above what guessing scores (exact binomial, one-sided). Rows of metrics
    without hits (the loss) are left unmarked."""
    frame = frame.copy()
    frame["tie"], frame["at_chance"] = "", False
    if metric not in EVALUATED or metric not in frame or frame.empty:
        return frame
    for _, rows in frame.dropna(subset=[metric]).groupby("budget"):
        ordered = rows.sort_values(metric, ascending=direction(metric) == "min", kind="stable")
        ties = tied_with_best([hits(row, metric) for row in ordered.itertuples()], alpha=alpha)
        for index, tied in zip(ordered.index, ties):
            frame.loc[index, "tie"] = BEST if index == ordered.index[0] else TIE if tied else ""
    chance, n = f"{metric}_chance", f"{metric}_n"
    if chance in frame and n in frame:
        known = frame[[metric, chance, n]].notna().all(axis=1)
        for index in frame.index[known]:
            row = frame.loc[index]
            successes = int(round(row[metric] * row[n]))
            frame.loc[index, "at_chance"] = not above_chance(successes, int(row[n]), float(row[chance]), 1 - alpha)
    return frame


def front_ties(front: pd.DataFrame, metric: str, cost: str, alpha: float = ALPHA) -> list[str]:
    """For each point of one budget's Pareto front (in `front`'s order): the trial number of the cheaper front
    point it cannot be told apart from in `metric` (McNemar), or "" when it is distinguishably better. A point
    that a tie makes indistinguishable buys its extra cost with no measurable gain."""
    by_cost = front.sort_values(cost, ascending=True, kind="stable")
    marks = {}
    previous = None
    for row in by_cost.itertuples():
        mark = ""
        if previous is not None:
            mine, theirs = hits(row, metric), hits(previous, metric)
            if mine is not None and theirs is not None and len(mine) == len(theirs) and \
                    not paired_difference(mine, theirs).significant(alpha):
                mark = f"#{previous.number}"
        marks[row.Index] = mark
        previous = row
    return [marks[index] for index in front.index]


def first_rung_noise(frame: pd.DataFrame, metric: str) -> tuple[int, Homogeneity] | None:
    """Cochran's Q over every candidate measured at the smallest budget with hits of `metric`: whether that
    rung's ranking can be told from noise. (budget, test), or None when fewer than two candidates have hits."""
    if metric not in EVALUATED or frame.empty:
        return None
    budget = int(frame.budget.min())
    rows = frame[frame.budget == budget].drop_duplicates("arch_id")
    vectors = [v for v in (hits(row, metric) for row in rows.itertuples()) if v is not None]
    if len(vectors) < 2 or len({len(v) for v in vectors}) > 1:
        return None
    return budget, cochran_q(np.stack(vectors))


def with_interval(value: float, low: float, high: float) -> str:
    """An accuracy and its interval in percent: `6.5 [4.4, 9.4]`."""
    if value is None or pd.isna(value):
        return "-"
    if low is None or pd.isna(low):
        return f"{100 * value:.1f}"
    return f"{100 * value:.1f} [{100 * low:.1f}, {100 * high:.1f}]"
