"""The `vitamin-nas` command line. Subcommands parse arguments and call library functions, nothing more."""

from __future__ import annotations

import argparse
import os
import sys

from nas.errors import ConfigError


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="vitamin-nas",
        description="Architecture search and scaling studies for CLIP image encoders of the ViTamin family.",
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    from nas import arch_cli, scaling_cli
    from nas.data import cli as data_cli

    for register in (arch_cli.register, data_cli.register, scaling_cli.register):
        register(commands)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
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
