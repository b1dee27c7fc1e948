"""`vitamin-nas fit`: fit a scaling law to named columns of a CSV or of a study's results, print it with its
uncertainty, what the data do not identify and how well the law fits, and plot it.

A study directory is read as one row per trial and rung (`nas.select.measurements`: the results' columns plus
`error` = 1 - zero-shot top-1, `compute` = image GMACs x samples seen, `label`), fitted per arch family by default.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import pandas as pd

from nas.errors import ConfigError
from nas.scaling import (
    LAWS,
    Fit,
    Interval,
    Law,
    arrays_from_frame,
    backtest,
    compute_optimal,
    fit,
    fit_gate,
    held_out_check,
)

#: What a study directory is fitted on unless told otherwise: error against compute, per arch family.
STUDY_DEFAULTS = {"x": "compute", "y": "error", "n": "image_params_m", "d": "samples_seen", "by": "family"}

_EXAMPLES = """\
examples:
  # Cherti et al.'s OpenCLIP ImageNet fit, extrapolated with a prediction interval
  vitamin-nas fit reference/scaling_data/openclip/zeroshot_results.csv --law pareto-power \\
      --x gmacs_total --y "1 - acc1" --where "downstream_dataset == 'imagenet1k' and upstream_dataset != 'CLIP-WIT'" \\
      --at 1e13 --out fig.png
  # Besiroglu et al.'s Chinchilla replication: parameters, bootstrap intervals, compute-optimal N*, D* at 1e24 FLOPs
  vitamin-nas fit reference/scaling_data/chinchilla_epoch/svg_extracted_data.csv --law joint \\
      --n "Model Size" --x "Training FLOP" --y loss --where "loss < 3.44" --at 1e24
  # IsoFLOP optima (local fits around each budget's best size, each with its uncertainty) and N*(C)
  vitamin-nas fit reference/scaling_data/porian2024/isoflop_points.csv --law isoflop --x flops \\
      --n n_params --y loss --where "source_file == 'summary_df' and hparams == 'tuned'" --by loss_split
  # Muennighoff et al.'s R_D*, R_N* with their C4 base law held fixed
  vitamin-nas fit reference/scaling_data/datablations_muennighoff2023/fit_set_outliers_removed.csv \\
      --law data-constrained --n N_params --d D_tokens --u U_unique_tokens --y val_loss --bootstrap 100 \\
      --fix E=1.86914,A=520.825,B=1487.72,alpha=0.35266,beta=0.35266
  # a broken neural scaling law fitted on all but the 3 largest runs, and scored on them
  vitamin-nas fit reference/scaling_data/bnsl_caballero2022/four_digit_addition_dataset_size_vs_test_ce.csv \\
      --law bnsl --x train_dataset_size --y test_cross_entropy --hold-out 3
  # a study's results, per arch family
  vitamin-nas fit runs/study --law power --at 1e6

Every fit prints its parameters with standard errors and intervals. A parameter the runs cannot pin down (a floor
far below every loss, a data term on runs that all share one data size, an exponent on the bound of its declared
range) is printed "not identified" with its admissible range, and the compute-optimal allocation is refused when
it rests on one. Too few runs for a law (or for its bootstrap) is refused with the minimum. Lines starting
"warning:" say when the law is the wrong shape for the data (a runs test of the residuals, a richer law's BIC).
"""


def register(commands: argparse._SubParsersAction) -> None:
    parser = commands.add_parser(
        "fit", help="fit a scaling law to a CSV or a study's results, print it with its uncertainty and plot it",
        formatter_class=argparse.RawDescriptionHelpFormatter, epilog=_EXAMPLES,
        description="Fit a scaling law to named columns of a CSV, or of a study's results (one row per trial and "
                    "rung, with error = 1 - zero-shot top-1 and compute = image GMACs x samples seen; by default error "
                    "against compute per arch family): parameters with standard errors and confidence intervals, "
                    "what the runs do not identify, goodness and lack of fit, extrapolations with prediction "
                    "intervals, and a log-log figure (PNG and SVG). Columns may be expressions of columns, e.g. --y "
                    "'1 - acc1'; quote names with spaces in backticks inside expressions.")
    parser.add_argument("source", type=Path, metavar="CSV|DIR",
                        help="a CSV file with a header row, or a study's output directory (holding study.db)")
    parser.add_argument("--law", choices=LAWS, required=True,
                        help="; ".join(f"{name}: {law.help}" for name, law in LAWS.items()))
    parser.add_argument("--x", help="compute column (every law but those of (N, D) with --d; study default: compute)")
    parser.add_argument("--y", help="error or loss column (required for a CSV; study default: error)")
    parser.add_argument("--n", help="model size column (laws of (N, D): parameters; isoflop: the size swept per "
                                    "budget; study default: image_params_m)")
    parser.add_argument("--d", help="data column for the laws of (N, D) (default: D = x / (k N) from the compute "
                                    "column; study default: samples_seen)")
    parser.add_argument("--u", help="unique data column for data-constrained (tokens or samples before repetition)")
    parser.add_argument("--by", metavar="COLUMN",
                        help="fit each group of rows with the same value apart (study default: family; 'none': all "
                             "rows together)")
    parser.add_argument("--metric", default="zeroshot_top1",
                        help="study: the metric whose error is fitted (default zeroshot_top1; loss: the loss itself)")
    parser.add_argument("--where",
                        help="keep rows matching a pandas query, e.g. \"downstream_dataset == 'imagenet1k'\"")
    parser.add_argument("--at", type=float, nargs="+", default=[], metavar="X",
                        help="extrapolate to these compute values, with prediction intervals (joint, tied: the "
                             "compute-optimal N*, D* and loss there)")
    parser.add_argument("--level", type=float, default=0.95, help="interval level (default 0.95)")
    parser.add_argument("--bootstrap", type=int, metavar="N",
                        help="bootstrap resamples for the iterated laws: saturating and bnsl (default 0: analytic "
                             "intervals), joint, tied, kaplan, data-constrained (default 400); a bootstrap needs 4 "
                             "runs per fitted parameter")
    parser.add_argument("--seed", type=int, default=0, help="bootstrap seed (default 0)")
    parser.add_argument("--fix", metavar="NAME=VALUE,...",
                        help="hold parameters at given values, e.g. Muennighoff et al.'s base law for "
                             "data-constrained: E=1.86914,A=520.825,B=1487.72,alpha=0.35266,beta=0.35266")
    parser.add_argument("--breaks", type=int, default=1, metavar="K", help="bnsl: number of breaks (default 1)")
    parser.add_argument("--window", default="2", metavar="K|all",
                        help="isoflop: sizes on each side of a budget's best one in its local fit (default 2: a "
                             "cubic through 5 sizes); 'all': a parabola through the whole sweep (Hoffmann et al.)")
    parser.add_argument("--unweighted", action="store_true",
                        help="isoflop: ordinary least squares through the optima instead of weighting each by its "
                             "own uncertainty")
    parser.add_argument("--flops-per-param-token", type=float, default=6.0, metavar="K",
                        help="k in C = k N D for the laws of (N, D) (default 6)")
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


def _fixed(text: str) -> dict[str, float]:
    fixed = {}
    for item in filter(None, (part.strip() for part in text.split(","))):
        name, sep, value = item.partition("=")
        try:
            fixed[name.strip()] = float(value)
        except ValueError:
            sep = ""
        if not sep:
            raise ConfigError(f"expected NAME=VALUE, got {item!r}", field="--fix")
    return fixed


def _options(args: argparse.Namespace) -> dict:
    options = {"level": args.level}
    law = LAWS[args.law]
    iterated = ", ".join(name for name, other in LAWS.items() if other.iterated)
    if args.bootstrap is not None:
        if not law.iterated:
            raise ConfigError(f"applies to the {iterated} laws; the {args.law} law has exact "
                              "least-squares intervals", field="--bootstrap")
        options.update(n_bootstrap=args.bootstrap, seed=args.seed)
    if args.fix:
        if not law.iterated:
            raise ConfigError(f"applies to the {iterated} laws", field="--fix")
        options["fixed"] = _fixed(args.fix)
    if args.law == "bnsl":
        options["breaks"] = args.breaks
    if args.law == "isoflop":
        options["weighted"] = not args.unweighted
        if args.window != "all":
            try:
                options["window"] = int(args.window)
            except ValueError:
                raise ConfigError(f"expected a number of sizes or 'all', got {args.window!r}", field="--window") \
                    from None
        else:
            options["window"] = None
    if args.at and not _has_curve(law):
        raise ConfigError(f"takes compute values: it applies to the laws of one variable and to the compute-optimal "
                          f"allocation of {' and '.join(_allocating())} fits, not to {args.law}", field="--at")
    return options


def _allocating() -> list[str]:
    """The laws whose --at is a compute budget for the compute-optimal allocation N*(C), D*(C)."""
    return [name for name, law in LAWS.items() if law.allocates]


def _has_curve(law: Law) -> bool:
    """Drawn and extrapolated as one curve against compute: a law of compute, or an allocating law along its
    compute-optimal N*(C), D*(C)."""
    return law.x_columns == 1 or law.allocates


def _interval(value: float, bounds, i: int) -> str:
    return f"{value:.4g}" + (f" [{bounds[0][i]:.4g}, {bounds[1][i]:.4g}]" if bounds is not None else "")


def _range(low: float, high: float) -> str:
    """An interval for a terminal; a fit without uncertainty (a Huber law without a bootstrap) says so."""
    return "(no interval: fit without a bootstrap)" if np.isnan(low) or np.isnan(high) else f"[{low:.4g}, {high:.4g}]"


def _print_targets(result: Fit, args: argparse.Namespace, xs, ys, options: dict) -> Interval | None:
    """The extrapolations at --at with their intervals, then their backtest (`backtest`): its warnings, or why
    there is none. Returns the intervals printed for a law of compute (the figure marks the same), else None."""
    level = f"{args.level:.0%}"
    if result.form.allocates:
        try:
            allocation = compute_optimal(result, args.at, flops_per_param_token=args.flops_per_param_token,
                                         level=args.level)
        except ConfigError as err:
            print(f"compute-optimal allocation: {err.message}")
            return None
        loss = allocation.loss
        for i, compute in enumerate(allocation.compute):
            print(f"  C = {compute:.4g}: N* = {_interval(allocation.n[i], allocation.n_bounds, i)}, "
                  f"D* = {_interval(allocation.d[i], allocation.d_bounds, i)}, loss {loss.y[i]:.4g} "
                  f"{_range(loss.lower[i], loss.upper[i])} ({level} intervals; the loss's is a prediction "
                  "interval)")
        if allocation.free is not None:
            free = allocation.free
            print(f"  the {result.form.frees} law on the same runs: N* ∝ C^{free.n_exponent:.4f}"
                  + (f" [{free.n_exponent_ci[0]:.4f}, {free.n_exponent_ci[1]:.4f}]" if free.n_exponent_ci else "")
                  + "; " + ", ".join(f"N* = {_interval(free.n[i], free.n_bounds, i)} at C = {compute:.4g}"
                                     for i, compute in enumerate(free.compute)))
        for text in allocation.warnings:
            print(f"warning: {text}")
        prediction, at = loss, np.stack([allocation.n, allocation.d], axis=-1)
        checked = backtest(result, xs, ys, at, **options) if np.any(prediction.extrapolated) else None
        shown = None
    else:
        prediction, at = result.extrapolate(args.at, level=args.level), args.at
        checked = backtest(result, xs, ys, at, **options) if np.any(prediction.extrapolated) else None
        shown = prediction if checked is None else checked.interval
        for x, y, low, high, beyond in zip(shown.x, shown.y, shown.lower, shown.upper, shown.extrapolated,
                                           strict=True):
            where = "extrapolated" if beyond else "within the fitted range"
            print(f"  at {x:.4g}: {y:.4g} {_range(low, high)} ({level} prediction interval, {where})")
        if checked is not None and checked.widened:
            print(f"  beyond the runs these intervals also hold the {result.form.richer[0]} law fitted to them: a "
                  f"floor the runs cannot rule out; the {result.law} law alone gives " + ", ".join(
                      _range(low, high) for low, high, beyond in zip(prediction.lower, prediction.upper,
                                                                     prediction.extrapolated, strict=True) if beyond))
    if prediction.depends_on:
        print(f"  these intervals depend on {', '.join(prediction.depends_on)}, which the runs do not identify: "
              "each is the range over the values the runs allow")
    if checked is not None:
        for text in checked.warnings:
            print(f"warning: {text}")
        if checked.note:
            print(checked.note)
    return shown


def _print_held_out(args: argparse.Namespace, xs, ys, options: dict) -> None:
    check = held_out_check(args.law, xs, ys, n_test=args.hold_out, **options)
    inside = ("no prediction intervals (fit without a bootstrap)" if np.isnan(check.prediction.lower).any() else
              f"{check.coverage:.0%} inside the {args.level:.0%} prediction interval")
    print(f"held-out check (fitted without the {args.hold_out} largest): mean |relative error| "
          f"{check.mean_abs_relative_error:.2%}, RMSE (log) {check.rmse_log:.4f}, {inside}")


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


def _fit_group(frame: pd.DataFrame, args: argparse.Namespace, options: dict,
               source: str) -> tuple[Fit, Interval | None]:
    xs, ys = arrays_from_frame(frame, args.law, y=args.y, x=args.x, n=args.n, d=args.d, u=args.u,
                               flops_per_param_token=args.flops_per_param_token, source=source)
    result = fit(args.law, xs, ys, **options)
    print(result.summary())
    gate = fit_gate(result)
    print(f"checks: {gate.summary()}" + ("; its exponents may be set beside published ones" if gate.passed else ""))
    shown = _print_targets(result, args, xs, ys, options) if args.at else None
    if args.hold_out:
        _print_held_out(args, xs, ys, options)
    return result, shown


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
    fits, targets = {}, {}
    for name, rows in groups:
        if name is not None:
            print(f"\n{args.by} = {name} ({len(rows)} rows)")
        try:
            fits[name], targets[name] = _fit_group(rows, args, options, source)
        except ConfigError as err:
            if len(groups) == 1:
                raise
            print(f"  not fitted: {err.message}")
    if not fits:
        raise ConfigError(f"no group of --by {args.by} could be fitted", source=source)
    if args.out:
        _write_figures(fits, args, targets)
    return 0


def _write_figures(fits: dict[str | None, Fit], args: argparse.Namespace,
                   targets: dict[str | None, Interval | None]) -> None:
    """One figure per fitted group (named after it when there are several) and, for several one-variable laws,
    all of them on one axes at --out itself. The laws of (N, D) are drawn along their compute-optimal frontier,
    so only joint and tied fits whose allocation is identified have a figure. The --at marks carry the intervals
    printed (`targets`: a power law's widened by its backtest)."""
    from plots.scaling import scaling_curve, scaling_curves  # matplotlib only when a figure is asked for
    from plots.study import slug

    law = LAWS[args.law]
    if not _has_curve(law):
        print(f"no figure: the {args.law} law has no one-dimensional curve to draw")
        return
    label = {"isoflop": args.n}.get(args.law, None if law.allocates else args.y)
    paths = []
    for name, result in fits.items():
        path = args.out if len(fits) == 1 else args.out.with_name(f"{args.out.stem}_{slug(name)}{args.out.suffix}")
        title = None if name is None else f"{name}: {result.law} law, R$^2$ (log) = {result.r2_log:.3f}"
        try:
            scaling_curve(result, path, at=args.at, targets=targets.get(name), level=args.level, xlabel=args.x,
                          ylabel=label, title=title, flops_per_param_token=args.flops_per_param_token)
        except ConfigError as err:
            print(f"no figure{'' if name is None else f' for {name}'}: {err.message}")
            continue
        paths.append(path)
    if len(fits) > 1 and law.variables == ("C",):
        scaling_curves(fits, args.out, level=args.level, xlabel=args.x, ylabel=label)
        paths.append(args.out)
    for path in paths:
        print(f"wrote {path.with_suffix('.png')} and {path.with_suffix('.svg')}")
