"""`vitamin-nas arch`: one candidate's exact cost, per stage, in both MAC conventions.

    vitamin-nas arch --list                 # the presets
    vitamin-nas arch ViTamin-S              # params, GMACs, attention GMACs, activations per stage
    vitamin-nas arch ViTamin-B --fvcore     # cross-check the MACs against fvcore (builds the model)
    vitamin-nas arch candidate.json --json  # any arch file; the JSON it prints is an arch file too
"""

from __future__ import annotations

import argparse
import dataclasses
import json

from nas.cost import Cost, cost, fvcore_gmacs
from nas.presets import PRESETS, load_arch
from nas.tables import format_table


def register(commands: argparse._SubParsersAction) -> None:
    arch = commands.add_parser(
        "arch", help="cost breakdown of one architecture (preset name or JSON file)",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Print an architecture's exact cost per stage: parameters and GMACs (paper convention: "
                    "fvcore, attention matmuls excluded), attention GMACs, totals in both conventions and "
                    "training memory.",
        epilog="examples:\n  vitamin-nas arch --list\n  vitamin-nas arch ViTamin-S\n"
               "  vitamin-nas arch ViTamin-B --fvcore\n  vitamin-nas arch ViTamin-S --json > s.json && "
               "vitamin-nas arch s.json")
    arch.add_argument("arch", nargs="?", help="preset name (see --list) or a FILE.json holding an arch (Arch.to_json, "
                                              "or the JSON this command, `space sample --json` or an export writes)")
    arch.add_argument("--list", action="store_true", help="list the presets")
    arch.add_argument("--batch", type=int, default=256, help="batch size for the memory estimate (default 256)")
    arch.add_argument("--fvcore", action="store_true", help="cross-check the MACs with fvcore (slow: builds the model)")
    arch.add_argument("--json", action="store_true", help="print the arch, its text tower and cost as JSON")
    arch.set_defaults(func=_arch)


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
        print(json.dumps({"arch_id": arch.arch_id, "name": arch.name(), "arch": arch.to_dict(),
                          "text": dataclasses.asdict(text), "cost": _summary(c)}, indent=2))
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
