"""The architecture diagram draws every part of every kind of tower and writes PNG and SVG."""

from __future__ import annotations

import pytest

from nas.presets import preset
from plots.arch import arch_diagram


@pytest.mark.parametrize("name", ["ViTamin-S", "ConvNeXtHybrid-B", "CoAtNetHybrid-0", "ViT-B-16", "ConvNeXt-T",
                                  "CoAtNet-0"])
def test_arch_diagram(name, tmp_path):
    arch = preset(name)
    fig = arch_diagram(arch, tmp_path / "arch.png")
    ax = fig.axes[0]
    has_transformer = arch.transformer is not None
    assert len(ax.patches) == 1 + len(arch.stages) + has_transformer  # stem or patch embedding, stages, Transformer
    assert arch.name() in ax.get_title()
    labels = [t.get_text() for t in ax.get_legend().get_texts()]
    assert ("Transformer" in labels) == has_transformer
    for block, label in (("mbconv", "MBConv-LN"), ("mbconv_bn", "MBConv-BN"), ("rel_attention", "rel. attention (2D)")):
        assert (label in labels) == any(s.block == block for s in arch.stages)
    # each part's resolution, as printed above its box: ConvNeXt-T 56 56 28 14 7, CoAtNet-0 112 56 28 14 7
    sizes = [int(t.get_text().split("\n")[1].split("x")[0]) for t in ax.texts if " ch x" in t.get_text()]
    assert sizes[-1] == arch.grid_size and sizes == sorted(sizes, reverse=True)
    for suffix in ("png", "svg"):
        assert (tmp_path / f"arch.{suffix}").stat().st_size > 5_000
