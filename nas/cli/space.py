"""`vitamin-nas space`: a search space's parameters, size and cost ranges, and random feasible candidates.

    vitamin-nas space show vitamin                          # a shipped space by name, or a YAML file
    vitamin-nas space sample vitamin -n 20 --max-gmacs 10 --seed 0 --json
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import random

from tqdm import tqdm

from nas.errors import ConfigError
from nas.shipped import space_file
from nas.space import Constraint, SearchSpace
from nas.tables import format_table

#: Above this many combinations `space show` estimates ranges from samples instead of enumerating.
ENUMERATE_LIMIT = 50_000


def register(commands: argparse._SubParsersAction) -> None:
    space = commands.add_parser("space", help="inspect a search space", description="Inspect a search space YAML.",
                                formatter_class=argparse.RawDescriptionHelpFormatter,
                                epilog="examples:\n  vitamin-nas space show tiny\n"
                                       "  vitamin-nas space sample my_space.yaml -n 5 --json")
    sub = space.add_subparsers(dest="space_command", required=True, metavar="COMMAND")
    show = sub.add_parser("show", help="size, parameters, and parameter/GMAC ranges of a space",
                          description="Show a space's parameters, its size and the ranges of parameters and GMACs "
                                      "of its feasible candidates.")
    show.add_argument("file", help="search space YAML, or the name of a shipped one (vitamin-nas studies)")
    show.add_argument("--samples", type=int, default=2000,
                      help=f"candidates to sample when the space has more than {ENUMERATE_LIMIT:,} (default 2000)")
    show.set_defaults(func=_space_show)
    sample = sub.add_parser("sample", help="random feasible candidates as a table or JSON lines",
                            description="Draw distinct random feasible candidates of a space; with --json, one "
                                        "arch per line, each readable back by `vitamin-nas arch FILE.json`.")
    sample.add_argument("file", help="search space YAML, or the name of a shipped one (vitamin-nas studies)")
    sample.add_argument("-n", type=int, default=20, help="how many (default 20)")
    sample.add_argument("--max-gmacs", type=float, help="also require image GMACs <= X (paper convention)")
    sample.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    sample.add_argument("--json", action="store_true", help="one JSON object per line, with the full arch")
    sample.set_defaults(func=_space_sample)


def _space_show(args: argparse.Namespace) -> int:
    space = SearchSpace.load(space_file(args.file))
    print(f"{space.name}: {space.description}" if space.description else space.name)
    print(format_table(["parameter", "domain"], [[name, _domain_text(d)] for name, d in space.params()]))
    constraints = ", ".join(f"{k}: {_bounds(v)}" for k, v in space.constraints.items()) or "none"
    print(f"\nconstraints: {constraints}")
    if space.finite and space.size() <= ENUMERATE_LIMIT:
        size = space.size()
        archs = list(tqdm(space.enumerate(), total=size, desc="enumerating", unit="arch", leave=False))
        how = f"all {len(archs):,} feasible of {size:,} combinations"
    else:
        size = space.size() if space.finite else None
        rng = random.Random(0)
        archs = [space.sample(rng) for _ in tqdm(range(args.samples), desc="sampling", unit="arch", leave=False)]
        how = f"estimated from {len(archs):,} feasible samples" + (f" of {size:,} combinations" if size else "")
    if not archs:
        print("\nno feasible candidate: the constraints exclude the whole space")
        return 0
    costs = [space.cost(a) for a in archs]
    print(f"size: {size:,} combinations" if size is not None else "size: infinite (continuous parameters)")
    print(f"ranges ({how}):")
    rows = [
        _range("image params M", [c.image_params / 1e6 for c in costs]),
        _range("image GMACs (paper)", [c.image_gmacs for c in costs]),
        _range("image GMACs full", [c.image_gmacs_full for c in costs]),
    ]
    transformers = [a.transformer for a in archs if a.transformer]  # none in a ConvNeXt or CoAtNet space
    if transformers:
        rows += [_range("transformer depth", [t.depth for t in transformers]),
                 _range("transformer width", [t.width for t in transformers])]
    print(format_table(["quantity", "min", "median", "max"], rows))
    return 0


def _range(name: str, values: list[float]) -> list:
    ordered = sorted(values)
    return [name, float(ordered[0]), float(ordered[len(ordered) // 2]), float(ordered[-1])]


def _domain_text(domain) -> str:
    if domain.values is not None:
        return ", ".join(str(v) for v in domain.values)
    text = f"{domain.low} .. {domain.high}"
    return text + (f" step {domain.step}" if domain.step else "") + (" (log)" if domain.log else "")


def _bounds(k: Constraint) -> str:
    parts = ([f">= {k.low}"] if k.low is not None else []) + ([f"<= {k.high}"] if k.high is not None else [])
    return " and ".join(parts)


def _space_sample(args: argparse.Namespace) -> int:
    if args.n < 1:
        raise ConfigError(f"must be at least 1, got {args.n}", field="-n")
    space = SearchSpace.load(space_file(args.file))
    if args.max_gmacs is not None:
        space.constraints["image_gmacs"] = Constraint(space.constraints.get("image_gmacs", Constraint()).low,
                                                      args.max_gmacs)
    rng, seen, archs = random.Random(args.seed), set(), []
    for _ in range(50 * args.n):
        arch = space.sample(rng)
        if arch.arch_id not in seen:
            seen.add(arch.arch_id)
            archs.append(arch)
        if len(archs) == args.n:
            break
    costs = [space.cost(a) for a in archs]
    if args.json:
        for a, c in zip(archs, costs):
            print(json.dumps({"arch_id": a.arch_id, "name": a.name(), "image_params": c.image_params,
                              "image_gmacs": round(c.image_gmacs, 6), "arch": a.to_dict(),
                              "text": dataclasses.asdict(space.text)}, sort_keys=True))
        return 0
    print(format_table(["arch_id", "name", "params M", "GMACs"],
                       [[a.arch_id, a.name(), c.image_params / 1e6, c.image_gmacs] for a, c in zip(archs, costs)]))
    if len(archs) < args.n:
        print(f"(only {len(archs)} distinct feasible candidates found)")
    return 0
