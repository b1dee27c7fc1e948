"""The text leaderboard of a study (`vitamin-nas results`, and at the end of `vitamin-nas search`): every trial at
its furthest budget and the Pareto front at every budget, each accuracy with its interval and the eval-set size
it rests on, with notes on how far the tables can be trusted (`nas.compare`'s ties and first-rung noise,
`nas.fidelity`'s rung-to-rung agreement, `nas.seeds`' seed spread, `nas.learning`'s runs that did not learn). The
finalists a study confirmed with more seeds (`confirm`) get a section of their own, ranked by their seed mean,
whose interval includes seed-to-seed variance; the winner is named by it.

    print(results_report(ResultStore.open("runs/quickstart", readonly=True)))
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

from nas import status
from nas.compare import annotate, first_rung_noise, front_ties, hits, with_interval
from nas.fidelity import fidelity_line, study_fidelity
from nas.learning import study_failure_rate
from nas.metrics import EVALUATED
from nas.seeds import EVAL_ONLY, compare_hits, format_mean, ranked, seed_spread
from nas.tables import format_table, headers, rows

if TYPE_CHECKING:
    from nas.results import ResultStore


def results_report(store: ResultStore, budget: int | None = None, top: int = 10) -> str:
    """The leaderboard and the Pareto front at every budget (or one), as text, with each accuracy's interval,
    the eval-set size it rests on, which candidates the same eval images cannot tell apart, and how far the
    first rung's ranking can be trusted."""
    objectives = store.objectives
    first = next(iter(objectives))
    board = store.leaderboard(budget=budget)
    failures = study_failure_rate(store)
    if board.empty:
        return "no results yet" + (f" ({failures.line()})" if failures.failed else "")
    measured = first in EVALUATED and f"{first}_low" in board
    board = annotate(board, first).head(top)
    shown = f"{first} % [95 % CI]" if measured else first
    columns = ["number", "arch_name", "status", "budget", shown, *(["n", "vs best"] if measured else []),
               *[c for c in objectives if c != first],
               *[c for c in ("image_params_m", "zeroshot_top5", "loss") if c not in objectives], "wall_s"]
    records = [_measured(r, first, shown) for r in board.to_dict("records")]
    text = [f"leaderboard ({len(store.trials())} trials; furthest budget first, then {first}):",
            format_table([shown if c == shown else headers([c])[0] for c in columns], rows(records, columns))]
    fronts = store.pareto_front(budget=budget)
    cost = next((c for c in objectives if c != first), None)
    for front_budget, front in fronts.groupby("budget", sort=False):
        title = ", ".join(f"{k} {v}" for k, v in objectives.items())
        front_columns = ["number", "arch_name", shown, *[c for c in objectives if c != first]]
        records = [_measured(r, first, shown) for r in front.to_dict("records")]
        if measured and cost is not None:
            front_columns.append("not distinguishable from")
            for record, mark in zip(records, front_ties(front, first, cost)):
                record["not distinguishable from"] = mark
        text += [f"\nPareto front at {front_budget:,} samples seen ({title}):",
                 format_table([shown if c == shown else headers([c])[0] for c in front_columns],
                              rows(records, front_columns))]
    text += finalists_lines(store, first)
    if measured:
        text.append(_trust_notes(store, first, first_rung_noise(store.frame(status=status.MEASURED), first)))
    text += seed_notes(store, first)
    if failures.runs:
        text.append(failures.line())
    return "\n".join(text)


def finalists_lines(store: ResultStore, metric: str) -> list[str]:
    """The confirmed finalists: candidates measured at the full budget with two seeds or more, best first by their
    seed mean (a t interval over seeds), each against the best seed by seed (`nas.seeds.compare`); then the
    winner, named as far as the seeds support it. Nothing where no candidate has two seeds there."""
    study = store.study()
    budget = study.budget.max_samples
    table = ranked(store.frame(budget=budget, status=status.MEASURED), metric, study.train.seed)
    table = table[table.seeds >= 2].reset_index(drop=True)
    if table.empty:
        return []
    seeds = {row.arch_id: _hits_by_seed(store, row.arch_id, budget, metric) for row in table.itertuples()}
    best = table.iloc[0]
    records = []
    for row in table.itertuples():
        versus = compare_hits(seeds[best.arch_id], seeds[row.arch_id]) if row.Index else None
        records.append([row.arch_name, row.seeds, format_mean(metric, row.mean, row.low, row.high),
                        ", ".join(format_mean(metric, v, None, None) for v in row.values),
                        "best" if not row.Index else versus.describe() if versus else "-"])
    unit = " %" if metric in EVALUATED else ""
    lines = [f"\nconfirmed finalists at {budget:,} samples seen (mean over seeds, 95 % t interval over seeds):",
             format_table(["arch_name", "seeds", f"{metric}{unit} [95 % CI]", "per seed",
                           "best minus it, seed by seed"], records)]
    runner = compare_hits(seeds[best.arch_id], seeds[table.iloc[1].arch_id]) if len(table) > 1 else None
    if runner is not None and runner.verdict == "holds":
        standing = f"ahead of {table.iloc[1].arch_name} on every seed (holds)"
    elif len(table) > 1:
        standing = (f"not shown ahead of {table.iloc[1].arch_name} over seeds "
                    f"({runner.verdict if runner else 'no paired hits'})")
    else:
        standing = "the only finalist"
    lines.append(f"winner by seed mean: {best.arch_name}, {format_mean(metric, best['mean'], best.low, best.high)}"
                 f"{unit} over {best.seeds} seeds; {standing}")
    return lines


def _hits_by_seed(store: ResultStore, arch_id: str, budget: int, metric: str) -> dict[int, Any]:
    own = store.study().train.seed
    frame = store.frame(budget=budget, status=status.MEASURED)
    return {own if row.seed is None or row.seed != row.seed else int(row.seed): hits(row, metric)
            for row in frame[frame.arch_id == arch_id].itertuples()}


def seed_notes(store: ResultStore, metric: str) -> list[str]:
    """What the intervals cover: with one seed a candidate, eval noise only, beside the study's measured seed
    spread where it repeated any candidate."""
    frame = store.frame(status=status.MEASURED)
    if frame.empty or metric not in frame:
        return []
    spread = seed_spread(frame, metric, store.study().train.seed)
    single = frame.groupby(["arch_id", "budget"]).seed.nunique(dropna=False).max() < 2
    lines = []
    if single:
        lines.append(f"{EVAL_ONLY}: every candidate was trained with one seed, so training noise is in no interval")
    lines.append(spread.line() if spread else "seed-to-seed spread: not measured (no candidate ran with two seeds)")
    return lines


def fidelity_lines(store: ResultStore, metric: str) -> list[str]:
    """How each rung's ranking agrees with the next rung's (`nas.fidelity`), one line a pair of rungs."""
    pairs = study_fidelity(store, metric, proxies=())
    rungs = store.study().budget.rungs
    return [fidelity_line(r) for r in pairs if not isinstance(r.cheap, str) and r.cheap in rungs
            and r.expensive in rungs and rungs.index(r.expensive) == rungs.index(r.cheap) + 1]


def _measured(record: dict[str, Any], metric: str, shown: str) -> dict[str, Any]:
    """A row with its accuracy and interval as one cell, its eval-set size and its standing at its budget."""
    low, high = record.get(f"{metric}_low"), record.get(f"{metric}_high")
    flags = [record.get("tie", "")] + (["at chance"] if record.get("at_chance") else [])
    n = record.get(f"{metric}_n")
    return {**record, shown: with_interval(record.get(metric), low, high) if shown != metric else record.get(metric),
            "n": int(n) if n is not None and not np.isnan(n) else None,
            "vs best": ", ".join(f for f in flags if f)}


def _trust_notes(store: ResultStore, metric: str, noise: Any) -> str:
    """What the tables' marks mean, and whether the first rung's ranking (what ASHA first decides on) is signal."""
    lines = ["", f"{metric}: 95 % Wilson interval over the n eval images; vs best: 'tie' = not distinguishable from "
                 "the best candidate at its budget (McNemar's exact test on the same images, Holm-corrected, 5 %); "
                 "'at chance' = not above guessing (exact binomial, 5 %); a front point 'not distinguishable from' "
                 "a cheaper one buys its cost with no measurable gain."]
    if noise is not None:
        budget, test = noise
        verdict = "can be told from noise" if test.distinguishable() else \
            "CANNOT be told from noise: early stopping there decided on chance"
        lines.append(f"first rung ({budget:,} samples seen): the ranking {verdict} "
                     f"(Cochran's Q = {test.statistic:.1f}, {test.dof} dof, p = {test.p_value:.3g}).")
    fidelity = fidelity_lines(store, metric)
    if fidelity:
        lines += ["rung against the next (`vitamin-nas fidelity` for every pair and the zero-cost proxies):",
                  *(f"  {line}" for line in fidelity)]
    return "\n".join(lines)
