"""`vitamin-nas report`: a markdown report of a study beside the ViTamin paper's numbers.

    vitamin-nas report runs/vitamin_design_choices
    vitamin-nas report runs/vitamin_design_choices --out docs/results/vitamin_design_choices.md \
        --figures docs/results/vitamin_design_choices
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from nas.cli._study import open_results, study_parser


def register(commands: argparse._SubParsersAction) -> None:
    report = study_parser(
        commands, "report", "a markdown report of a study beside the ViTamin paper's numbers",
        "Write a markdown report: the study's tables beside the paper's published numbers, which of the paper's "
        "findings (orderings of designs, data and model scaling) the study reproduces and which it does not, the "
        "fitted scaling laws beside the same laws on the paper's models, the extrapolated ranking, and the figures "
        "(written beside the report).", "the report file (default DIR/report.md; figures in its figures/)",
        "  vitamin-nas report runs/study\n  vitamin-nas report runs/study --no-plot --out docs/results/study.md\n"
        "  vitamin-nas report runs/study --out docs/results/study.md --figures docs/results/study")
    report.add_argument("--no-plot", action="store_true",
                        help="link the figures `vitamin-nas plot` already wrote beside the report instead of drawing "
                             "them again")
    report.add_argument("--figures", type=Path, metavar="DIR",
                        help="where the figures are written (default figures/ beside the report; one directory per "
                             "study when several reports share a folder)")
    report.add_argument("--paper", type=Path,
                        help="the paper's numbers and claims (default studies/paper/vitamin.yaml)")
    report.set_defaults(func=_report)


def _report(args: argparse.Namespace) -> int:
    from nas.report import PAPER, load_paper, report
    from plots.study import figure_index, study_figures

    paper = load_paper(args.paper or PAPER)
    store = open_results(args.dir)
    out = args.out or args.dir / "report.md"
    directory = args.figures or out.parent / "figures"
    if args.no_plot:
        figures = figure_index(directory)
    else:
        figures = study_figures(store, directory, metric=args.metric, law=args.law)
    links = {name: os.path.relpath(p, out.parent) for name, p in figures.items()}
    text = report(store, paper, links, metric=args.metric, law=args.law)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(text)
    print(f"wrote {out} ({len(figures)} figures in {directory})")
    return 0
