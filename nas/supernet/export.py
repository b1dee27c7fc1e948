"""A subnet out of a trained supernet as a stand-alone model, in `nas.export`'s format.

    export_subnet(load_supernet("runs/sn"), arch, "runs/sn/export")   # then nas.export.load_open_clip(...)

The directory is what `vitamin-nas export` writes for a trained candidate (open_clip's config and safetensors
weights, `arch.json`), its weights the subnet's slices of the supernet's and the shared text tower: the
stand-alone `build_clip(arch)` it loads into computes what the supernet computes for that subnet. Its
`arch.json` is an arch file like any other: `vitamin-nas train --arch DIR/arch.json --pretrained DIR` fine-tunes
the subnet from the weights it inherited (without `--pretrained`, it trains that arch from scratch).
"""

from __future__ import annotations

import os
from pathlib import Path

from nas.arch import Arch
from nas.export import export
from nas.supernet.supernet import Supernet


def export_subnet(supernet: Supernet, arch: Arch, out: str | os.PathLike, source: str = "arch") -> Path:
    """Write the subnet `arch` of `supernet` to `out`; a `ConfigError` naming `source` if it is none of its."""
    supernet.check(arch, source)
    return export(supernet.subnet_state_dict(arch), arch, supernet.text_tower, out, drop_path=supernet.drop_path)
