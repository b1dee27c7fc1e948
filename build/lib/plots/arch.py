"""A diagram of an architecture's stages: block type, width, depth and resolution, left to right.

Each stage is a box whose height grows with its width (channels, log scale) and whose length grows with
its depth; block types differ by colour *and* hatch, so the diagram reads in grey scale too.
"""

from __future__ import annotations

import math
from pathlib import Path

from matplotlib.figure import Figure
from matplotlib.patches import Patch, Rectangle

from nas.arch import Arch
from nas.cost import cost
from plots.style import OKABE_ITO, new_figure, save

#: How each kind of part is drawn: (label, colour, hatch).
STYLES = {
    "stem": ("conv stem", OKABE_ITO["black"], ""),
    "patch": ("patch embedding", OKABE_ITO["black"], ""),
    "mbconv": ("MBConv-LN", OKABE_ITO["blue"], "//"),
    "convnext": ("ConvNeXt", OKABE_ITO["orange"], "\\\\"),
    "attention": ("attention (2D)", OKABE_ITO["green"], "xx"),
    "mbconv_bn": ("MBConv-BN", OKABE_ITO["sky_blue"], "||"),
    "rel_attention": ("rel. attention (2D)", OKABE_ITO["purple"], "++"),
    "transformer": ("Transformer", OKABE_ITO["vermillion"], ".."),
}


def _boxes(arch: Arch) -> list[tuple[str, str, int, int, int]]:
    """(kind, label, width, depth, resolution) for each part, in forward order."""
    t = arch.transformer
    if arch.stem == "patch":
        size = arch.image_size // arch.patch_size
        boxes = [("patch", f"patch {arch.patch_size}", arch.stages[0].width if arch.stages else t.width, 1, size)]
    else:
        size = arch.image_size // 2
        boxes = [("stem", "stem", arch.stem_width, 2, size)]
    for i, stage in enumerate(arch.stages):
        if i or arch.stem == "conv":  # a ConvNeXt's first stage stays at its patchify stem's resolution
            size //= 2
        extra = f" h{stage.heads}" if stage.heads else f" k{stage.kernel}"
        boxes.append((stage.block, f"{stage.block}{extra}", stage.width, stage.depth, size))
    if t is not None:
        boxes.append(("transformer", f"{t.mlp} x{t.mlp_ratio:g}, h{t.heads}", t.width, t.depth, arch.grid_size))
    return boxes


def arch_diagram(arch: Arch, path: str | Path | None = None, *, title: str | None = None) -> Figure:
    """Draw `arch`'s stages; with `path`, also write PNG and SVG there."""
    boxes = _boxes(arch)
    fig = new_figure(width=max(6.4, 1.6 * len(boxes)), height=3.6)
    ax = fig.add_subplot()
    x = 0.0
    low, high = (math.log2(f(b[2] for b in boxes)) for f in (min, max))
    for kind, label, width, depth, resolution in boxes:
        length = 1.0 + math.log2(1 + depth)
        height = 0.25 + 0.75 * ((math.log2(width) - low) / (high - low) if high > low else 1.0)
        name, colour, hatch = STYLES[kind]
        ax.add_patch(Rectangle((x, -height / 2), length, height, facecolor=colour, alpha=0.35, hatch=hatch,
                               edgecolor=colour, linewidth=1.5))
        ax.text(x + length / 2, height / 2 + 0.06, f"{width} ch x{depth}\n{resolution}x{resolution}",
                ha="center", va="bottom", fontsize=8)
        ax.text(x + length / 2, -height / 2 - 0.06, label, ha="center", va="top", fontsize=8)
        x += length + 0.35
    c = cost(arch)
    ax.set_xlim(-0.2, x)
    ax.set_ylim(-1.0, 1.0)
    ax.axis("off")
    ax.set_title(title or f"{arch.name()}\n{c.image_params / 1e6:.2f} M params, {c.image_gmacs:.2f} GMACs "
                          f"(paper convention)", fontsize=9)
    used = dict.fromkeys(kind for kind, *_ in boxes)
    ax.legend(handles=[Patch(facecolor=STYLES[k][1], alpha=0.35, hatch=STYLES[k][2], edgecolor=STYLES[k][1],
                             label=STYLES[k][0]) for k in used],
              loc="lower center", ncol=len(used), fontsize=8, frameon=False, bbox_to_anchor=(0.5, -0.08))
    if path is not None:
        save(fig, path)
    return fig
