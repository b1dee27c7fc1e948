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
                    "samples seen, objectives, wall time and ETA; whether its driver is running, was stopped or "
                    "is gone (a heartbeat), with the command that continues it; and the run directory's size on "
                    "disk. Safe while the search runs (read-only).",
        epilog="examples:\n  vitamin-nas status runs/qs\n  vitamin-nas status runs/qs --watch 10")
    status.add_argument("dir", help="the search's output directory (holding study.db)")
    status.add_argument("--watch", type=float, metavar="S", help="print again every S seconds until interrupted")
    status.set_defaults(func=_status)


def _status(args: argparse.Namespace) -> int:
    from nas.progress import progress_report
    from nas.results import ResultStore
    from nas.run_dir import RunDir

    store = ResultStore.open(args.dir, readonly=True)
    run_dir = RunDir(store.path.parent)
    while True:
        print(progress_report(store), flush=True)
        print(size_line(run_dir), flush=True)
        if not args.watch:
            return 0
        time.sleep(args.watch)


def size_line(run_dir) -> str:
    """The run directory's size on disk, in total and by what takes it."""
    sizes = run_dir.size()
    total = sizes.pop("total")
    parts = ", ".join(f"{name} {_mb(size)}" for name, size in sorted(sizes.items(), key=lambda kv: -kv[1]))
    return f"run directory {run_dir.root}: {_mb(total)} on disk ({parts})"


def _mb(size: int) -> str:
    return f"{size / 1e6:.1f} MB"
