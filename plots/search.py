"""Figures of a search: the measured candidates and their Pareto front at every budget, and the search history.

    search_figures(ResultStore.open("runs/qs", readonly=True), "runs/qs/figures")   # both, as PNG and SVG
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from nas import status
from nas.cost import COST_METRICS
from nas.data.evalsets import class_count
from nas.pareto import minimization, pareto_mask
from nas.results import ResultStore
from nas.seeds import arch_means
from plots.style import OKABE_ITO, interval_bars, metric_axis, new_figure, save

_BUDGET_STYLES = [(OKABE_ITO["sky_blue"], "o"), (OKABE_ITO["orange"], "s"), (OKABE_ITO["green"], "^"),
                  (OKABE_ITO["purple"], "v"), (OKABE_ITO["yellow"], "P"), (OKABE_ITO["vermillion"], "D")]


def pareto_fronts(frame: pd.DataFrame, x: str, y: str, objectives: Mapping[str, str] | None = None,
                  path: str | Path | None = None, chance: float | None = None, own_seed: int = 0) -> Figure:
    """Every measurement (`frame`: one row per trial and rung) as `y` against `x`, one colour and marker per
    budget, with each budget's Pareto front as a step line: fronts are per budget, never across budgets.
    `objectives` gives the directions (default: `y` max, `x` min); `chance` draws a reference line; accuracies
    carry their 95 % interval as error bars. An arch measured with several seeds is one point, the mean over its
    seeds with the interval over seeds (`nas.seeds.arch_means`; seed None is `own_seed`); the title says so."""
    objectives = dict(objectives or {y: "max", x: "min"})
    fig = new_figure()
    ax = fig.add_subplot()
    budgets, seeds = sorted(frame.budget.unique()), "no measurement"
    for i, budget in enumerate(budgets):
        color, marker = _BUDGET_STYLES[i % len(_BUDGET_STYLES)]
        at, seeds = arch_means(frame[frame.budget == budget].dropna(subset=[x, y]), y, own_seed)
        last = i == len(budgets) - 1
        ax.scatter(at[x], at[y], color=color, marker=marker, s=40 if last else 22, alpha=1.0 if last else 0.7,
                   edgecolors="black" if last else "none", linewidths=0.6, label=f"{budget:,} samples", zorder=3)
        interval_bars(ax, at[x], at, y, color, alpha=1.0 if last else 0.5, zorder=2)
        front = at[pareto_mask(minimization(at, {x: objectives.get(x, "min"), y: objectives.get(y, "max")}))]
        front = front.sort_values(x)
        ax.step(front[x], front[y], where="post", color=color, linewidth=2.2 if last else 1.2,
                linestyle="-" if last else ":", zorder=2)
        if last and "number" in front:  # the front's members by trial number, as the leaderboard lists them
            for _, point in front.iterrows():
                ax.annotate(f"#{point.number:g}", (point[x], point[y]), xytext=(4, 4), textcoords="offset points",
                            fontsize="x-small", zorder=4)
    if chance is not None:
        ax.axhline(chance, color="0.4", linestyle="--", linewidth=1, label="chance")
    metric_axis(ax, x, "x")
    metric_axis(ax, y)
    ax.set_title(f"Candidates and Pareto front per budget (samples seen)\n({seeds})", fontsize="medium")
    ax.legend(frameon=False, fontsize="small")
    ax.grid(alpha=0.3)
    if path is not None:
        save(fig, path)
    return fig


def search_history(frame: pd.DataFrame, objective: str, direction: str = "max",
                   path: str | Path | None = None) -> Figure:
    """Each trial's `objective` at the furthest budget it reached, in trial order, and the best so far among
    trials that reached the full budget."""
    furthest = frame.sort_values("budget").drop_duplicates("trial_id", keep="last").sort_values("number")
    full = furthest.budget == frame.budget.max()
    fig = new_figure()
    ax = fig.add_subplot()
    ax.scatter(furthest.number[~full], furthest[objective][~full], marker="o", facecolors="none",
               edgecolors="0.4", label="stopped early (at its last budget)", zorder=3)
    ax.scatter(furthest.number[full], furthest[objective][full], marker="D", color=OKABE_ITO["vermillion"],
               label="full budget", zorder=3)
    values = furthest[objective].where(full)
    best = values.cummax() if direction == "max" else values.cummin()
    ax.step(furthest.number, best, where="post", color=OKABE_ITO["blue"], label="best at full budget")
    interval_bars(ax, furthest.number, furthest, objective, "0.4", alpha=0.6, zorder=2)
    ax.set_xlabel("trial")
    metric_axis(ax, objective)
    ax.xaxis.get_major_locator().set_params(integer=True)
    ax.legend(frameon=False, fontsize="small")
    ax.grid(alpha=0.3)
    if not np.isfinite(furthest[objective].to_numpy(dtype=float)).any():
        ax.set_title("no measurements yet")
    if path is not None:
        save(fig, path)
    return fig


def search_figures(store: ResultStore, directory: str | Path) -> list[Path]:
    """The per-budget Pareto fronts and the search history of a study, as PNG and SVG; the PNG paths."""
    frame = store.frame(status=status.MEASURED)
    if frame.empty:
        return []
    directory = Path(directory)
    objectives = store.objectives
    y = next(k for k in objectives if k not in COST_METRICS)
    x = next((k for k in objectives if k != y), "image_gmacs")
    zeroshot = store.study().data.zeroshot
    classes = class_count(zeroshot) if y == "zeroshot_top1" and zeroshot else None
    written = [directory / "pareto_fronts", directory / "search_history"]
    pareto_fronts(frame, x, y, objectives, path=written[0], chance=1 / classes if classes else None,
                  own_seed=store.study().train.seed)
    search_history(frame, y, objectives[y], path=written[1])
    return [p.with_suffix(".png") for p in written]
