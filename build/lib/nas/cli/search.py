"""`vitamin-nas search`: run an architecture search study on Ray Tune and Optuna.

    vitamin-nas search studies/quickstart.yaml --out runs/qs
    vitamin-nas search studies/quickstart.yaml --out runs/qs --resume     # after the driver was killed
    vitamin-nas search STUDY.yaml --address 10.0.0.1:6379 --storage s3://bucket/runs

Kept free of heavy imports at module level: torch, Ray and Optuna load inside the commands that use them.
"""

from __future__ import annotations

import argparse
from pathlib import Path


def register(commands: argparse._SubParsersAction) -> None:
    search = commands.add_parser(
        "search", help="run an architecture search study (Ray Tune + Optuna + ASHA)",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="examples:\n  vitamin-nas search studies/quickstart.yaml --out runs/qs\n"
               "  vitamin-nas search studies/quickstart.yaml --out runs/qs --resume\n"
               "  vitamin-nas search STUDY.yaml --address 10.0.0.1:6379 --storage /shared/runs",
        description="Run a study: propose candidates with Optuna, train each through ASHA's budget rungs on Ray "
                    "(locally on 127.0.0.1, or on a cluster with --address), record every trial and rung in "
                    "OUT/study.db. Kill it at any time; --resume continues without losing or retraining "
                    "finished trials.")
    search.add_argument("study", help="study YAML file, or the name of a shipped one (vitamin-nas studies)")
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
    search.add_argument("--report-to", default="tensorboard", metavar="tensorboard,wandb",
                        help="where every trial's curves go: tensorboard (OUT/tensorboard/<trial>), wandb (if "
                             "installed, one run per trial grouped by the study), both, or none (default: tensorboard)")
    search.add_argument("--verbose", action="store_true", help="show Ray's and the workers' logs")
    search.set_defaults(func=_search)


def _search(args: argparse.Namespace) -> int:
    from nas.shipped import study_file
    from nas.study import Study

    study = Study.load(study_file(args.study))
    out = Path(args.out or Path("runs") / study.name)
    search_and_report(study, out, args.resume, address=args.address, storage=args.storage, dashboard=args.dashboard,
                      dashboard_host=args.dashboard_host, progress_every=args.progress_every, verbose=args.verbose,
                      report_to=args.report_to)
    return 0


def search_and_report(study, out: Path, resume: bool, **options) -> None:
    """Run the study, then print its leaderboard and Pareto fronts and write its search figures."""
    from nas.results import results_report
    from nas.search import search
    from plots.search import search_figures

    store = search(study, out, resume=resume, **options)
    print(results_report(store))
    written = search_figures(store, out / "figures")
    print("\nfigures: " + ", ".join(str(p) for p in written))
    print(f"results: {store.path}")
