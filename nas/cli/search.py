"""`vitamin-nas search`: run an architecture search study on Ray Tune and Optuna.

    vitamin-nas search studies/quickstart.yaml --out runs/qs
    vitamin-nas search studies/quickstart.yaml --out runs/qs --resume     # after the driver was killed
    vitamin-nas search STUDY.yaml --address 10.0.0.1:6379 --storage s3://bucket/runs

Kept free of heavy imports at module level: torch, Ray and Optuna load inside the commands that use them.
"""

from __future__ import annotations

import argparse
import shlex
import sys
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
                    "OUT/study.db. Stop it with Ctrl-C, SIGTERM or SIGHUP (exit code 130, it prints the command that "
                    "continues it) or kill it: --resume continues without losing or retraining finished trials, "
                    "each running trial from its newest checkpoint. Exit code 1 when no trial produced a result, "
                    "2 for bad input (the study, resources no node has, no cluster at --address).")
    search.add_argument("study", help="study YAML file, or the name of a shipped one (vitamin-nas studies); its "
                                      "fields: vitamin-nas studies --fields")
    search.add_argument("--out", help="output directory (default runs/<study name>)")
    search.add_argument("--resume", action="store_true", help="continue the search in --out")
    search.add_argument("--address", metavar="HOST:PORT|auto",
                        help="join an existing Ray cluster instead of starting Ray locally")
    search.add_argument("--storage", metavar="PATH|URI",
                        help="Ray Tune experiment state: a shared filesystem path or s3://, gs:// URI on a cluster "
                             "(default OUT/ray; trial checkpoints are always in OUT/trials)")
    search.add_argument("--dashboard", action="store_true",
                        help="start the Ray dashboard (local Ray only; pip install 'vitamin-nas[dashboard]')")
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
    from nas.cli._program import executable
    from nas.heartbeat import refuse_if_running
    from nas.shipped import study_file
    from nas.study import load_study

    study = load_study(study_file(args.study))
    out = Path(args.out or Path("runs") / study.name)
    refuse_if_running(out)  # at once, before Ray loads (the driver checks again)
    resume = [executable(), "search", args.study, "--out", str(out), "--resume"]
    for option in ("address", "storage", "report_to"):
        if getattr(args, option) and getattr(args, option) != "tensorboard":
            resume += [f"--{option.replace('_', '-')}", getattr(args, option)]
    return search_and_report(study, out, args.resume, shlex.join(resume), address=args.address,
                             storage=args.storage, dashboard=args.dashboard, dashboard_host=args.dashboard_host,
                             progress_every=args.progress_every, verbose=args.verbose, report_to=args.report_to)


def search_and_report(study, out: Path, resume: bool, command: str, **options) -> int:
    """Run the study, then print its leaderboard and Pareto fronts and write its search figures; the exit code:
    130 when a signal stopped it (with `command`, which continues it), 1 when no trial produced a result."""
    from nas.search.loopback import prefer_loopback

    if not options.get("address"):
        prefer_loopback()  # before Ray is imported: a local instance on 127.0.0.1 only
    from nas.leaderboard import results_report
    from nas.search import Outcome, SearchInterrupted, search
    from nas.search.session import say
    from plots.search import search_figures

    def started() -> None:  # once the study checked out: no hint precedes a one-line error
        say("watch it while it runs:\n" + "\n".join(f"  {line}" for line in watch_lines(out)))

    try:
        store = search(study, out, resume=resume, command=command, on_start=started, **options)
    except SearchInterrupted as stopped:  # a broken stdout or stderr too (`tee` ended by the same Ctrl-C): still 130
        say(f"vitamin-nas search: {stopped}; continue it with:\n  {command}", sys.stderr)
        return 130
    except KeyboardInterrupt:
        say(f"vitamin-nas search: stopped at once; continue it with:\n  {command}", sys.stderr)
        return 130
    outcome = Outcome.of(store)
    summary = outcome.summary()
    if not outcome.produced_results:
        say(f"vitamin-nas search: {summary}", sys.stderr)
        return 1
    say("\n" + results_report(store))
    written = search_figures(store, out / "figures")
    say("\nfigures: " + ", ".join(str(p) for p in written) + f"\nresults: {store.path}")
    if summary:
        say(f"vitamin-nas search: {summary}", sys.stderr)
    return 0


def watch_lines(out: Path) -> list[str]:
    """The commands that show a search in `out`: its progress, its trials' curves, Optuna's view of it."""
    from nas.cli._program import executable

    return [f"progress and ETA:                {executable()} status {out}",
            f"every trial's training curves:   {executable('tensorboard')} --logdir {out / 'tensorboard'}",
            f"Optuna's view of the search:     {executable('optuna-dashboard')} sqlite:///{out.resolve() / 'study.db'}"]
