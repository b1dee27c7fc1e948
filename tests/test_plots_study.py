"""The figures of a study: `vitamin-nas plot DIR` on a real results database writes every figure as PNG and SVG;
the figure functions draw what they claim (fronts, dashed early stops, one styled line per candidate)."""

from __future__ import annotations

import subprocess

import numpy as np
import pandas as pd
import pytest
from study_helpers import BUDGETS, LAWS

from nas.pareto import minimization, pareto_mask
from nas.results import ResultStore
from nas.select import family_laws, measurements
from plots.compare import group_curves
from plots.history import rung_history
from plots.pareto import pareto_front
from plots.scaling import scaling_curves
from plots.study import slug


@pytest.fixture(scope="module")
def frame(design_results):
    return measurements(ResultStore.open(design_results, readonly=True))


def test_plot_command_writes_every_figure_as_png_and_svg(design_figures, frame):
    groups = ["family", "conv_block", "ffn", "depth", "width_ratio"]
    families = sorted(family_laws(frame))
    expected = ["pareto_fronts", "search_history", "rung_history", "scaling",
                *(f"pareto_{b}" for b in BUDGETS), *(f"group_{g}" for g in groups),
                *(f"scaling_{slug(f)}" for f in families), *(f"arch_{slug(label)}" for label in LAWS)]
    for name in expected:
        for suffix in (".png", ".svg"):
            assert (design_figures / name).with_suffix(suffix).stat().st_size > 1000, name
    assert len(families) == 6  # every family has at least three points


def test_plot_command_bad_input_exits_2(tmp_path, cli):
    """The `plot` command's one run as a real subprocess (the others run in process)."""
    run = subprocess.run([*cli, "plot", str(tmp_path)], capture_output=True, text=True)
    assert run.returncode == 2 and "no results database here" in run.stderr


def _scatter(ax, label):
    return next(c for c in ax.collections if c.get_label() == label)


def test_pareto_front_highlights_the_front_on_every_axis(frame):
    at = frame[frame.budget == BUDGETS[-1]]
    fig = pareto_front(at)
    axes = fig.axes
    assert len(axes) == 3  # GMACs, parameters, throughput
    for ax, (x, way) in zip(axes, [("image_gmacs", "min"), ("image_params_m", "min"), ("images_per_s", "max")]):
        mask = pareto_mask(minimization(at, {x: way, "zeroshot_top1": "max"}))
        front = _scatter(ax, "Pareto front").get_offsets()
        dominated = _scatter(ax, "dominated").get_offsets()
        assert len(front) == mask.sum() and len(dominated) == (~mask).sum()
        assert {t.get_text() for t in ax.texts} == set(at.label[mask])  # the front is labelled


def test_pareto_front_leaves_out_unmeasured_costs(frame):
    fig = pareto_front(frame[frame.budget == BUDGETS[0]].drop(columns="images_per_s"))
    assert len(fig.axes) == 2


def test_rung_history_dashes_the_trials_stopped_early(frame):
    fig = rung_history(frame.assign(zeroshot_top1_low=frame.zeroshot_top1 - 0.02,
                                    zeroshot_top1_high=frame.zeroshot_top1 + 0.02))
    by_samples = fig.axes[0]
    dashed = [line for line in by_samples.lines if line.get_linestyle() == "--" and len(line.get_xdata())]
    assert len(dashed) == 2  # 8C and 4C
    from matplotlib.collections import LineCollection, PathCollection

    points = [c for c in fig.axes[1].collections if isinstance(c, PathCollection)]
    assert len(points) == 2  # lower rungs and the full budget
    for ax in fig.axes:  # each measurement with its 95 % interval, in percent as the tables show it
        assert any(isinstance(c, LineCollection) for c in ax.collections) and ax.get_ylabel().endswith("(%)")
        assert ax.yaxis.get_major_formatter()(0.25, 0) == "25%"


def test_group_curves_give_each_candidate_its_own_marker_and_dash(frame):
    labels = ["ViT", "ConvNeXt", "CoAtNet", "ViTamin"]
    ax = group_curves(frame, labels).axes[0]
    assert [line.get_label().split(" (")[0] for line in ax.lines] == labels
    styles = {(line.get_marker(), line.get_linestyle()) for line in ax.lines}
    assert len(styles) == len(labels)  # apart in grey scale too
    vitamin = ax.lines[-1]
    assert np.allclose(vitamin.get_xdata(), BUDGETS)


def test_scaling_curves_overlay_one_law_per_family(frame):
    laws = family_laws(frame)
    ax = scaling_curves(laws).axes[0]
    legend = [t.get_text() for t in ax.get_legend().get_texts()]
    assert len(legend) == len(laws) and all(any(f in text for text in legend) for f in laws)
    assert ax.get_xscale() == ax.get_yscale() == "log"


def test_group_curves_draw_every_seed_and_bars_over_seeds(frame):
    # ViT with a second seed 10 points lower at every budget: the line is the mean over the two seeds, each seed a
    # hollow point, and the bars the t interval over seeds (t(1) = 12.7 x se 5 points: +-63.5 points, clipped)
    vit = frame[frame.label == "ViT"]
    repeated = vit.assign(seed=1, zeroshot_top1=vit.zeroshot_top1 - 0.10)
    ax = group_curves(pd.concat([frame, repeated]), ["ViT"]).axes[0]
    (line,) = [line for line in ax.lines if not line.get_label().startswith("_")]  # (the bars' caps are lines too)
    assert np.allclose(line.get_ydata(), vit.groupby("budget").zeroshot_top1.mean().to_numpy() - 0.05)
    points = np.concatenate([c.get_offsets()[:, 1] for c in ax.collections if c.get_offsets().shape[1] == 2
                             and len(c.get_offsets()) == 2])
    assert len(points) == 2 * len(BUDGETS)  # both seeds at every budget, never one seed silently
    assert "interval over seeds" in ax.get_title() and "2 seed(s)" in line.get_label()
    assert "eval noise only" in group_curves(frame, ["ViT"]).axes[0].get_title()
