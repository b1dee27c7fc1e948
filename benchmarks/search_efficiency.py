"""Search efficiency against ground truth: search strategies replayed many times over a tabular benchmark.

    .venv/bin/python benchmarks/search_efficiency.py                       # benchmarks/tables/tabular_tiny.csv
    .venv/bin/python benchmarks/search_efficiency.py --table T.csv --table-study S.yaml \\
        [--study studies/quickstart.yaml] [--replays 200] [--tables 20] \\
        [--strategies random-full,asha,pareto-asha,tpe-asha,curve] [--workers 2] [--cost samples|flops] [--jobs 2] \\
        [--plot regret.png]

The table (benchmarks/tabular.py) holds each candidate's learning curve, and for some more seeds. The
search replayed is `--study`'s (default the quickstart's): its ladder (min_samples, max_samples,
reduction_factor) and rungs, its objectives, its sampler's settings, its space and its concurrency. Every
strategy is a real search's code, driven by an event loop instead of Ray Tune's controller:

- the scheduler is the one `nas.search.schedulers.make_scheduler` builds for the study with that strategy's
  early stopping and objectives (Ray Tune's `AsyncHyperBandScheduler`, `ParetoASHA`, `CurveASHA`, or
  `FIFOScheduler` without early stopping), called with Tune's events in Tune's order (`on_trial_add`,
  `on_trial_result` at every rung, `on_trial_complete` when the trial ends or is stopped);
- TPE is Optuna's `TPESampler` as `nas.search.searcher.make_sampler` makes it from the study (its
  `sampler:` settings, the replay's seed), asked through the study's own define-by-run space
  (`nas.search.searcher.Proposer`). The table holds a stratified subset of the space, so a proposal is
  projected onto the untried table candidate nearest to it (Hamming distance over the space's parameters,
  ties at random); the asked trial is told FAIL (which TPE ignores) and the candidate's own parameters and
  results are added to the Optuna study as the search driver tells them (intermediate values at every
  rung; COMPLETE at the full budget, PRUNED when stopped). This projection is the one departure from a
  real search over the whole space;
- random search draws the table's candidates uniformly without replacement (what a random sampler and
  the searcher's rule of never measuring an arch twice give on a finite table).

Each replay draws, for each candidate, one of its runs: the search sees one noisy run, and is judged by the
candidate's mean at the full budget over its other seeds that learned ("true" accuracy, held out: the seed the
search saw is not in the truth it is judged by, or a lucky seed would both pick its candidate and make the pick
look right, and every strategy that selects by measured values would look closer to the best than it is). A
candidate with one seed that learned is judged by that seed (the output says how many). A run that did not learn
is never in a truth: the table is read by `benchmarks/tabular.py`'s `read_table`, which judges every run by
`nas.learning`'s rule (with the batch size and reduction factor of `--table-study`, the study that made the
table), prints the runs it takes out, and leaves a candidate its seeds
that learned (and leaves out a candidate with none); its runs that did not learn stay beside them, drawn as often
as the table holds them. A replay that draws one trains it as a search with `repeats: {not_learned: 1}` does:
its curve reaches the scheduler at every rung up to the first at or after the budget the rule caught it at, those
samples are spent, the trial ends there (not completed, never an incumbent; told to TPE as PRUNED), and the
candidate is trained again at once, on the same worker, with one of its drawn seeds that learned (a new trial,
which the scheduler promotes or stops as any). A scheduler that stops the failed run before that rung stops it
as any trial (Ray ends it inside its report, before the rule judges it): no rerun. `--workers` trials run at once
(default: the study's concurrency); a trial's time is its samples times its analytic training GFLOPs per
sample, which orders the asynchronous events. Samples spent count each trial's samples up to its last
report (`--cost flops` weights them by training FLOPs); exhaustive compute is every candidate trained to the
full budget.

The table's own uncertainty (its truth is a mean over few seeds, and how often its runs fail to learn) is a
bootstrap: `--tables B` tables are drawn by resampling each candidate's runs, learned and failed, with replacement
(as many as it has; its truth the mean of the learned ones drawn; a replay sees one of the drawn runs), and the
replays are spread evenly over them (`--tables 0`: the table as measured). A draw of a candidate with no learned
run is drawn again (the bootstrap conditioned on a truth for every candidate; it lowers the failed share of a
candidate with few runs: of one learned and one failed run, a third of the runs drawn fail, not a half). The
output gives the runs that did not learn per bootstrap table and their rate. A candidate with one run is not
redrawn, so its seed noise is left out of the intervals (the output says how many have one seed that learned).
Replay r of every strategy is judged against the same drawn table, sees the same seeds' curves and, for random
search, the same order: paired.

Prints, per strategy, over the replays (each figure with its 95 % interval, which holds the spread between the
bootstrap tables and the replays' noise: `interval`): the regret of the best candidate found (the table's best
minus the true accuracy of the incumbent, the best measured at the full budget; both of the replay's table) at
10, 25, 50 and 100 % of exhaustive compute, the probability of ending with a top-10 % candidate at 25 % of
exhaustive compute, how often the table's best was stopped at the first rung when it was sampled (Wilson), and
each strategy's paired difference from random search (random-full) in regret and in that probability, with the
verdict "better", "worse" (the interval excludes 0) or "not distinguishable". Plots the median regret curves
with `--plot`. Asserts nothing.
"""

from __future__ import annotations

import argparse
import dataclasses
import heapq
import itertools
import json
import math
import os
import sys
import time
from collections.abc import Mapping, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import tabular  # noqa: E402  (benchmarks/tabular.py: this script's directory is on the path)

from nas.arch import Arch  # noqa: E402
from nas.errors import ConfigError  # noqa: E402
from nas.study import Study, load_study  # noqa: E402
from nas.tables import format_table  # noqa: E402
from nas.uncertainty import wilson_interval  # noqa: E402

TABLE = REPO / "benchmarks" / "tables" / "tabular_tiny.csv"
STUDY = REPO / "studies" / "quickstart.yaml"
METRIC = "zeroshot_top1"


@dataclass(frozen=True)
class Strategy:
    """A search to replay: the sampler, the study's early stopping, and the objectives the scheduler ranks by
    (the metric alone, or with image GMACs for Pareto ASHA). `dense`: the trials report at every budget of the
    table, not only at the study's rungs (learning curves for the curve rule)."""

    sampler: str
    early_stopping: str
    pareto: bool = False
    dense: bool = False


STRATEGIES = {
    "random-full": Strategy("random", "none"),
    "asha": Strategy("random", "asha"),
    "pareto-asha": Strategy("random", "asha", pareto=True),
    "tpe-asha": Strategy("tpe", "asha"),
    "curve": Strategy("random", "curve"),
    "curve-dense": Strategy("random", "curve", dense=True),
    "tpe-curve": Strategy("tpe", "curve"),
    "tpe-pareto-asha": Strategy("tpe", "asha", pareto=True),
}
DEFAULT_STRATEGIES = ("random-full", "asha", "pareto-asha", "tpe-asha", "curve", "curve-dense")
#: Fractions of exhaustive compute at which regret is summarised, and the one P(top 10 %) is read at.
FRACTIONS = (0.1, 0.25, 0.5, 1.0)
AT_FRACTION = 0.25
TOP_FRACTION = 0.1


# ---- the table -----------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class FailedRun:
    """A run that did not learn: its curve (budget -> (value, eval-set size)) and the budget at which
    `nas.learning`'s rule caught it (`tabular.learned`)."""

    curve: dict[int, tuple[float, float | None]]
    caught: int


@dataclass(frozen=True)
class Candidate:
    """One table candidate: its arch, cost, each seed's curve that learned (budget -> (value, eval-set size)),
    and its runs that did not learn by seed."""

    candidate_id: str
    arch: Arch
    cost: dict[str, float]
    curves: dict[int, dict[int, tuple[float, float | None]]]
    truth: float  # mean over its seeds (that learned) at the full budget
    failed: dict[int, FailedRun] = field(default_factory=dict)

    @property
    def runs(self) -> tuple[int, ...]:
        """The seeds of all its runs, learned and failed."""
        return tuple(sorted({*self.curves, *self.failed}))


@dataclass(frozen=True)
class TableDraw:
    """A table the replays are judged against: each candidate's runs (the table's own, `Table.measured`, or
    resampled with replacement, `draw_table`; learned and failed), a replay seeing one of them, and its truth, the
    mean of the learned ones at the full budget (a replay is judged by the mean of the others: `held_out`).
    `failed`: how many of the runs drawn did not learn. `index` tells the draws of one bootstrap apart."""

    index: int
    seeds: tuple[tuple[int, ...], ...]
    truth: tuple[float, ...]
    failed: int = 0

    @property
    def best(self) -> int:
        return int(np.argmax(self.truth))

    def top(self, fraction: float) -> set[int]:
        """The indices of the best ceil(fraction x candidates) by true value."""
        k = max(1, math.ceil(fraction * len(self.truth) - 1e-9))
        return set(np.argsort([-t for t in self.truth], kind="stable")[:k].tolist())


@dataclass(frozen=True)
class Table:
    candidates: tuple[Candidate, ...]
    budgets: tuple[int, ...]
    metric: str

    @property
    def measured(self) -> TableDraw:
        """The table as measured: every candidate's runs, its truth the mean of those that learned."""
        return TableDraw(0, tuple(c.runs for c in self.candidates), tuple(c.truth for c in self.candidates),
                         sum(len(c.failed) for c in self.candidates))


def _redraw(candidate: Candidate, rng: np.random.Generator) -> tuple[int, ...]:
    """A candidate's runs, learned and failed, resampled with replacement (as many as it has); a draw with no
    learned run is drawn again (it would leave the candidate no truth). One run is kept."""
    runs = candidate.runs
    while len(runs) > 1:
        drawn = tuple(int(s) for s in rng.choice(runs, size=len(runs)))
        if any(s in candidate.curves for s in drawn):
            return drawn
    return runs


def draw_table(table: Table, index: int, rng: np.random.Generator) -> TableDraw:
    """A bootstrap table: each candidate's runs, learned and failed, resampled with replacement (`_redraw`), its
    truth the mean of the learned ones drawn. A candidate with one run keeps it: nothing to resample, so the
    intervals leave out its seed noise."""
    seeds = tuple(_redraw(c, rng) for c in table.candidates)
    return TableDraw(index, seeds, _truth(table, seeds), sum(s in c.failed for c, drawn in zip(table.candidates, seeds)
                                              for s in drawn))


def held_out(table: Table, draw: TableDraw, seen: Mapping[int, int]) -> TableDraw:
    """`draw` as a replay that saw the learned seed `seen[i]` of each candidate i is judged: each candidate's
    learned runs but the one seen (every draw of it), its truth their mean at the full budget; a candidate with no
    other learned run keeps its own."""
    learned = (tuple(s for s in drawn if s in c.curves) for c, drawn in zip(table.candidates, draw.seeds))
    seeds = tuple(tuple(s for s in drawn if s != seen[i]) or drawn for i, drawn in enumerate(learned))
    return TableDraw(draw.index, seeds, _truth(table, seeds), draw.failed)


def _truth(table: Table, seeds: Sequence[Sequence[int]]) -> tuple[float, ...]:
    """Each candidate's truth over `seeds[i]`: the mean of its learned runs among them at the full budget."""
    full = table.budgets[-1]
    return tuple(float(np.mean([c.curves[s][full][0] for s in drawn if s in c.curves]))
                 for c, drawn in zip(table.candidates, seeds))


def draw_tables(table: Table, tables: int, seed: int = 0) -> list[TableDraw]:
    """`tables` bootstrap tables (`draw_table`, seeded), or with 0 the table as measured."""
    if not tables:
        return [table.measured]
    return [draw_table(table, b, np.random.default_rng([seed, b])) for b in range(tables)]


def _curves(rows: pd.DataFrame, metric: str) -> dict[int, dict[int, tuple[float, float | None]]]:
    """Each seed's curve of a candidate's rows: budget -> (value, eval-set size)."""
    n_column = f"{metric}_n" if f"{metric}_n" in rows else None
    curves: dict[int, dict[int, tuple[float, float | None]]] = {}
    for row in rows.itertuples(index=False):
        n = getattr(row, n_column) if n_column else None
        curves.setdefault(int(row.seed), {})[int(row.budget)] = (float(getattr(row, metric)),
                                                                 None if n is None or pd.isna(n) else float(n))
    return curves


def load_table(frame: pd.DataFrame, metric: str = METRIC, failed: pd.DataFrame | None = None) -> Table:
    """The table of `benchmarks/tabular.py` (its `read_table`'s frame: the runs that learned), every candidate
    measured at the full budget, with each candidate's runs that did not learn beside (`failed`, the `Learned`'s:
    with the budget `caught` at which the rule caught each; those of a candidate out of the table are left out)."""
    needed = {"candidate_id", "arch", "seed", "budget", metric, "image_gmacs", "train_gflops"}
    missing = sorted(needed - set(frame.columns))
    if missing:
        raise ConfigError(f"the table has no column {', '.join(missing)} (benchmarks/tabular.py writes them)",
                          field="table")
    budgets = tuple(sorted(int(b) for b in frame.budget.unique()))
    failed = frame.iloc[:0].assign(caught=0) if failed is None else failed
    candidates = []
    for candidate_id, rows in frame.groupby("candidate_id", sort=True):
        curves = _curves(rows, metric)
        lost = failed[failed.candidate_id == candidate_id]
        caught = dict(zip(lost.seed.astype(int), lost.caught.astype(int)))
        failures = {seed: FailedRun(curve, caught[seed]) for seed, curve in _curves(lost, metric).items()}
        finals = [curve[budgets[-1]][0] for curve in curves.values() if budgets[-1] in curve]
        if not finals:
            raise ConfigError(f"candidate {candidate_id} was not measured at the full budget {budgets[-1]}",
                              field="table")
        first = rows.iloc[0]
        cost = {name: float(first[name]) for name in ("image_gmacs", "image_params_m", "train_gflops") if name in rows}
        candidates.append(Candidate(str(candidate_id), Arch.from_json(first.arch), cost, curves,
                                    float(np.mean(finals)), failures))
    return Table(tuple(candidates), budgets, metric)


# ---- the searchers -------------------------------------------------------------------------------------------

class RandomOrder:
    """Random search over the table: candidates uniformly without replacement."""

    def __init__(self, table: Table, rng: np.random.Generator):
        self.order = list(rng.permutation(len(table.candidates)))

    def next(self) -> int | None:
        return self.order.pop(0) if self.order else None

    def tell(self, index: int, reported: Mapping[int, float], completed: bool) -> None:
        pass


def space_parameters(study: Study, table: Table) -> dict[int, tuple[dict[str, Any], dict[str, Any]]]:
    """Each table candidate's parameters and Optuna distributions in the study's space (the space is enumerated
    through its own define-by-run `suggest`, on Optuna's `FixedTrial`)."""
    import optuna

    from nas.space import SearchSpace

    space: SearchSpace = study.space
    names, domains = zip(*[(name, domain) for name, domain in space.params()])
    if not space.finite or math.prod(len(d.options()) for d in domains) > 1_000_000:
        raise ConfigError("replaying TPE enumerates the space: it needs a finite space of at most 10^6 points",
                          source=study.source, field="space")
    wanted = {c.candidate_id: i for i, c in enumerate(table.candidates)}
    found: dict[int, tuple[dict[str, Any], dict[str, Any]]] = {}
    for values in itertools.product(*(d.options() for d in domains)):
        trial = optuna.trial.FixedTrial(dict(zip(names, values)))
        try:
            arch = space.suggest(trial)
        except (ConfigError, ValueError):
            continue
        index = wanted.get(arch.arch_id)
        if index is not None and index not in found:
            found[index] = (dict(trial.params), dict(trial.distributions))
    lost = [table.candidates[i].arch.name() for i in range(len(table.candidates)) if i not in found]
    if lost:
        raise ConfigError(f"not archs of the study's space: {', '.join(lost[:3])}", source=study.source,
                          field="space")
    return found


class TPEProjected:
    """Optuna's TPE as the study configures it, projected onto the table (the module docstring)."""

    def __init__(self, table: Table, study: Study, rng: np.random.Generator,
                 parameters: dict[int, tuple[dict[str, Any], dict[str, Any]]]):
        import optuna

        from nas.search.searcher import Proposer, make_sampler

        optuna.logging.set_verbosity(optuna.logging.WARNING)
        self.table, self.rng, self.parameters = table, rng, parameters
        self.directions = ["maximize" if way == "max" else "minimize" for way in study.objectives.values()]
        self.objectives = list(study.objectives)
        self.optuna = optuna.create_study(sampler=make_sampler(study), directions=self.directions)
        self.propose = Proposer(study)
        self.untried = set(range(len(table.candidates)))

    def next(self) -> int | None:
        from optuna.trial import TrialState

        if not self.untried:
            return None
        asked = self.optuna.ask()
        self.propose(asked)
        untried = sorted(self.untried)
        distance = [sum(asked.params.get(name) != value for name, value in self.parameters[i][0].items()) +
                    len(set(asked.params) - set(self.parameters[i][0])) for i in untried]
        nearest = [i for i, d in zip(untried, distance) if d == min(distance)]
        self.optuna.tell(asked, state=TrialState.FAIL)
        index = int(self.rng.choice(nearest))
        self.untried.discard(index)
        return index

    def tell(self, index: int, reported: Mapping[int, float], completed: bool) -> None:
        """What `StudySearcher` tells: intermediate values (one objective), COMPLETE at the full budget with the
        objectives' values, PRUNED otherwise."""
        import optuna
        from optuna.trial import TrialState

        params, distributions = self.parameters[index]
        candidate = self.table.candidates[index]
        last = {self.table.metric: reported[max(reported)], **candidate.cost}
        values = [last[name] for name in self.objectives] if completed else None
        single = len(self.objectives) == 1
        self.optuna.add_trial(optuna.trial.create_trial(
            params=params, distributions=distributions, state=TrialState.COMPLETE if completed else TrialState.PRUNED,
            values=values, intermediate_values={int(b): v for b, v in reported.items()} if single else None))


# ---- one replay ----------------------------------------------------------------------------------------------

@dataclass
class ReplayTrial:
    """What a Tune scheduler reads of a trial: its id."""

    trial_id: str


@dataclass
class Outcome:
    """One replay, judged against `draw` (held out from the learned seeds it saw, `seen`: candidate -> seed):
    (samples spent, true regret of the incumbent, the incumbent) after every report, the candidates in the order
    they started, where each ended (the last budget it reported), and the runs that did not learn it trained
    until the rule caught them (candidate -> (seed, budget)) before rerunning the candidate with seed `seen`."""

    draw: TableDraw
    seen: dict[int, int] = field(default_factory=dict)
    failed: dict[int, tuple[int, int]] = field(default_factory=dict)
    started: list[int] = field(default_factory=list)
    spent: list[float] = field(default_factory=list)
    regret: list[float] = field(default_factory=list)
    incumbent: list[int] = field(default_factory=list)
    ended: dict[int, int] = field(default_factory=dict)


def search_study(study: Study, strategy: Strategy, seed: int) -> Study:
    """The study as this strategy searches it: its early stopping, objectives and sampler seed."""
    objectives = {METRIC: "max", "image_gmacs": "min"} if strategy.pareto else {METRIC: "max"}
    budget = dataclasses.replace(study.budget, early_stopping=strategy.early_stopping, schedule="shared")
    return dataclasses.replace(study, objectives=objectives, budget=budget, seed=seed, algorithm=strategy.sampler,
                               archs=(), labels=(), groups={})


def caught_rung(rungs: Sequence[int], run: FailedRun) -> int:
    """The index of the rung where a trial of a failed run ends: the first at or after the budget the rule caught
    it at (a search judges a run at its rungs only), or the last its curve holds."""
    k = 0
    while k + 1 < len(rungs) and rungs[k] < run.caught and rungs[k + 1] in run.curve:
        k += 1
    return k


def replay(table: Table, study: Study, strategy: Strategy, seed: int, workers: int, cost: str,
           parameters: dict[int, tuple[dict[str, Any], dict[str, Any]]] | None,
           draw: TableDraw | None = None) -> Outcome:
    """One search over the table (the module docstring), judged against `draw` (default: the table as measured),
    each candidate's run one of the draw's, and where that one did not learn, its rerun one of the draw's learned
    seeds; deterministic for `seed`."""
    from ray.tune.schedulers import TrialScheduler

    from nas.search.schedulers import make_scheduler

    rng = np.random.default_rng(seed)
    searched = search_study(study, strategy, seed)
    scheduler = make_scheduler(searched)
    drawn = (draw or table.measured).seeds
    failed, seeds = {}, {}
    for i, (c, runs) in enumerate(zip(table.candidates, drawn)):  # first: paired
        seeds[i] = int(rng.choice(runs))
        if seeds[i] in c.failed:
            failed[i], seeds[i] = seeds[i], int(rng.choice([s for s in runs if s in c.curves]))
    draw = held_out(table, draw or table.measured, seeds)
    searcher = TPEProjected(table, searched, rng, parameters) if strategy.sampler == "tpe" else \
        RandomOrder(table, rng)
    rungs = table.budgets if strategy.dense else study.budget.rungs
    rungs = tuple(b for b in rungs if b <= study.budget.max_samples)
    outcome, events, counter = Outcome(draw, seeds), [], itertools.count()
    spent, best, reported_by = 0.0, None, {}
    running = 0

    curves, caught = {}, {}  # trial id -> the curve it reports, and the rung where the rule catches it

    def start(now: float, rerun: int | None = None) -> bool:
        """The searcher's next candidate, or the rerun of one whose run did not learn (enqueued first)."""
        index = searcher.next() if rerun is None else rerun
        if index is None:
            return False
        trial = ReplayTrial(f"{index:04d}" if rerun is None else f"{index:04d}-rerun")
        candidate = table.candidates[index]
        if rerun is None:
            outcome.started.append(index)
        if rerun is None and index in failed:
            curves[trial.trial_id] = candidate.failed[failed[index]].curve
            caught[trial.trial_id] = caught_rung(rungs, candidate.failed[failed[index]])
        else:
            curves[trial.trial_id] = candidate.curves[seeds[index]]
        scheduler.on_trial_add(None, trial)
        reported_by[index] = {}
        heapq.heappush(events, (now + rungs[0] * candidate.cost["train_gflops"], next(counter), index, trial, 0))
        return True

    while running < workers and start(0.0):
        running += 1
    while events:
        now, _, index, trial, k = heapq.heappop(events)
        candidate = table.candidates[index]
        budget = rungs[k]
        value, n = curves[trial.trial_id][budget]
        result = {"samples_seen": budget, "budget": budget, METRIC: value, f"{METRIC}_n": n, **candidate.cost}
        spent += (budget - (rungs[k - 1] if k else 0)) * (candidate.cost["train_gflops"] if cost == "flops" else 1)
        reported_by[index][budget] = value
        decision = scheduler.on_trial_result(None, trial, result)
        # Ray ends a trial its scheduler stops early inside its report, before the rule judges the run
        stopped = decision == TrialScheduler.STOP and budget < study.budget.max_samples
        not_learned = not stopped and caught.get(trial.trial_id) == k
        if budget >= study.budget.max_samples or stopped or not_learned:
            scheduler.on_trial_complete(None, trial, result)
            completed = budget >= study.budget.max_samples and not not_learned
            searcher.tell(index, reported_by[index], completed)
            if not_learned:  # the rerun with a learned seed takes the worker at once
                outcome.failed[index] = (failed[index], budget)
                start(now, rerun=index)
            else:
                outcome.ended[index] = budget
                if completed and (best is None or value > best[1]):
                    best = (index, value)
                running -= 1
                while running < workers and start(now):
                    running += 1
        else:
            pace = candidate.cost["train_gflops"]
            heapq.heappush(events, (now + (rungs[k + 1] - budget) * pace, next(counter), index, trial, k + 1))
        outcome.spent.append(spent)
        outcome.incumbent.append(-1 if best is None else best[0])
        outcome.regret.append(math.nan if best is None else draw.truth[draw.best] - draw.truth[best[0]])
    return outcome


# ---- many replays, and what they say -------------------------------------------------------------------------

def check(table: Table, study: Study, strategies: Sequence[str], replays: int = 1, tables: int = 0) -> None:
    """The study's rungs must be budgets of the table, the strategies known, and every bootstrap table replayed
    at least twice (the replays' noise within a table is told from the spread between tables)."""
    unknown = [s for s in strategies if s not in STRATEGIES]
    if unknown:
        raise ConfigError(f"unknown strateg(ies) {', '.join(unknown)}; known: {', '.join(STRATEGIES)}",
                          field="--strategies")
    missing = [b for b in study.budget.rungs if b not in table.budgets]
    if missing:
        raise ConfigError(f"the study's rungs {', '.join(map(str, missing))} are not budgets of the table "
                          f"({', '.join(map(str, table.budgets))})", source=study.source, field="budget")
    if tables == 1 or replays < 2 * tables:
        raise ConfigError(f"{replays} replays over {tables} bootstrap table(s): each needs two replays or more, and a "
                          "bootstrap two tables or more (0: the table as measured)", field="--tables")


def _replays(job: tuple[Table, Study, str, Sequence[tuple[int, TableDraw]], int, str, Any]) -> list[Outcome]:
    table, study, name, seeds, workers, cost, parameters = job
    return [replay(table, study, STRATEGIES[name], seed, workers, cost, parameters, draw) for seed, draw in seeds]


def run_replays(table: Table, study: Study, strategies: Sequence[str], replays: int, workers: int,
                cost: str = "samples", jobs: int = 1, seed: int = 0, tables: int = 0) -> dict[str, list[Outcome]]:
    """`replays` replays of each strategy, spread evenly over `tables` bootstrap tables (`draw_tables`; 0: the
    table as measured). Replay r of every strategy is judged against the same table, draws the same seed curves,
    and random search the same order of candidates: paired. On `jobs` processes."""
    check(table, study, strategies, replays, tables)
    parameters = space_parameters(study, table) if any(STRATEGIES[s].sampler == "tpe" for s in strategies) else None
    draws = draw_tables(table, tables, seed)
    seeds = [(seed * 100_003 + r, draws[r % len(draws)]) for r in range(replays)]
    chunks = [seeds[i::max(1, jobs)] for i in range(max(1, jobs))]
    work = [(table, study, name, chunk, workers, cost, parameters) for name in strategies for chunk in chunks if chunk]
    if jobs > 1:
        with ProcessPoolExecutor(jobs) as pool:
            done = list(pool.map(_replays, work))
    else:
        done = [_replays(job) for job in work]
    outcomes: dict[str, list[Outcome]] = {name: [] for name in strategies}
    for job, result in zip(work, done):
        outcomes[job[2]].extend(result)
    return outcomes


def exhaustive(table: Table, study: Study, cost: str) -> float:
    """Every candidate trained to the full budget, in samples (or training GFLOPs)."""
    per = [c.cost["train_gflops"] if cost == "flops" else 1.0 for c in table.candidates]
    return float(study.budget.max_samples * np.sum(per))


def state_at(outcome: Outcome, spend: float) -> tuple[float, int]:
    """(regret, incumbent) after the last report with spent <= spend: (nan, -1) before any full-budget result."""
    position = int(np.searchsorted(outcome.spent, spend, side="right")) - 1
    if position < 0:
        return math.nan, -1
    return outcome.regret[position], outcome.incumbent[position]


def interval(values: Sequence[float], tables: Sequence[int], level: float = 0.95) -> tuple[float, float, float]:
    """The mean of per-replay values (the finite ones) with an interval that holds the table's uncertainty and
    the replays' noise. The replays are grouped by the bootstrap table they were judged against: the variance
    of the tables' means less what the noise within them explains (one-way random effects, by moments; at least
    0) is the table's, var_t; with var_r the variance within tables and N replays in B tables, the interval is
    mean +- t(B - 1) sqrt(var_t (1 + 1/B) + var_r / N). One table (as measured): a t interval over the replays.
    NaN without two values."""
    from scipy import stats

    x, group = np.asarray(values, dtype=float), np.asarray(tables)
    keep = np.isfinite(x)
    x, group = x[keep], group[keep]
    if len(x) < 2:
        return (float(x.mean()) if len(x) else math.nan), math.nan, math.nan
    _, owner = np.unique(group, return_inverse=True)
    counts = np.bincount(owner)
    means = np.bincount(owner, weights=x) / counts
    residual = x - means[owner]
    b, dof = len(counts), len(x) - len(counts)
    within = float(residual @ residual) / dof if dof else 0.0
    between = max(0.0, float(np.var(means, ddof=1)) - within * float(np.mean(1 / counts))) if b > 1 else 0.0
    half = stats.t.ppf(0.5 + level / 2, b - 1 if b > 1 else len(x) - 1) * \
        math.sqrt(between * (1 + 1 / b) + within / len(x))
    return float(x.mean()), float(x.mean() - half), float(x.mean() + half)


def _points(value: tuple[float, float, float], sign: str = "") -> str:
    mean, low, high = (100 * v for v in value)
    return "n/a" if math.isnan(mean) else f"{mean:{sign}.2f}" if math.isnan(low) else \
        f"{mean:{sign}.2f} [{low:{sign}.2f}, {high:{sign}.2f}]"


def _share(value: tuple[float, float, float], sign: str = "") -> str:
    mean, low, high = value
    return "n/a" if math.isnan(mean) else f"{mean:{sign}.2f}" if math.isnan(low) else \
        f"{mean:{sign}.2f} [{low:{sign}.2f}, {high:{sign}.2f}]"


def proportion(hits: int, n: int) -> str:
    if n == 0:
        return "n/a (0 replays)"
    low, high = wilson_interval(hits, n)
    return f"{hits / n:.2f} [{low:.2f}, {high:.2f}] ({hits}/{n})"


@dataclass(frozen=True)
class Summary:
    """The figures of one strategy over its replays (regrets in the metric's units; intervals `interval`'s)."""

    strategy: str
    replays: int
    regret: dict[float, tuple[float, float, float]]  # fraction of exhaustive compute -> mean, low, high
    found: dict[float, float]                         # share of replays with a full-budget incumbent by then
    top: tuple[float, float, float]                   # P(incumbent at AT_FRACTION is a top candidate of its table)
    best_sampled: int                                 # replays that sampled their table's best
    best_first_rung: int                              # ... and stopped it at the first rung
    best_lost: int                                    # ... and stopped it before the full budget


def _clip(value: tuple[float, float, float], low: float, high: float) -> tuple[float, float, float]:
    """An interval kept within what its quantity can be (a regret >= 0, a probability in [0, 1])."""
    mean, a, b = value
    return mean, (a if math.isnan(a) else max(a, low)), (b if math.isnan(b) else min(b, high))


def _at(outcomes: Sequence[Outcome], total: float, fraction: float) -> list[tuple[float, int]]:
    return [state_at(o, fraction * total) for o in outcomes]


def _top(outcomes: Sequence[Outcome], total: float) -> list[float]:
    """1.0 where the incumbent at AT_FRACTION is a top candidate of the replay's table, else 0.0."""
    return [float(i in o.draw.top(TOP_FRACTION)) for o, (_, i) in zip(outcomes, _at(outcomes, total, AT_FRACTION))]


def summarise(table: Table, study: Study, outcomes: Mapping[str, list[Outcome]],
              cost: str = "samples") -> list[Summary]:
    total = exhaustive(table, study, cost)
    first, full = study.budget.ladder[0], study.budget.max_samples
    summaries = []
    for name, runs in outcomes.items():
        tables = [o.draw.index for o in runs]
        at = {f: _at(runs, total, f) for f in FRACTIONS}
        sampled = [o for o in runs if o.draw.best in o.ended]
        summaries.append(Summary(
            name, len(runs), {f: _clip(interval([r for r, _ in at[f]], tables), 0.0, 1.0) for f in FRACTIONS},
            {f: float(np.mean([i >= 0 for _, i in at[f]])) for f in FRACTIONS},
            _clip(interval(_top(runs, total), tables), 0.0, 1.0),
            len(sampled), sum(o.ended[o.draw.best] <= first for o in sampled),
            sum(o.ended[o.draw.best] < full for o in sampled)))
    return summaries


BETTER, WORSE, NOT_DISTINGUISHABLE = "better", "worse", "not distinguishable"


def verdict(difference: tuple[float, float, float], lower_is_better: bool = True) -> str:
    """"better" or "worse" where the difference's interval excludes 0, else "not distinguishable"."""
    _, low, high = difference
    if math.isnan(low) or low <= 0 <= high:
        return NOT_DISTINGUISHABLE
    return BETTER if (high < 0) == lower_is_better else WORSE


def paired(outcomes: Mapping[str, list[Outcome]], table: Table, study: Study, a: str, b: str, fraction: float,
           cost: str = "samples") -> tuple[float, float, float]:
    """Mean regret of `a` minus `b` at `fraction` of exhaustive compute over the replays both found an incumbent
    in (replay r of each was judged against the same table and drew the same seed curves): `interval`."""
    total = exhaustive(table, study, cost)
    return interval([x - y for (x, _), (y, _) in zip(_at(outcomes[a], total, fraction), _at(outcomes[b], total,
                                                                                               fraction))],
                    [o.draw.index for o in outcomes[a]])


@dataclass(frozen=True)
class Versus:
    """A strategy against random search in the same replays (`paired`): its regret minus random search's at
    each fraction of exhaustive compute (negative: it ends closer to the best), and its P(top 10 %) minus random
    search's (positive: more often), each with its interval and verdict."""

    strategy: str
    regret: dict[float, tuple[float, float, float]]
    top: tuple[float, float, float]

    def verdicts(self) -> dict[str, str]:
        return {**{f"{f:.0%}": verdict(d) for f, d in self.regret.items()},
                "top": verdict(self.top, lower_is_better=False)}


def versus(table: Table, study: Study, outcomes: Mapping[str, list[Outcome]], baseline: str = "random-full",
           cost: str = "samples") -> list[Versus]:
    """Every other strategy against `baseline` (none without it)."""
    if baseline not in outcomes:
        return []
    total, tables = exhaustive(table, study, cost), [o.draw.index for o in outcomes[baseline]]
    base = _top(outcomes[baseline], total)
    return [Versus(name, {f: paired(outcomes, table, study, name, baseline, f, cost) for f in FRACTIONS},
                   _clip(interval([x - y for x, y in zip(_top(runs, total), base)], tables), -1.0, 1.0))
            for name, runs in outcomes.items() if name != baseline]


def uncertainty(table: Table, outcomes: Mapping[str, list[Outcome]]) -> str:
    """What the intervals hold: the table's uncertainty (how many bootstrap tables) or the replays' noise only."""
    runs = next(iter(outcomes.values()), [])
    draws = {o.draw.index: o.draw.failed for o in runs}
    tables = len(draws)
    single = sum(len(c.curves) == 1 for c in table.candidates)
    total, failed = sum(len(c.runs) for c in table.candidates), table.measured.failed
    trained = [len(o.failed) for replays in outcomes.values() for o in replays]
    judged = (f"A replay sees one seed's curve of each candidate and is judged by the mean of its other seeds that "
              f"learned; {single} of {len(table.candidates)} candidates have one seed that learned and are judged by "
              f"the seed seen. A run that did not learn, where a replay draws one, is trained until the rule catches "
              f"it (its samples spent, never an incumbent) and the candidate rerun with a learned seed: "
              f"{np.mean(trained or [0]):.2f} such runs per replay ({sum(trained)} in {len(trained)} replays, all "
              "strategies).")
    if tables < 2:
        return (f"Intervals: the replays' noise only, on the table as measured (--tables 0), where {failed} of "
                f"{total} runs did not learn ({failed / total:.1%}), each drawn as often as its candidate holds it. "
                f"{judged}")
    redrawn = list(draws.values())
    return (f"Intervals: the table's uncertainty and the replays' noise: {tables} bootstrap tables (each candidate's "
            f"runs, learned and failed, resampled with replacement; a draw with no learned run drawn again), "
            f"{len(runs) // tables} replays each; the candidates with one run are not redrawn (their seed noise is "
            f"not in the intervals). Runs that did not learn redrawn per bootstrap table: {np.mean(redrawn):.1f} "
            f"(min {min(redrawn)}, max {max(redrawn)}) of {total} ({np.mean(redrawn) / total:.1%}; the table's: "
            f"{failed}, {failed / total:.1%}). {judged}")


def report(table: Table, study: Study, outcomes: Mapping[str, list[Outcome]], cost: str = "samples") -> str:
    summaries = summarise(table, study, outcomes, cost)
    unit = "training GFLOPs" if cost == "flops" else "samples"
    best = table.candidates[table.measured.best]
    lines = [f"{len(table.candidates)} candidates; table best {best.arch.name()} at {best.truth:.2%} {table.metric} "
             f"(mean over its {len(best.curves)} seed(s) that learned); exhaustive compute "
             f"{exhaustive(table, study, cost):,.0f} {unit}; ladder {', '.join(f'{b:,}' for b in study.budget.ladder)}"
             f"; {summaries[0].replays if summaries else 0} replays per strategy", uncertainty(table, outcomes), "",
             f"Regret of the best candidate found ({table.metric}, points; mean [95 % interval] over the replays "
             "that found one; share found) at fractions of exhaustive compute:"]
    headers = ["strategy", *(f"{f:.0%}" for f in FRACTIONS)]
    rows = [[s.strategy, *(f"{_points(s.regret[f])} ({s.found[f]:.0%})" for f in FRACTIONS)] for s in summaries]
    lines += [format_table(headers, rows), "",
              f"P(top {TOP_FRACTION:.0%} candidate at {AT_FRACTION:.0%} of exhaustive compute) [95 %], and the "
              f"table's best when sampled: stopped at the first rung ({study.budget.ladder[0]:,}), stopped before the "
              "full budget:"]
    rows = [[s.strategy, _share(s.top), proportion(s.best_first_rung, s.best_sampled),
             proportion(s.best_lost, s.best_sampled)] for s in summaries]
    lines.append(format_table(["strategy", "P(top 10 %)", "best stopped at rung 1", "best stopped early"], rows))
    against = versus(table, study, outcomes, cost=cost)
    if against:
        lines += ["", "Against random search (random-full), paired (same tables, seed curves and replay seeds): "
                  "regret minus random's (points; negative: closer to the best) and P(top 10 %) minus random's, "
                  "[95 %], verdict:"]
        rows = [[v.strategy, *(f"{_points(v.regret[f], '+')} {v.verdicts()[f'{f:.0%}']}" for f in FRACTIONS),
                 f"{_share(v.top, '+')} {v.verdicts()['top']}"] for v in against]
        lines.append(format_table(["strategy", *(f"{f:.0%}" for f in FRACTIONS), "P(top 10 %)"], rows))
    comparisons = [(a, "asha") for a in ("curve", "curve-dense", "tpe-curve") if a in outcomes and "asha" in outcomes]
    if comparisons:
        lines += ["", "Paired differences of regret (points; same replays), negative: the first finds better:"]
        for a, b in comparisons:
            differences = [f"{a} - {b} at {f:.0%}: {_points(d := paired(outcomes, table, study, a, b, f, cost), '+')} "
                           f"{verdict(d)}" for f in (AT_FRACTION, 1.0)]
            lines.append("  " + "; ".join(differences))
    return "\n".join(lines)


def plot(table: Table, study: Study, outcomes: Mapping[str, list[Outcome]], path: str | Path,
         cost: str = "samples") -> list[Path]:
    """Median regret (with its interquartile band) against the fraction of exhaustive compute, per strategy."""
    from plots.style import SERIES_COLOURS, new_figure, save

    total = exhaustive(table, study, cost)
    grid = np.geomspace(0.01, 1.0, 60)
    fig = new_figure()
    ax = fig.axes[0] if fig.axes else fig.add_subplot()
    for colour, (name, runs) in zip(itertools.cycle(SERIES_COLOURS), outcomes.items()):
        curves = np.array([[state_at(o, f * total)[0] for o in runs] for f in grid]) * 100
        defined = np.isfinite(curves).mean(axis=1) >= 0.5  # where most replays have an incumbent
        low, median, high = (np.nanpercentile(curves[defined], q, axis=1) for q in (25, 50, 75))
        ax.plot(grid[defined], median, color=colour, label=name)
        ax.fill_between(grid[defined], low, high, color=colour, alpha=0.15, linewidth=0)
    ax.set_xscale("log")
    ax.set_xlabel(f"fraction of exhaustive compute ({'training FLOPs' if cost == 'flops' else 'samples seen'})")
    ax.set_ylabel(f"regret of the best found ({table.metric}, points)")
    ax.axvline(AT_FRACTION, color="grey", linewidth=0.8, linestyle=":")
    ax.legend(frameon=False)
    return save(fig, path)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--table", default=str(TABLE), help="the tabular benchmark (benchmarks/tabular.py's CSV)")
    parser.add_argument("--table-study", default=str(tabular.STUDY),
                        help="the study that made the table (default studies/tabular_tiny.yaml): its batch size and "
                        "reduction factor judge whether each run learned")
    parser.add_argument("--study", default=str(STUDY), help="the search to replay (default studies/quickstart.yaml)")
    parser.add_argument("--strategies", default=",".join(DEFAULT_STRATEGIES),
                        help=f"comma-separated, of: {', '.join(STRATEGIES)}")
    parser.add_argument("--replays", type=int, default=200, help="replays per strategy (default 200)")
    parser.add_argument("--tables", type=int, default=20, help="bootstrap tables the replays are spread over, for "
                        "the table's uncertainty (default 20; 0: the table as measured, the replays' noise only)")
    parser.add_argument("--workers", type=int, help="trials at once (default: the study's concurrency, or 1)")
    parser.add_argument("--cost", choices=("samples", "flops"), default="samples", help="what compute counts")
    parser.add_argument("--jobs", type=int, default=min(2, os.cpu_count() or 1), help="processes (default 2)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the replays' seeds")
    parser.add_argument("--plot", metavar="PATH", help="write the regret curves there (PNG and SVG)")
    parser.add_argument("--json", metavar="PATH", help="write the summaries there")
    args = parser.parse_args(argv)
    begin = time.perf_counter()
    try:
        if not Path(args.table).is_file():
            raise ConfigError("no such table: make it with benchmarks/tabular.py", source=args.table)
        judged = tabular.read_table(args.table, load_study(args.table_study))
        print(judged.lines())
        table = load_table(judged.frame, failed=judged.failed)
        study = load_study(args.study)
        strategies = [s.strip() for s in args.strategies.split(",") if s.strip()]
        outcomes = run_replays(table, study, strategies, args.replays, args.workers or study.resources.concurrency
                               or 1, args.cost, args.jobs, args.seed, args.tables)
    except ConfigError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(report(table, study, outcomes, args.cost))
    if args.plot:
        print("figure: " + ", ".join(str(p) for p in plot(table, study, outcomes, args.plot, args.cost)))
    if args.json:
        Path(args.json).write_text(json.dumps([dataclasses.asdict(s) for s in summarise(table, study, outcomes,
                                                                                          args.cost)], indent=1))
    print(f"({time.perf_counter() - begin:.0f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
