"""The architecture diagram draws every part of every kind of tower and writes PNG and SVG."""

from __future__ import annotations

import pytest

from nas.presets import preset
from plots.arch import arch_diagram


@pytest.mark.parametrize("name", ["ViTamin-S", "ConvNeXtHybrid-B", "CoAtNetHybrid-0", "ViT-B-16"])
def test_arch_diagram(name, tmp_path):
    arch = preset(name)
    fig = arch_diagram(arch, tmp_path / "arch.png")
    ax = fig.axes[0]
    assert len(ax.patches) == (1 + len(arch.stages) + 1)  # stem or patch embedding, stages, Transformer
    assert arch.name() in ax.get_title()
    labels = [t.get_text() for t in ax.get_legend().get_texts()]
    assert "Transformer" in labels and ("MBConv-LN" in labels) == any(s.block == "mbconv" for s in arch.stages)
    for suffix in ("png", "svg"):
        assert (tmp_path / f"arch.{suffix}").stat().st_size > 5_000
