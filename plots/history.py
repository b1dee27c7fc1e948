"""How a search unfolded rung by rung: each trial's metric against samples seen (ASHA's rungs marked) and
against wall-clock time since the study began.

`plots.search.search_history` shows the metric by trial number; this figure shows what ASHA did to each
trial (where it stopped, which went on) and when results arrived.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from plots.style import OKABE_ITO, interval_bars, metric_axis, new_figure, save


def rung_history(frame: pd.DataFrame, objective: str = "zeroshot_top1", direction: str = "max",
                 path: str | Path | None = None) -> Figure:
    """`frame`: one row per trial and rung (`ResultStore.frame`). Trials that reached the largest budget are
    solid blue lines; those stopped early dashed grey, ending in a cross."""
    frame = frame.dropna(subset=[objective]).sort_values(["trial_id", "rung"])
    full = frame.budget.max() if not frame.empty else 0
    fig = new_figure(width=11.0, height=4.4)
    by_samples, by_time = fig.add_subplot(1, 2, 1), fig.add_subplot(1, 2, 2)
    for budget in sorted(frame.budget.unique()):
        by_samples.axvline(budget, color="0.75", linestyle=":", linewidth=1)
    for _, trial in frame.groupby("trial_id", sort=False):
        done = trial.budget.max() == full
        style = {"color": OKABE_ITO["blue"], "linestyle": "-", "alpha": 0.9} if done else \
            {"color": "0.5", "linestyle": "--", "alpha": 0.7}
        by_samples.plot(trial.samples_seen, trial[objective], marker="o", markersize=3, linewidth=1, **style)
        interval_bars(by_samples, trial.samples_seen, trial, objective, style["color"], alpha=0.5)
        if not done:
            by_samples.plot(trial.samples_seen.iloc[-1:], trial[objective].iloc[-1:], marker="x", markersize=7,
                            color="0.3", linestyle="none")
    _over_time(by_time, frame, objective, direction, full)
    by_samples.set(xscale="log", xlabel="samples seen (dotted: rungs)", title="trials through the rungs")
    metric_axis(by_samples, objective)
    by_samples.plot([], [], color=OKABE_ITO["blue"], label="reached the full budget")
    by_samples.plot([], [], color="0.5", linestyle="--", marker="x", label="stopped early")
    by_samples.legend(frameon=False, fontsize="small")
    for ax in (by_samples, by_time):
        ax.grid(alpha=0.3)
    if path is not None:
        save(fig, path)
    return fig


def _over_time(ax, frame: pd.DataFrame, objective: str, direction: str, full: int) -> None:
    """Each measurement at the time it was taken (trial start + its wall time), and the best full-budget
    result so far."""
    started = frame.started_at.fillna(frame.created_at).astype(float)
    minutes = ((started + frame.wall_s.fillna(0).astype(float)) - frame.created_at.astype(float).min()) / 60
    at_full = (frame.budget == full).to_numpy()
    ax.scatter(minutes[~at_full], frame[objective][~at_full], marker="o", s=18, facecolors="none",
               edgecolors="0.45", label="lower rung")
    ax.scatter(minutes[at_full], frame[objective][at_full], marker="D", s=30, color=OKABE_ITO["vermillion"],
               edgecolors="black", linewidths=0.5, label="full budget", zorder=3)
    order = np.argsort(minutes.to_numpy())
    values = frame[objective].where(frame.budget == full).to_numpy(dtype=float)[order]
    best = (pd.Series(values).cummax() if direction == "max" else pd.Series(values).cummin()).ffill()
    ax.step(minutes.to_numpy()[order], best, where="post", color=OKABE_ITO["blue"], label="best at full budget")
    interval_bars(ax, minutes, frame, objective, "0.6", alpha=0.4, zorder=1)
    ax.set(xlabel="minutes since the study began", title="over time")
    metric_axis(ax, objective)
    ax.legend(frameon=False, fontsize="small")
