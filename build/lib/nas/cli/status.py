"""`vitamin-nas status`: the progress of a search, from another shell while it runs (read-only).

    vitamin-nas status runs/qs
    vitamin-nas status runs/qs --watch 10
"""

from __future__ import annotations

import argparse
import time


def register(commands: argparse._SubParsersAction) -> None:
    status = commands.add_parser(
        "status", help="progress of a search (from another shell while it runs)",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Print the trials of a search from its results database: running ones first, with rung, "
                    "samples seen, objectives, wall time and ETA. Safe while the search runs (read-only).",
        epilog="examples:\n  vitamin-nas status runs/qs\n  vitamin-nas status runs/qs --watch 10")
    status.add_argument("dir", help="the search's output directory (holding study.db)")
    status.add_argument("--watch", type=float, metavar="S", help="print again every S seconds until interrupted")
    status.set_defaults(func=_status)


def _status(args: argparse.Namespace) -> int:
    from nas.results import ResultStore, progress_report

    store = ResultStore.open(args.dir, readonly=True)
    while True:
        print(progress_report(store), flush=True)
        if not args.watch:
            return 0
        time.sleep(args.watch)
