"""How often the joint law's intervals cover the truth, on synthetic ladders whose law is known.

    .venv/bin/python benchmarks/scaling_coverage.py [--ladders 200] [--bootstrap 100] [--sizes 6] [--data 5]
        [--noise 0.01] [--level 0.95] [--law joint|tied|saturating] [--seed 0]

Each ladder is a grid of model sizes N x data sizes D (geometric, N 5e7..5e9, D 2e9..2e11, spanning both sides
of Hoffmann et al.'s compute-optimal frontier) with loss from Hoffmann et al.'s law (E 1.69, A 406.4, B 410.7,
alpha 0.34, beta 0.28) times log-normal noise of sd `--noise`, one seed per ladder. The joint law (or the tied
law, with alpha = beta = 0.31 in the truth) is fitted with `--bootstrap` resamples; `--law saturating` instead
fits E = E_inf + A C^-alpha on `--sizes` x `--data` runs along one compute axis (Wald intervals, and a bootstrap
when `--bootstrap` > 0). Prints, per parameter and for the compute-optimal exponent a = beta / (alpha + beta),
the fraction of ladders whose interval covers the truth (with a Wilson 95 % interval on that fraction), the
median interval width, how many fits flagged the parameter "not identified", and the seconds per fit. Prints
figures; asserts nothing (tests/test_scaling.py runs it on a tiny setting).
"""

from __future__ import annotations

import argparse
import math
import sys
import time

import numpy as np

from nas.errors import ConfigError
from nas.scaling import compute_optimal_exponent, fit

CHINCHILLA = {"E": 1.69, "A": 406.4, "B": 410.7, "alpha": 0.34, "beta": 0.28}
TIED = {"E": 1.69, "A": 406.4, "B": 410.7, "alpha": 0.31}
SATURATING = {"E_inf": 1.5, "A": 800.0, "alpha": 0.25}


def ladder(sizes: int, data: int, noise: float, seed: int, tied: bool = False) -> tuple[np.ndarray, ...]:
    """(N, D, loss) of one seeded ladder: every size trained on every data size."""
    n, d = (grid.ravel() for grid in np.meshgrid(np.geomspace(5e7, 5e9, sizes), np.geomspace(2e9, 2e11, data)))
    p = TIED if tied else CHINCHILLA
    loss = p["E"] + p["A"] / n ** p["alpha"] + p["B"] / d ** p.get("beta", p["alpha"])
    return n, d, loss * np.exp(np.random.default_rng(seed).normal(0.0, noise, n.size))


def compute_ladder(points: int, noise: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    compute = np.geomspace(1e15, 1e21, points)
    p = SATURATING
    error = p["E_inf"] + p["A"] * compute ** -p["alpha"]
    return compute, error * np.exp(np.random.default_rng(seed).normal(0.0, noise, points))


def wilson(hits: int, total: int, z: float = 1.96) -> tuple[float, float]:
    """The Wilson score interval of a binomial proportion (good at proportions near 0 or 1)."""
    if total == 0:
        return math.nan, math.nan
    p = hits / total
    centre = (p + z**2 / (2 * total)) / (1 + z**2 / total)
    half = z * math.sqrt(p * (1 - p) / total + z**2 / (4 * total**2)) / (1 + z**2 / total)
    return centre - half, centre + half


def run(law: str, ladders: int, n_bootstrap: int, sizes: int, data: int, noise: float, level: float,
        seed: int) -> dict:
    """Coverage counts per parameter over `ladders` seeded ladders; what `main` prints."""
    truth = {"joint": CHINCHILLA, "tied": TIED, "saturating": SATURATING}[law]
    if law == "joint":
        truth = {**truth, "a": truth["beta"] / (truth["alpha"] + truth["beta"])}
    tally = {name: {"covered": 0, "fitted": 0, "not_identified": 0, "widths": []} for name in truth}
    seconds, refused = [], []
    for i in range(ladders):
        start = time.perf_counter()
        try:
            if law == "saturating":
                compute, error = compute_ladder(sizes * data, noise, seed + i)
                result = fit("saturating", compute, error, n_bootstrap=n_bootstrap, seed=i, level=level)
            else:
                n, d, loss = ladder(sizes, data, noise, seed + i, tied=law == "tied")
                result = fit(law, np.column_stack([n, d]), loss, n_bootstrap=n_bootstrap, seed=i, level=level)
        except ConfigError as err:
            refused.append(err.message)
            continue
        seconds.append(time.perf_counter() - start)
        if (i + 1) % 10 == 0:
            print(f"  {i + 1}/{ladders} ladders fitted, {sum(seconds):.0f} s", file=sys.stderr, flush=True)
        intervals = dict(result.ci)
        if "a" in truth:
            try:
                _, bounds = compute_optimal_exponent(result, level)
                intervals["a"] = bounds
            except ConfigError:
                intervals["a"] = (0.0, 1.0)  # not identified: its interval is everything
        for name, value in truth.items():
            low, high = intervals[name]
            record = tally[name]
            record["fitted"] += 1
            record["covered"] += int(low <= value <= high)
            record["not_identified"] += int(name in result.not_identified)
            record["widths"].append(high - low)
    return {"truth": truth, "tally": tally, "seconds": seconds, "refused": refused}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--law", choices=("joint", "tied", "saturating"), default="joint")
    parser.add_argument("--ladders", type=int, default=200, help="seeded ladders (one fit each)")
    parser.add_argument("--bootstrap", type=int, default=100, help="bootstrap resamples per fit")
    parser.add_argument("--sizes", type=int, default=6, help="model sizes per ladder")
    parser.add_argument("--data", type=int, default=5, help="data sizes per ladder")
    parser.add_argument("--noise", type=float, default=0.01, help="sd of the log-normal noise on each loss")
    parser.add_argument("--level", type=float, default=0.95)
    parser.add_argument("--seed", type=int, default=0, help="seed of the first ladder")
    args = parser.parse_args()
    result = run(args.law, args.ladders, args.bootstrap, args.sizes, args.data, args.noise, args.level, args.seed)
    fits = len(result["seconds"])
    how = f"{args.bootstrap} bootstrap resamples" if args.bootstrap else "analytic (Wald) intervals"
    print(f"{args.law} law: {args.ladders} ladders of {args.sizes} x {args.data} = {args.sizes * args.data} runs, "
          f"noise sd {args.noise} (log), {how}, {args.level:.0%} intervals; {fits} fitted, "
          f"{len(result['refused'])} refused" + (f" ({result['refused'][0]})" if result["refused"] else ""))
    if fits:
        print(f"seconds per fit: median {np.median(result['seconds']):.2f}, max {max(result['seconds']):.2f}")
    print(f"{'parameter':>9}  {'truth':>8}  {'covered':>9}  {'coverage':>8}  {'95% Wilson':>15}  "
          f"{'median width':>12}  not identified")
    for name, record in result["tally"].items():
        total = record["fitted"]
        low, high = wilson(record["covered"], total)
        width = np.median(record["widths"]) if record["widths"] else math.nan
        print(f"{name:>9}  {result['truth'][name]:>8.4g}  {record['covered']:>4}/{total:<4}  "
              f"{record['covered'] / max(total, 1):>8.1%}  [{low:6.1%}, {high:6.1%}]  {width:>12.4g}  "
              f"{record['not_identified']}")


if __name__ == "__main__":
    main()
