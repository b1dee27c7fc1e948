"""`vitamin-nas search | status | results | quickstart`: run a search, watch it, read its results.

Kept free of heavy imports at module level: torch, Ray and Optuna load inside the commands that use them.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from nas.errors import ConfigError

QUICKSTART = Path(__file__).resolve().parents[1] / "studies" / "quickstart.yaml"


def register(commands: argparse._SubParsersAction) -> None:
    _register_search(commands)
    status = commands.add_parser(
        "status", help="progress of a search (from another shell while it runs)",
        description="Print the trials of a search from its results database: running ones first, with rung, "
                    "samples seen, objectives, wall time and ETA. Safe while the search runs (read-only).")
    status.add_argument("dir", help="the search's output directory (holding study.db)")
    status.add_argument("--watch", type=float, metavar="S", help="print again every S seconds until interrupted")
    status.set_defaults(func=_status)
    results = commands.add_parser(
        "results", help="leaderboard and per-budget Pareto fronts of a search; export them",
        description="Print the leaderboard (every trial at the furthest budget it reached) and the Pareto front "
                    "of the study's objectives at every budget; export one row per trial and rung.")
    results.add_argument("dir", help="the search's output directory (holding study.db)")
    results.add_argument("--budget", type=int, help="only this budget (samples seen)")
    results.add_argument("--top", type=int, default=10, help="leaderboard rows (default 10)")
    export = results.add_mutually_exclusive_group()
    export.add_argument("--csv", metavar="FILE", help="write the results as CSV")
    export.add_argument("--parquet", metavar="FILE", help="write the results as parquet")
    results.add_argument("--figures", action="store_true", help="write the figures to DIR/figures again")
    results.set_defaults(func=_results)
    quickstart = commands.add_parser(
        "quickstart", help="the main job: a small search on synthetic data on this machine, in minutes",
        description="Synthesize a captioned dataset (once), search about a dozen CPU-sized ViTamin-family towers "
                    "with TPE and ASHA on this machine (CPU, or GPU when present), then print the leaderboard "
                    "and the Pareto front of zero-shot accuracy against GMACs and write the database and figures.")
    quickstart.add_argument("--out", default="runs/quickstart", help="output directory (default runs/quickstart)")
    quickstart.add_argument("--resume", action="store_true", help="continue an interrupted quickstart")
    quickstart.set_defaults(func=_quickstart)


def _register_search(commands: argparse._SubParsersAction) -> None:
    search = commands.add_parser(
        "search", help="run an architecture search study (Ray Tune + Optuna + ASHA)",
        description="Run a study: propose candidates with Optuna, train each through ASHA's budget rungs on Ray "
                    "(locally on 127.0.0.1, or on a cluster with --address), record every trial and rung in "
                    "OUT/study.db. Kill it at any time; --resume continues without losing or retraining "
                    "finished trials.")
    search.add_argument("study", help="study YAML file (see studies/)")
    search.add_argument("--out", help="output directory (default runs/<study name>)")
    search.add_argument("--resume", action="store_true", help="continue the search in --out")
    search.add_argument("--address", metavar="HOST:PORT|auto",
                        help="join an existing Ray cluster instead of starting Ray locally")
    search.add_argument("--storage", metavar="PATH|URI",
                        help="Ray Tune experiment storage (trial checkpoints): a shared filesystem path or "
                             "s3://, gs:// URI on a cluster (default OUT/ray)")
    search.add_argument("--dashboard", action="store_true", help="start the Ray dashboard (local Ray only)")
    search.add_argument("--dashboard-host", default="127.0.0.1",
                        help="interface the dashboard binds to (default 127.0.0.1: this machine only)")
    search.add_argument("--progress-every", type=float, default=30.0, metavar="S",
                        help="print the progress table at least every S seconds (default 30)")
    search.add_argument("--verbose", action="store_true", help="show Ray's and the workers' logs")
    search.set_defaults(func=_search)


def _search(args: argparse.Namespace) -> int:
    from nas.study import Study

    study = Study.load(args.study)
    out = Path(args.out or Path("runs") / study.name)
    _run(study, out, args.resume, address=args.address, storage=args.storage, dashboard=args.dashboard,
         dashboard_host=args.dashboard_host, progress_every=args.progress_every, verbose=args.verbose)
    return 0


def _quickstart(args: argparse.Namespace) -> int:
    from nas.study import Study

    if not QUICKSTART.is_file():
        raise ConfigError("the quickstart study is missing (run from a checkout of the repository)",
                          source=str(QUICKSTART))
    study = Study.load(QUICKSTART)
    begin = time.perf_counter()
    _run(study, Path(args.out), args.resume, progress_every=30.0)
    print(f"\nquickstart finished in {time.perf_counter() - begin:.0f} s; "
          f"optuna-dashboard sqlite:///{Path(args.out).resolve() / 'study.db'} shows the search")
    return 0


def _run(study, out: Path, resume: bool, **options) -> None:
    from nas.search import run

    store = run(study, out, resume=resume, **options)
    print(_report(store))
    written = write_figures(store, out / "figures")
    print("\nfigures: " + ", ".join(str(p) for p in written))
    print(f"results: {store.path}")


def _status(args: argparse.Namespace) -> int:
    from nas.results import ResultStore, progress_report

    store = ResultStore.open(args.dir, readonly=True)
    while True:
        print(progress_report(store), flush=True)
        if not args.watch:
            return 0
        time.sleep(args.watch)


def _results(args: argparse.Namespace) -> int:
    from nas.results import ResultStore

    store = ResultStore.open(args.dir, readonly=True)
    print(_report(store, args.budget, args.top))
    target = args.csv or args.parquet
    if target:
        print(f"\nwrote {store.export(target, budget=args.budget)}")
    if args.figures:
        print("figures: " + ", ".join(str(p) for p in write_figures(store, Path(args.dir) / "figures")))
    return 0


def _report(store, budget: int | None = None, top: int = 10) -> str:
    """The leaderboard and the Pareto front at every budget, as text."""
    from nas.results import headers, rows
    from nas.tables import format_table

    objectives = store.objectives
    board = store.leaderboard(budget=budget).head(top)
    if board.empty:
        return "no results yet"
    columns = ["number", "arch_name", "status", "budget", *objectives,
               *[c for c in ("image_params_m", "zeroshot_top5", "loss") if c not in objectives], "wall_s"]
    text = [f"leaderboard ({len(store.trials())} trials; furthest budget first, then {next(iter(objectives))}):",
            format_table(headers(columns), rows(board.to_dict("records"), columns))]
    fronts = store.pareto_front(budget=budget)
    for front_budget, front in fronts.groupby("budget", sort=False):
        title = ", ".join(f"{k} {v}" for k, v in objectives.items())
        text += [f"\nPareto front at {front_budget:,} samples seen ({title}):",
                 format_table(headers(["number", "arch_name", *objectives]),
                              rows(front.to_dict("records"), ["number", "arch_name", *objectives]))]
    return "\n".join(text)


def write_figures(store, directory: Path) -> list[Path]:
    """The per-budget Pareto fronts and the search history of a study, as PNG and SVG."""
    from nas.results import COST_METRICS
    from plots.search import pareto_fronts, search_history

    frame = store.frame()
    if frame.empty:
        return []
    objectives = store.objectives
    y = next(k for k in objectives if k not in COST_METRICS)
    x = next((k for k in objectives if k != y), "image_gmacs")
    chance = _chance(store) if y == "zeroshot_top1" else None
    written = [directory / "pareto_fronts", directory / "search_history"]
    pareto_fronts(frame, x, y, objectives, path=written[0], chance=chance)
    search_history(frame, y, objectives[y], path=written[1])
    return [p.with_suffix(".png") for p in written]


def _chance(store) -> float | None:
    """1 / number of classes of the zero-shot set (None when it cannot be read)."""
    zeroshot = (store.meta("study") or {}).get("data", {}).get("zeroshot")
    if not zeroshot or not Path(zeroshot).is_dir():
        return None
    classes = sum(1 for p in Path(zeroshot).iterdir() if p.is_dir())
    return 1 / classes if classes else None
