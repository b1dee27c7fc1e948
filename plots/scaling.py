"""Scaling curves: runs, the fitted law with its prediction band, the extrapolation dashed, the frontier marked."""

from __future__ import annotations

import itertools
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
from matplotlib.figure import Figure
from matplotlib.ticker import FuncFormatter

from nas.scaling import Fit, Interval, compute_optimal, fit_gate
from plots.style import OKABE_ITO, SERIES_COLOURS, new_figure, save

_FRONTIER_LABELS = {"pareto-power": "frontier (fitted)", "isoflop": "optimum per budget"}
_DEFAULT_LABELS = {
    "joint": ("compute C = k N D", "loss"),
    "tied": ("compute C = k N D", "loss"),
    "isoflop": ("compute budget", "compute-optimal size"),
}


def _tex(value: float) -> str:
    """A coefficient for mathtext: 5.86, 0.299, 2.14\\times10^{3}."""
    if value == 0 or 1e-2 <= abs(value) < 1e3:
        return f"{value:.3g}"
    mantissa, exponent = f"{value:.2e}".split("e")
    return rf"{mantissa}\times10^{{{int(exponent)}}}"


def formula(fit: Fit) -> str:
    """The fitted law as mathtext, for legends and titles."""
    p = {name: _tex(value) for name, value in fit.params.items()}
    if fit.law == "saturating":
        return rf"$E = {p['E_inf']} + {p['A']}\,C^{{-{p['alpha']}}}$"
    if fit.law in ("joint", "tied"):
        beta = p.get("beta", p["alpha"])
        return rf"$L = {p['E']} + {p['A']}/N^{{{p['alpha']}}} + {p['B']}/D^{{{beta}}}$"
    if fit.law == "bnsl":
        breaks = "".join(rf"\,(1 + (C/{p[f'd{i}']})^{{1/{p[f'f{i}']}}})^{{-{p[f'c{i}']} \cdot {p[f'f{i}']}}}"
                         for i in range(1, (len(fit.params) - 3) // 3 + 1))
        return rf"$E = {p['E']} + {p['b']}\,C^{{-{p['c0']}}}{breaks}$"
    if fit.law == "isoflop":
        return rf"$N^* = {p['coefficient']}\,C^{{{p['exponent']}}}$"
    return rf"$E = {p['beta']}\,C^{{{p['alpha']}}}$"


def _run_compute(fit: Fit, flops_per_param_token: float) -> np.ndarray:
    return flops_per_param_token * fit.x[:, 0] * fit.x[:, 1] if fit.form.allocates else fit.x


def _curve(fit: Fit, compute: np.ndarray, level: float, flops_per_param_token: float) -> Interval:
    """The law along compute; for the joint and tied laws, along the compute-optimal frontier N*(C), D*(C)."""
    if fit.form.allocates:
        return compute_optimal(fit, compute, flops_per_param_token=flops_per_param_token, level=level).loss
    return fit.extrapolate(compute, level=level)


def scaling_curve(fit: Fit, path: str | Path | None = None, *, at: Sequence[float] = (),
                  targets: Interval | None = None, extrapolate_to: float | None = None, level: float = 0.95,
                  xlabel: str | None = None,
                  ylabel: str | None = None, title: str | None = None,
                  flops_per_param_token: float = 6.0) -> Figure:
    """Log-log scaling curve of `fit`; saved as PNG and SVG when `path` is given.

    The law is solid over the fitted runs and dashed beyond them, out to `extrapolate_to` (default: the
    largest of `at`, else ten times the largest run); `at` points get their prediction interval as error bars
    (`targets`, the intervals printed with them, e.g. `Backtest.interval`; by default the law's own).
    A second panel below shows the runs' log residuals: a law of the wrong shape shows there as a bend. Where the
    fit fails its checks (`fit_gate`), the panel's title names the failed check.
    """
    compute = _run_compute(fit, flops_per_param_token)
    largest = compute.max()
    end = extrapolate_to or max([*at, 10 * largest])
    grid = np.geomspace(compute.min() / 1.5, max(end, largest), 256)
    curve = _curve(fit, grid, level, flops_per_param_token)
    fitted = grid <= largest

    fig = new_figure(height=5.8)
    ax, below = fig.subplots(2, 1, sharex=True, gridspec_kw={"height_ratios": (3, 1)})
    blue = OKABE_ITO["blue"]
    ax.fill_between(grid, curve.lower, curve.upper, color=OKABE_ITO["sky_blue"], alpha=0.3, linewidth=0,
                    label=f"{level:.0%} prediction interval")
    ax.plot(grid[fitted], curve.y[fitted], color=blue, linewidth=2, label=formula(fit))
    beyond = grid >= grid[fitted][-1]
    ax.plot(grid[beyond], curve.y[beyond], color=blue, linewidth=2, linestyle="--", label="extrapolation")
    if not fit.frontier.all():
        ax.scatter(compute[~fit.frontier], fit.y[~fit.frontier], marker="o", facecolors="none",
                   edgecolors="0.35", linewidths=1, label="runs", zorder=3)
    ax.scatter(compute[fit.frontier], fit.y[fit.frontier], marker="D", s=36, color=OKABE_ITO["vermillion"],
               edgecolors="black", linewidths=0.6, zorder=4, label=_FRONTIER_LABELS.get(fit.law, "frontier"))
    if len(at):
        compute_at = np.asarray(at, dtype=float)
        _mark_targets(ax, compute_at, targets if targets is not None else
                      _curve(fit, compute_at, level, flops_per_param_token))

    default_x, default_y = _DEFAULT_LABELS.get(fit.law, ("compute", "error"))
    _residuals(below, fit, compute, xlabel or default_x)
    return _finish(fig, ax, path, "small", ylabel=ylabel or default_y,
                   title=title or f"{fit.law} law, R$^2$ (log) = {fit.r2_log:.3f}")


def _residuals(ax, fit: Fit, compute: np.ndarray, xlabel: str) -> None:
    """log(run / law) against compute, with the failed checks (if any) as the panel's title."""
    gate = fit_gate(fit)
    resid = np.log(fit.y) - np.log(fit.predict(fit.x))
    ax.axhline(0.0, color="0.5", linewidth=0.8)
    ax.scatter(compute, resid, marker="o", s=18, color=OKABE_ITO["vermillion"], edgecolors="black", linewidths=0.4)
    ax.set(xscale="log", xlabel=xlabel, ylabel="log residual")
    ax.grid(True, which="major", color="0.85", linewidth=0.6)
    if not gate.passed:
        ax.set_title(f"fails {'; '.join(gate.failed)}", fontsize="small", loc="left")


def _finish(fig: Figure, ax, path: str | Path | None, legend_size: str, **labels: str) -> Figure:
    """Log-log axes with their labels, grid and legend; saved when given a path."""
    ax.set(xscale="log", yscale="log", **labels)
    low, high = ax.get_ylim()
    if high / low < 10:  # error axes often span under a decade: label its minor ticks in plain numbers
        plain = FuncFormatter(lambda value, _: f"{value:g}")
        ax.yaxis.set_major_formatter(plain)
        ax.yaxis.set_minor_formatter(plain)
    ax.grid(True, which="major", color="0.85", linewidth=0.6)
    ax.legend(fontsize=legend_size, frameon=False)
    if path is not None:
        save(fig, path)
    return fig


def _mark_targets(ax, compute: np.ndarray, targets: Interval) -> None:
    error = np.vstack([targets.y - targets.lower, targets.upper - targets.y])
    ax.errorbar(compute, targets.y, yerr=error, fmt="X", markersize=8, color=OKABE_ITO["green"],
                markeredgecolor="black", capsize=4, zorder=5, label="prediction at target")
    for x, y in zip(compute, targets.y, strict=True):
        ax.annotate(f"{y:.3g}", (x, y), xytext=(-8, 8), textcoords="offset points", ha="right",
                    fontsize="small")


def scaling_curves(fits: Mapping[str, Fit], path: str | Path | None = None, *, level: float = 0.95,
                   xlabel: str | None = None, ylabel: str | None = None, title: str | None = None) -> Figure:
    """Several one-variable laws on one log-log axes (e.g. one per arch family), to compare their slopes.

    Each law is solid over its own runs and dashed to ten times the largest run of any; its band is faint so
    that overlapping bands stay readable; colour and marker both tell the laws apart.
    """
    fig = new_figure()
    ax = fig.add_subplot()
    end = 10 * max(fit.x.max() for fit in fits.values())
    styles = zip(itertools.cycle(SERIES_COLOURS), itertools.cycle("osD^vPX"))
    for (name, fit), (colour, marker) in zip(fits.items(), styles):
        grid = np.geomspace(fit.x.min() / 1.5, end, 256)
        curve = _curve(fit, grid, level, 6.0)
        inside = grid <= fit.x.max()
        ax.fill_between(grid, curve.lower, curve.upper, color=colour, alpha=0.12, linewidth=0)
        ax.plot(grid[inside], curve.y[inside], color=colour, linewidth=1.8, label=f"{name}: {formula(fit)}")
        ax.plot(grid[~inside], curve.y[~inside], color=colour, linewidth=1.8, linestyle="--")
        ax.scatter(fit.x, fit.y, color=colour, marker=marker, s=24, edgecolors="black", linewidths=0.4, zorder=3)
    return _finish(fig, ax, path, "x-small", xlabel=xlabel or "compute", ylabel=ylabel or "error",
                   title=title or f"fitted laws, {level:.0%} prediction bands; dashed: extrapolation")
