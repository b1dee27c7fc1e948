"""`vitamin-nas results`: the leaderboard and per-budget Pareto fronts of a search; export them.

    vitamin-nas results runs/qs
    vitamin-nas results runs/qs --budget 14400 --csv results.csv
"""

from __future__ import annotations

import argparse
from pathlib import Path


def register(commands: argparse._SubParsersAction) -> None:
    results = commands.add_parser(
        "results", help="leaderboard and per-budget Pareto fronts of a search; export them",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Print the leaderboard (every trial at the furthest budget it reached) and the Pareto front "
                    "of the study's objectives at every budget; export one row per trial and rung.",
        epilog="examples:\n  vitamin-nas results runs/qs\n  vitamin-nas results runs/qs --csv results.csv")
    results.add_argument("dir", help="the search's output directory (holding study.db)")
    results.add_argument("--budget", type=int, help="only this budget (samples seen)")
    results.add_argument("--top", type=int, default=10, help="leaderboard rows (default 10)")
    export = results.add_mutually_exclusive_group()
    export.add_argument("--csv", metavar="FILE", help="write the results as CSV")
    export.add_argument("--parquet", metavar="FILE", help="write the results as parquet")
    results.add_argument("--figures", action="store_true", help="write the figures to DIR/figures again")
    results.set_defaults(func=_results)


def _results(args: argparse.Namespace) -> int:
    from nas.leaderboard import results_report
    from nas.results import ResultStore

    store = ResultStore.open(args.dir, readonly=True)
    print(results_report(store, args.budget, args.top))
    target = args.csv or args.parquet
    if target:
        print(f"\nwrote {store.export(target, budget=args.budget)}")
    if args.figures:
        from plots.search import search_figures

        print("figures: " + ", ".join(str(p) for p in search_figures(store, Path(args.dir) / "figures")))
    return 0
