"""Arguments shared by the commands that read one study's results (`select`, `plot`, `report`)."""

from __future__ import annotations

import argparse
from pathlib import Path

LAWS = ("power", "saturating", "pareto-power")


def positive(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be > 0, got {text}")
    return value


def study_parser(commands: argparse._SubParsersAction, name: str, summary: str, description: str,
                 out: str, examples: str) -> argparse.ArgumentParser:
    """A command on one study's results: DIR, --out, and the metric and law it reads them with."""
    parser = commands.add_parser(name, help=summary, description=description, epilog=f"examples:\n{examples}",
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("dir", type=Path, help="the study's output directory (holding study.db)")
    parser.add_argument("--out", type=Path, help=out)
    parser.add_argument("--metric", default="zeroshot_top1", help="the measured metric (default zeroshot_top1)")
    parser.add_argument("--law", choices=LAWS, default="power",
                        help="law of error against samples seen or compute (default power)")
    return parser


def open_results(directory: Path):
    """The study's results database, read-only (safe while the search runs)."""
    from nas.results import ResultStore

    return ResultStore.open(directory, readonly=True)
