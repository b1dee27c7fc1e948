"""How often each law's intervals cover the truth, and how often an extrapolation's backtest warns, on synthetic
ladders whose law is known.

    .venv/bin/python benchmarks/scaling_coverage.py [--law joint] [--ladders 200] [--bootstrap 100] [--sizes 6]
        [--data 5] [--points 18] [--noise 0.01] [--level 0.95] [--seed 0] [--untied] [--backtest]

Laws of (N, D) (joint, tied, data-constrained): a grid of `--sizes` model sizes N x `--data` data sizes D
(geometric, N 5e7..5e9, D 2e9..2e11, spanning both sides of Hoffmann et al.'s compute-optimal frontier) with loss
from Hoffmann et al.'s law (E 1.69, A 406.4, B 410.7, alpha 0.34, beta 0.28; the tied law: alpha = beta = 0.31;
`--untied`: the tied law fitted to runs of alpha 0.30, beta 0.45, B 14700) times log-normal noise of sd
`--noise`. The data-constrained law repeats U = 2e9 unique tokens D / U times, with Muennighoff et al.'s C4 base
law held fixed and R_D* 15.4, R_N* 5.3. Laws of compute (power, saturating, bnsl): `--points` runs along C
1e15..1e21 (bnsl: 1e2..1e6). One seed per ladder; `--bootstrap` resamples for the laws that take them (0: Wald
intervals where the law has them).

Prints, per parameter (and for joint and tied the compute-optimal exponent a and N* at C = 1e24), the fraction of
ladders whose interval covers the truth with a Wilson 95 % interval on that fraction, the median interval width,
how many fits flagged the parameter "not identified", how many fits (for the tied law's N*: allocations) warned,
and how many missed the truth without a warning. `--backtest` instead measures the extrapolation check: a power
law fitted to the first `--points` runs of a saturating ladder (floor 0, 0.3, 0.6, 1 or 2 times the power term at
the largest compute; 0 is a power law) extrapolated to 3 more, and counts the prediction intervals that miss the
truth (the power law's own, and the printed ones, widened by `backtest` to hold the saturating law's), the ladders
that warn (lack of fit or `backtest`), the printed misses with no warning, and how much wider the printed interval
is (the ratio of its upper / lower ends over the power law's own, at the last point; median). Prints figures; asserts
nothing (tests/test_scaling.py runs it on a tiny setting).
"""

from __future__ import annotations

import argparse
import math
import sys
import time

import numpy as np

from nas.errors import ConfigError
from nas.scaling import LAWS, backtest, compute_optimal, compute_optimal_exponent, fit

CHINCHILLA = {"E": 1.69, "A": 406.4, "B": 410.7, "alpha": 0.34, "beta": 0.28}
TIED = {"E": 1.69, "A": 406.4, "B": 410.7, "alpha": 0.31, "beta": 0.31}
UNTIED = {"E": 1.69, "A": 406.4, "B": 14700.0, "alpha": 0.30, "beta": 0.45}
SATURATING = {"E_inf": 1.5, "A": 800.0, "alpha": 0.25}
POWER = {"beta": 400.0, "alpha": -0.2}
BNSL = {"E": 0.1, "b": 5.0, "c0": 0.1, "c1": 0.4, "d1": 1e4, "f1": 0.3}
C4_BASE = {"E": math.exp(0.6254804), "A": math.exp(6.255414), "B": math.exp(7.3049974), "alpha": 0.3526596,
           "beta": 0.3526596}  # Muennighoff et al.'s C4 fit, held fixed
DATA_CONSTRAINED = {"R_D*": 15.4, "R_N*": 5.3}
FLOOR_SHARES = (0.0, 0.3, 0.6, 1.0, 2.0)
TARGET_COMPUTE = 1e24


def ladder(sizes: int, data: int, noise: float, seed: int, law: dict) -> tuple[np.ndarray, ...]:
    """(N, D, loss) of one seeded ladder: every size trained on every data size."""
    n, d = (grid.ravel() for grid in np.meshgrid(np.geomspace(5e7, 5e9, sizes), np.geomspace(2e9, 2e11, data)))
    loss = law["E"] + law["A"] / n ** law["alpha"] + law["B"] / d ** law["beta"]
    return n, d, loss * np.exp(np.random.default_rng(seed).normal(0.0, noise, n.size))


def law_values(name: str, truth: dict, x: np.ndarray) -> np.ndarray:
    """A registered law's values at x, from its parameters in their usual parametrisation."""
    form = LAWS[name]
    theta = np.array([math.log(truth[p]) if log else truth[p] for p, log in zip(form.params, form.log, strict=True)])
    return np.exp(form.log_predict(theta, np.log(x)))


def compute_ladder(law: str, points: int, noise: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(compute, error) of one seeded ladder of a law of compute."""
    if law == "bnsl":
        compute = np.geomspace(1e2, 1e6, points)
        error = law_values("bnsl", BNSL, compute)
    else:
        compute = np.geomspace(1e15, 1e21, points)
        error = law_values(law, {"power": POWER, "saturating": SATURATING}[law], compute)
    return compute, error * np.exp(np.random.default_rng(seed).normal(0.0, noise, points))


def repeated_ladder(sizes: int, data: int, noise: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """((N, D, U), loss): `sizes` model sizes, each trained for `data` epoch counts (1 to 40) of U unique tokens."""
    n, epochs = (grid.ravel() for grid in np.meshgrid(np.geomspace(1e8, 3e9, sizes), np.geomspace(1, 40, data)))
    x = np.column_stack([n, 2e9 * epochs, np.full(n.size, 2e9)])
    loss = law_values("data-constrained", {**C4_BASE, **DATA_CONSTRAINED}, x)
    return x, loss * np.exp(np.random.default_rng(seed).normal(0.0, noise, n.size))


def optimal_n(law: dict, compute: float, flops_per_param_token: float = 6.0) -> float:
    """Hoffmann et al.'s eq. 4: the compute-optimal N* of the joint law `law` at `compute`."""
    a = law["beta"] / (law["alpha"] + law["beta"])
    g = (law["alpha"] * law["A"] / (law["beta"] * law["B"])) ** (1 / (law["alpha"] + law["beta"]))
    return g * (compute / flops_per_param_token) ** a


def wilson(hits: int, total: int, z: float = 1.96) -> tuple[float, float]:
    """The Wilson score interval of a binomial proportion (good at proportions near 0 or 1)."""
    if total == 0:
        return math.nan, math.nan
    p = hits / total
    centre = (p + z**2 / (2 * total)) / (1 + z**2 / total)
    half = z * math.sqrt(p * (1 - p) / total + z**2 / (4 * total**2)) / (1 + z**2 / total)
    return centre - half, centre + half


def _one_fit(law: str, i: int, args: argparse.Namespace):
    """(fit, truth) of ladder `i`."""
    seed, level = args.seed + i, args.level
    boot = {"n_bootstrap": args.bootstrap, "seed": i} if LAWS[law].iterated else {}
    if law in ("power", "saturating", "bnsl"):
        compute, error = compute_ladder(law, args.points, args.noise, seed)
        return fit(law, compute, error, level=level, **boot), {"power": POWER, "saturating": SATURATING,
                                                               "bnsl": BNSL}[law]
    if law == "data-constrained":
        x, loss = repeated_ladder(args.sizes, args.data, args.noise, seed)
        return fit(law, x, loss, level=level, fixed=C4_BASE, **boot), DATA_CONSTRAINED
    truth = UNTIED if args.untied else (TIED if law == "tied" else CHINCHILLA)
    n, d, loss = ladder(args.sizes, args.data, args.noise, seed, truth)
    return fit(law, np.column_stack([n, d]), loss, level=level, **boot), truth


def run(law: str, args: argparse.Namespace) -> dict:
    """Coverage counts per parameter over `args.ladders` seeded ladders; what `main` prints."""
    tally: dict[str, dict] = {}
    seconds, refused = [], []
    truths = {}

    def count(name: str, value: float, low: float, high: float, not_identified: bool = False,
              warned: bool = False) -> None:
        record = tally.setdefault(name, {"covered": 0, "fitted": 0, "not_identified": 0, "widths": [], "warned": 0,
                                         "silent": 0})
        truths[name] = value
        covered = low <= value <= high
        record["fitted"] += 1
        record["covered"] += int(covered)
        record["not_identified"] += int(not_identified)
        record["widths"].append(high - low)
        record["warned"] += int(warned)
        record["silent"] += int(not covered and not warned)

    for i in range(args.ladders):
        start = time.perf_counter()
        try:
            result, truth = _one_fit(law, i, args)
        except ConfigError as err:
            refused.append(err.message)
            continue
        if not (law == "tied" and args.untied):  # the tied law's parameters mean nothing on untied runs
            for name in result.params:
                if name in truth and name not in result.fixed:
                    low, high = result.ci[name]
                    value = truth[name]
                    count(name, value, low, high, name in result.not_identified, warned=bool(result.warnings))
        if law == "joint":
            try:
                _, (low, high) = compute_optimal_exponent(result, args.level)
            except ConfigError:
                low, high = 0.0, 1.0  # not identified: its interval is everything
            count("a", truth["beta"] / (truth["alpha"] + truth["beta"]), low, high)
        if law == "tied":
            try:
                allocation = compute_optimal(result, TARGET_COMPUTE, level=args.level)
                low, high = allocation.n_bounds or (math.nan, math.nan)
                warned = bool(allocation.warnings)
            except ConfigError:  # refused: said, not silent
                low, high, warned = 0.0, math.inf, True
            count("N*(1e24)", optimal_n(truth, TARGET_COMPUTE), float(low), float(high), warned=warned)
        seconds.append(time.perf_counter() - start)
        if (i + 1) % 10 == 0:
            print(f"  {i + 1}/{args.ladders} ladders fitted, {sum(seconds):.0f} s", file=sys.stderr, flush=True)
    return {"truth": truths, "tally": tally, "seconds": seconds, "refused": refused}


def backtest_rates(args: argparse.Namespace, beyond: int = 3) -> dict[float, dict[str, list]]:
    """Per floor share, over the ladders: the power law's own prediction intervals missing the truth at one of
    the `beyond` points, the printed ones (`Backtest.interval`, widened to hold the saturating law's) missing it,
    the ladders warned (lack of fit or `backtest`), the printed misses with no warning, and per ladder how much
    wider the printed interval is at the last point (the ratio of upper / lower ends)."""
    rates = {share: {"ladders": 0, "own misses": 0, "misses": 0, "warned": 0, "silent": 0, "widening": []}
             for share in FLOOR_SHARES}
    compute = np.geomspace(1e15, 1e21, args.points + beyond)
    for share in FLOOR_SHARES:
        truth = share * 400 * compute[-1] ** -0.25 + 400 * compute**-0.25
        for i in range(args.ladders):
            error = truth * np.exp(np.random.default_rng(args.seed + i).normal(0, args.noise, compute.size))
            fitted, held = slice(0, args.points), slice(args.points, None)
            result = fit("power", compute[fitted], error[fitted], level=args.level)
            own = result.extrapolate(compute[held], level=args.level)
            checked = backtest(result, compute[fitted], error[fitted], compute[held], level=args.level)
            shown = checked.interval
            own_missed = not np.all((own.lower <= truth[held]) & (truth[held] <= own.upper))
            missed = not np.all((shown.lower <= truth[held]) & (truth[held] <= shown.upper))
            warned = bool(result.warnings or checked.warnings)
            record = rates[share]
            for key, hit in (("ladders", True), ("own misses", own_missed), ("misses", missed), ("warned", warned),
                             ("silent", missed and not warned)):
                record[key] += int(hit)
            record["widening"].append((shown.upper / shown.lower)[-1] / (own.upper / own.lower)[-1])
    return rates


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--law", choices=("power", "saturating", "bnsl", "joint", "tied", "data-constrained"),
                        default="joint")
    parser.add_argument("--ladders", type=int, default=200, help="seeded ladders (one fit each)")
    parser.add_argument("--bootstrap", type=int, default=100, help="bootstrap resamples per fit (0: Wald)")
    parser.add_argument("--sizes", type=int, default=6, help="model sizes per ladder (laws of N, D)")
    parser.add_argument("--data", type=int, default=5, help="data sizes (or epoch counts) per ladder")
    parser.add_argument("--points", type=int, default=18, help="runs per ladder (laws of compute)")
    parser.add_argument("--noise", type=float, default=0.01, help="sd of the log-normal noise on each value")
    parser.add_argument("--level", type=float, default=0.95)
    parser.add_argument("--seed", type=int, default=0, help="seed of the first ladder")
    parser.add_argument("--untied", action="store_true", help="the tied law on runs of two exponents")
    parser.add_argument("--backtest", action="store_true", help="the extrapolation check's rates instead")
    args = parser.parse_args()
    if args.backtest:
        print(f"backtest: power law fitted to {args.points} runs, extrapolated to 3 more; {args.ladders} ladders "
              f"per floor share, noise sd {args.noise} (log), {args.level:.0%} intervals")
        print(f"{'floor share':>11}  {'ladders':>7}  {'power PI misses':>15}  {'printed PI misses':>17}  "
              f"{'warned':>6}  {'silent misses':>13}  median widening")
        for share, r in backtest_rates(args).items():
            print(f"{share:>11g}  {r['ladders']:>7}  {r['own misses']:>15}  {r['misses']:>17}  {r['warned']:>6}  "
                  f"{r['silent']:>13}  {np.median(r['widening']):.2f}")
        return
    result = run(args.law, args)
    fits = len(result["seconds"])
    how = f"{args.bootstrap} bootstrap resamples" if args.bootstrap and LAWS[args.law].iterated else \
        "analytic intervals"
    shape = (f"{args.points} runs" if args.law in ("power", "saturating", "bnsl")
             else f"{args.sizes} x {args.data} = {args.sizes * args.data} runs")
    print(f"{args.law} law{' (untied runs)' if args.untied else ''}: {args.ladders} ladders of {shape}, noise sd "
          f"{args.noise} (log), {how}, {args.level:.0%} intervals; {fits} fitted, {len(result['refused'])} refused"
          + (f" ({result['refused'][0]})" if result["refused"] else ""))
    if fits:
        print(f"seconds per fit: median {np.median(result['seconds']):.2f}, max {max(result['seconds']):.2f}")
    print(f"{'parameter':>9}  {'truth':>8}  {'covered':>9}  {'coverage':>8}  {'95% Wilson':>15}  "
          f"{'median width':>12}  not identified  warned  silent misses")
    for name, record in result["tally"].items():
        total = record["fitted"]
        low, high = wilson(record["covered"], total)
        width = np.median(record["widths"]) if record["widths"] else math.nan
        print(f"{name:>9}  {result['truth'][name]:>8.4g}  {record['covered']:>4}/{total:<4}  "
              f"{record['covered'] / max(total, 1):>8.1%}  [{low:6.1%}, {high:6.1%}]  {width:>12.4g}  "
              f"{record['not_identified']:>14}  {record['warned']:>6}  {record['silent']}")


if __name__ == "__main__":
    main()
