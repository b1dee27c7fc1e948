"""The `vitamin-nas` command line. Subcommands parse arguments and call library functions, nothing more."""

from __future__ import annotations

import argparse
import importlib
import os
import sys

from nas.errors import ConfigError

#: Every command, the module whose `register(commands)` adds it, and its one-line summary. Only the module of
#: the command being run is imported, so `vitamin-nas arch ...` does not pay for torch, Ray or scipy.
#: To add a command: write `register(commands)` in its module and add a line here.
COMMANDS = {
    "arch": ("nas.arch_cli", "cost breakdown of one architecture (preset name or JSON file)"),
    "space": ("nas.arch_cli", "inspect a search space"),
    "data": ("nas.data.cli", "datasets: synthesize, subset by metadata, inspect shards"),
    "fit": ("nas.scaling_cli", "fit a scaling law to a CSV or a study's results, print it with its uncertainty "
                               "and plot it"),
    "search": ("nas.search_cli", "run an architecture search study (Ray Tune + Optuna + ASHA)"),
    "status": ("nas.search_cli", "progress of a search (from another shell while it runs)"),
    "results": ("nas.search_cli", "leaderboard and per-budget Pareto fronts of a search; export them"),
    "quickstart": ("nas.search_cli", "the main job: a small search on synthetic data on this machine, in minutes"),
    "train": ("nas.train_cli", "proxy-train one candidate for a budget of samples seen, evaluate and export it"),
    "select": ("nas.analysis_cli", "choose the final designs: Pareto fronts, extrapolated ranking, open_clip configs"),
    "plot": ("nas.analysis_cli", "write every figure of a study (PNG and SVG)"),
    "report": ("nas.analysis_cli", "a markdown report of a study beside the ViTamin paper's numbers"),
}


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    """The full parser of `command`; without one, every command by its summary only (for the top-level help)."""
    parser = argparse.ArgumentParser(
        prog="vitamin-nas",
        description="Architecture search and scaling studies for CLIP image encoders of the ViTamin family.",
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    if command in COMMANDS:
        importlib.import_module(COMMANDS[command][0]).register(commands)
    else:
        for name, (_, summary) in COMMANDS.items():
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
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # output piped into `head` and the like: stop quietly
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0


if __name__ == "__main__":
    sys.exit(main())
