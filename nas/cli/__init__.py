"""The `vitamin-nas` command line. Subcommands parse arguments and call library functions, nothing more."""

from __future__ import annotations

import argparse
import importlib
import os
import sys

from nas import __version__
from nas.disk import DiskFull
from nas.errors import ConfigError

#: Every command and its one-line summary; each lives in the module of its name (`nas.cli.<command>`), whose
#: `register(commands)` adds its parser. Only the module of the command being run is imported, so
#: `vitamin-nas arch ...` does not pay for torch, Ray or scipy. To add a command: write its module, add a line here.
COMMANDS = {
    "arch": "cost breakdown of one architecture (preset name or JSON file)",
    "space": "inspect a search space",
    "data": "datasets: synthesize, handwritten digits, subset by metadata, split metadata per shard, inspect",
    "train": "proxy-train one candidate for a budget of samples seen, evaluate and export it",
    "search": "run an architecture search study (Ray Tune + Optuna + ASHA)",
    "status": "progress of a search (from another shell while it runs)",
    "results": "leaderboard and per-budget Pareto fronts of a search; export them",
    "quickstart": "the main job: a small search on synthetic data on this machine, in minutes",
    "select": "choose the final designs: Pareto fronts, extrapolated ranking, trained open_clip models",
    "export": "a search's trained candidate as an open_clip model (weights, config, preprocessing)",
    "studies": "the studies and search spaces that ship with vitamin-nas",
    "plot": "write every figure of a study (PNG and SVG)",
    "report": "a markdown report of a study beside the ViTamin paper's numbers",
    "fit": "fit a scaling law to a CSV or a study's results, print it with its uncertainty and plot it",
    "fidelity": "how well early rungs, size and zero-cost proxies rank a study's candidates",
    "supernet": "a weight-sharing supernet of a study's space: train it, export its subnets",
}


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    """The full parser of `command`; without one, every command by its summary only (for the top-level help)."""
    parser = argparse.ArgumentParser(
        prog="vitamin-nas",
        description="Architecture search and scaling studies for CLIP image encoders of the ViTamin family.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    if command in COMMANDS:
        importlib.import_module(f"nas.cli.{command}").register(commands)
    else:
        for name, summary in COMMANDS.items():
            commands.add_parser(name, help=summary)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    command = next((arg for arg in argv if not arg.startswith("-")), None)
    args = build_parser(command).parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except ConfigError as err:
        print(f"vitamin-nas {args.command}: error: {err}", file=sys.stderr)
        return 2
    except DiskFull as err:  # the path and the space left, in one line
        print(f"vitamin-nas {args.command}: error: {err}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # output piped into `head` and the like: stop quietly
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0


if __name__ == "__main__":
    sys.exit(main())
