"""Arch: validation, identity, JSON round trip, names; every preset is a valid, stable arch."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from nas.arch import Arch, Stage, Transformer
from nas.errors import ConfigError
from nas.presets import PRESETS, preset, preset_with_text


def test_vitamin_s_name_and_shape():
    arch = preset("ViTamin-S")
    assert arch.name() == "C64x2-C128x4-T384x14h6-geglu@224"
    assert arch.stride == 16 and arch.grid_size == 14 and arch.num_tokens == 196
    assert preset("ViT-B/16") == preset("ViT-B-16")
    assert preset("ViT-B-16").name() == "P16-T768x12h12-mlp-cls@224"
    assert preset("ViTamin-XL-256").name().endswith("-nopos@256")


@pytest.mark.parametrize("name", list(PRESETS))
def test_preset_json_round_trip(name):
    arch = preset(name)
    again = Arch.from_json(arch.to_json())
    assert again == arch and again.arch_id == arch.arch_id and hash(again) == hash(arch)
    assert Arch.from_json(arch.to_json(indent=2)) == arch


def test_arch_id_is_stable_across_processes():
    code = "from nas.presets import preset; print(preset('ViTamin-B').arch_id)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == preset("ViTamin-B").arch_id
    assert len(preset("ViTamin-B").arch_id) == 12


def test_arch_id_changes_with_any_field():
    base = preset("ViTamin-S")
    variants = [base.replace(image_size=256), base.replace(embed_dim=512),
                base.replace(transformer=Transformer(384, 12, 6)), base.replace(pos_embed="none")]
    assert len({base.arch_id, *(v.arch_id for v in variants)}) == 5


def test_presets_distinct_where_towers_differ():
    # L and L2 share an image tower (same embed_dim differs), XL has no position embedding.
    assert preset("ViTamin-L").stages == preset("ViTamin-L2").stages
    assert preset("ViTamin-XL-384").pos_embed == "none"
    assert preset_with_text("ViTamin-L2")[1].layers == 24


@pytest.mark.parametrize("kwargs, field, fragment", [
    (dict(transformer=dict(width=384, depth=2, heads=5)), "transformer.heads", "not divisible by 5 heads"),
    (dict(stages=[dict(block="conv", depth=1, width=8)]), "stages[0].block", "mbconv, convnext, attention"),
    (dict(stages=[dict(block="mbconv", depth=0, width=8)]), "stages[0].depth", "positive integer"),
    (dict(stages=[dict(block="mbconv", depth=1, width=8, kernel=4)]), "stages[0].kernel", "odd"),
    (dict(stages=[dict(block="mbconv", depth=1, width=8, heads=2)]), "stages[0].heads", "take no heads"),
    (dict(stages=[dict(block="attention", depth=1, width=8)]), "stages[0].heads", "positive integer"),
    (dict(transformer=dict(width=64, depth=2, heads=2, mlp="swiglu")), "transformer.mlp", "geglu, mlp"),
    (dict(pool="cls"), "pool", "avg, token"),
    (dict(image_size=100), "image_size", "stride 16"),
    (dict(colour="red"), None, "unknown field(s) colour"),
])
def test_validation_names_the_field(kwargs, field, fragment):
    data = {"stem": "conv", "stem_width": 16, "image_size": 64, "embed_dim": 32,
            "stages": [dict(block="mbconv", depth=1, width=16), dict(block="mbconv", depth=1, width=32)],
            "transformer": dict(width=64, depth=2, heads=2)}
    data.update(kwargs)
    with pytest.raises(ConfigError) as err:
        Arch.from_dict(data, source="cand.json")
    assert err.value.field == field
    assert fragment in str(err.value) and "cand.json" in str(err.value)


def test_structural_rules():
    with pytest.raises(ConfigError, match="patch stem feeds the Transformer"):
        Arch(transformer=Transformer(64, 2, 2), stem="patch", patch_size=16, stages=(Stage("mbconv", 1, 16),))
    with pytest.raises(ConfigError, match="first stage must be convolutional"):
        Arch(transformer=Transformer(64, 2, 2), stem_width=16, stages=(Stage("attention", 1, 32, heads=2),))
    with pytest.raises(ConfigError, match="multiple of its input"):
        Arch(transformer=Transformer(64, 2, 2), stem_width=16, image_size=64, stages=(Stage("convnext", 1, 24),))


def test_from_json_rejects_bad_documents():
    with pytest.raises(ConfigError, match="not valid JSON"):
        Arch.from_json("{", source="x.json")
    with pytest.raises(ConfigError, match="missing field 'transformer'"):
        Arch.from_json(json.dumps({"stem_width": 16}), source="x.json")
