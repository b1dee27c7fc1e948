"""The supernet against a tabular benchmark (issue #25): does the zero-shot accuracy a subnet inherits from a
trained supernet rank the table's candidates as training each alone does, and for how much compute?

    .venv/bin/python benchmarks/supernet.py --run runs/sn_v2 --table benchmarks/tables/tabular_v2.csv \\
        --study studies/tabular_v2.yaml --samples 1000 --finetune-samples 6000 --out docs/results

`--run` is a `vitamin-nas supernet train` run (its newest checkpoint), `--table` a table of
`benchmarks/tabular.py` and `--study` the study that made it: the table is read by its `read_table` (runs that
did not learn taken out), a candidate's truth is its seed mean at the table's full budget, and every table
candidate must be a subnet of the supernet (its space at its resolution; exit 2 naming one that is not). The
supernet scores subnets on the study's zero-shot set (the table's eval set) with inherited weights
(`nas.supernet.rank`):

- ranking: `--samples` subnets drawn uniformly from its space (`sample_subnets`, `--seed`), timed (wall and
  this process's CPU seconds), written to WORK/rank/ranking.csv and pareto.csv; then every table candidate;
- agreement with the truth (`nas.fidelity.table_agreement`): Spearman and Kendall with 95 % intervals over
  redrawn tables (each draw resamples the candidates and each one's seeds; a one-seed candidate's truth drawn
  with the table's pooled seed SD, a parametric term, where the table has repeated seeds), on every candidate and
  on the top 10 % by truth; the same for the table's earlier budgets (paired run by run) and its size and
  zero-cost scores (`tabular.scored_runs`), on the same candidates. The supernet's own score (a Wilson interval
  over the eval images each) is not redrawn;
- compute: the supernet's samples seen x subnets per sandwich step, its wall seconds and CPU seconds from
  RUN/metrics.jsonl (the last train event at or before the checkpoint; CPU seconds only where the events record
  `cpu_s`), against the table's (the runs that learned: samples seen and wall seconds summed over them; a table
  run trains on one thread, so its CPU seconds are estimated as its wall seconds), as a number of stand-alone
  full-budget runs;
- regret of the supernet's pick (the table candidate it scores best): the table's best truth minus the pick's
  truth, with its interval over the table's redrawn seeds; and with `--finetune-samples N`, the pick exported
  (`nas.supernet.export`) and fine-tuned from its inherited weights with the study's recipe for N samples
  (`TrainConfig.pretrained`; the study's warmup where it fits in N samples, else a tenth of the steps; one
  seed), evaluated on the same zero-shot set: its top-1 with its Wilson interval, and the regret against the
  table's best truth (interval: the redrawn table's best minus a binomial redraw of the fine-tuned accuracy).

Writes OUT/supernet.md (every figure with its n and interval, the command that made it, "met"/"not met" for
the issue's target only as the intervals allow), OUT/supernet.csv (a row per table candidate: truth with its
interval, the supernet's score with its interval, the earlier budgets, the size and zero-cost scores) and
OUT/supernet/score_vs_truth.png; checkpoints and exports go under `--work`. Prints progress; asserts nothing.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import shlex
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import tabular  # noqa: E402  (benchmarks/tabular.py: this script's directory is on the path)

from nas.arch import Arch  # noqa: E402
from nas.errors import ConfigError  # noqa: E402
from nas.fidelity import TOP_FRACTION, Agreement, format_correlation, table_agreement, table_draws  # noqa: E402
from nas.study import Study, load_study  # noqa: E402
from nas.uncertainty import N_BOOTSTRAP  # noqa: E402

METRIC = "zeroshot_top1"
#: The label of the supernet's score among the predictors.
SUPERNET = "supernet (inherited weights)"
#: The issue's target: this Spearman or more, its interval excluding 0, within this many full-budget runs of
#: compute, having ranked this many subnets.
TARGET_SPEARMAN, TARGET_RUNS, TARGET_RANKED = 0.6, 8, 1000
LEVEL = 0.95


@dataclass(frozen=True)
class Compute:
    """What a run or a table spent: samples trained (a supernet's times its subnets per step), wall seconds, CPU
    seconds (None where not recorded) and whether those are an estimate."""

    samples: float
    wall_s: float
    cpu_s: float | None
    cpu_estimated: bool = False


def supernet_compute(run: Path, checkpoint: dict[str, Any], subnets_per_step: int) -> Compute:
    """The supernet's training up to its checkpoint, from RUN/metrics.jsonl's last train event at or before it
    (the checkpoint's own wall seconds where no event is)."""
    events = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines() if line.strip()]
    samples = int(checkpoint["samples_seen"])
    trained = [e for e in events if e.get("event") == "train" and e.get("samples_seen", math.inf) <= samples]
    last = trained[-1] if trained else {"wall_s": checkpoint["wall_s"]}
    return Compute(samples * subnets_per_step, float(last["wall_s"]), last.get("cpu_s"))


def table_compute(frame: pd.DataFrame) -> tuple[Compute, int]:
    """The table's runs (that learned): samples seen and wall seconds (cumulative in the table) of each run's last
    row, summed; CPU seconds estimated as wall seconds (a table run trains on one thread). With the run count."""
    last = frame.sort_values("budget").groupby(["candidate_id", "seed"]).tail(1)
    wall = float(last.wall_s.sum())
    return Compute(float(last.samples_seen.sum()), wall, wall, cpu_estimated=True), len(last)


def candidate_archs(frame: pd.DataFrame, supernet: Any, run: Path) -> dict[str, Arch]:
    """Each table candidate's measured arch; a `ConfigError` naming the first that is no subnet of `supernet`."""
    archs = {}
    for candidate, first in frame.drop_duplicates("candidate_id").set_index("candidate_id").iterrows():
        arch = Arch.from_json(first.arch)
        if not supernet.holds(arch):
            raise ConfigError(f"table candidate {arch.name()} ({candidate}) is no subnet of the supernet in {run} "
                              f"({supernet.space.source} at {supernet.image_size} px)", field="--table")
        archs[str(candidate)] = arch
    return archs


def truth_draws(runs: pd.DataFrame, seed_sd: float | None, seed: int = 0) -> tuple[pd.DataFrame, np.ndarray]:
    """Each candidate's truth (its seed mean, `seeds` of them) with the 95 % percentile interval of its redrawn
    seeds, and the truth of every candidate (sorted) in `N_BOOTSTRAP` tables with each one's seeds redrawn
    (`table_draws`, with the same parametric term for a one-seed candidate)."""
    groups = {c: g[[tabular.TRUTH]].to_numpy(dtype=float) for c, g in runs.groupby("candidate_id", sort=True)}
    draws = table_draws(list(groups.values()), N_BOOTSTRAP, seed, candidates=False, seed_sd=seed_sd)[..., 0]
    low, high = np.quantile(draws, [(1 - LEVEL) / 2, (1 + LEVEL) / 2], axis=0)
    means = np.array([g.mean() for g in groups.values()])
    truth = pd.DataFrame({"truth": means, "truth_low": np.minimum(low, means), "truth_high": np.maximum(high, means),
                          "seeds": [len(g) for g in groups.values()]}, index=list(groups))
    return truth, draws


def interval(draws: np.ndarray, value: float) -> tuple[float, float]:
    low, high = np.quantile(draws, [(1 - LEVEL) / 2, (1 + LEVEL) / 2])
    return float(min(low, value)), float(max(high, value))


def finetune(study: Study, supernet: Any, arch: Arch, samples: int, work: Path, device: str | None) -> dict:
    """The pick exported and fine-tuned from its inherited weights with the study's recipe for `samples`; the
    final evaluation's metrics (`TrainResult.final`)."""
    from nas.data import zeroshot_set
    from nas.supernet.export import export_subnet
    from nas.train import train

    export = export_subnet(supernet, arch, work / "pick")
    recipe = study.run_config()
    steps = math.ceil(samples / recipe.batch_size)
    config = dataclasses.replace(recipe, samples=samples, rungs=(), pretrained=str(export),
                                 warmup=recipe.warmup if recipe.warmup < steps else steps // 10)
    zeroshot = zeroshot_set(study.data.zeroshot, arch.image_size, templates=study.data.zeroshot_templates)
    result = train(arch, study.text, study.data.source, config, out=work / "finetune", zeroshot=zeroshot,
                   progress=True, device=device, report_to=None)
    return {**result.final, "status": result.status, "warmup": config.warmup, "wall_s": result.wall_s}


def _percent(value: float, low: float | None = None, high: float | None = None) -> str:
    if low is None or math.isnan(low):
        return f"{100 * value:.2f}"
    return f"{100 * value:.2f} [{100 * low:.2f}, {100 * high:.2f}]"


def _agreement_cells(label: str, a: Agreement) -> list[str]:
    return [label, str(a.candidates), format_correlation(a.spearman, a.spearman_low, a.spearman_high),
            format_correlation(a.kendall, a.kendall_low, a.kendall_high), str(a.top_k),
            format_correlation(a.top_spearman, a.top_spearman_low, a.top_spearman_high),
            format_correlation(a.top_kendall, a.top_kendall_low, a.top_kendall_high)]


def verdicts(rho: Agreement, ranked: int, runs: float, runs_unit: str) -> list[str]:
    """The issue's target, condition by condition, only as the intervals say."""
    if math.isnan(rho.spearman_low):
        level = "unknown: no interval (too few candidates, or a score or truth that ties every candidate)"
    elif rho.spearman_low >= TARGET_SPEARMAN:
        level = f"met: its interval lies above {TARGET_SPEARMAN}"
    elif rho.spearman_high < TARGET_SPEARMAN:
        level = f"not met: its interval lies below {TARGET_SPEARMAN}"
    else:
        level = (f"{'at or above' if rho.spearman >= TARGET_SPEARMAN else 'below'} {TARGET_SPEARMAN} as measured, "
                 f"but the interval holds {TARGET_SPEARMAN}: neither met nor missed to within the table's noise")
    lines = [f"- Spearman at least {TARGET_SPEARMAN}: "
             f"{format_correlation(rho.spearman, rho.spearman_low, rho.spearman_high, rho.candidates)}, {level}",
             f"- its interval excluding 0: {'met' if rho.spearman_low > 0 else 'not met'}"
             f"{' (no interval)' if math.isnan(rho.spearman_low) else ''}",
             f"- at least {TARGET_RANKED:,} subnets ranked: {ranked:,}, "
             f"{'met' if ranked >= TARGET_RANKED else 'not met'}"]
    lines.append(f"- at most {TARGET_RUNS} full-budget runs of compute (the supernet's training): {runs:.2f} "
                 f"({runs_unit}), {'met' if runs <= TARGET_RUNS else 'not met'}")
    return lines


def measure(args: argparse.Namespace) -> dict[str, Any]:
    """Everything the report holds (the module docstring), printing progress."""
    from tqdm import tqdm

    from nas.search.driver import prepare_data
    from nas.supernet import load_supernet
    from nas.supernet.rank import ranked, sample_subnets, study_scorer, write_ranking
    from nas.train.checkpoint import CHECKPOINT, load_checkpoint

    study = load_study(args.study)
    judged = tabular.read_table(args.table, study)
    print(f"{args.table}: {judged.lines()}", flush=True)
    frame = judged.frame
    target = int(frame.budget.max())
    archs = candidate_archs(frame, load_supernet(args.run), args.run)  # before the eval set is read
    prepare_data(study)
    scorer = study_scorer(study, args.run, device=args.device, batch_size=args.batch_size)
    supernet = scorer.supernet
    checkpoint = load_checkpoint(Path(args.run) / CHECKPOINT)
    checkpoint_samples = int(checkpoint["samples_seen"])

    sampled = sample_subnets(supernet, args.samples, args.seed)
    print(f"ranking {len(sampled):,} of the supernet's {len(supernet.candidates):,} subnets on the study's "
          f"zero-shot set ({sum(len(labels) for _, labels in scorer.batches):,} images)", flush=True)
    wall, cpu = time.perf_counter(), time.process_time()
    records = ranked([scorer(arch) for arch in tqdm(sampled, desc="ranking", unit="subnet")])
    rank_wall, rank_cpu = time.perf_counter() - wall, time.process_time() - cpu
    write_ranking(records, args.work / "rank")
    known = {r["arch_id"]: r for r in records}
    scores = {c: known.get(a.arch_id) or scorer(a) for c, a in tqdm(archs.items(), desc="table candidates",
                                                                    unit="candidate")}

    measured = tabular.scored_runs(frame, metric=METRIC)
    runs = frame[frame.budget == target][["candidate_id", "seed", METRIC]].rename(columns={METRIC: tabular.TRUTH})
    supernet_runs = runs.assign(**{tabular.SCORE: runs.candidate_id.map(lambda c: scores[c][METRIC])})
    intervals = tabular.table_intervals(frame, METRIC)
    seed_sd = intervals.seed_sd if intervals else None
    print("agreement with the truth over redrawn tables ...", flush=True)
    agreements = {label: table_agreement(scored, tabular.SCORE, tabular.TRUTH, seed_sd=seed_sd, seed=args.seed)
                  for label, scored in {SUPERNET: supernet_runs, **measured}.items()
                  if scored.candidate_id.nunique() >= 2}

    truth, drawn = truth_draws(runs, seed_sd, args.seed)
    candidates = list(truth.index)
    pick = max(candidates, key=lambda c: scores[c][METRIC])
    best = str(truth.truth.idxmax())
    pick_regret = float(truth.truth[best] - truth.truth[pick])
    pick_draws = drawn.max(axis=1) - drawn[:, candidates.index(pick)]
    regret = {"pick": pick, "best": best, "regret": pick_regret, "interval": interval(pick_draws, pick_regret)}
    if args.finetune_samples:
        print(f"fine-tuning the pick, {archs[pick].name()}, for {args.finetune_samples:,} samples ...", flush=True)
        tuned = finetune(study, supernet, archs[pick], args.finetune_samples, args.work, args.device)
        n, accuracy = int(tuned[f"{METRIC}_n"]), float(tuned[METRIC])
        redrawn = np.random.default_rng(args.seed + 3).binomial(n, accuracy, len(drawn)) / n
        tuned_regret = float(truth.truth[best] - accuracy)
        regret["finetuned"] = {**tuned, "regret": tuned_regret,
                               "interval": interval(drawn.max(axis=1) - redrawn, tuned_regret)}

    supernet_compute_ = supernet_compute(Path(args.run), checkpoint, supernet.config.subnets_per_step)
    table, table_runs = table_compute(frame)
    return {"study": study, "judged": judged, "frame": frame, "target": target, "supernet": supernet,
            "scorer": scorer, "archs": archs, "scores": scores, "records": records, "rank_wall": rank_wall,
            "rank_cpu": rank_cpu, "measured": measured, "agreements": agreements, "intervals": intervals,
            "truth": truth, "regret": regret, "compute": supernet_compute_, "table": table,
            "table_runs": table_runs, "checkpoint_samples": checkpoint_samples}


def write_csv(found: dict[str, Any], path: Path) -> pd.DataFrame:
    """A row per table candidate: truth with its interval, the supernet's score with its interval, the earlier
    budgets' candidate means, the size and zero-cost scores (as the table has them)."""
    frame, truth, scores = found["frame"], found["truth"], found["scores"]
    first = frame.drop_duplicates("candidate_id").set_index("candidate_id")
    rows = []
    for candidate in truth.index:
        record = scores[candidate]
        row = {"candidate_id": candidate, "arch_name": first.arch_name[candidate], **truth.loc[candidate].to_dict(),
               "supernet_top1": record[METRIC], "supernet_top1_low": record[f"{METRIC}_low"],
               "supernet_top1_high": record[f"{METRIC}_high"], "supernet_top1_n": record[f"{METRIC}_n"]}
        earlier = frame[(frame.candidate_id == candidate) & (frame.budget < found["target"])]
        row |= {f"top1_at_{int(b)}": v for b, v in earlier.groupby("budget")[METRIC].mean().items()}
        row |= {c: first[c][candidate] for c in (*tabular.COST_COLUMNS, "naswot", "synflow") if c in first}
        row |= {"pick": candidate == found["regret"]["pick"], "best": candidate == found["regret"]["best"]}
        rows.append(row)
    out = pd.DataFrame(rows)
    out["seeds"] = out.seeds.astype(int)
    path.parent.mkdir(parents=True, exist_ok=True)
    out.to_csv(path, index=False, float_format="%.6g")
    return out


def plot(rows: pd.DataFrame, agreement: Agreement, path: Path) -> Path:
    """The supernet's score against the truth, both with their intervals; the pick and the best marked."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 5))
    x, y = 100 * rows.supernet_top1, 100 * rows.truth
    ax.errorbar(x, y, xerr=[x - 100 * rows.supernet_top1_low, 100 * rows.supernet_top1_high - x],
                yerr=[y - 100 * rows.truth_low, 100 * rows.truth_high - y], fmt="o", ms=4, alpha=0.7, capsize=2,
                label="table candidate (95 % intervals)")
    for flag, marker, label in (("pick", "*", "the supernet's pick"), ("best", "s", "the table's best")):
        chosen = rows[rows[flag]]
        ax.scatter(100 * chosen.supernet_top1, 100 * chosen.truth, marker=marker, s=160, facecolors="none",
                   edgecolors="k", zorder=3, label=label)
    ax.set_xlabel(f"zero-shot top-1 with inherited weights, % (n = {int(rows.supernet_top1_n.iloc[0]):,} images)")
    ax.set_ylabel("stand-alone truth: seed mean at the full budget, %")
    ax.set_title(f"Spearman {format_correlation(agreement.spearman, agreement.spearman_low, agreement.spearman_high)}"
                 f", {agreement.candidates} candidates", fontsize=10)
    ax.legend(fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def _seconds(value: float | None) -> str:
    return "not recorded" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{value:,.0f} s"


def report(found: dict[str, Any], rows: pd.DataFrame, command: str, figure: str) -> str:
    """The markdown report."""
    study, supernet, frame = found["study"], found["supernet"], found["frame"]
    agreements, regret = found["agreements"], found["regret"]
    sn, table, target = found["compute"], found["table"], found["target"]
    per_run_cpu = table.cpu_s / found["table_runs"]
    runs_samples = sn.samples / target
    runs_cpu = None if sn.cpu_s is None else sn.cpu_s / per_run_cpu
    ranked = len(found["records"])
    n_eval = int(rows.supernet_top1_n.iloc[0])
    rho = agreements[SUPERNET]
    intervals = found["intervals"]
    noise = (intervals.line() if intervals else "intervals over candidates alone: no candidate has two seeds that "
             "learned, so the table's seed noise is not in them")
    lines = [
        "# The supernet against the tabular benchmark (issue #25)", "",
        f"Made by `{command}`.", "",
        f"Supernet: `{found['scorer'].supernet.space.source}` at {supernet.image_size} px, "
        f"{len(supernet.candidates):,} subnets, {supernet.config.subnets_per_step} subnets per sandwich step, its "
        f"checkpoint at {found['checkpoint_samples']:,} samples seen. Table: `{found['table_path']}` (made by "
        f"`{study.source}`), {len(rows)} candidates that learned, {found['table_runs']} runs, full budget "
        f"{target:,} samples; {found['judged'].rate.line()}. Every score is on the study's zero-shot set "
        f"({n_eval:,} images, the table's eval set); the supernet's training data is its run's "
        f"(its space came from `{supernet.space.source}`): where that is another study than the table's, the "
        "supernet and the table's candidates trained on different data.", "",
        "## Rank agreement with the stand-alone truth", "",
        f"Truth: a candidate's seed mean at {target:,} samples. {noise}. Top {100 * TOP_FRACTION:.0f} %: the "
        f"best {rho.top_k} by truth, taken again in each redrawn table, interval from the table's seeds alone (no "
        "interval below 3 candidates). The supernet's score is not redrawn (its Wilson interval over the eval "
        "images is in the CSV and the figure).", "",
        *_markdown_table(["ranked by", "candidates", "Spearman [95 %]", "Kendall [95 %]", "top k",
                          "top-10 % Spearman [95 %]", "top-10 % Kendall [95 %]"],
                         [_agreement_cells(label, a) for label, a in agreements.items()]),
        "", "Issue #25's target:", "",
        *verdicts(rho, ranked, runs_cpu if runs_cpu is not None else runs_samples,
                  "in CPU seconds" if runs_cpu is not None else "in samples; CPU seconds not recorded"),
        "", f"![supernet score against truth]({figure})", "",
        "## Compute", "",
        *_markdown_table(
            ["", "samples trained", "wall", "CPU seconds", "full-budget runs (samples)", "full-budget runs (CPU)"],
            [["supernet training", f"{sn.samples:,.0f} ({found['checkpoint_samples']:,} x "
              f"{supernet.config.subnets_per_step} subnets)", _seconds(sn.wall_s), _seconds(sn.cpu_s),
              f"{runs_samples:.2f}", "not recorded" if runs_cpu is None else f"{runs_cpu:.2f}"],
             [f"ranking {ranked:,} subnets", "-", _seconds(found["rank_wall"]),
              f"{found['rank_cpu']:,.0f} s (this process)", "-", f"{found['rank_cpu'] / per_run_cpu:.2f}"],
             [f"the table ({found['table_runs']} runs that learned)", f"{table.samples:,.0f}", _seconds(table.wall_s),
              f"{table.cpu_s:,.0f} s (estimate: wall, one thread a run)", f"{table.samples / target:.2f}",
              f"{table.cpu_s / per_run_cpu:.2f}"]]),
        "", f"A full-budget run: {target:,} samples, {per_run_cpu:,.0f} CPU seconds on average in the table "
        "(estimated as its wall seconds). A sandwich step's subnets are not all as costly as an average candidate, "
        "and the supernet and the table may have trained on other machines or under other loads: the CPU-second "
        "ratio is only as comparable as those.", "",
        "## Regret of the supernet's pick", "",
    ]
    names = frame.drop_duplicates("candidate_id").set_index("candidate_id").arch_name
    truth = found["truth"]
    pick, best = regret["pick"], regret["best"]
    score = found["scores"][pick]
    lines += [f"The supernet's pick among the table's candidates: {names[pick]} (inherited score "
              f"{_percent(score[METRIC], score[f'{METRIC}_low'], score[f'{METRIC}_high'])} %, n = {n_eval:,}); "
              "its truth "
              f"{_percent(*truth.loc[pick, ['truth', 'truth_low', 'truth_high']])} % "
              f"({int(truth.seeds[pick])} seed(s)). The table's best: {names[best]}, "
              f"{_percent(*truth.loc[best, ['truth', 'truth_low', 'truth_high']])} %. Regret "
              f"{_percent(regret['regret'], *regret['interval'])} points (interval over the table's redrawn seeds).",
              ""]
    top = found["records"][0]
    in_table = {arch.arch_id: c for c, arch in found["archs"].items()}.get(top["arch_id"])
    lines += [f"The best of the {ranked:,} ranked subnets by inherited score: {top['arch_name']}, "
              f"{_percent(top[METRIC], top[f'{METRIC}_low'], top[f'{METRIC}_high'])} % "
              + (f"(a table candidate: truth {_percent(*truth.loc[in_table, ['truth', 'truth_low', 'truth_high']])} "
                 "%)." if in_table else "(not a table candidate: no stand-alone truth)."), ""]
    tuned = regret.get("finetuned")
    if tuned:
        lines += [f"Fine-tuned from its inherited weights for {found['finetune_samples']:,} samples (the study's "
                  f"recipe, warmup {tuned['warmup']} steps, one seed, {tuned['wall_s']:,.0f} s, {tuned['status']}): "
                  f"zero-shot top-1 {_percent(tuned[METRIC], tuned[f'{METRIC}_low'], tuned[f'{METRIC}_high'])} % "
                  f"(n = {int(tuned[f'{METRIC}_n']):,}, Wilson); regret against the table's best truth "
                  f"{_percent(tuned['regret'], *tuned['interval'])} points (the redrawn table's best minus a "
                  "binomial redraw of the fine-tuned accuracy; its seed noise is not in it).", ""]
    else:
        lines += ["Not fine-tuned (`--finetune-samples` not given).", ""]
    lines += ["## Files", "",
              "`supernet.csv`: a row per table candidate: `truth` (seed mean) with `truth_low` / `truth_high` "
              "(95 %, redrawn seeds) and `seeds`, `supernet_top1` with its Wilson interval and `_n`, `top1_at_B` "
              "(the candidate's mean at each earlier budget B), the analytic cost and zero-cost scores, and "
              "whether it is the supernet's `pick` or the table's `best`. The ranked subnets are in the run's "
              "work directory (`ranking.csv`, `pareto.csv`).", ""]
    return "\n".join(lines)


def _markdown_table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> list[str]:
    return ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers),
            *("| " + " | ".join(map(str, row)) + " |" for row in rows)]


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter,
                                     epilog="example:\n  python benchmarks/supernet.py --run runs/sn_v2 --table "
                                            "benchmarks/tables/tabular_v2.csv --study studies/tabular_v2.yaml \\\n"
                                            "      --samples 1000 --finetune-samples 6000 --out docs/results")
    parser.add_argument("--run", type=Path, required=True, help="the supernet's run (`vitamin-nas supernet train`)")
    parser.add_argument("--table", type=Path, required=True,
                        help="the tabular benchmark's CSV (benchmarks/tabular.py)")
    parser.add_argument("--study", type=Path, required=True, help="the study that made the table")
    parser.add_argument("--samples", type=int, default=TARGET_RANKED,
                        help="random subnets to rank (default: %(default)s)")
    parser.add_argument("--finetune-samples", type=int, help="fine-tune the pick for this many samples")
    parser.add_argument("--out", type=Path, default=REPO / "docs" / "results",
                        help="where supernet.md, supernet.csv and supernet/ go (default: docs/results)")
    parser.add_argument("--work", type=Path, default=REPO / "runs" / "supernet_measure",
                        help="the ranking, the pick's export and fine-tune (default: runs/supernet_measure)")
    parser.add_argument("--seed", type=int, default=0, help="which subnets are drawn; the bootstrap (default: 0)")
    parser.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N (default: %(default)s)")
    parser.add_argument("--batch-size", type=int, default=256, help="eval batch (default: %(default)s)")
    args = parser.parse_args(argv)
    command = shlex.join(["python", "benchmarks/supernet.py", *(sys.argv[1:] if argv is None else map(str, argv))])
    begin = time.perf_counter()
    try:
        found = measure(args)
    except ConfigError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    found |= {"table_path": args.table, "finetune_samples": args.finetune_samples}
    rows = write_csv(found, args.out / "supernet.csv")
    figure = plot(rows, found["agreements"][SUPERNET], args.out / "supernet" / "score_vs_truth.png")
    text = report(found, rows, command, figure.relative_to(args.out).as_posix())
    (args.out / "supernet.md").write_text(text)
    print(text)
    print(f"wrote {args.out / 'supernet.md'}, {args.out / 'supernet.csv'} and {figure} "
          f"({time.perf_counter() - begin:.0f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
