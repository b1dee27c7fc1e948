"""The model builder against outside references: timm's vitamin_* / convnext_* / coatnet_* and open_clip's ViTamin-*
models."""

from __future__ import annotations

import open_clip
import pytest
import timm
import torch

from nas.arch import Arch, Stage, Transformer
from nas.cost import cost
from nas.models import build_clip, build_vision_tower
from nas.presets import PRESETS, TIMM_NAMES, TextTower, preset, preset_with_text

#: Presets checked number for number against timm on CPU; the others (large) on the meta device.
NUMERIC = ("ViTamin-S", "ViTamin-B", "ConvNeXt-T", "CoAtNet-0")


@pytest.mark.parametrize("name", NUMERIC)
def test_numerically_identical_to_timm(name):
    torch.manual_seed(0)
    tower = build_vision_tower(preset(name)).eval()
    # timm's classifier holds the CLIP projection (ViTamin's checkpoint_filter_fn maps visual.head.proj there).
    reference = timm.create_model(TIMM_NAMES[name], num_classes=tower.arch.embed_dim).eval()
    classifier = reference.get_classifier()  # ViT: head; ConvNeXt, MaxxVit: head.fc
    trunk_state = {k: v for k, v in reference.state_dict().items() if k not in {"head.weight", "head.bias",
                                                                                "head.fc.weight", "head.fc.bias"}}
    tower.trunk.load_state_dict(trunk_state, strict=True)
    classifier.weight.data.copy_(tower.head.proj.weight)
    classifier.bias.data.zero_()
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


@pytest.mark.parametrize("name", [n for n in TIMM_NAMES if n not in NUMERIC and not n.endswith("-LTT")])
def test_large_presets_match_timm_on_meta(name):
    with torch.device("meta"):
        reference = timm.create_model(TIMM_NAMES[name], num_classes=0)
        tower = build_vision_tower(preset(name))
    ours = {k: v.shape for k, v in tower.trunk.state_dict().items()}
    assert ours == {k: v.shape for k, v in reference.state_dict().items()}
    assert sum(p.numel() for p in tower.trunk.parameters()) == sum(p.numel() for p in reference.parameters())
    tower.trunk.load_state_dict(reference.state_dict(), strict=True, assign=True)


def test_convnext_and_coatnet_trunks_are_timms_models():
    """The trunk is timm's own class, so open_clip's `TimmModel` of the same name builds the same modules."""
    assert type(build_vision_tower(_tiny_convnext()).trunk).__name__ == "ConvNeXt"
    assert type(build_vision_tower(_tiny_coatnet()).trunk).__name__ == "MaxxVit"


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


def _tiny_convnext() -> Arch:
    return Arch(stem="patch", patch_size=4, image_size=64, embed_dim=32,
                stages=tuple(Stage("convnext", d, w, kernel=k) for w, d, k in ((16, 1, 3), (24, 2, 5), (32, 1, 7),
                                                                              (48, 1, 3))))


def _tiny_coatnet() -> Arch:
    return Arch(stem_width=8, image_size=64, embed_dim=32,
                stages=(Stage("mbconv_bn", 1, 16), Stage("mbconv_bn", 2, 24), Stage("rel_attention", 2, 32, heads=2),
                        Stage("rel_attention", 1, 48, heads=3)))


@pytest.mark.parametrize("arch", [_tiny(), _tiny_convnext(), _tiny_coatnet()], ids=lambda a: a.family)
def test_clip_forward_backward_and_grad_checkpointing(arch):
    torch.manual_seed(0)
    model = build_clip(arch, TextTower(width=32, layers=1, heads=2, context_length=16), drop_path=0.1)
    image, text = torch.randn(2, 3, 64, 64), torch.randint(0, 49408, (2, 16))
    out = model(image, text)
    assert out["image_features"].shape == (2, 32) and out["text_features"].shape == (2, 32)
    (out["image_features"] @ out["text_features"].T).sum().backward()
    assert all(p.grad is not None for p in model.visual.parameters())

    model.eval()
    with torch.no_grad():
        plain = model.encode_image(image)
    model.set_grad_checkpointing(True)
    trunk = model.visual.trunk
    stages = trunk.stages if arch.transformer is None else [trunk.patch_embed.backbone]
    assert all(stage.grad_checkpointing for stage in stages)
    with torch.no_grad():
        torch.testing.assert_close(model.encode_image(image), plain)


def test_drop_path_reaches_the_last_block_of_every_family():
    """open_clip's `timm_drop_path` rule: linear over the blocks, the given rate at the last one."""
    last = {"C-A-T/mlp": lambda t: t.blocks[-1].drop_path1, "P-N-N-N-N": lambda t: t.stages[-1].blocks[-1].drop_path,
            "M-M-R-R": lambda t: t.stages[-1].blocks[-1].drop_path1}
    for arch in (_tiny().replace(stages=(Stage("mbconv", 1, 16), Stage("attention", 1, 32, heads=2))),
                 _tiny_convnext(), _tiny_coatnet()):
        assert last[arch.family](build_vision_tower(arch, drop_path=0.1).trunk).drop_prob == pytest.approx(0.1)


def test_lock_image_tower_freezes_trunk():
    model = build_clip(_tiny(), TextTower(width=32, layers=1, heads=2, context_length=16))
    model.lock_image_tower()
    assert not any(p.requires_grad for p in model.visual.trunk.parameters())
