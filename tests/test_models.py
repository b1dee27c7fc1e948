"""The model builder against outside references: timm's vitamin_* and open_clip's ViTamin-* models."""

from __future__ import annotations

import open_clip
import pytest
import timm
import torch

from nas.arch import Arch, Stage, Transformer
from nas.cost import cost
from nas.models import build_clip, build_vision_tower
from nas.presets import PRESETS, TIMM_NAMES, TextTower, preset, preset_with_text


@pytest.mark.parametrize("name", ["ViTamin-S", "ViTamin-B"])
def test_vitamin_numerically_identical_to_timm(name):
    torch.manual_seed(0)
    tower = build_vision_tower(preset(name)).eval()
    # timm's classifier head holds the CLIP projection (its checkpoint_filter_fn maps visual.head.proj there).
    reference = timm.create_model(TIMM_NAMES[name], num_classes=tower.arch.embed_dim).eval()
    trunk_state = {k: v for k, v in reference.state_dict().items() if not k.startswith("head.")}
    tower.trunk.load_state_dict(trunk_state, strict=True)
    reference.head.weight.data.copy_(tower.head.proj.weight)
    reference.head.bias.data.zero_()
    x = torch.randn(2, 3, 224, 224)
    with torch.no_grad():
        pooled = reference.forward_head(reference.forward_features(x), pre_logits=True)
        torch.testing.assert_close(tower.trunk(x), pooled, atol=1e-5, rtol=0)
        torch.testing.assert_close(tower(x), reference(x), atol=1e-5, rtol=0)


def test_vitamin_s_clip_is_open_clips_model_key_for_key():
    torch.manual_seed(0)
    reference = open_clip.create_model("ViTamin-S", output_dict=True).eval()
    model = build_clip(*preset_with_text("ViTamin-S")).eval()
    model.load_state_dict(reference.state_dict(), strict=True)
    image, text = torch.randn(2, 3, 224, 224), torch.randint(0, 49408, (2, 77))
    with torch.no_grad():
        ours, theirs = model(image, text), reference(image, text)
    torch.testing.assert_close(ours["image_features"], theirs["image_features"], atol=1e-5, rtol=0)
    torch.testing.assert_close(ours["text_features"], theirs["text_features"], atol=1e-5, rtol=0)


@pytest.mark.parametrize("name", [n for n in TIMM_NAMES if n.startswith(("ViTamin-L", "ViTamin-XL"))])
def test_large_vitamins_match_timm_on_meta(name):
    with torch.device("meta"):
        reference = timm.create_model(TIMM_NAMES[name], num_classes=0)
        tower = build_vision_tower(preset(name))
    ours = {k: v.shape for k, v in tower.trunk.state_dict().items()}
    assert ours == {k: v.shape for k, v in reference.state_dict().items()}
    assert sum(p.numel() for p in tower.trunk.parameters()) == sum(p.numel() for p in reference.parameters())


@pytest.mark.parametrize("name", [n for n in PRESETS if n not in TIMM_NAMES and cost(preset(n)).image_params < 50e6])
def test_other_presets_forward(name):
    """Small baselines run end to end on CPU (all presets are built and counted on meta in test_cost.py)."""
    stride = preset(name).stride
    arch = preset(name).replace(image_size=stride * max(2, -(-64 // stride)))  # >= 64 px, whole tokens
    tower = build_vision_tower(arch).eval()
    with torch.no_grad():
        out = tower(torch.randn(1, 3, arch.image_size, arch.image_size))
    assert out.shape == (1, arch.embed_dim) and torch.isfinite(out).all()


def _tiny() -> Arch:
    return Arch(stem_width=16, image_size=64, embed_dim=32,
                stages=(Stage("convnext", 1, 16), Stage("attention", 1, 32, heads=2, mlp="geglu", expansion=2.0)),
                transformer=Transformer(64, 2, 2, mlp="mlp"))


def test_clip_forward_backward_and_grad_checkpointing():
    torch.manual_seed(0)
    model = build_clip(_tiny(), TextTower(width=32, layers=1, heads=2, context_length=16), drop_path=0.1)
    image, text = torch.randn(2, 3, 64, 64), torch.randint(0, 49408, (2, 16))
    out = model(image, text)
    assert out["image_features"].shape == (2, 32) and out["text_features"].shape == (2, 32)
    (out["image_features"] @ out["text_features"].T).sum().backward()
    assert all(p.grad is not None for p in model.visual.parameters())

    model.eval()
    with torch.no_grad():
        plain = model.encode_image(image)
    model.set_grad_checkpointing(True)
    assert model.visual.trunk.patch_embed.backbone.grad_checkpointing
    with torch.no_grad():
        torch.testing.assert_close(model.encode_image(image), plain)


def test_lock_image_tower_freezes_trunk():
    model = build_clip(_tiny(), TextTower(width=32, layers=1, heads=2, context_length=16))
    model.lock_image_tower()
    assert not any(p.requires_grad for p in model.visual.trunk.parameters())
