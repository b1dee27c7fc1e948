"""`vitamin-nas studies`: the studies and search spaces that ship with vitamin-nas (`nas.shipped`).

    vitamin-nas studies                       # what ships: each study's algorithm, trials, budgets, objectives
    vitamin-nas search quickstart             # a shipped study runs by its name, from any directory
    vitamin-nas studies --fields              # every field of a study file: type, default, what it is
    vitamin-nas studies --schema              # the same as a JSON Schema (shipped: studies/study.schema.json)
"""

from __future__ import annotations

import argparse


def register(commands: argparse._SubParsersAction) -> None:
    studies = commands.add_parser(
        "studies", help="the studies and search spaces that ship with vitamin-nas",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="List the studies and search spaces installed with the package, with their files. A shipped "
                    "study runs by its name (`vitamin-nas search quickstart`); copy its file to change it. Its "
                    "synthetic data is written under ./data of the current directory.",
        epilog="examples:\n  vitamin-nas studies\n  vitamin-nas studies --fields\n"
               "  vitamin-nas search quickstart --out runs/qs")
    shown = studies.add_mutually_exclusive_group()
    shown.add_argument("--fields", action="store_true",
                       help="print every field of a study file, with its type, default and what it is")
    shown.add_argument("--schema", action="store_true",
                       help="print the JSON Schema of a study file (shipped beside the studies as study.schema.json, "
                            "for an editor's completion and checks)")
    studies.set_defaults(func=_studies)


def _studies(args: argparse.Namespace) -> int:
    if args.fields or args.schema:
        from nas.study.schema import fields_reference, schema_text

        print(fields_reference() if args.fields else schema_text(), end="\n" if args.fields else "")
        return 0
    from nas import shipped
    from nas.space import SearchSpace
    from nas.study import load_study
    from nas.tables import format_table

    rows = []
    for name, path in shipped.studies().items():
        study = load_study(path)
        budgets = ", ".join(f"{b:,}" for b in study.budget.rungs)
        objectives = ", ".join(f"{metric} {way}" for metric, way in study.objectives.items())
        rows.append([name, study.algorithm, study.trials, budgets, objectives, study.description])
    print("studies (run one: vitamin-nas search NAME):")
    print(format_table(["study", "algorithm", "trials", "budgets (samples seen)", "objectives", "description"], rows))
    print("\nsearch spaces:")
    print(format_table(["space", "candidates", "file"],
                       [[name, f"{SearchSpace.load(path).size():,}", str(path)]
                        for name, path in shipped.spaces().items()]))
    print(f"\nstudy files: {shipped.STUDIES}; their fields: vitamin-nas studies --fields; their JSON Schema: "
          f"{shipped.STUDIES / 'study.schema.json'}")
    return 0
