"""Pareto fronts at one budget: accuracy against each cost, the front highlighted and labelled.

One panel per cost (image GMACs, image parameters, measured training throughput). Dominated candidates are
faint hollow circles, the front filled diamonds joined by a step line, so the two read apart in grey scale
too; front members carry their label (the study's, else the arch name).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from nas.pareto import minimization, pareto_mask
from nas.select import COST_AXES
from plots.style import LABELS, OKABE_ITO, interval_bars, new_figure, save


def pareto_front(frame: pd.DataFrame, y: str = "zeroshot_top1", axes: Mapping[str, str] | None = None,
                 direction: str = "max", path: str | Path | None = None, title: str | None = None) -> Figure:
    """`y` against each cost in `axes` (name: min|max) for one row per arch (`ResultStore.at_budget`); axes that
    no row measured are left out. With `path`, also write PNG and SVG there."""
    axes = {a: way for a, way in (axes or COST_AXES).items() if a in frame and frame[a].notna().any()}
    fig = new_figure(width=4.2 * max(1, len(axes)), height=4.4)
    for i, (axis, way) in enumerate(axes.items()):
        _panel(fig.add_subplot(1, len(axes), i + 1), frame.dropna(subset=[axis, y]), axis, way, y, direction)
    fig.suptitle(title or f"Pareto fronts of {LABELS.get(y, y)}")
    if path is not None:
        save(fig, path)
    return fig


def _panel(ax, frame: pd.DataFrame, x: str, x_way: str, y: str, y_way: str) -> None:
    front = pareto_mask(minimization(frame, {x: x_way, y: y_way}))
    ax.scatter(frame[x][~front], frame[y][~front], marker="o", s=30, facecolors="none", edgecolors="0.45",
               alpha=0.7, label="dominated", zorder=2)
    interval_bars(ax, frame[x], frame, y, "0.6", zorder=1)
    members = frame[front].sort_values(x)
    ax.step(members[x], members[y], where="post" if x_way == "min" else "pre", color=OKABE_ITO["vermillion"],
            linewidth=1.6, zorder=3)
    ax.scatter(members[x], members[y], marker="D", s=42, color=OKABE_ITO["vermillion"], edgecolors="black",
               linewidths=0.6, label="Pareto front", zorder=4)
    names = members["label"] if "label" in members else members["arch_name"]
    for i, (xv, yv, name) in enumerate(zip(members[x], members[y], names)):  # neighbours alternate sides
        ax.annotate(str(name), (xv, yv), xytext=(5, 4) if i % 2 == 0 else (5, -11), textcoords="offset points",
                    fontsize=7)
    values = frame[x].to_numpy(dtype=float)
    if len(values) and values.min() > 0 and values.max() / values.min() > 10:
        ax.set_xscale("log")
    ax.set_xlabel(LABELS.get(x, x) + (" (higher is better)" if x_way == "max" else ""))
    ax.set_ylabel(LABELS.get(y, y))
    ax.grid(alpha=0.3)
    ax.legend(frameon=False, fontsize="small", loc="best")
    if not np.isfinite(values).any():
        ax.set_title("not measured")
