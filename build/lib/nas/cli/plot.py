"""`vitamin-nas plot`: every figure of a study, from its results database (PNG and SVG).

    vitamin-nas plot runs/vitamin_design_choices
"""

from __future__ import annotations

import argparse

from nas.cli._study import open_results, study_parser


def register(commands: argparse._SubParsersAction) -> None:
    plot = study_parser(
        commands, "plot", "write every figure of a study (PNG and SVG)",
        "Write the figures of a study from its results database: Pareto fronts of the metric against image GMACs, "
        "parameters and measured throughput at each budget, the search history (by trial, through the rungs, over "
        "time), one comparison per group of the study, the scaling laws of error against compute per arch family, "
        "and architecture diagrams.", "where the figures go (default DIR/figures)",
        "  vitamin-nas plot runs/qs\n  vitamin-nas plot runs/study --metric zeroshot_top5 --out figs")
    plot.set_defaults(func=_plot)


def _plot(args: argparse.Namespace) -> int:
    from plots.study import study_figures

    out = args.out or args.dir / "figures"
    written = study_figures(open_results(args.dir), out, metric=args.metric, law=args.law)
    if not written:
        print("no results yet: nothing to plot")
        return 0
    print(f"wrote {len(written)} figures (PNG, with SVG beside each) to {out}:")
    print("\n".join(f"  {p.name}" for p in written.values()))
    return 0
