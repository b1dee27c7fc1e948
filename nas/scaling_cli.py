"""`vitamin-nas fit`: fit a scaling law to named columns of a CSV, print it with its uncertainty, plot it."""

from __future__ import annotations

import argparse
from pathlib import Path

import pandas as pd

from nas.errors import ConfigError
from nas.scaling import LAWS, Fit, arrays_from_frame, compute_optimal, fit, held_out_check

_BOOTSTRAPPED = ("saturating", "joint")


def register(commands: argparse._SubParsersAction) -> None:
    parser = commands.add_parser(
        "fit", help="fit a scaling law to a CSV, print it with its uncertainty and plot it",
        description="Fit a scaling law to named columns of a CSV: parameters with standard errors and "
                    "confidence intervals, goodness of fit, extrapolations with prediction intervals, and a "
                    "log-log figure (PNG and SVG). Columns may be expressions of columns, e.g. --y '1 - acc1'; "
                    "quote names with spaces in backticks inside expressions.")
    parser.add_argument("csv", type=Path, help="a CSV file with a header row")
    parser.add_argument("--law", choices=LAWS, required=True,
                        help="power: E = beta C^alpha; pareto-power: the same through Cherti et al.'s binned "
                             "frontier; saturating: E = E_inf + A C^-alpha; joint: L = E + A/N^alpha + B/D^beta "
                             "(Besiroglu et al.); isoflop: parabola optima per budget, N* = k C^a")
    parser.add_argument("--x", help="compute column (every law but joint with --d)")
    parser.add_argument("--y", required=True, help="error or loss column")
    parser.add_argument("--n", help="model size column (joint: parameters; isoflop: the size swept per budget)")
    parser.add_argument("--d", help="data column for joint (default: D = x / (k N) from the compute column)")
    parser.add_argument("--where",
                        help="keep rows matching a pandas query, e.g. \"downstream_dataset == 'imagenet1k'\"")
    parser.add_argument("--at", type=float, nargs="+", default=[], metavar="X",
                        help="extrapolate to these compute values, with prediction intervals")
    parser.add_argument("--level", type=float, default=0.95, help="interval level (default 0.95)")
    parser.add_argument("--bootstrap", type=int, metavar="N",
                        help="bootstrap resamples for saturating (default 0: analytic) and joint (default 400)")
    parser.add_argument("--seed", type=int, default=0, help="bootstrap seed (default 0)")
    parser.add_argument("--flops-per-param-token", type=float, default=6.0, metavar="K",
                        help="k in C = k N D for joint (default 6)")
    parser.add_argument("--hold-out", type=int, metavar="K",
                        help="also fit without the K largest runs (budgets for isoflop) and score them")
    parser.add_argument("--out", type=Path, metavar="FIG.png", help="write the figure here (and as .svg)")
    parser.set_defaults(func=run_fit)


def read_runs(path: Path, where: str | None) -> pd.DataFrame:
    """The CSV's rows, filtered by `where`; bad files and queries become ConfigErrors naming them."""
    if not path.is_file():
        raise ConfigError("no such file", source=str(path))
    try:
        frame = pd.read_csv(path)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as err:
        raise ConfigError(f"not a readable CSV: {err}", source=str(path)) from err
    if where:
        try:
            frame = frame.query(where)
        except Exception as err:  # pandas raises many exception types for a bad query
            raise ConfigError(f"bad query {where!r} ({err}); columns: {', '.join(map(str, frame.columns))}",
                              source=str(path), field="--where") from err
    if frame.empty:
        raise ConfigError("no rows to fit" + (f" after --where {where!r}" if where else ""), source=str(path))
    return frame


def _options(args: argparse.Namespace) -> dict:
    options = {"level": args.level}
    if args.bootstrap is not None:
        if args.law not in _BOOTSTRAPPED:
            raise ConfigError(f"applies to the {' and '.join(_BOOTSTRAPPED)} laws; the {args.law} law has "
                              "exact least-squares intervals", field="--bootstrap")
        options.update(n_bootstrap=args.bootstrap, seed=args.seed)
    return options


def _print_targets(result: Fit, args: argparse.Namespace) -> None:
    level = f"{args.level:.0%}"
    if result.law == "joint":
        allocation = compute_optimal(result, args.at, flops_per_param_token=args.flops_per_param_token,
                                     level=args.level)
        print(f"compute-optimal allocation: N* ∝ C^{allocation.n_exponent:.4f}, D* ∝ C^{allocation.d_exponent:.4f}")
        for i, compute in enumerate(allocation.compute):
            loss = allocation.loss
            print(f"  C = {compute:.4g}: N* = {allocation.n[i]:.4g}, D* = {allocation.d[i]:.4g}, "
                  f"loss {loss.y[i]:.4g} [{loss.lower[i]:.4g}, {loss.upper[i]:.4g}] ({level} prediction interval)")
        return
    prediction = result.extrapolate(args.at, level=args.level)
    for x, y, low, high, beyond in zip(prediction.x, prediction.y, prediction.lower, prediction.upper,
                                       prediction.extrapolated, strict=True):
        where = "extrapolated" if beyond else "within the fitted range"
        print(f"  at {x:.4g}: {y:.4g} [{low:.4g}, {high:.4g}] ({level} prediction interval, {where})")


def _print_held_out(args: argparse.Namespace, xs, ys, options: dict) -> None:
    check = held_out_check(args.law, xs, ys, n_test=args.hold_out, **options)
    print(f"held-out check (fitted without the {args.hold_out} largest): mean |relative error| "
          f"{check.mean_abs_relative_error:.2%}, RMSE (log) {check.rmse_log:.4f}, "
          f"{check.coverage:.0%} inside the {args.level:.0%} prediction interval")


def run_fit(args: argparse.Namespace) -> int:
    frame = read_runs(args.csv, args.where)
    xs, ys = arrays_from_frame(frame, args.law, y=args.y, x=args.x, n=args.n, d=args.d,
                               flops_per_param_token=args.flops_per_param_token, source=str(args.csv))
    options = _options(args)
    result = fit(args.law, xs, ys, **options)
    print(result.summary())
    if args.at:
        _print_targets(result, args)
    if args.hold_out:
        _print_held_out(args, xs, ys, options)
    if args.out:
        from plots.scaling import scaling_curve  # matplotlib only when a figure is asked for

        label = {"joint": None, "isoflop": args.n}.get(args.law, args.y)
        scaling_curve(result, args.out, at=args.at, level=args.level, xlabel=args.x, ylabel=label,
                      flops_per_param_token=args.flops_per_param_token)
        print(f"wrote {args.out.with_suffix('.png')} and {args.out.with_suffix('.svg')}")
    return 0
