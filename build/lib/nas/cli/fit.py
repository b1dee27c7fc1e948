"""`vitamin-nas fit`: fit a scaling law to named columns of a CSV or of a study's results, print it with its
uncertainty, plot it.

A study directory is read as one row per trial and rung (`nas.select.measurements`: the results' columns plus
`error` = 1 - zero-shot top-1, `compute` = image GMACs x samples seen, `label`), fitted per arch family by default.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import pandas as pd

from nas.errors import ConfigError
from nas.scaling import LAWS, Fit, arrays_from_frame, compute_optimal, fit, held_out_check

_BOOTSTRAPPED = ("saturating", "joint")
#: What a study directory is fitted on unless told otherwise: error against compute, per arch family.
STUDY_DEFAULTS = {"x": "compute", "y": "error", "n": "image_params_m", "d": "samples_seen", "by": "family"}


def register(commands: argparse._SubParsersAction) -> None:
    parser = commands.add_parser(
        "fit", help="fit a scaling law to a CSV or a study's results, print it with its uncertainty and plot it",
        description="Fit a scaling law to named columns of a CSV, or of a study's results (one row per trial and "
                    "rung, with error = 1 - zero-shot top-1 and compute = image GMACs x samples seen; by default error "
                    "against compute per arch family): parameters with standard errors and confidence intervals, "
                    "goodness of fit, extrapolations with prediction intervals, and a log-log figure (PNG and "
                    "SVG). Columns may be expressions of columns, e.g. --y '1 - acc1'; quote names with spaces in "
                    "backticks inside expressions.")
    parser.add_argument("source", type=Path, metavar="CSV|DIR",
                        help="a CSV file with a header row, or a study's output directory (holding study.db)")
    parser.add_argument("--law", choices=LAWS, required=True,
                        help="power: E = beta C^alpha; pareto-power: the same through Cherti et al.'s binned "
                             "frontier; saturating: E = E_inf + A C^-alpha; joint: L = E + A/N^alpha + B/D^beta "
                             "(Besiroglu et al.); isoflop: parabola optima per budget, N* = k C^a")
    parser.add_argument("--x", help="compute column (every law but joint with --d; study default: compute)")
    parser.add_argument("--y", help="error or loss column (required for a CSV; study default: error)")
    parser.add_argument("--n", help="model size column (joint: parameters; isoflop: the size swept per budget; "
                                    "study default: image_params_m)")
    parser.add_argument("--d", help="data column for joint (default: D = x / (k N) from the compute column; "
                                    "study default: samples_seen)")
    parser.add_argument("--by", metavar="COLUMN",
                        help="fit each group of rows with the same value apart (study default: family; 'none': all "
                             "rows together)")
    parser.add_argument("--metric", default="zeroshot_top1",
                        help="study: the metric whose error is fitted (default zeroshot_top1; loss: the loss itself)")
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
    parser.set_defaults(func=_fit)


def read_runs(path: Path, where: str | None, metric: str = "zeroshot_top1") -> pd.DataFrame:
    """The CSV's rows, or a study's (`nas.select.measurements`), filtered by `where`; bad files and queries
    become ConfigErrors naming them."""
    if path.is_dir() or path.suffix == ".db":
        from nas.results import ResultStore
        from nas.select import measurements

        frame = measurements(ResultStore.open(path, readonly=True), metric)
    elif not path.is_file():
        raise ConfigError("no such file", source=str(path))
    else:
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


def _study_defaults(args: argparse.Namespace) -> None:
    """A study directory's columns are known: fill in what was not given."""
    for name, value in STUDY_DEFAULTS.items():
        if getattr(args, name) is None:
            setattr(args, name, value)


def _groups(frame: pd.DataFrame, by: str | None, source: str) -> list[tuple[str | None, pd.DataFrame]]:
    if by is None:
        return [(None, frame)]
    if by not in frame.columns:
        raise ConfigError(f"no column {by!r}; available columns: {', '.join(map(str, frame.columns))}",
                          source=source, field="--by")
    return [(str(name), rows) for name, rows in frame.groupby(by, sort=True)]


def _fit_group(frame: pd.DataFrame, args: argparse.Namespace, options: dict, source: str) -> Fit:
    xs, ys = arrays_from_frame(frame, args.law, y=args.y, x=args.x, n=args.n, d=args.d,
                               flops_per_param_token=args.flops_per_param_token, source=source)
    result = fit(args.law, xs, ys, **options)
    print(result.summary())
    if args.at:
        _print_targets(result, args)
    if args.hold_out:
        _print_held_out(args, xs, ys, options)
    return result


def _fit(args: argparse.Namespace) -> int:
    source = str(args.source)
    study = args.source.is_dir() or args.source.suffix == ".db"
    if study:
        _study_defaults(args)
    elif args.y is None:
        raise ConfigError("the error or loss column is required for a CSV", source=source, field="--y")
    if args.by == "none":
        args.by = None
    frame = read_runs(args.source, args.where, args.metric)
    options = _options(args)
    groups = _groups(frame, args.by, source)
    fits = {}
    for name, rows in groups:
        if name is not None:
            print(f"\n{args.by} = {name} ({len(rows)} rows)")
        try:
            fits[name] = _fit_group(rows, args, options, source)
        except ConfigError as err:
            if len(groups) == 1:
                raise
            print(f"  not fitted: {err.message}")
    if not fits:
        raise ConfigError(f"no group of --by {args.by} could be fitted", source=source)
    if args.out:
        _write_figures(fits, args)
    return 0


def _write_figures(fits: dict[str | None, Fit], args: argparse.Namespace) -> None:
    """One figure per fitted group (named after it when there are several) and, for several one-variable laws,
    all of them on one axes at --out itself."""
    from plots.scaling import scaling_curve, scaling_curves  # matplotlib only when a figure is asked for
    from plots.study import slug

    label = {"joint": None, "isoflop": args.n}.get(args.law, args.y)
    paths = []
    for name, result in fits.items():
        path = args.out if len(fits) == 1 else args.out.with_name(f"{args.out.stem}_{slug(name)}{args.out.suffix}")
        title = None if name is None else f"{name}: {result.law} law, R$^2$ (log) = {result.r2_log:.3f}"
        scaling_curve(result, path, at=args.at, level=args.level, xlabel=args.x, ylabel=label, title=title,
                      flops_per_param_token=args.flops_per_param_token)
        paths.append(path)
    if len(fits) > 1 and args.law not in ("joint", "isoflop"):
        scaling_curves(fits, args.out, level=args.level, xlabel=args.x, ylabel=label)
        paths.append(args.out)
    for path in paths:
        print(f"wrote {path.with_suffix('.png')} and {path.with_suffix('.svg')}")
