"""Image tower and CLIP assembly. Layers come from timm and open_clip; only the hybrid's stage composition is new.

ConvNeXt and CoAtNet towers are timm's own `ConvNeXt` and `MaxxVit` models, configured from the arch: their
trunks are those classes, so timm's `convnext_*` / `coatnet_*` state dicts load into them unchanged.
"""

from __future__ import annotations

from collections import OrderedDict
from functools import partial

import open_clip
import torch
from open_clip.model import CLIPTextCfg, CLIPVisionCfg
from timm.layers import HybridEmbed, Mlp, trunc_normal_
from timm.models._manipulate import checkpoint_seq
from timm.models.convnext import ConvNeXt, ConvNeXtBlock
from timm.models.maxxvit import MaxxVit, MaxxVitCfg, MaxxVitConvCfg, MaxxVitTransformerCfg
from timm.models.vision_transformer import Block, VisionTransformer
from timm.models.vitamin import GeGluMlp, MbConvLNBlock, Stem, StridedConv
from torch import nn

from nas.arch import Arch, Stage
from nas.errors import ConfigError
from nas.presets import TextTower

MLP_LAYERS = {"geglu": GeGluMlp, "mlp": Mlp}
_LN_EPS = 1e-6


class AttentionStage2d(nn.Module):
    """A CoAtNet-style attention stage on a 2D map: strided conv down, Transformer blocks on the tokens."""

    def __init__(self, in_chs: int, stage: Stage, grid_size: int, pos_embed: bool):
        super().__init__()
        self.down = StridedConv(stride=2, in_chans=in_chs, embed_dim=stage.width)
        self.pos_embed = nn.Parameter(torch.zeros(1, grid_size**2, stage.width)) if pos_embed else None
        if self.pos_embed is not None:
            trunc_normal_(self.pos_embed, std=0.02)
        norm_layer = partial(nn.LayerNorm, eps=_LN_EPS)
        self.blocks = nn.Sequential(*[
            Block(stage.width, stage.heads, mlp_ratio=stage.expansion, qkv_bias=True, norm_layer=norm_layer,
                  mlp_layer=MLP_LAYERS[stage.mlp])
            for _ in range(stage.depth)
        ])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.down(x)
        b, c, h, w = x.shape
        x = x.flatten(2).transpose(1, 2)
        if self.pos_embed is not None:
            x = x + self.pos_embed
        x = self.blocks(x)
        return x.transpose(1, 2).reshape(b, c, h, w)


def _stage_blocks(stage: Stage, in_chs: int, grid_size: int, pos_embed: bool) -> nn.Module:
    if stage.block == "attention":
        return AttentionStage2d(in_chs, stage, grid_size, pos_embed)
    blocks = []
    for i in range(stage.depth):
        chs, stride = (in_chs, 2) if i == 0 else (stage.width, 1)
        if stage.block == "mbconv":
            blocks.append(MbConvLNBlock(chs, stage.width, stride=stride, kernel_size=stage.kernel,
                                        expand_ratio=stage.expansion))
        else:
            blocks.append(ConvNeXtBlock(chs, stage.width, kernel_size=stage.kernel, stride=stride,
                                        mlp_ratio=stage.expansion))
    return nn.Sequential(*blocks)


class ConvStages(nn.Module):
    """Stem, 2D stages and the strided conv into the Transformer stage (timm's `MbConvStages`, generalised).

    Attribute names (`stem`, `stages`, `pool`) are timm's, so ViTamin checkpoints load unchanged.
    """

    def __init__(self, arch: Arch):
        super().__init__()
        self.grad_checkpointing = False
        self.stem = Stem(3, arch.stem_width)
        stages, in_chs, size = [], arch.stem_width, arch.image_size // 2
        for stage in arch.stages:
            size //= 2
            stages.append(_stage_blocks(stage, in_chs, size, arch.pos_embed == "learn"))
            in_chs = stage.width
        self.stages = nn.Sequential(*stages)
        self.pool = StridedConv(stride=2, in_chans=in_chs, embed_dim=arch.transformer.width)
        self.num_features = arch.transformer.width

    def set_grad_checkpointing(self, enable: bool = True) -> None:
        self.grad_checkpointing = enable

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x)
        if self.grad_checkpointing and not torch.jit.is_scripting():
            x = checkpoint_seq(self.stages, x)
        else:
            x = self.stages(x)
        return self.pool(x)


def build_trunk(arch: Arch, drop_path: float = 0.0, init_weights: bool = True, mask_ratio: float = 0.0) -> nn.Module:
    """The timm model of an arch, with no classifier (`num_classes=0`): it outputs the pooled features.

    A `VisionTransformer` for ViT and hybrid towers, a `ConvNeXt` or a `MaxxVit` for the towers without a
    Transformer stage. `init_weights=False` skips timm's ViT and MaxxVit initialisation (for weights about to
    be loaded, or the meta device); timm's ConvNeXt always initialises. `mask_ratio` is FLIP's token masking:
    timm's `PatchDropout` after the position embedding keeps a random (1 - mask_ratio) of the Transformer
    stage's tokens (a class token always) in training mode, and every token in eval mode.
    """
    if arch.transformer is None:
        if mask_ratio:
            raise ConfigError(f"masks the Transformer stage's tokens; {arch.name()} has no Transformer stage",
                              field="mask_ratio")
        return _convnext(arch, drop_path) if arch.stem == "patch" else _coatnet(arch, drop_path, init_weights)
    t = arch.transformer
    kwargs = dict(weight_init="" if init_weights else "skip",
        img_size=arch.image_size, num_classes=0, embed_dim=t.width, depth=t.depth, num_heads=t.heads,
        mlp_ratio=t.mlp_ratio, mlp_layer=MLP_LAYERS[t.mlp], class_token=arch.pool == "token",
        global_pool=arch.pool, pos_embed=arch.pos_embed, drop_path_rate=drop_path, patch_drop_rate=mask_ratio,
    )
    if arch.stem == "patch":
        return VisionTransformer(patch_size=arch.patch_size, pre_norm=True, **kwargs)
    # feature_size is given so that HybridEmbed need not run the backbone to find it (slow, and fails on meta).
    embed = partial(HybridEmbed, backbone=ConvStages(arch), proj=False, feature_size=arch.grid_size,
                    feature_ratio=arch.stride)
    return VisionTransformer(patch_size=1, embed_layer=embed, **kwargs)


def _convnext(arch: Arch, drop_path: float) -> ConvNeXt:
    """timm's ConvNeXt: `convnext_tiny` is `depths=(3, 3, 9, 3), dims=(96, 192, 384, 768)` with every default."""
    return ConvNeXt(num_classes=0, depths=tuple(s.depth for s in arch.stages), dims=tuple(s.width for s in arch.stages),
                    kernel_sizes=tuple(s.kernel for s in arch.stages), patch_size=arch.patch_size,
                    drop_path_rate=drop_path)


def _coatnet(arch: Arch, drop_path: float, init_weights: bool) -> MaxxVit:
    """timm's MaxxVit as its `coatnet_N` configs build it (timm.models.maxxvit.model_cfgs), from the arch's stages.

    The configs' other fields are MaxxVit's defaults: BatchNorm MBConv with squeeze-excitation, attention with
    relative position bias, and a head whose hidden layer is as wide as the last stage.
    """
    conv = next(s for s in arch.stages if s.block == "mbconv_bn")
    attention = next((s for s in arch.stages if s.block == "rel_attention"), None)
    cfg = MaxxVitCfg(
        embed_dim=tuple(s.width for s in arch.stages), depths=tuple(s.depth for s in arch.stages),
        block_type=tuple("C" if s.block == "mbconv_bn" else "T" for s in arch.stages), stem_width=arch.stem_width,
        head_hidden_size=arch.stages[-1].width, weight_init="vit_eff" if init_weights else "",
        conv_cfg=MaxxVitConvCfg(expand_ratio=conv.expansion, kernel_size=conv.kernel),
        transformer_cfg=MaxxVitTransformerCfg(dim_head=attention.head_dim, expand_ratio=attention.expansion)
        if attention else MaxxVitTransformerCfg(),
    )
    return MaxxVit(cfg, img_size=arch.image_size, num_classes=0, drop_path_rate=drop_path)


class VisionTower(nn.Module):
    """A CLIP image tower: timm trunk, then open_clip's `TimmModel` head (dropout, bias-free projection)."""

    def __init__(self, arch: Arch, drop_path: float = 0.0, init_weights: bool = True, mask_ratio: float = 0.0):
        super().__init__()
        self.arch = arch
        self.image_size = (arch.image_size, arch.image_size)
        self.trunk = build_trunk(arch, drop_path, init_weights, mask_ratio)
        self.head = nn.Sequential(OrderedDict(
            drop=nn.Dropout(0.0), proj=nn.Linear(self.trunk.num_features, arch.embed_dim, bias=False)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.trunk(x))

    def lock(self, unlocked_groups: int = 0, freeze_bn_stats: bool = False) -> None:
        """Freeze the trunk (open_clip's `lock_image_tower` calls this)."""
        for param in self.trunk.parameters():
            param.requires_grad = False

    @torch.jit.ignore
    def set_grad_checkpointing(self, enable: bool = True) -> None:
        self.trunk.set_grad_checkpointing(enable)


def build_vision_tower(arch: Arch, drop_path: float = 0.0, init_weights: bool = True,
                       mask_ratio: float = 0.0) -> VisionTower:
    """The image tower of `arch`. `drop_path` is the stochastic-depth rate of the last block: of the Transformer
    stage in ViT and hybrid towers, of the last stage in ConvNeXt and CoAtNet (timm's rule, as open_clip does);
    `mask_ratio` the fraction of the Transformer stage's tokens dropped in training (`build_trunk`)."""
    return VisionTower(arch, drop_path, init_weights, mask_ratio)


def text_cfg(text: TextTower) -> CLIPTextCfg:
    return CLIPTextCfg(context_length=text.context_length, vocab_size=text.vocab_size, width=text.width,
                       heads=text.heads, layers=text.layers, mlp_ratio=text.mlp_ratio)


def build_clip(arch: Arch, text: TextTower | None = None, drop_path: float = 0.0,
               init_logit_scale: float | None = None, init_weights: bool = True,
               mask_ratio: float = 0.0) -> open_clip.CustomTextCLIP:
    """An open_clip `CustomTextCLIP` with the candidate image tower and open_clip's text Transformer.

    The CLIP embedding width is `arch.embed_dim`. Like open_clip's ViTamin configs (`custom_text: true`)
    the text tower sits under `.text`, so a ViTamin preset's state dict is open_clip's, key for key.
    """
    text = text or TextTower()
    # open_clip always builds a vision tower from a config; build the smallest one and swap ours in.
    placeholder = CLIPVisionCfg(layers=1, width=8, head_width=8, patch_size=arch.image_size,
                                image_size=arch.image_size)
    kwargs = {} if init_logit_scale is None else {"init_logit_scale": init_logit_scale}
    model = open_clip.CustomTextCLIP(arch.embed_dim, placeholder, text_cfg(text), output_dict=True, **kwargs)
    model.visual = build_vision_tower(arch, drop_path, init_weights, mask_ratio)
    return model
