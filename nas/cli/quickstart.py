"""`vitamin-nas quickstart`: the main job, a small search on synthetic data on this machine, in minutes.

    vitamin-nas quickstart
    vitamin-nas quickstart --out runs/quickstart --resume      # after an interruption
"""

from __future__ import annotations

import argparse
import shlex
import time
from pathlib import Path

from nas.cli._program import executable
from nas.cli.search import search_and_report, watch_lines


def register(commands: argparse._SubParsersAction) -> None:
    quickstart = commands.add_parser(
        "quickstart", help="the main job: a small search on synthetic data on this machine, in minutes",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Synthesize a captioned dataset (once), search ten CPU-sized ViTamin-family towers "
                    "with TPE and ASHA on this machine (CPU, or GPU when present), then print the leaderboard "
                    "and the Pareto front of zero-shot accuracy against GMACs and write the database and figures.",
        epilog="examples:\n  vitamin-nas quickstart\n  vitamin-nas quickstart --out runs/qs --resume")
    quickstart.add_argument("--out", default="runs/quickstart", help="output directory (default runs/quickstart)")
    quickstart.add_argument("--resume", action="store_true", help="continue an interrupted quickstart")
    quickstart.set_defaults(func=_quickstart)


def _quickstart(args: argparse.Namespace) -> int:
    from nas.shipped import study_file
    from nas.study import load_study

    study = load_study(study_file("quickstart"))
    begin = time.perf_counter()
    out = Path(args.out)
    code = search_and_report(study, out, args.resume,
                             shlex.join([executable(), "quickstart", "--out", args.out, "--resume"]),
                             progress_every=30.0)
    if code == 0:
        lines = [*watch_lines(out)[1:],
                 f"the best trial, for open_clip:   {executable()} export {out} --best --out winner"]
        print(f"\nquickstart finished in {time.perf_counter() - begin:.0f} s. Next:\n"
              + "\n".join(f"  {line}" for line in lines))
    return code
