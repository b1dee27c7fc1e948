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


def test_convnext_and_coatnet_names_and_shapes():
    convnext, coatnet = preset("ConvNeXt-T"), preset("CoAtNet-0")
    assert convnext.name() == "P4-N96x3-N192x3-N384x9-N768x3@224" and convnext.transformer is None
    assert coatnet.name() == "S64-M96x2-M192x3-R384x5h12-R768x2h24@224"  # 32-wide heads, as timm's coatnet_0
    assert preset("CoAtNet-2").name() == "M128x2-M256x6-R512x14h16-R1024x2h32@224"  # stem as wide as stage 1
    for arch in (convnext, coatnet):
        assert arch.stride == 32 and arch.grid_size == 7 and arch.pos_embed == "none" and arch.pool == "avg"
    assert json.loads(convnext.to_json())["transformer"] is None


def test_family_is_the_layout_without_sizes():
    assert preset("ViTamin-S").family == "C-C-T/geglu" == preset("ViTamin-L").family
    assert preset("ViT-B-16").family == "P-T/mlp"
    assert preset("ConvNeXtHybrid-S").family == "N-N-T/geglu"
    assert preset("CoAtNetHybrid-0").family == "C-C-A-T/mlp"
    assert {preset(n).family for n in ("ConvNeXt-T", "ConvNeXt-B", "ConvNeXt-XL")} == {"P-N-N-N-N"}
    assert {preset(f"CoAtNet-{n}").family for n in (0, 2, 4)} == {"M-M-R-R"}
    assert Arch(Transformer(64, 2, 2), stem_width=16, image_size=64).family == "T/geglu"  # conv stem only


@pytest.mark.parametrize("name", list(PRESETS))
def test_preset_json_round_trip(name):
    arch = preset(name)
    again = Arch.from_json(arch.to_json())
    assert again == arch and again.arch_id == arch.arch_id and hash(again) == hash(arch)
    assert Arch.from_json(arch.to_json(indent=2)) == arch


@pytest.mark.subprocess
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


TOWER = {"image_size": 64, "embed_dim": 32}
CONVNEXT = {**TOWER, "stem": "patch", "patch_size": 4,
            "stages": [dict(block="convnext", depth=1, width=w) for w in (16, 32, 48, 64)]}
COATNET = {**TOWER, "stem_width": 16, "stages": [dict(block="mbconv_bn", depth=1, width=16),
                                                 dict(block="mbconv_bn", depth=1, width=32),
                                                 dict(block="rel_attention", depth=1, width=64, heads=2)]}


def _with_stage(base: dict, index: int, **changes) -> dict:
    stages = [dict(s) for s in base["stages"]]
    stages[index].update(changes)
    return {**base, "stages": stages}


@pytest.mark.parametrize("data, field, fragment", [
    ({**CONVNEXT, "stages": CONVNEXT["stages"][:3]}, "stages", "four stages, got 3"),
    ({**CONVNEXT, "patch_size": 2}, "patch_size", "4x4 patchify conv"),
    (_with_stage(CONVNEXT, 1, expansion=3.0), "stages[1].expansion", "MLP ratio 4"),
    (_with_stage(CONVNEXT, 2, block="mbconv"), "stages[2].block", "every stage is convnext"),
    ({**CONVNEXT, "pos_embed": "learn"}, "pos_embed", "no absolute position embedding"),
    ({**CONVNEXT, "pool": "token"}, "pool", "global average"),
    ({**CONVNEXT, "stem_width": 16}, "stem_width", "patch stem embeds straight"),
    (_with_stage(COATNET, 1, block="mbconv"), "stages[1].block", "mbconv_bn or rel_attention"),
    (_with_stage(COATNET, 1, expansion=6.0), "stages[1].expansion", "shares one expansion"),
    (_with_stage(COATNET, 1, kernel=5), "stages[1].kernel", "shares one kernel"),
    ({**COATNET, "stages": [*COATNET["stages"], dict(block="rel_attention", depth=1, width=128, heads=2)]},
     "stages[3].head_dim", "shares one head_dim"),
    (_with_stage(COATNET, 2, mlp="geglu"), "stages[2].mlp", "'geglu' is not one of mlp"),
    (_with_stage(COATNET, 0, block="rel_attention", heads=2), "stages", "first stage must be convolutional"),
    ({**COATNET, "transformer": dict(width=64, depth=1, heads=2)}, "stages[0].block", "no Transformer stage"),
    ({**COATNET, "image_size": 40}, "image_size", "not divisible by the tower's stride 16"),
    ({**TOWER, "stem_width": 16}, "transformer", "a Transformer stage, 2D stages or both"),
])
def test_convnext_and_coatnet_validation_names_the_field(data, field, fragment):
    with pytest.raises(ConfigError) as err:
        Arch.from_dict(data, source="cand.json")
    assert err.value.field == field
    assert fragment in str(err.value)


def test_convnext_and_coatnet_round_trip_without_a_transformer_field():
    for data in (CONVNEXT, COATNET):
        arch = Arch.from_dict(data)
        assert Arch.from_json(arch.to_json()) == arch and arch.transformer is None


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
    with pytest.raises(ConfigError, match="needs a Transformer stage, 2D stages or both"):
        Arch.from_json(json.dumps({"stem_width": 16}), source="x.json")
