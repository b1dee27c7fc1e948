"""How fast the analytic cost model prices candidates, against fvcore (the alternative) in the same run.

    .venv/bin/python benchmarks/cost_model.py [--space search_spaces/vitamin.yaml] [--n 10000] [--repeats 5]

Prints candidates per second on one core (median of repeats), cold (fresh component caches) and warm, and
the seconds fvcore needs for one model, for the ratio. Prints figures; asserts nothing.
"""

from __future__ import annotations

import argparse
import random
import statistics
import time

from nas import cost as cost_module
from nas.space import SearchSpace


def _clear_caches() -> None:
    for value in vars(cost_module).values():
        if hasattr(value, "cache_clear"):
            value.cache_clear()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--space", default="search_spaces/vitamin.yaml")
    parser.add_argument("--n", type=int, default=10_000, help="candidates priced per repeat")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--fvcore-models", type=int, default=2, help="models counted with fvcore for the ratio")
    args = parser.parse_args()

    space = SearchSpace.load(args.space)
    rng = random.Random(0)
    archs = [space.sample(rng, feasible=False) for _ in range(args.n)]
    print(f"space {space.name}: {args.n:,} distinct-seeded random candidates, {args.repeats} repeats, one core")

    rates = {"cold": [], "warm": []}
    for _ in range(args.repeats):
        for mode in ("cold", "warm"):
            if mode == "cold":
                _clear_caches()
            start = time.perf_counter()
            for arch in archs:
                cost_module.cost(arch, space.text)
            rates[mode].append(args.n / (time.perf_counter() - start))
    for mode, values in rates.items():
        print(f"analytic cost ({mode} caches): median {statistics.median(values):,.0f} candidates/s "
              f"(min {min(values):,.0f}, max {max(values):,.0f})")

    start = time.perf_counter()
    for arch in archs[: args.fvcore_models]:
        cost_module.fvcore_gmacs(arch, space.text)
    fvcore_seconds = (time.perf_counter() - start) / args.fvcore_models
    print(f"fvcore FlopCountAnalysis (build + trace + count): {fvcore_seconds:.2f} s per candidate")
    print(f"ratio analytic/fvcore: {statistics.median(rates['cold']) * fvcore_seconds:,.0f}x (cold caches)")


if __name__ == "__main__":
    main()
