"""Exports load in open_clip, through its own `local-dir:` loader, and compute what the trained model computes."""

from __future__ import annotations

import json

import open_clip
import pytest
import torch
from train_helpers import TINY_ARCH, TINY_TEXT, factory

from nas.arch import Arch, Stage
from nas.errors import ConfigError
from nas.export import export, export_checkpoint, load_open_clip, register, timm_name
from nas.models import build_clip
from nas.presets import preset_with_text
from nas.train import train
from nas.train_config import TrainConfig


def _same_embeddings(ours: torch.nn.Module, theirs: torch.nn.Module, image_size: int, context_length: int,
                     batch: int = 2) -> None:
    ours.eval(), theirs.eval()
    images = torch.randn(batch, 3, image_size, image_size)
    tokens = torch.randint(1, 400, (batch, context_length))
    with torch.no_grad():
        assert torch.equal(ours.encode_image(images), theirs.encode_image(images))
        assert torch.equal(ours.encode_text(tokens), theirs.encode_text(tokens))
        assert torch.equal(ours.logit_scale, theirs.logit_scale)


def test_a_custom_arch_loads_in_open_clip_after_registering_its_trunk(tmp_path):
    model = build_clip(TINY_ARCH, TINY_TEXT)
    export(model.state_dict(), TINY_ARCH, TINY_TEXT, tmp_path)
    config = json.loads((tmp_path / "open_clip_config.json").read_text())
    assert config["model_cfg"]["vision_cfg"]["timm_model_name"] == f"nas_{TINY_ARCH.arch_id}"
    assert config["preprocess_cfg"]["size"] == TINY_ARCH.image_size

    assert register(tmp_path) == f"nas_{TINY_ARCH.arch_id}"
    loaded, _, preprocess = open_clip.create_model_and_transforms(f"local-dir:{tmp_path}")
    _same_embeddings(model, loaded, TINY_ARCH.image_size, TINY_TEXT.context_length)
    assert loaded.visual.image_size == (TINY_ARCH.image_size, TINY_ARCH.image_size)
    again, _, _ = load_open_clip(tmp_path)  # registering twice is harmless
    _same_embeddings(model, again, TINY_ARCH.image_size, TINY_TEXT.context_length)


def test_a_vitamin_preset_loads_with_open_clip_alone(tmp_path):
    """ViTamin-S's trunk is timm's `vitamin_small_224`: no registration, and the config is open_clip's own."""
    arch, text = preset_with_text("ViTamin-S")
    assert timm_name(arch) == "vitamin_small_224" == timm_name(preset_with_text("ViTamin-S-LTT")[0])
    model = build_clip(arch, text)
    export(model.state_dict(), arch, text, tmp_path)
    loaded, _, _ = open_clip.create_model_and_transforms(f"local-dir:{tmp_path}")
    _same_embeddings(model, loaded, 224, 77, batch=1)
    ours = json.loads((tmp_path / "open_clip_config.json").read_text())["model_cfg"]
    builtin = open_clip.get_model_config("ViTamin-S")  # so `create_model("ViTamin-S", pretrained=file)` fits too
    assert ours["embed_dim"] == builtin["embed_dim"]
    assert {k: ours["vision_cfg"][k] for k in builtin["vision_cfg"] if k != "timm_drop_path"} == {
        k: v for k, v in builtin["vision_cfg"].items() if k != "timm_drop_path"}
    assert {k: ours["text_cfg"][k] for k in builtin["text_cfg"]} == builtin["text_cfg"]


@pytest.mark.parametrize("name, image_size, timm_model", [("ConvNeXt-T", 64, "convnext_tiny"),
                                                          ("CoAtNet-0", 224, "coatnet_0_224")])
def test_convnext_and_coatnet_presets_load_with_open_clip_alone(name, image_size, timm_model, tmp_path):
    """The trunk is timm's model itself; a ConvNeXt trunk has no size-dependent part, so any resolution is timm's."""
    arch = preset_with_text(name)[0].replace(image_size=image_size, embed_dim=48)
    assert timm_name(arch) == timm_model
    model = build_clip(arch, TINY_TEXT)
    export(model.state_dict(), arch, TINY_TEXT, tmp_path)
    loaded, _, _ = open_clip.create_model_and_transforms(f"local-dir:{tmp_path}")
    _same_embeddings(model, loaded, image_size, TINY_TEXT.context_length, batch=1)


def test_other_convnext_and_coatnet_towers_register_their_trunk(tmp_path):
    coatnet = preset_with_text("CoAtNet-0")[0]
    assert timm_name(coatnet.replace(image_size=256)).startswith("nas_")  # its relative position tables grow
    arch = Arch(stem_width=8, image_size=64, embed_dim=32,
                stages=(Stage("mbconv_bn", 1, 16), Stage("mbconv_bn", 1, 24), Stage("rel_attention", 2, 32, heads=2)))
    model = build_clip(arch, TINY_TEXT)
    export(model.state_dict(), arch, TINY_TEXT, tmp_path)
    assert register(tmp_path) == f"nas_{arch.arch_id}"
    loaded, _, _ = open_clip.create_model_and_transforms(f"local-dir:{tmp_path}")
    _same_embeddings(model, loaded, 64, TINY_TEXT.context_length)


def test_a_training_checkpoint_exports_with_its_siglip_bias(tmp_path):
    result = train(TINY_ARCH, TINY_TEXT, factory(16), TrainConfig(samples=32, batch_size=16, warmup=1,
                                                                 loss="siglip"), out=tmp_path / "run", device="cpu")
    export_checkpoint(result.checkpoint, tmp_path / "export")
    loaded, _, _ = load_open_clip(tmp_path / "export")
    trained = build_clip(TINY_ARCH, TINY_TEXT)
    trained.logit_bias = torch.nn.Parameter(torch.zeros(()))
    trained.load_state_dict(torch.load(result.checkpoint, weights_only=True)["model"])
    _same_embeddings(trained, loaded, TINY_ARCH.image_size, TINY_TEXT.context_length)
    assert torch.equal(trained.logit_bias, loaded.logit_bias)


def test_register_needs_an_export_directory(tmp_path):
    with pytest.raises(ConfigError, match="not an export directory"):
        register(tmp_path)
