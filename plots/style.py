"""One look for every figure: readable in grey scale and for colour-blind readers.

Colours are the Okabe-Ito palette (distinguishable under the common colour-vision deficiencies); every
series also differs by marker or line style, so a grey-scale print loses nothing.
"""

from __future__ import annotations

from pathlib import Path

from matplotlib.figure import Figure

OKABE_ITO = {
    "black": "#000000",
    "orange": "#E69F00",
    "sky_blue": "#56B4E9",
    "green": "#009E73",
    "yellow": "#F0E442",
    "blue": "#0072B2",
    "vermillion": "#D55E00",
    "purple": "#CC79A7",
}
#: The order series take colours in: the strongest contrasts first, yellow (faint on white) left out.
SERIES_COLOURS = [OKABE_ITO[c] for c in ("blue", "vermillion", "green", "orange", "purple", "sky_blue", "black")]
FORMATS = ("png", "svg")
#: Axis labels of the metrics and costs the figures plot (any other column is labelled by its name).
LABELS = {"zeroshot_top1": "zero-shot top-1", "zeroshot_top5": "zero-shot top-5", "loss": "training loss",
          "image_gmacs": "image GMACs (paper convention)", "image_params_m": "image parameters (M)",
          "gmacs": "GMACs (image + text)", "images_per_s": "training throughput (images/s)",
          "samples_seen": "samples seen"}


def new_figure(width: float = 6.4, height: float = 4.6) -> Figure:
    return Figure(figsize=(width, height), layout="constrained")


def save(fig: Figure, path: str | Path, *, dpi: int = 150) -> list[Path]:
    """Write the figure as PNG and SVG beside each other (the suffix of `path` is replaced)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    written = [path.with_suffix(f".{fmt}") for fmt in FORMATS]
    for target in written:
        fig.savefig(target, dpi=dpi)
    return written


def interval_bars(ax, x, frame, y: str, color: str, **style) -> bool:
    """Vertical bars of `y`'s 95 % interval (`<y>_low`, `<y>_high` columns of `frame`) at `x`; False (nothing
    drawn) when the frame has no intervals, e.g. for the training loss."""
    low, high = f"{y}_low", f"{y}_high"
    if low not in frame or high not in frame or frame[[low, high]].isna().all().all():
        return False
    values = frame[y].to_numpy(dtype=float)
    errors = [values - frame[low].to_numpy(dtype=float), frame[high].to_numpy(dtype=float) - values]
    ax.errorbar(x, values, yerr=errors, fmt="none", ecolor=color, elinewidth=0.8, capsize=2, **style)
    return True


def metric_axis(ax, metric: str, axis: str = "y") -> None:
    """Label an axis with `metric`'s name; accuracies and recalls (fractions in the results) in percent, as every
    table shows them."""
    from matplotlib.ticker import PercentFormatter

    from nas.metrics import EVALUATED

    label = LABELS.get(metric, metric)
    target = ax.yaxis if axis == "y" else ax.xaxis
    if metric in EVALUATED:
        target.set_major_formatter(PercentFormatter(1.0, decimals=0))
        label += " (%)"
    target.set_label_text(label)
