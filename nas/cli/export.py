"""`vitamin-nas export`: a search's trained candidate as an open_clip model (weights, config, preprocessing).

    vitamin-nas export runs/qs --best --out winner                 # best on the study's objective, largest budget
    vitamin-nas export runs/qs --trial 7 --out t7                  # a trial at its furthest rung
    vitamin-nas export runs/qs --arch 3f2a9c --budget 4800 --out a # an arch at a budget (a rung with a checkpoint)
"""

from __future__ import annotations

import argparse
from pathlib import Path


def register(commands: argparse._SubParsersAction) -> None:
    export = commands.add_parser(
        "export", help="a search's trained candidate as an open_clip model (weights, config, preprocessing)",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Write the trained weights of one trial of a search, at its furthest rung (or --budget), from "
                    "the checkpoint the search kept, as a directory open_clip loads (`local-dir:`), with the arch and "
                    "what the trial measured there (measured.json). A search keeps each trial's rungs (with the "
                    "study's storage.keep, the best trials' at each rung).",
        epilog="examples:\n  vitamin-nas export runs/qs --best --out winner\n"
               "  vitamin-nas export runs/qs --trial 7 --out t7\n"
               "  vitamin-nas export runs/qs --arch 3f2a9c --budget 4800 --out a\n\n"
               "then, in Python:\n  model, _, preprocess = nas.export.load_open_clip('winner')")
    export.add_argument("dir", type=Path, help="the search's output directory (holding study.db)")
    which = export.add_mutually_exclusive_group(required=True)
    which.add_argument("--trial", type=int, metavar="N", help="the trial numbered N (`vitamin-nas results`)")
    which.add_argument("--arch", metavar="ID", help="the arch with this arch_id (or a unique prefix of it)")
    which.add_argument("--best", action="store_true",
                       help="the arch that measured best on --metric at --budget (default: the largest measured)")
    export.add_argument("--budget", type=int, metavar="B", help="the rung at B samples seen (default: the furthest)")
    export.add_argument("--metric", help="what --best ranks by (default: the study's first measured objective)")
    export.add_argument("--out", type=Path, required=True, help="the export directory to write")
    export.set_defaults(func=_export)


def _export(args: argparse.Namespace) -> int:
    from nas.cli._study import open_results
    from nas.export import export_trained, timm_name, trained
    from nas.tables import PERCENT_METRICS

    store = open_results(args.dir)
    candidate = trained(store, trial=args.trial, arch_id=args.arch, best=args.best, budget=args.budget,
                        metric=args.metric)
    out = export_trained(store, candidate, args.out)
    rungs = len(store.study().budget.rungs)
    measured = ", ".join(f"{name} {100 * candidate.metrics[name]:.2f} %" for name in PERCENT_METRICS
                         if name in candidate.metrics and "R@" not in name)
    print(f"exported trial {candidate.number} ({candidate.arch.name()}, arch_id {candidate.arch.arch_id}) at "
          f"{candidate.samples_seen:,} samples seen (rung {candidate.rung + 1}/{rungs})"
          + (f": {measured}" if measured else ""))
    print(f"to {out}; load it with\n  model, _, preprocess = nas.export.load_open_clip({str(out)!r})")
    if timm_name(candidate.arch).startswith("nas_"):
        print(f"or, in open_clip: nas.export.register({str(out)!r}), then "
              f"open_clip.create_model_and_transforms('local-dir:{out}')")
    else:
        print(f"or, with open_clip alone: open_clip.create_model_and_transforms('local-dir:{out}')")
    return 0
