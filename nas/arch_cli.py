"""`vitamin-nas arch` and `vitamin-nas space`: look at one candidate's cost, or at a whole search space."""

from __future__ import annotations

import argparse
import json
import random
from pathlib import Path

from tqdm import tqdm

from nas.arch import Arch
from nas.cost import Cost, cost, fvcore_gmacs
from nas.errors import ConfigError
from nas.presets import PRESETS, TextTower, preset_with_text
from nas.space import Constraint, SearchSpace
from nas.tables import format_table

#: Above this many combinations `space show` estimates ranges from samples instead of enumerating.
ENUMERATE_LIMIT = 50_000


def load_arch(spec: str) -> tuple[Arch, TextTower]:
    """A preset name or an arch JSON file (then with open_clip's default text tower)."""
    if spec.endswith(".json"):
        path = Path(spec)
        if not path.is_file():
            raise ConfigError("no such file", source=spec)
        return Arch.from_json(path.read_text(), source=spec), TextTower()
    return preset_with_text(spec)


def register(commands: argparse._SubParsersAction) -> None:
    arch = commands.add_parser("arch", help="cost breakdown of one architecture (preset name or JSON file)",
                               description="Print an architecture's exact cost per stage: parameters and GMACs "
                                           "(paper convention: fvcore, attention matmuls excluded), attention "
                                           "GMACs, totals in both conventions and training memory.")
    arch.add_argument("arch", nargs="?", help="preset name (see --list) or a FILE.json written by Arch.to_json")
    arch.add_argument("--list", action="store_true", help="list the presets")
    arch.add_argument("--batch", type=int, default=256, help="batch size for the memory estimate (default 256)")
    arch.add_argument("--fvcore", action="store_true", help="cross-check the MACs with fvcore (slow: builds the model)")
    arch.add_argument("--json", action="store_true", help="print the arch and its cost as JSON")
    arch.set_defaults(func=_arch)

    space = commands.add_parser("space", help="inspect a search space", description="Inspect a search space YAML.")
    sub = space.add_subparsers(dest="space_command", required=True, metavar="COMMAND")
    show = sub.add_parser("show", help="size, parameters, and parameter/GMAC ranges of a space",
                          description="Show a space's parameters, its size and the ranges of parameters and GMACs "
                                      "of its feasible candidates.")
    show.add_argument("file", help="search space YAML")
    show.add_argument("--samples", type=int, default=2000,
                      help=f"candidates to sample when the space has more than {ENUMERATE_LIMIT:,} (default 2000)")
    show.set_defaults(func=_space_show)
    sample = sub.add_parser("sample", help="random feasible candidates as a table or JSON lines",
                            description="Draw distinct random feasible candidates of a space.")
    sample.add_argument("file", help="search space YAML")
    sample.add_argument("-n", type=int, default=20, help="how many (default 20)")
    sample.add_argument("--max-gmacs", type=float, help="also require image GMACs <= X (paper convention)")
    sample.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    sample.add_argument("--json", action="store_true", help="one JSON object per line, with the full arch")
    sample.set_defaults(func=_space_sample)


def _cost_rows(c: Cost, batch: int) -> list[list]:
    rows = [[p.name, p.params / 1e6, p.macs / 1e9, p.attn_macs / 1e9, p.activations * batch * 2 / 2**30]
            for p in c.parts]
    rows.append(["image total", c.image_params / 1e6, c.image_gmacs, c.image_attn_macs / 1e9,
                 c.image_activations * batch * 2 / 2**30])
    rows.append(["text tower", c.text_params / 1e6, c.text_gmacs, c.text_attn_macs / 1e9,
                 c.text_activations * batch * 2 / 2**30])
    return rows


def _arch(args: argparse.Namespace) -> int:
    if args.list or not args.arch:
        rows = []
        for name, (a, t) in PRESETS.items():
            c = cost(a, t)
            rows.append([name, a.name(), c.image_params / 1e6, c.image_gmacs, c.text_params / 1e6, c.text_gmacs])
        print(format_table(["preset", "arch", "image M", "image GMACs", "text M", "text GMACs"], rows))
        return 0
    arch, text = load_arch(args.arch)
    c = cost(arch, text)
    if args.json:
        print(json.dumps({"arch_id": arch.arch_id, "name": arch.name(), "arch": arch.to_dict(), "cost": _summary(c)},
                         indent=2))
        return 0
    print(f"{arch.name()}  (arch_id {arch.arch_id})")
    print(f"text tower: {text.layers} layers x {text.width} wide, {text.heads} heads, context {text.context_length}\n")
    print(format_table(["part", "params M", "GMACs (paper)", "attn GMACs", f"act GiB @{args.batch}"],
                       _cost_rows(c, args.batch)))
    print()
    for key, value in _summary(c, args.batch).items():
        print(f"{key:>28}: {value:,.4g}")
    if args.fvcore:
        image, text_gmacs = fvcore_gmacs(arch, text)
        full = sum(fvcore_gmacs(arch, text, count_attention=True))
        print(format_table(["fvcore cross-check", "analytic", "fvcore", "diff %"], [
            ["image GMACs (paper)", c.image_gmacs, image, _pct(c.image_gmacs, image)],
            ["text GMACs (paper)", c.text_gmacs, text_gmacs, _pct(c.text_gmacs, text_gmacs)],
            ["GMACs full (SDPA counted)", c.gmacs_full, full, _pct(c.gmacs_full, full)],
        ]))
    return 0


def _pct(a: float, b: float) -> float:
    return 100 * (a - b) / b if b else 0.0


def _summary(c: Cost, batch: int = 256) -> dict[str, float]:
    return {
        "image_params_m": c.image_params / 1e6, "text_params_m": c.text_params / 1e6, "params_m": c.params / 1e6,
        "image_gmacs (paper)": c.image_gmacs, "gmacs (paper)": c.gmacs, "gflops (paper)": c.gflops,
        "image_gmacs_full": c.image_gmacs_full, "gmacs_full": c.gmacs_full, "gflops_full": c.gflops_full,
        "train_gflops_per_sample": c.train_gflops,
        f"train_memory_gib @{batch} bf16": c.train_memory_bytes(batch) / 2**30,
    }


def _space_show(args: argparse.Namespace) -> int:
    space = SearchSpace.load(args.file)
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
    space = SearchSpace.load(args.file)
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
                              "image_gmacs": round(c.image_gmacs, 6), "arch": a.to_dict()}, sort_keys=True))
        return 0
    print(format_table(["arch_id", "name", "params M", "GMACs"],
                       [[a.arch_id, a.name(), c.image_params / 1e6, c.image_gmacs] for a, c in zip(archs, costs)]))
    if len(archs) < args.n:
        print(f"(only {len(archs)} distinct feasible candidates found)")
    return 0
