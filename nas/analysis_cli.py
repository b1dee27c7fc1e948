"""`vitamin-nas select | plot | report`: turn a study's results into a choice, its figures and a report.

    vitamin-nas select runs/vitamin_design_choices --target-samples 1.28e6 --target-gmacs 0.03
    vitamin-nas plot runs/vitamin_design_choices
    vitamin-nas report runs/vitamin_design_choices

All three read the results database read-only (safe while the search runs). Heavy imports stay inside the
commands.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from nas.errors import ConfigError

LAWS = ("power", "saturating", "pareto-power")


def _positive(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be > 0, got {text}")
    return value


def register(commands: argparse._SubParsersAction) -> None:
    _register_select(commands)
    plot = _study_parser(
        commands, "plot", "write every figure of a study (PNG and SVG)",
        "Write the figures of a study from its results database: Pareto fronts of the metric against image GMACs, "
        "parameters and measured throughput at each budget, the search history (by trial, through the rungs, over "
        "time), one comparison per group of the study, the scaling laws of error against compute per arch family, "
        "and architecture diagrams.", "where the figures go (default DIR/figures)")
    plot.set_defaults(func=_plot)
    report = _study_parser(
        commands, "report", "a markdown report of a study beside the ViTamin paper's numbers",
        "Write a markdown report: the study's tables beside the paper's published numbers, which of the paper's "
        "findings (orderings of designs, data and model scaling) the study reproduces and which it does not, the "
        "fitted scaling laws beside the same laws on the paper's models, the extrapolated ranking, and the figures "
        "(written beside the report).", "the report file (default DIR/report.md; figures in its figures/)")
    report.add_argument("--no-plot", action="store_true",
                        help="link the figures `vitamin-nas plot` already wrote beside the report instead of drawing "
                             "them again")
    report.add_argument("--paper", type=Path,
                        help="the paper's numbers and claims (default studies/paper/vitamin.yaml)")
    report.set_defaults(func=_report)


def _study_parser(commands: argparse._SubParsersAction, name: str, summary: str, description: str,
                  out: str) -> argparse.ArgumentParser:
    """A command on one study's results: DIR, --out, and the metric and law it reads them with."""
    parser = commands.add_parser(name, help=summary, description=description)
    parser.add_argument("dir", type=Path, help="the study's output directory (holding study.db)")
    parser.add_argument("--out", type=Path, help=out)
    parser.add_argument("--metric", default="zeroshot_top1", help="the measured metric (default zeroshot_top1)")
    parser.add_argument("--law", choices=LAWS, default="power",
                        help="law of error against samples seen or compute (default power)")
    return parser


def _register_select(commands: argparse._SubParsersAction) -> None:
    select = _study_parser(
        commands, "select", "choose the final designs: Pareto fronts, extrapolated ranking, open_clip configs",
        "Print the Pareto fronts of the metric against image GMACs, parameters and measured throughput at the "
        "largest budget; fit a scaling law to every candidate measured at several budgets (error against samples "
        "seen; or, --by family, against compute over a family's members), extrapolate it to the target with its "
        "prediction interval and rank by it. The best candidate and every one not distinguishable from it "
        "(overlapping intervals) are chosen and written as arch JSON and open_clip model configs.",
        "where the choice is written (default DIR/selection)")
    target = select.add_argument_group("target")
    target.add_argument("--target-samples", type=_positive, metavar="N",
                        help="samples seen to extrapolate to (default: the largest budget measured)")
    target.add_argument("--target-compute", type=_positive, metavar="C",
                        help="or a compute budget in image GMACs x samples seen (each arch: C / its GMACs samples)")
    target.add_argument("--target-gmacs", type=_positive, metavar="X",
                        help="only candidates whose image tower costs at most X GMACs (plus --gmacs-tolerance)")
    target.add_argument("--gmacs-tolerance", type=float, default=0.1, metavar="F",
                        help="relative slack on --target-gmacs, as matched comparisons allow (default 0.1)")
    select.add_argument("--by", choices=("arch", "family"), default="arch",
                        help="rank archs (law in samples seen) or arch families (law in compute; default arch)")
    select.add_argument("--level", type=float, default=0.95, help="prediction interval level (default 0.95)")
    select.set_defaults(func=_select)


def _store(directory: Path):
    from nas.results import ResultStore

    return ResultStore.open(directory, readonly=True)


def _select(args: argparse.Namespace) -> int:
    from nas.select import at_target, choose, write_selection

    if not 0 < args.level < 1:
        raise ConfigError(f"must be in (0, 1), got {args.level}", field="--level")
    store = _store(args.dir)
    print(_fronts_text(store, args.metric))
    ranking = at_target(store, target_samples=args.target_samples, target_compute=args.target_compute,
                        max_gmacs=args.target_gmacs, gmacs_tolerance=args.gmacs_tolerance, by=args.by, law=args.law,
                        metric=args.metric, level=args.level)
    chosen = choose(ranking)
    print(_ranking_text(ranking, chosen, args))
    target = {"samples": args.target_samples, "compute": args.target_compute, "max_image_gmacs": args.target_gmacs,
              "gmacs_tolerance": args.gmacs_tolerance, "by": args.by, "law": args.law, "metric": args.metric,
              "level": args.level}
    path = write_selection(store, ranking, chosen, args.out or args.dir / "selection", **target)
    print(f"\nwrote {path} and the open_clip configs of {len(chosen)} arch(s) beside it "
          f"(load one with nas.export.load_open_clip(DIR))")
    return 0


def _fronts_text(store, metric: str) -> str:
    from nas.results import headers, rows
    from nas.select import fronts
    from nas.tables import format_table

    budgets = store.budgets()
    if not budgets:
        return "no results yet"
    front = fronts(store, metric, budget=budgets[-1])
    text = []
    for axis, members in front.groupby("axis", sort=False):
        columns = ["label", "arch_name", metric, axis]
        text += [f"Pareto front of {metric} against {axis} at {budgets[-1]:,} samples seen:",
                 format_table(headers(columns), rows(members.to_dict("records"), columns)), ""]
    return "\n".join(text)


def _ranking_text(ranking, chosen, args: argparse.Namespace) -> str:
    from nas.tables import format_table

    x = "samples" if args.by == "arch" else "compute"
    level = f"{args.level:.0%}"
    table = [[i, p.label, p.arch.name(), f"{p.image_gmacs:.4g}", p.points, f"{p.measured:.4g}", f"{p.target:.4g}",
              f"{p.value:.4f}" if p.fitted else "-",
              f"[{p.lower:.4f}, {p.upper:.4f}]" if p.fitted else p.note,
              "chosen" if p in chosen else ""] for i, p in enumerate(ranking, start=1)]
    headers = ["rank", "candidate", "arch", "image GMACs", "points", f"measured {x}", f"target {x}",
               f"predicted {args.metric}", f"{level} prediction interval", ""]
    text = [f"\nRanking by {args.metric} extrapolated with a {args.law} law in {x} ({args.by}):",
            format_table(headers, table)]
    if not chosen:
        return "\n".join([*text, "\nno candidate was measured at enough budgets to fit a law"])
    best, *tied = chosen
    text.append(f"\nchosen: {best.label}" + (f"; not distinguishable from it ({level} prediction intervals overlap), "
                                             f"so chosen too: {', '.join(p.label for p in tied)}" if tied else
                                             f" (distinguishable from every other candidate at {level})"))
    return "\n".join(text)


def _plot(args: argparse.Namespace) -> int:
    from plots.study import study_figures

    out = args.out or args.dir / "figures"
    written = study_figures(_store(args.dir), out, metric=args.metric, law=args.law)
    if not written:
        print("no results yet: nothing to plot")
        return 0
    print(f"wrote {len(written)} figures (PNG, with SVG beside each) to {out}:")
    print("\n".join(f"  {p.name}" for p in written))
    return 0


def _report(args: argparse.Namespace) -> int:
    from nas.report import PAPER, load_paper, report
    from plots.study import study_figures

    paper = load_paper(args.paper or PAPER)
    store = _store(args.dir)
    out = args.out or args.dir / "report.md"
    directory = out.parent / "figures"
    if args.no_plot:
        figures = sorted(directory.glob("*.png"))
    else:
        figures = study_figures(store, directory, metric=args.metric, law=args.law)
    text = report(store, paper, [str(p.relative_to(out.parent)) for p in figures], metric=args.metric, law=args.law)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(text)
    print(f"wrote {out} ({len(figures)} figures in {out.parent / 'figures'})")
    return 0
