"""`vitamin-nas fidelity`: does a cheap measurement rank a study's candidates as the expensive one does?

    vitamin-nas fidelity runs/quickstart
    vitamin-nas fidelity runs/study --metric zeroshot_top5 --no-proxies
"""

from __future__ import annotations

import argparse

from nas.cli._study import open_results


def register(commands: argparse._SubParsersAction) -> None:
    parser = commands.add_parser(
        "fidelity", help="how well early rungs, size, zero-cost proxies and a supernet rank a study's candidates",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="For every pair of budgets (each rung against every later one, on the candidates measured at "
                    "both), and for the image tower's parameters, GMACs and the zero-cost proxies (NASWOT, synflow; "
                    "computed at initialisation, no training, no labels) and, with --supernet, the zero-shot top-1 "
                    "each candidate gets with the weights it inherits from a trained supernet (supernet_top1, on "
                    "the study's zero-shot set) against every budget: Spearman and Kendall "
                    "rank correlations with 95 % bootstrap intervals, the top-k overlap, how many of successive "
                    "halving's promotions would change had the later rung decided, and whether the cheap rung's "
                    "ranking can be told from eval noise at all.",
        epilog="examples:\n  vitamin-nas fidelity runs/quickstart\n"
               "  vitamin-nas fidelity runs/study --metric zeroshot_top5 --no-proxies\n"
               "  vitamin-nas supernet train studies/quickstart.yaml --out runs/sn\n"
               "  vitamin-nas fidelity runs/quickstart --supernet runs/sn")
    parser.add_argument("dir", help="the study's output directory (holding study.db)")
    parser.add_argument("--metric", default="zeroshot_top1", help="the measured metric (default zeroshot_top1)")
    parser.add_argument("--no-proxies", action="store_true", help="skip the zero-cost proxies (they build every arch)")
    parser.add_argument("--supernet", metavar="RUN",
                        help="a supernet's run directory (`vitamin-nas supernet train --out`): its score beside the "
                             "zero-cost ones, for the candidates that are its subnets (a study with a proxy has its "
                             "supernet's scores stored: they are ranked without this option)")
    parser.add_argument("--top-fraction", type=float, default=1 / 3,
                        help="the top-k overlap's k as a fraction of the candidates (default 1/3)")
    parser.set_defaults(func=_fidelity)


def _fidelity(args: argparse.Namespace) -> int:
    from nas.errors import ConfigError
    from nas.fidelity import format_fidelity, study_fidelity
    from nas.metrics import ZERO_COST

    if not 0 < args.top_fraction <= 1:
        raise ConfigError(f"must be in (0, 1], got {args.top_fraction}", field="--top-fraction")
    rows = study_fidelity(open_results(args.dir), args.metric, proxies=() if args.no_proxies else ZERO_COST,
                          progress=True, supernet=args.supernet, top_fraction=args.top_fraction)
    if not rows:
        print("too few candidates measured at two fidelities (at least 3 in common are needed)")
        return 0
    print(format_fidelity(rows))
    print("\nspearman/kendall: rank correlation of the cheap measurement with the expensive one over the candidates "
          "measured at both, 95 % bootstrap interval; changed promotions: of the top 1/reduction_factor the cheap "
          "ranking keeps, how many the expensive one would not; noise p: whether the cheap rung's candidates differ "
          "at all (p > 0.05: its ranking cannot be told from eval noise).")
    return 0
