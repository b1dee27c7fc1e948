"""A design comparison: the compared candidates' metric against samples seen, one line per candidate.

This is the figure of the ViTamin paper's design-choice tables (each choice at several data budgets): lines
that cross show a choice that wins at one budget and loses at another. Each line has its own colour, marker
and dash, so it reads in grey scale.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from pathlib import Path

import pandas as pd
from matplotlib.figure import Figure

from plots.style import LABELS, SERIES_COLOURS, interval_bars, new_figure, save

_MARKERS = ["o", "s", "^", "D", "v", "P", "X", "*"]
_DASHES = ["-", "--", "-.", ":"]


def group_curves(frame: pd.DataFrame, labels: Sequence[str], metric: str = "zeroshot_top1",
                 path: str | Path | None = None, title: str | None = None) -> Figure:
    """`frame`: one row per trial and rung with a `label` column (`nas.select.measurements`); a candidate
    measured by several trials shows the mean at each budget, with its 95 % interval where it was measured."""
    fig = new_figure()
    ax = fig.add_subplot()
    styles = zip(itertools.cycle(SERIES_COLOURS), itertools.cycle(_MARKERS), itertools.cycle(_DASHES))
    for label, (colour, marker, dash) in zip(labels, styles):
        rows = frame[frame.label == label].dropna(subset=[metric])
        if rows.empty:
            continue
        bounds = [c for c in (f"{metric}_low", f"{metric}_high") if c in rows]
        curve = rows.groupby("budget")[[metric, "samples_seen", *bounds]].mean().sort_values("samples_seen")
        gmacs = rows.image_gmacs.iloc[0]
        ax.plot(curve.samples_seen, curve[metric], color=colour, marker=marker, linestyle=dash, linewidth=1.6,
                markersize=6, label=f"{label} ({gmacs * 1e3:.1f} MMACs)")
        interval_bars(ax, curve.samples_seen, curve, metric, colour)
    ax.set(xscale="log", xlabel="samples seen", ylabel=LABELS.get(metric, metric), title=title)
    ax.grid(alpha=0.3)
    ax.legend(frameon=False, fontsize="small")
    if path is not None:
        save(fig, path)
    return fig
