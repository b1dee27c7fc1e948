"""A tabular benchmark of a search space, made by the toolkit's own search: a learning curve per candidate, as a CSV.

    .venv/bin/python benchmarks/tabular.py                   # studies/tabular_tiny.yaml -> benchmarks/tables/
    .venv/bin/python benchmarks/tabular.py --resume          # continue after an interruption
    .venv/bin/python benchmarks/tabular.py --study S.yaml --out runs/S --csv T.csv
    .venv/bin/python benchmarks/tabular.py --from-run runs/tabular_tiny --csv T.csv    # the CSV of a finished run
    .venv/bin/python benchmarks/tabular.py --fidelity FULL.csv CHEAP.csv [...]   # cheaper measurements, ranked
    .venv/bin/python benchmarks/tabular.py --repeatability T.csv --study S.yaml   # the ranking from seed to seed

The study must list its candidates (algorithm fixed, or grid: the space's feasible archs in a stratified order,
`nas.stratified`) and run without early stopping, so that every candidate is measured at every rung
(`budget.between` and `budget.below` add evaluations off the ladder) and, with `repeats`, a share of them
with a second seed. `vitamin-nas search` would run the same study: this script runs it through the same
`nas.search.search` (Ray Tune, Optuna, the trainer, the results database in OUT/study.db), then writes one row
per trial and rung:

    candidate_id, arch_id, arch_name, family, arch (JSON), image_size, mask_ratio, seed, status,
    budget, samples_seen, zeroshot_top1, zeroshot_top1_n, zeroshot_top1_low, zeroshot_top1_high (every metric
    the study measured, with its eval-set size and 95 % interval), loss, wall_s (cumulative seconds),
    image_gmacs, image_params_m, train_gflops (analytic, per sample), naswot, synflow (at initialisation),
    hits (which eval items the run got right, as the results database keeps them: JSON of
    `nas.uncertainty.pack_hits` text by metric, one bit an item; `nas.compare.hits` reads a row's)

`arch_id` is the tower as measured; `candidate_id` the same tower at the space's full (largest) resolution, which
pairs a study measured at a lower `image_size` with the full one. `seed` is the training seed (the recipe's,
or a repeat's). `benchmarks/search_efficiency.py` replays searches over the table. Prints the time it took,
then the table's repeatability (below); asserts nothing.

Repeatability (`repeatability`, at every budget; `--repeatability T.csv` for a table already written): the
Spearman between disjoint seeds' tables (seed 0 against seed 1, ...), the share of candidates distinguishable
from the best (`nas.seeds` verdicts on the per-seed paired differences of the hits), and the probability that
the table's best is the true best (a parametric bootstrap). A pilot of a study is a study that extends it with
fewer `trials` (a grid's first candidates), and a larger `budget` to try (studies/tabular_v2.yaml).

Fidelity axes beyond samples seen are tables of the same candidates measured more cheaply: a study that
extends this one with `image_size: 32` (studies/tabular_tiny_32px.yaml) or `train: {mask_ratio: 0.5}`
(studies/tabular_tiny_masked.yaml). `--fidelity FULL.csv CHEAP.csv ...` ranks the candidates by every budget of
each cheaper table, by every earlier budget of the full one, and by the size and zero-cost scores, against
the full table's last budget (`nas.fidelity`: Spearman and Kendall with intervals, top-k overlap,
promotions that would change; a candidate's value is its mean over seeds), and, as the ceiling no cheaper
measurement can pass, the full budget's ranking by another seed (the candidates trained twice). Where the table
has repeated seeds, the intervals are the table's own (`nas.fidelity.table_agreement`: every draw resamples the
candidates and each one's seeds, its truth their mean, an earlier budget averaged over the same redrawn runs; a
one-seed candidate's truth drawn with the table's pooled seed SD), else over candidates alone.

A run that did not learn is no measurement of its candidate (`nas.learning`, issue #28). `read_table`, the one
place a table is read (here and by `benchmarks/search_efficiency.py`), judges every (candidate, seed) curve by
that rule, with the batch size and reduction factor of the study that made the table (`--study`), and takes
such runs out: a candidate's value is its mean over the seeds that learned, and a candidate with none leaves
the table. Which runs it took out, with the rule's reason and the rate's Wilson interval, is printed first. A
table written from a search keeps the status `did_not_learn` its search recorded (the run, measured up to the
rung where it was caught, stays in the CSV). The runs taken out are kept beside the table (`Learned.failed`),
each with the budget at which the rule caught it, for the replays that train them as a search does.
"""

from __future__ import annotations

import argparse
import functools
import itertools
import shlex
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from nas import status  # noqa: E402
from nas.arch import Arch  # noqa: E402
from nas.compare import hits  # noqa: E402
from nas.errors import ConfigError  # noqa: E402
from nas.fidelity import (  # noqa: E402
    SIZE_SCORES,
    FidelityRow,
    compare,
    format_correlation,
    format_fidelity,
    table_agreement,
)
from nas.learning import FailureRate, did_not_learn, failure_rate  # noqa: E402
from nas.metrics import EVALUATED, ZERO_COST  # noqa: E402
from nas.results import ResultStore  # noqa: E402
from nas.search import SearchInterrupted  # noqa: E402
from nas.seeds import HOLDS, compare_hits, seed_spread  # noqa: E402
from nas.space import SearchSpace  # noqa: E402
from nas.study import Study, load_study  # noqa: E402

STUDY = REPO / "studies" / "tabular_tiny.yaml"
TABLES = REPO / "benchmarks" / "tables"
#: Cost columns of the table: the analytic cost of the image tower and of one training sample.
COST_COLUMNS = ("image_gmacs", "image_params_m", "train_gflops")
IDENTITY = ("candidate_id", "arch_id", "arch_name", "family", "arch", "image_size", "mask_ratio", "seed", "status")


def check_study(study: Study) -> None:
    """A table needs every candidate measured at every rung: listed candidates, no early stopping, one schedule."""
    if not study.archs:
        raise ConfigError("a table lists its candidates: algorithm fixed or grid", source=study.source,
                          field="algorithm")
    if study.budget.early_stopping != "none" or study.budget.per_budget:
        raise ConfigError("a table measures every candidate at every rung: early_stopping: none, schedule: shared",
                          source=study.source, field="budget")


def run(study: Study, out: str | Path, resume: bool = False, **options) -> ResultStore:
    """The study's search (`nas.search.search`), or with `resume` its continuation."""
    from nas.search import search

    check_study(study)
    return search(study, out, resume=resume, **options)


def table(store: ResultStore, proxies: Sequence[str] = ZERO_COST, progress: bool = False) -> pd.DataFrame:
    """One row per completed trial and rung (the module docstring's columns), zero-cost scores computed for
    the archs whose scores the study did not record. A trial cut off (an interrupted search, `--from-run` of
    one still running) is left out: a table's candidates are measured to the full budget. A trial that did not
    learn is kept, with its status, up to the rung where it was caught (`read_table` takes it out)."""
    from nas.proxies import zero_cost_scores

    study = store.study()
    frame = store.frame(status=(status.COMPLETED, status.DID_NOT_LEARN))
    if frame.empty:
        return pd.DataFrame(columns=IDENTITY)
    archs = {arch_id: Arch.from_json(text) for arch_id, text in frame.drop_duplicates("arch_id")[["arch_id", "arch"]]
             .itertuples(index=False)}
    candidate = {a: candidate_id(arch, study.space) for a, arch in archs.items()}
    missing = [p for p in proxies if p not in frame or frame[p].isna().any()]
    if missing:
        from tqdm import tqdm

        scores = {a: zero_cost_scores(arch, names=tuple(missing))
                  for a, arch in tqdm(archs.items(), desc="zero-cost proxies", unit="arch", disable=not progress)}
        frame = frame.assign(**{p: frame.arch_id.map(lambda a, p=p: scores[a][p]) for p in missing})
    metrics = [c for name in EVALUATED if name in frame and frame[name].notna().any()
               for c in (name, f"{name}_n", f"{name}_low", f"{name}_high") if c in frame]
    out = frame.assign(
        candidate_id=frame.arch_id.map(candidate), image_size=frame.arch_id.map(lambda a: archs[a].image_size),
        mask_ratio=study.train.mask_ratio, seed=frame.seed.map(lambda s: study.train.seed if pd.isna(s) else int(s)))
    columns = [*IDENTITY, "budget", "samples_seen", *metrics, "loss", "wall_s", *COST_COLUMNS, *proxies, "hits"]
    out = out[[c for c in columns if c in out]]
    return out.sort_values(["candidate_id", "seed", "budget"], kind="stable").reset_index(drop=True)


def candidate_id(arch: Arch, space: SearchSpace) -> str:
    """The tower at the space's full resolution (the largest its `image_size` domain offers): one id for the same
    candidate measured at a lower `image_size`; the tower as it is when the space leaves the resolution open."""
    domain = dict(space.params()).get("image_size")
    if domain is None:
        return arch.arch_id
    full = max(domain.options()) if domain.finite else domain.high
    return arch.replace(image_size=int(full)).arch_id


@dataclass(frozen=True)
class Learned:
    """A table with its runs that did not learn taken out (`read_table`)."""

    frame: pd.DataFrame                             # the rows of the runs that learned
    flagged: tuple[tuple[str, str, int, str], ...]  # (candidate_id, arch_name, seed, the rule's reason) taken out
    left: tuple[str, ...]                           # candidates no run of which learned: out of the table
    rate: FailureRate                               # runs taken out of all runs, with its Wilson interval
    failed: pd.DataFrame                            # the rows taken out, `caught`: the budget the rule caught it at

    def lines(self) -> str:
        names = {candidate: name for candidate, name, _, _ in self.flagged}
        lines = [f"{self.rate.line()}; such a run is no measurement: the table keeps its candidates' other seeds"]
        lines += [f"  {name} seed {seed}: {reason}" for _, name, seed, reason in self.flagged]
        lines += [f"  {names[c]}: no seed learned; the candidate leaves the table" for c in self.left]
        return "\n".join(lines)


def learned(frame: pd.DataFrame, study: Study) -> Learned:
    """`frame` without its runs that did not learn: each (candidate, seed) curve judged by `nas.learning`'s rule
    on its training losses, with the batch size, loss and reduction factor of `study` (the study that made the
    table), or recorded so by its search. A run taken out was caught at the first budget where the rule holds on
    its losses up to there (where a search judging it at every rung of the table would have stopped it), or, recorded
    so by its search, at its last budget (the search trained it until it caught it)."""
    flagged, statuses, caught = [], [], {}
    for (candidate, seed), run in frame.groupby(["candidate_id", "seed"], sort=True):
        losses = dict(zip(run.budget.astype(int), run.loss.astype(float)))
        judge = functools.partial(did_not_learn, batch_size=study.train.batch_size, loss=study.train.loss,
                                  reduction_factor=study.budget.reduction_factor)
        reason = judge(losses)
        if reason is not None:
            caught[candidate, seed] = next(b for b in sorted(losses)
                                           if judge({k: v for k, v in losses.items() if k <= b}) is not None)
        elif (run.status == status.DID_NOT_LEARN).any():
            reason, caught[candidate, seed] = "recorded did_not_learn by its search", int(run.budget.max())
        if reason is not None:
            flagged.append((str(candidate), str(run.arch_name.iloc[0]), int(seed), reason))
        statuses.append(status.COMPLETED if reason is None else status.DID_NOT_LEARN)
    out = pd.MultiIndex.from_frame(frame[["candidate_id", "seed"]]).isin(list(caught))
    kept = frame[~out]
    failed = frame[out].assign(caught=[caught[c, s] for c, s in zip(frame[out].candidate_id, frame[out].seed)])
    left = tuple(sorted(set(frame.candidate_id) - set(kept.candidate_id)))
    return Learned(kept.reset_index(drop=True), tuple(flagged), left, failure_rate(statuses),
                   failed.reset_index(drop=True))


def read_table(path: str | Path, study: Study) -> Learned:
    """The table at `path`, its runs that did not learn taken out (`learned`): the one place a table is read."""
    return learned(pd.read_csv(path), study)


def write_table(store: ResultStore, path: str | Path, progress: bool = False) -> pd.DataFrame:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    frame = table(store, progress=progress)
    frame.to_csv(path, index=False, float_format="%.6g")
    return frame


def summary(frame: pd.DataFrame, metric: str = "zeroshot_top1") -> str:
    """What the table holds: candidates, seeds, budgets, the spread of the metric at the full budget."""
    if frame.empty:
        return "an empty table"
    full = frame[frame.budget == frame.budget.max()]
    repeated = frame[frame.status != status.DID_NOT_LEARN].groupby("candidate_id").seed.nunique()
    lines = [f"{frame.candidate_id.nunique()} candidates ({int((repeated > 1).sum())} with a second seed that "
             "learned), "
             f"{frame.budget.nunique()} budgets ({', '.join(f'{b:,}' for b in sorted(frame.budget.unique()))}), "
             f"{len(frame)} rows"]
    if metric in full and full[metric].notna().any():
        lines.append(f"{metric} at {int(full.budget.iloc[0]):,} samples: {full[metric].min():.4f} to "
                     f"{full[metric].max():.4f} (median {full[metric].median():.4f})")
    return "\n".join(lines)


def measurement(frame: pd.DataFrame) -> str:
    """How a table measured its candidates, for a fidelity label: '32 px', 'mask 0.5', '32 px, mask 0.5'."""
    parts = []
    if frame.image_size.nunique() == 1:
        parts.append(f"{int(frame.image_size.iloc[0])} px")
    if frame.mask_ratio.max() > 0:
        parts.append(f"mask {frame.mask_ratio.max():g}")
    return ", ".join(parts)


def fidelity(full: pd.DataFrame, cheap: Sequence[pd.DataFrame] = (), metric: str = "zeroshot_top1",
             reduction_factor: float = 3.0, **options) -> list[FidelityRow]:
    """Each cheaper measurement (`scored_runs`) against `full`'s last budget, on the candidates both measured,
    then the last budget of one seed against another's (`another seed`: a candidate's first two seeds, where it
    has two); `options` go to `nas.fidelity.compare`. Where the full table has a candidate with repeated seeds,
    each measurement's Spearman and Kendall intervals are the table-level ones (`table_intervals`)."""
    target = int(full.budget.max())
    table = table_intervals(full, metric)
    drawn = {k: options[k] for k in ("n_bootstrap", "seed", "level") if k in options}

    def row(label: str, scored: pd.DataFrame) -> list[FidelityRow]:
        both = scored.groupby("candidate_id")[[SCORE, TRUTH]].mean()
        if len(both) < 3:
            return []
        agreement = table_agreement(scored, SCORE, TRUTH, seed_sd=table.seed_sd, **drawn) if table else None
        return [compare(both[SCORE], both[TRUTH], cheap_label=label, expensive_label=target,
                        reduction_factor=reduction_factor, agreement=agreement, **options)]

    measured = scored_runs(full, cheap, metric)
    scores = {*SIZE_SCORES, *ZERO_COST}
    return [*(r for label, scored in measured.items() if label not in scores for r in row(label, scored)),
            *_another_seed(full, metric, reduction_factor, **options),
            *(r for label, scored in measured.items() if label in scores for r in row(label, scored))]


def _another_seed(full: pd.DataFrame, metric: str, reduction_factor: float, **options) -> list[FidelityRow]:
    """Seed against seed at the full budget: the ceiling, with the bootstrap over candidates."""
    target = int(full.budget.max())
    seeds = full[full.budget == target].pivot(index="candidate_id", columns="seed", values=metric)
    twice = seeds.apply(lambda row: row.dropna().iloc[:2].tolist(), axis=1)
    twice = twice[twice.map(len) == 2]
    if len(twice) < 3:
        return []
    first, second = zip(*twice)
    return [compare(first, second, cheap_label="another seed", expensive_label=target,
                    reduction_factor=reduction_factor, **options)]


def scored_runs(full: pd.DataFrame, cheap: Sequence[pd.DataFrame] = (),
                metric: str = "zeroshot_top1") -> dict[str, pd.DataFrame]:
    """Each cheaper measurement of `full`'s candidates beside their truth, by label: the full budget's runs
    (`candidate_id`, `seed`) with their `TRUTH` and the `SCORE` the measurement gives them: an earlier budget of
    the same run ('6,000': paired), another table's candidate mean ('32 px 6,000'), or a size or zero-cost score
    of the candidate, signed so that larger predicts better ('image_gmacs', 'naswot'). Runs without a score are
    left out."""
    target = int(full.budget.max())
    runs = full[full.budget == target][["candidate_id", "seed", metric]].rename(columns={metric: TRUTH})
    found = {}
    for at_budget, own in [(full[full.budget < target], True), *((t, False) for t in cheap)]:
        for budget, at in at_budget.groupby("budget"):
            if own:
                found[f"{int(budget):,}"] = runs.merge(
                    at[["candidate_id", "seed", metric]].rename(columns={metric: SCORE}), on=["candidate_id", "seed"])
            else:
                found[f"{measurement(at_budget)} {int(budget):,}"] = runs.merge(
                    at.groupby("candidate_id")[metric].mean().rename(SCORE), left_on="candidate_id", right_index=True)
    per_candidate = full.drop_duplicates("candidate_id").set_index("candidate_id")
    for score, way in {**SIZE_SCORES, **dict.fromkeys(ZERO_COST, "max")}.items():
        if score in per_candidate:
            sign = 1 if way == "max" else -1
            found[score] = runs.merge((sign * per_candidate[score].astype(float)).rename(SCORE),
                                      left_on="candidate_id", right_index=True)
    return {label: scored.dropna(subset=[SCORE, TRUTH]) for label, scored in found.items()}


#: The columns `table_agreement` is given: a run's truth (its full budget) and the score it is ranked by.
TRUTH, SCORE = "truth", "score"


@dataclass(frozen=True)
class TableIntervals:
    """How a table's own uncertainty enters its intervals (`table_intervals`): its candidates with repeated seeds
    at the full budget, and the pooled seed SD drawn for its one-seed candidates' truth (None when all have two)."""

    repeated: int
    single: int
    seed_sd: float | None

    def line(self) -> str:
        line = (f"intervals over redrawn tables (nas.fidelity.table_agreement): the candidates and each one's seeds "
                f"resampled; {self.repeated} candidates with two or more seeds")
        if self.single:
            line += (f", {self.single} with one, whose truth is drawn with the pooled seed SD "
                     f"{100 * self.seed_sd:.2f} pts (a parametric term)")
        return line


def table_intervals(frame: pd.DataFrame, metric: str = "zeroshot_top1") -> TableIntervals | None:
    """The table's uncertainty at its full budget (its runs that learned), None where no candidate has two seeds
    (intervals are then over candidates alone)."""
    at = frame[frame.budget == frame.budget.max()].dropna(subset=[metric])
    seeds = at.groupby("candidate_id").seed.nunique()
    spread = seed_spread(at.assign(arch_id=at.candidate_id), metric, own_seed=0)  # a candidate at any resolution
    if spread is None or not (seeds > 1).any():
        return None
    single = int((seeds == 1).sum())
    return TableIntervals(int((seeds > 1).sum()), single, spread.sd if single else None)


#: Redrawn tables behind `Repeatability.p_best`.
N_DRAWS = 10_000


@dataclass(frozen=True)
class Repeatability:
    """How far a table's ranking at one budget survives a new seed (`repeatability`)."""

    budget: int
    repeated: int                     # candidates with two or more seeds that learned
    pairs: tuple[FidelityRow, ...]    # seed s (`cheap`, "seed s") against seed t (`expensive`), every pair of seeds
    best: str                         # the table's best by its seed mean (arch name)
    verdicts: tuple[str, ...]         # `nas.seeds` verdict of the best against each other candidate (with hits)
    seed_sd: float                    # the seed-to-seed SD, pooled over the repeated candidates (`nas.seeds`)
    p_best: float                     # P(the table's best is the true best), the parametric bootstrap

    @property
    def distinguishable(self) -> int:
        """Candidates the best is better than on every seed, by an interval over seeds that excludes 0."""
        return sum(v == HOLDS for v in self.verdicts)

    def lines(self) -> str:
        pairs = "; ".join(f"{r.cheap} vs {r.expensive}: "
                          f"{format_correlation(r.spearman, r.spearman_low, r.spearman_high, p_value=r.spearman_p)} "
                          f"({r.candidates})" for r in self.pairs)
        counts = ", ".join(f"{verdict} {self.verdicts.count(verdict)}" for verdict in dict.fromkeys(self.verdicts))
        lines = [f"at {self.budget:,} samples: {self.repeated} candidates with two or more seeds that learned, "
                 f"seed SD {100 * self.seed_sd:.2f} pts (pooled)",
                 f"  Spearman between seeds' tables, [95 %] (candidates): {pairs or 'too few with two seeds'}"]
        if self.verdicts:
            lines.append(f"  distinguishable from the best, {self.best}: {self.distinguishable} of "
                         f"{len(self.verdicts)} ({counts}; nas.seeds on per-seed McNemar differences of the hits)")
        else:
            lines.append(f"  distinguishable from the best, {self.best}: unknown (no hits in the table)")
        lines.append(f"  P(the table's best is the true best) = {self.p_best:.2f} (parametric bootstrap, {N_DRAWS:,} "
                     "tables redrawn with the pooled seed SD)")
        return "\n".join(lines)


def repeatability(frame: pd.DataFrame, budget: int, metric: str = "zeroshot_top1", seed: int = 0,
                  **options) -> Repeatability | None:
    """The repeatability of a table's ranking at `budget` (its runs that learned: `learned`), None where no
    candidate has two seeds there:

    - the Spearman between disjoint seeds' tables: seed s against seed t on the candidates with both, for every
      pair of seeds, with `nas.fidelity`'s interval (none below its `MIN_CANDIDATES`: the exact p);
    - the verdict (`nas.seeds.compare_hits`) of the best by seed mean against every other candidate, from the
      per-seed paired differences on the same eval images (the stored hits);
    - the probability that the table's best is the true best, by a parametric bootstrap: the truth taken as the
      table's seed means, each candidate's seed mean is drawn again as normal around its own, with the seed SD
      pooled over the repeated candidates (`nas.seeds.seed_spread`; a candidate's own SD rests on one or two
      degrees of freedom) over the square root of its seed count; the share of `N_DRAWS` redrawn tables whose
      best is the table's. The observed best's lead is itself inflated by its selection, so it leans high.

    `options` go to `nas.fidelity.compare`."""
    at = frame[frame.budget == budget].dropna(subset=[metric])
    spread = seed_spread(at, metric, own_seed=0)
    if spread is None:
        return None
    values = at.pivot_table(index="candidate_id", columns="seed", values=metric)
    pairs = []
    for s, t in itertools.combinations(values.columns, 2):
        both = values[[s, t]].dropna()
        if len(both) >= 3:
            pairs.append(compare(both[s], both[t], cheap_label=f"seed {s}", expensive_label=int(t), seed=seed,
                                 **options))
    means, seeds = values.mean(axis=1), values.notna().sum(axis=1)
    best = means.idxmax()
    verdicts = []
    if "hits" in at:
        by_seed = {c: {int(r.seed): hits(r, metric) for r in runs.itertuples(index=False)}
                   for c, runs in at.groupby("candidate_id")}
        for other in means.index.drop(best):
            comparison = compare_hits(by_seed[best], by_seed[other])
            if comparison is not None:
                verdicts.append(comparison.verdict)
    drawn = means.to_numpy() + np.random.default_rng(seed).standard_normal((N_DRAWS, len(means))) * spread.sd / \
        np.sqrt(seeds.to_numpy())
    p_best = float(np.mean(drawn.argmax(axis=1) == means.index.get_loc(best)))
    name = at[at.candidate_id == best].arch_name.iloc[0]
    return Repeatability(int(budget), int((seeds >= 2).sum()), tuple(pairs), str(name), tuple(verdicts), spread.sd,
                         p_best)


def format_repeatability(frame: pd.DataFrame, metric: str = "zeroshot_top1") -> str:
    """`repeatability` at every budget of a table (its runs that learned)."""
    found = [r for budget in sorted(frame.budget.unique()) if (r := repeatability(frame, budget, metric))]
    if not found:
        return "repeatability: no candidate has two seeds that learned"
    return "\n".join(["repeatability of the ranking from seed to seed:", *(r.lines() for r in found)])


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--study", default=str(STUDY), help="the study (default studies/tabular_tiny.yaml); with "
                        "--fidelity, the one that made the tables: its batch size judges whether each run learned")
    parser.add_argument("--out", help="the search's directory (default runs/<study name>)")
    parser.add_argument("--csv", help="the table (default benchmarks/tables/<study name>.csv)")
    parser.add_argument("--resume", action="store_true", help="continue the search in --out")
    parser.add_argument("--from-run", metavar="DIR", help="write the table of a finished search; run nothing")
    parser.add_argument("--fidelity", nargs="+", metavar="CSV",
                        help="the full table, then cheaper tables of its candidates: print their fidelity; run nothing")
    parser.add_argument("--repeatability", metavar="CSV", help="print the table's repeatability from seed to seed "
                        "at every budget (a run prints its own table's when it ends); run nothing")
    args = parser.parse_args(argv)
    if args.repeatability:
        judged = read_table(args.repeatability, load_study(args.study))
        print(f"{args.repeatability}: {judged.lines()}")
        print(format_repeatability(judged.frame))
        return 0
    if args.fidelity:
        study = load_study(args.study)
        judged = [read_table(path, study) for path in args.fidelity]
        for path, table in zip(args.fidelity, judged):
            print(f"{path}: {table.lines()}")
        full, *cheap = (table.frame for table in judged)
        print(f"ranking of {full.candidate_id.nunique()} candidates at {int(full.budget.max()):,} samples "
              f"({measurement(full)}) by cheaper measurements:")
        print(format_fidelity(fidelity(full, cheap)))
        intervals = table_intervals(full)
        print(f"{intervals.line()}; another seed's over candidates alone" if intervals else "intervals over "
              "candidates alone: no candidate has two seeds that learned, so the table's seed noise is not in them")
        return 0
    try:
        begin = time.perf_counter()
        if args.from_run:
            store = ResultStore.open(args.from_run, readonly=True)
            name = store.study().name
        else:
            study = load_study(args.study)
            name = study.name
            out = Path(args.out or REPO / "runs" / name)
            command = shlex.join([sys.executable, __file__, "--study", args.study, "--out", str(out), "--resume",
                                  *(["--csv", args.csv] if args.csv else [])])
            store = run(study, out, resume=args.resume, command=command)
        csv = Path(args.csv or TABLES / f"{name}.csv")
        frame = write_table(store, csv, progress=True)
    except ConfigError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except SearchInterrupted as stopped:
        print(f"tabular: {stopped}; continue it with:\n  {command}", file=sys.stderr)
        return 130
    print(summary(frame))
    print(f"table: {csv} ({time.perf_counter() - begin:.0f} s)")
    if not frame.empty:
        judged = learned(frame, store.study())
        print(judged.lines())
        print(format_repeatability(judged.frame))
    return 0


if __name__ == "__main__":
    sys.exit(main())
