"""`vitamin-nas select`: choose the final designs: Pareto fronts, the extrapolated ranking, open_clip models.

    vitamin-nas select runs/vitamin_design_choices --target-samples 1.28e6 --target-gmacs 0.03
"""

from __future__ import annotations

import argparse
import json

from nas.cli._study import open_results, positive, study_parser
from nas.errors import ConfigError


def register(commands: argparse._SubParsersAction) -> None:
    select = study_parser(
        commands, "select", "choose the final designs: Pareto fronts, extrapolated ranking, trained open_clip models",
        "Print the Pareto fronts of the metric against image GMACs, parameters and measured throughput at the "
        "largest budget; fit a scaling law to every candidate measured at several budgets (error against samples "
        "seen; or, --by family, against compute over a family's members), extrapolate it to the target with its "
        "prediction interval and rank by it. The best candidate and every one not distinguishable from it "
        "(overlapping intervals) are chosen and written as arch JSON and open_clip models, with the trained weights of "
        "the furthest rung the search kept a checkpoint of.",
        "where the choice is written (default DIR/selection)",
        "  vitamin-nas select runs/study --target-samples 1280000000 --target-gmacs 20 --by family\n"
        "  vitamin-nas select runs/qs")
    target = select.add_argument_group("target")
    target.add_argument("--target-samples", type=positive, metavar="N",
                        help="samples seen to extrapolate to (default: the largest budget measured)")
    target.add_argument("--target-compute", type=positive, metavar="C",
                        help="or a compute budget in image GMACs x samples seen (each arch: C / its GMACs samples)")
    target.add_argument("--target-gmacs", type=positive, metavar="X",
                        help="only candidates whose image tower costs at most X GMACs (plus --gmacs-tolerance)")
    target.add_argument("--gmacs-tolerance", type=float, default=0.1, metavar="F",
                        help="relative slack on --target-gmacs, as matched comparisons allow (default 0.1)")
    select.add_argument("--by", choices=("arch", "family"), default="arch",
                        help="rank archs (law in samples seen) or arch families (law in compute; default arch)")
    select.add_argument("--level", type=float, default=0.95, help="prediction interval level (default 0.95)")
    select.set_defaults(func=_select)


def _select(args: argparse.Namespace) -> int:
    from nas.leaderboard import finalists_lines
    from nas.select import at_target, choose, write_selection

    if not 0 < args.level < 1:
        raise ConfigError(f"must be in (0, 1), got {args.level}", field="--level")
    store = open_results(args.dir)
    ranking = at_target(store, target_samples=args.target_samples, target_compute=args.target_compute,
                        max_gmacs=args.target_gmacs, gmacs_tolerance=args.gmacs_tolerance, by=args.by, law=args.law,
                        metric=args.metric, level=args.level)
    print(_fronts_text(store, args.metric))
    finalists = finalists_lines(store, args.metric)
    if finalists:  # confirmed with more seeds: ranked by their seed mean, the interval over seeds
        print("\n".join(finalists).lstrip("\n") + "\n")
    chosen = choose(ranking)
    print(_ranking_text(ranking, chosen, args))
    target = {"samples": args.target_samples, "compute": args.target_compute, "max_image_gmacs": args.target_gmacs,
              "gmacs_tolerance": args.gmacs_tolerance, "by": args.by, "law": args.law, "metric": args.metric,
              "level": args.level}
    path = write_selection(store, ranking, chosen, args.out or args.dir / "selection", **target)
    print(f"\nwrote {path}" + (", and beside it each chosen arch:" if chosen else ""))
    for entry in json.loads(path.read_text())["chosen"]:
        weights = entry["weights"]
        if weights is None:
            print(f"  {entry['dir']}: no checkpoint of it was kept, so its open_clip config and tower.json only, "
                  f"no weights (train it: vitamin-nas train --model {entry['dir']}/tower.json ...)")
        else:
            print(f"  {entry['dir']}: trained weights of trial {weights['trial']} at {weights['samples_seen']:,} "
                  f"samples seen; load with {entry['load']}")
    return 0


def _fronts_text(store, metric: str) -> str:
    from nas.select import fronts
    from nas.tables import format_table, headers, rows

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
    fitted = any(p.fitted for p in ranking)
    table = [[i if p.ranked else "-", p.label, p.arch.name(), f"{p.image_gmacs:.4g}", p.points, f"{p.measured:.4g}",
              f"{p.target:.4g}", f"{p.value:.4f}" if p.ranked else "-",
              f"[{p.lower:.4f}, {p.upper:.4f}]" if p.ranked else p.note,
              "chosen" if p in chosen else ""] for i, p in enumerate(ranking, start=1)]
    headers = ["rank", "candidate", "arch", "image GMACs", "points", f"measured {x}", f"target {x}",
               f"predicted {args.metric}" if fitted else args.metric,
               f"{level} prediction interval" if fitted else f"{level} interval (eval set)", ""]
    how = f"extrapolated with a {args.law} law in {x}" if fitted or not ranking else \
        f"as measured at {ranking[0].target:,.0f} samples seen (no law: not extrapolated)"
    text = [f"\nRanking by {args.metric} {how} ({args.by}):", format_table(headers, table)]
    from nas.select import extrapolation_warnings, separation

    text.append(f"\n{separation(ranking, chosen, args.level)}.")
    if len(chosen) > 1:
        text.append(f"chosen: {', '.join(p.label for p in chosen)} (they cannot be told apart)")
    elif chosen:
        text.append(f"chosen: {chosen[0].label}")
    text += [f"warning: {w}" for w in extrapolation_warnings(ranking, args.target_gmacs)]
    return "\n".join(text)
