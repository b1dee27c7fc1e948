"""Named towers: the ViTamin family as released (timm / open_clip names) and the baselines it is compared with
(ViT, ConvNeXt and CoAtNet as the paper trained them; ConvNeXt- and CoAtNet-style hybrids for ablations).

Each preset is an image `Arch` plus the text tower it was trained with (open_clip's model configs). Names
follow open_clip (`ViTamin-L-336`, `ViT-B-16`); `ViT-B/16` is accepted too.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from nas.arch import Arch, Stage, Transformer
from nas.errors import ConfigError


@dataclass(frozen=True)
class TextTower:
    """open_clip's causal text Transformer (`CLIPTextCfg`): the same shape knobs, as hashable data."""

    width: int = 512
    layers: int = 12
    heads: int = 8
    context_length: int = 77
    vocab_size: int = 49408
    mlp_ratio: float = 4.0

    def __post_init__(self) -> None:
        if self.width % self.heads:
            raise ConfigError(f"width {self.width} is not divisible by {self.heads} heads", field="text.heads")


TEXT_S = TextTower(width=384, layers=12, heads=6)
TEXT_B = TextTower(width=512, layers=12, heads=8)
TEXT_L = TextTower(width=768, layers=12, heads=12)
TEXT_L2 = TextTower(width=1024, layers=24, heads=16)
TEXT_XL = TextTower(width=1152, layers=27, heads=16)


def vitamin(c1: int, c2: int, width: int, depth: int, heads: int, image_size: int = 224, embed_dim: int = 512,
            conv_block: str = "mbconv", pos_embed: str = "learn", mlp: str = "geglu") -> Arch:
    """The ViTamin layout: conv stem, two conv stages (2 and 4 blocks), a Transformer stage, avg pooling."""
    return Arch(
        stem="conv", stem_width=c1, image_size=image_size, pos_embed=pos_embed, pool="avg", embed_dim=embed_dim,
        stages=(Stage(conv_block, 2, c1), Stage(conv_block, 4, c2)),
        transformer=Transformer(width=width, depth=depth, heads=heads, mlp=mlp),
    )


def vit(patch_size: int, width: int, depth: int, heads: int, embed_dim: int, image_size: int = 224) -> Arch:
    """open_clip's ViT: patch embedding, class token, pre-norm, MLP ratio 4."""
    return Arch(stem="patch", patch_size=patch_size, image_size=image_size, pool="token", embed_dim=embed_dim,
                transformer=Transformer(width=width, depth=depth, heads=heads, mlp="mlp"))


def convnext(widths: tuple[int, int, int, int], depths: tuple[int, int, int, int], embed_dim: int,
             image_size: int = 224) -> Arch:
    """timm's ConvNeXt (`convnext_tiny`, ...): patchify stem 4, four ConvNeXt stages, avg pool, LayerNorm."""
    return Arch(stem="patch", patch_size=4, image_size=image_size, embed_dim=embed_dim,
                stages=tuple(Stage("convnext", d, w) for w, d in zip(widths, depths)))


def coatnet(stem: int, widths: tuple[int, int, int, int], depths: tuple[int, int, int, int], embed_dim: int,
            head_dim: int = 32, image_size: int = 224) -> Arch:
    """timm's CoAtNet (`coatnet_0_224`, ...): two MBConv-BN stages, two relative-attention stages (M-M-R-R)."""
    return Arch(stem="conv", stem_width=stem, image_size=image_size, embed_dim=embed_dim, stages=(
        *(Stage("mbconv_bn", d, w) for w, d in zip(widths[:2], depths[:2])),
        *(Stage("rel_attention", d, w, heads=w // head_dim) for w, d in zip(widths[2:], depths[2:]))))


def coatnet_hybrid(stem: int, widths: tuple[int, int, int, int], depths: tuple[int, int, int, int],
                   embed_dim: int, head_dim: int = 32, image_size: int = 224) -> Arch:
    """A CoAtNet-style 4-stage hybrid (C-C-A-T, output stride 32) built from the hybrid layout's blocks.

    As CoAtNet: two MBConv stages, an attention stage at stride 16 and a Transformer stage at stride 32,
    MLP ratio 4, 32-wide heads. Unlike timm's CoAtNet (`coatnet`), the MBConv is ViTamin's MBConv-LN and
    attention uses learned absolute position embeddings instead of relative position bias.
    """
    return Arch(
        stem="conv", stem_width=stem, image_size=image_size, pool="avg", embed_dim=embed_dim,
        stages=(Stage("mbconv", depths[0], widths[0]), Stage("mbconv", depths[1], widths[1]),
                Stage("attention", depths[2], widths[2], heads=widths[2] // head_dim)),
        transformer=Transformer(width=widths[3], depth=depths[3], heads=widths[3] // head_dim, mlp="mlp"),
    )


#: timm's ConvNeXt and CoAtNet shapes (`timm.models.convnext`, `timm.models.maxxvit.model_cfgs`).
CONVNEXT_T = ((96, 192, 384, 768), (3, 3, 9, 3))
CONVNEXT_B = ((128, 256, 512, 1024), (3, 3, 27, 3))
CONVNEXT_XL = ((256, 512, 1024, 2048), (3, 3, 27, 3))
COATNET_0 = (64, (96, 192, 384, 768), (2, 3, 5, 2))
COATNET_2 = (128, (128, 256, 512, 1024), (2, 6, 14, 2))
COATNET_4 = (192, (192, 384, 768, 1536), (2, 12, 28, 2))


def _build() -> dict[str, tuple[Arch, TextTower]]:
    presets: dict[str, tuple[Arch, TextTower]] = {
        "ViTamin-S": (vitamin(64, 128, 384, 14, 6, embed_dim=384), TEXT_S),
        "ViTamin-S-LTT": (vitamin(64, 128, 384, 14, 6, embed_dim=768), TEXT_L),
        "ViTamin-B": (vitamin(128, 256, 768, 14, 12, embed_dim=512), TEXT_B),
        "ViTamin-B-LTT": (vitamin(128, 256, 768, 14, 12, embed_dim=768), TEXT_L),
    }
    for size in (224, 256, 336, 384):
        suffix = "" if size == 224 else f"-{size}"
        presets[f"ViTamin-L{suffix}"] = (vitamin(160, 320, 1024, 31, 16, size, embed_dim=768), TEXT_L)
        presets[f"ViTamin-L2{suffix}"] = (vitamin(160, 320, 1024, 31, 16, size, embed_dim=1024), TEXT_L2)
    for size in (256, 336, 384):
        presets[f"ViTamin-XL-{size}"] = (
            vitamin(192, 384, 1152, 32, 16, size, embed_dim=1152, pos_embed="none"), TEXT_XL)
    presets.update({
        "ViT-S-32": (vit(32, 384, 12, 6, embed_dim=384), TEXT_S),
        "ViT-S-16": (vit(16, 384, 12, 6, embed_dim=384), TEXT_S),
        "ViT-B-32": (vit(32, 768, 12, 12, embed_dim=512), TEXT_B),
        "ViT-B-16": (vit(16, 768, 12, 12, embed_dim=512), TEXT_B),
        "ViT-L-16": (vit(16, 1024, 24, 16, embed_dim=768), TEXT_L),
        "ViT-L-14": (vit(14, 1024, 24, 16, embed_dim=768), TEXT_L),
        # ViTamin with ConvNeXt blocks in the conv stages: the paper's MBConv-vs-ConvNeXt micro-design axis.
        "ConvNeXtHybrid-S": (vitamin(64, 128, 384, 14, 6, embed_dim=384, conv_block="convnext"), TEXT_S),
        "ConvNeXtHybrid-B": (vitamin(128, 256, 768, 14, 12, embed_dim=512, conv_block="convnext"), TEXT_B),
        # CoAtNet-0 and CoAtNet-2 shapes in the hybrid layout's blocks (MBConv-LN, absolute positions).
        "CoAtNetHybrid-0": (coatnet_hybrid(*COATNET_0, embed_dim=384), TEXT_S),
        "CoAtNetHybrid-2": (coatnet_hybrid(*COATNET_2, embed_dim=512), TEXT_B),
        # The paper's ConvNeXt and CoAtNet baselines as the authors trained them (ViTamin repo,
        # configs/short_schedule/*.yaml and open_clip/model_configs: convnext_tiny_d384, convnext_base,
        # convnext_xlarge_t768, coatnet_0/2/4; every one trained with force_image_size 224).
        "ConvNeXt-T": (convnext(*CONVNEXT_T, embed_dim=384), TEXT_S),
        "ConvNeXt-B": (convnext(*CONVNEXT_B, embed_dim=512), TEXT_B),
        "ConvNeXt-XL": (convnext(*CONVNEXT_XL, embed_dim=768), TEXT_L),
        "CoAtNet-0": (coatnet(*COATNET_0, embed_dim=384), TEXT_S),
        "CoAtNet-2": (coatnet(*COATNET_2, embed_dim=512), TEXT_B),
        "CoAtNet-4": (coatnet(*COATNET_4, embed_dim=768), TEXT_L),
    })
    return presets


PRESETS = _build()
#: The presets that are numerically identical to a timm model (name -> timm model name).
TIMM_NAMES = {
    "ViTamin-S": "vitamin_small_224", "ViTamin-S-LTT": "vitamin_small_224",
    "ViTamin-B": "vitamin_base_224", "ViTamin-B-LTT": "vitamin_base_224",
    **{f"ViTamin-L{'' if s == 224 else f'-{s}'}": f"vitamin_large_{s}" for s in (224, 256, 336, 384)},
    **{f"ViTamin-L2{'' if s == 224 else f'-{s}'}": f"vitamin_large2_{s}" for s in (224, 256, 336, 384)},
    **{f"ViTamin-XL-{s}": f"vitamin_xlarge_{s}" for s in (256, 336, 384)},
    "ConvNeXt-T": "convnext_tiny", "ConvNeXt-B": "convnext_base", "ConvNeXt-XL": "convnext_xlarge",
    "CoAtNet-0": "coatnet_0_224", "CoAtNet-2": "coatnet_2_224", "CoAtNet-4": "coatnet_4_224",
}


def _canonical(name: str) -> str:
    return name.replace("/", "-")


def preset(name: str) -> Arch:
    """The image tower of a named preset, e.g. `preset("ViTamin-S")` or `preset("ViT-B/16")`."""
    return preset_with_text(name)[0]


def preset_with_text(name: str) -> tuple[Arch, TextTower]:
    try:
        return PRESETS[_canonical(name)]
    except KeyError:
        raise ConfigError(f"unknown preset {name!r}; known: {', '.join(PRESETS)}", field="arch") from None


def load_arch(spec: str) -> tuple[Arch, TextTower]:
    """A preset name, or a JSON file holding an arch: `Arch.to_json`'s output, or any object with the arch under
    `arch` (what `vitamin-nas arch --json`, `space sample --json` and an export's `arch.json` write; the latter
    with its `text` tower). Without a text tower in the file, open_clip's default one."""
    if not spec.endswith(".json"):
        return preset_with_text(spec)
    path = Path(spec)
    if not path.is_file():
        raise ConfigError("no such file", source=spec)
    try:
        data = json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise ConfigError(f"not valid JSON ({err})", source=spec) from None
    if isinstance(data, dict) and isinstance(data.get("arch"), dict):
        text = data.get("text")
        try:
            return Arch.from_dict(data["arch"], source=spec), TextTower(**text) if text else TextTower()
        except TypeError as err:
            raise ConfigError(f"not a text tower: {err}", source=spec, field="text") from None
    if not isinstance(data, dict):
        raise ConfigError("an arch is a JSON object", source=spec)
    return Arch.from_dict(data, source=spec), TextTower()
