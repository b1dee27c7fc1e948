"""A design comparison: the compared candidates' metric against samples seen, one line per candidate.

This is the figure of the ViTamin paper's design-choice tables (each choice at several data budgets): lines
that cross show a choice that wins at one budget and loses at another. Each line has its own colour, marker
and dash, so it reads in grey scale. Every seed is drawn (hollow points), never one seed silently.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from pathlib import Path

import pandas as pd
from matplotlib.figure import Figure

from nas.seeds import seed_table
from plots.style import LABELS, SERIES_COLOURS, interval_bars, new_figure, save

_MARKERS = ["o", "s", "^", "D", "v", "P", "X", "*"]
_DASHES = ["-", "--", "-.", ":"]


def group_curves(frame: pd.DataFrame, labels: Sequence[str], metric: str = "zeroshot_top1",
                 path: str | Path | None = None, title: str | None = None, own_seed: int = 0) -> Figure:
    """`frame`: one row per trial and rung with `label` and `seed` columns (`nas.select.measurements`; a seed
    of None is `own_seed`, the study's `train.seed`). Each seed's value is a small hollow point; the line joins
    the mean over seeds at each budget, its bars the 95 % t interval over seeds (`nas.seeds.seed_table`) where
    a budget has several seeds, else the eval interval of the one seed; the title says which."""
    fig = new_figure()
    ax = fig.add_subplot()
    styles = zip(itertools.cycle(SERIES_COLOURS), itertools.cycle(_MARKERS), itertools.cycle(_DASHES))
    most = 1
    for label, (colour, marker, dash) in zip(labels, styles):
        rows = frame[frame.label == label].dropna(subset=[metric])
        if rows.empty:
            continue
        curve = seed_table(rows, metric, own_seed).sort_values("samples_seen")
        most = max(most, int(curve.seeds.max()))
        for budget_row in curve.itertuples():
            ax.scatter([budget_row.samples_seen] * len(budget_row.values), budget_row.values, marker=marker, s=14,
                       facecolors="none", edgecolors=colour, linewidths=0.7, alpha=0.8, zorder=1)
        gmacs = rows.image_gmacs.iloc[0]
        seeds = "/".join(sorted({str(k) for k in curve.seeds}))
        ax.plot(curve.samples_seen, curve["mean"], color=colour, marker=marker, linestyle=dash, linewidth=1.6,
                markersize=6, label=f"{label} ({gmacs * 1e3:.1f} MMACs; {seeds} seed(s))", zorder=2)
        interval_bars(ax, curve.samples_seen, curve.rename(columns={"low": "mean_low", "high": "mean_high"}), "mean",
                      colour)
    bars = "mean over seeds, bars: 95 % t interval over seeds" if most > 1 else \
        "one seed: bars cover eval noise only"
    ax.set(xscale="log", xlabel="samples seen", ylabel=LABELS.get(metric, metric),
           title=f"{title}\n({bars})" if title else bars)
    ax.grid(alpha=0.3)
    ax.legend(frameon=False, fontsize="small")
    if path is not None:
        save(fig, path)
    return fig
