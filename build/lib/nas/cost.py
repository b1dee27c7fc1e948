"""Exact analytic cost of an arch: parameters, MACs, FLOPs and training memory, without building it.

Two counting conventions, both named wherever they appear:

* **paper** (`gmacs`): what fvcore's `FlopCountAnalysis` reports for the built model, as the ViTamin paper
  and its tables do. Convolutions and linear layers count their multiply-accumulates, LayerNorm counts
  5 per element (fvcore's rule), BatchNorm 2 per element (fvcore's rule in eval mode, in which the authors
  profiled), an adaptive average pool 1 per input element (ConvNeXt's and CoAtNet's heads; a ViT's token
  mean counts nothing), and the attention matmuls (QK^T, AV) are *not* counted, because fvcore has no handle
  for fused `scaled_dot_product_attention`.
* **full** (`gmacs_full`): the paper count plus the attention matmuls, 2 * N^2 * D MACs per attention layer;
  this is what fvcore reports once an SDPA handle is registered (`fvcore_gmacs(..., count_attention=True)`).

FLOPs are 2 x MACs in each convention. Training FLOPs per sample are 3 x the full forward FLOPs
(backward = 2 x forward), as in nanoGPT's `estimate_mfu` and the Chinchilla accounting.

Every formula mirrors a module of `nas.models`: the tests compare parameter counts with the built model for
every preset and for random samples of the search spaces, and MACs with fvcore.
"""

from __future__ import annotations

import functools
from typing import NamedTuple

from nas.arch import Arch, Stage
from nas.presets import TextTower

#: fvcore's LayerNorm count: 5 "flops" per element with an affine transform (fvcore.nn.jit_handles).
LN = 5
#: fvcore's BatchNorm count in eval mode: 2 per element with an affine transform (`batchnorm_flop_jit`).
BN = 2
#: Autograd keeps about this many bytes per element of activation: bf16 autocast on GPU keeps most
#: activations in 2 bytes; fp32 on CPU in 4. Pass `bytes_per_element` explicitly for anything else.
BF16 = 2


def make_divisible(value: float, divisor: int = 8, round_limit: float = 0.9) -> int:
    """timm's channel rounding (`timm.layers.make_divisible`), used for MBConv's expanded width."""
    new = max(divisor, int(value + divisor / 2) // divisor * divisor)
    return new + divisor if new < round_limit * value else new


class Part(NamedTuple):
    """Cost of one part of a tower (a stage, the stem, the head), for tables and for the totals.

    `activations` counts the elements of the tensors autograd keeps for backward, per sample. A NamedTuple,
    not a dataclass: pricing a space makes millions of these, and tuples are several times cheaper to create.
    """

    name: str
    params: int = 0
    macs: int = 0
    attn_macs: int = 0
    activations: int = 0

    def __add__(self, other: Part) -> Part:
        return Part(self.name, self.params + other.params, self.macs + other.macs,
                    self.attn_macs + other.attn_macs, self.activations + other.activations)

    def times(self, n: int) -> Part:
        return Part(self.name, n * self.params, n * self.macs, n * self.attn_macs, n * self.activations)

    def named(self, name: str, activations: int = 0) -> Part:
        """This part under another name, with `activations` more elements kept for backward."""
        return Part(name, self.params, self.macs, self.attn_macs, self.activations + activations)


def _conv(cin: int, cout: int, k: int, hw_out: int, groups: int = 1, bias: bool = True) -> Part:
    """A conv layer; `hw_out` is the number of output pixels."""
    params = cout * (cin // groups) * k * k
    return Part("conv", params + (cout if bias else 0), params * hw_out)


def _ln(channels: int, positions: int) -> Part:
    return Part("ln", 2 * channels, LN * channels * positions)


def _bn(channels: int, positions: int) -> Part:
    return Part("bn", 2 * channels, BN * channels * positions)


def _linear(cin: int, cout: int, tokens: int, bias: bool = True) -> Part:
    return Part("linear", cin * cout + (cout if bias else 0), cin * cout * tokens)


@functools.lru_cache(maxsize=65536)
def _stem(c: int, image_size: int) -> Part:
    hw = (image_size // 2) ** 2
    part = _conv(3, c, 3, hw) + _ln(c, hw) + _conv(c, c, 3, hw)
    # kept: the image, conv1 out (LN in), LN out (GELU in), GELU out (conv2 in)
    return part.named("stem", 3 * image_size**2 + 3 * c * hw)


@functools.lru_cache(maxsize=65536)
def _mbconv(cin: int, cout: int, stride: int, expansion: float, kernel: int, hw_in: int) -> Part:
    hw_out = hw_in // (stride * stride)
    mid = make_divisible(cout * expansion)
    part = _ln(cin, hw_in) + _conv(cin, mid, 1, hw_in) + _conv(mid, mid, kernel, hw_out, groups=mid) \
        + _conv(mid, cout, 1, hw_out)
    # kept: input, LN out, expand out and its GELU, depthwise out and its GELU
    kept = 2 * cin * hw_in + 2 * mid * hw_in + 2 * mid * hw_out
    if cin != cout:  # 1x1 shortcut conv (after the avg-pool when strided)
        part, kept = part + _conv(cin, cout, 1, hw_out), kept + cin * hw_out
    return part.named("mbconv", kept)


@functools.lru_cache(maxsize=65536)
def _convnext(cin: int, cout: int, stride: int, expansion: float, kernel: int, hw_in: int) -> Part:
    hw_out = hw_in // (stride * stride)
    hidden = int(expansion * cout)
    part = _conv(cin, cout, kernel, hw_out, groups=cin) + _ln(cout, hw_out) \
        + _linear(cout, hidden, hw_out) + _linear(hidden, cout, hw_out) + Part("gamma", cout)
    # kept: input, depthwise out, LN out, fc1 out and its GELU, fc2 out (layer-scale input)
    kept = cin * hw_in + 3 * cout * hw_out + 2 * hidden * hw_out
    if cin != cout:  # 1x1 shortcut conv, bias-free (timm's create_conv2d default), after the avg-pool
        part, kept = part + _conv(cin, cout, 1, hw_out, bias=False), kept + cin * hw_out
    return part.named("convnext", kept)


@functools.lru_cache(maxsize=65536)
def _strided_conv(cin: int, cout: int, hw_in: int, kernel: int = 3) -> Part:
    """LayerNorm2d then a stride-2 conv: ViTamin's 3x3 transition into the Transformer stage, ConvNeXt's 2x2
    downsampling at the start of each later stage."""
    part = _ln(cin, hw_in) + _conv(cin, cout, kernel, hw_in // 4)
    return part.named("down", 2 * cin * hw_in)  # kept: input, LN out


@functools.lru_cache(maxsize=65536)
def _block(width: int, mlp: str, hidden: int, tokens: int) -> Part:
    """A pre-norm Transformer block (timm `Block`, open_clip `ResidualAttentionBlock`) on `tokens` tokens."""
    part = _ln(width, tokens) + _linear(width, 3 * width, tokens) + _linear(width, width, tokens) \
        + Part("sdpa", attn_macs=2 * tokens * tokens * width) + _ln(width, tokens)
    # kept: input, LN1 out, q, k, v, SDPA out, proj in, residual, LN2 out
    kept = 9 * width * tokens
    if mlp == "geglu":
        part = part + _ln(width, tokens) + _linear(width, hidden, tokens).times(2) + _linear(hidden, width, tokens)
        kept += width * tokens + 4 * hidden * tokens  # inner LN out; w0 out, GELU out, w1 out, product
    else:
        part = part + _linear(width, hidden, tokens) + _linear(hidden, width, tokens)
        kept += 2 * hidden * tokens  # fc1 out, GELU out
    return part.named("block", kept)


@functools.lru_cache(maxsize=65536)
def _attention_stage(cin: int, stage: Stage, hw_in: int, pos_embed: bool) -> Part:
    tokens = hw_in // 4
    block = _block(stage.width, stage.mlp, int(stage.width * stage.expansion), tokens)
    pos = Part("pos_embed", stage.width * tokens if pos_embed else 0)
    return _strided_conv(cin, stage.width, hw_in) + pos + block.times(stage.depth)


@functools.lru_cache(maxsize=65536)
def _conv_stage(index: int, block: str, cin: int, width: int, depth: int, expansion: float, kernel: int,
                hw: int) -> Part:
    make = _mbconv if block == "mbconv" else _convnext
    first = make(cin, width, 2, expansion, kernel, hw)
    rest = make(width, width, 1, expansion, kernel, hw // 4)
    return (first + rest.times(depth - 1)).named(f"stage{index + 1}:{block}")


@functools.lru_cache(maxsize=65536)
def _tokens_and_head(width: int, tokens: int, embed_dim: int, cls_token: bool, pos_embed: bool,
                     pre_norm: bool) -> tuple[Part, Part]:
    embed = Part("tokens", (width if cls_token else 0) + (width * tokens if pos_embed else 0))
    if pre_norm:  # ViT's pre-norm (open_clip's ln_pre) keeps its input
        embed = embed + _ln(width, tokens).named("ln_pre", width * tokens)
    normed = tokens if cls_token else 1  # token pooling normalises every token, avg pooling the mean
    head = _ln(width, normed) + _linear(width, embed_dim, 1, bias=False)
    return embed.named("tokens"), head.named("head", width * normed)


@functools.lru_cache(maxsize=65536)
def _transformer(width: int, depth: int, mlp: str, hidden: int, tokens: int) -> Part:
    return _block(width, mlp, hidden, tokens).times(depth).named(f"transformer:{mlp}")


@functools.lru_cache(maxsize=65536)
def _patchify_stem(c: int, patch: int, image_size: int) -> Part:
    """timm ConvNeXt's stem: a `patch` x `patch` conv of stride `patch`, then LayerNorm2d."""
    hw = (image_size // patch) ** 2
    part = _conv(3, c, patch, hw) + _ln(c, hw)
    return part.named("stem", 3 * image_size**2 + c * hw)  # kept: the image, conv out (LN in)


@functools.lru_cache(maxsize=65536)
def _convnext_stage(index: int, cin: int, width: int, depth: int, kernel: int, hw_in: int) -> Part:
    """A stage of timm's ConvNeXt: after the first, LayerNorm2d and a 2x2 stride-2 conv; then `depth` blocks."""
    down, hw = (_strided_conv(cin, width, hw_in, kernel=2), hw_in // 4) if index else (Part("down"), hw_in)
    return (down + _convnext(width, width, 1, 4.0, kernel, hw).times(depth)).named(f"stage{index + 1}:convnext")


@functools.lru_cache(maxsize=65536)
def _coatnet_stem(c: int, image_size: int) -> Part:
    """timm MaxxVit's stem: 3x3 stride-2 conv, BatchNorm + GELU, 3x3 conv, both convs bias-free."""
    hw = (image_size // 2) ** 2
    part = _conv(3, c, 3, hw, bias=False) + _bn(c, hw) + _conv(c, c, 3, hw, bias=False)
    return part.named("stem", 3 * image_size**2 + 3 * c * hw)  # kept: the image, conv1 out, BN out, GELU out


@functools.lru_cache(maxsize=65536)
def _mbconv_bn(cin: int, cout: int, stride: int, expansion: float, kernel: int, hw_in: int) -> Part:
    """timm `maxxvit.MbConvBlock` (CoAtNet's): pre-BN, 1x1 expand, BN-GELU, depthwise, BN-GELU, squeeze-excite
    (a quarter of the output width, SiLU), 1x1 project; bias only on the projection and shortcut convs."""
    hw_out = hw_in // (stride * stride)
    mid, squeeze = make_divisible(cout * expansion), int(0.25 * cout)
    part = _bn(cin, hw_in) + _conv(cin, mid, 1, hw_in, bias=False) + _bn(mid, hw_in) \
        + _conv(mid, mid, kernel, hw_out, groups=mid, bias=False) + _bn(mid, hw_out) \
        + _conv(mid, squeeze, 1, 1) + _conv(squeeze, mid, 1, 1) + _conv(mid, cout, 1, hw_out)
    # kept: input, pre-norm out, expand out and its BN out, GELU out, depthwise out, its BN out, GELU out (the
    # excitation's input), the excited map (projection input); the squeeze's vectors are negligible
    kept = 2 * cin * hw_in + 3 * mid * hw_in + 4 * mid * hw_out
    if cin != cout:  # the shortcut: 2x2 average pool, then a 1x1 conv
        part, kept = part + _conv(cin, cout, 1, hw_out), kept + cin * hw_out
    return part.named("mbconv_bn", kept)


@functools.lru_cache(maxsize=65536)
def _rel_attention(cin: int, cout: int, stride: int, heads: int, hidden: int, side: int) -> Part:
    """timm `maxxvit.TransformerBlock2d` (CoAtNet's) with output map `side` x `side`: LayerNorm2d (then a 2x2
    average pool when strided), 1x1-conv qkv and projection, relative position bias over the whole map (a
    (2 side - 1)^2 x heads table), LayerNorm2d and a 1x1-conv MLP."""
    hw_out = side * side
    hw_in = hw_out * stride * stride
    part = _ln(cin, hw_in) + _conv(cin, 3 * cout, 1, hw_out) + Part("rel_pos", (2 * side - 1) ** 2 * heads) \
        + Part("sdpa", attn_macs=2 * hw_out * hw_out * cout) + _conv(cout, cout, 1, hw_out) + _ln(cout, hw_out) \
        + _conv(cout, hidden, 1, hw_out) + _conv(hidden, cout, 1, hw_out)
    # kept: input and LN out at the input size; the pooled map (qkv input) when strided; q, k, v, SDPA out,
    # proj in, LN2 in and out; fc1 out and its GELU; the bias SDPA adds to the scores
    kept = 2 * cin * hw_in + (cin * hw_out if stride > 1 else 0) + 7 * cout * hw_out + 2 * hidden * hw_out \
        + heads * hw_out * hw_out
    if cin != cout:  # the shortcut: 2x2 average pool, then a 1x1 conv
        part, kept = part + _conv(cin, cout, 1, hw_out), kept + cin * hw_out
    return part.named("rel_attention", kept)


@functools.lru_cache(maxsize=65536)
def _coatnet_stage(index: int, cin: int, stage: Stage, side_in: int) -> Part:
    side = side_in // 2
    if stage.block == "mbconv_bn":
        first = _mbconv_bn(cin, stage.width, 2, stage.expansion, stage.kernel, side_in**2)
        rest = _mbconv_bn(stage.width, stage.width, 1, stage.expansion, stage.kernel, side**2)
    else:
        hidden = int(stage.width * stage.expansion)
        first = _rel_attention(cin, stage.width, 2, stage.heads, hidden, side)
        rest = _rel_attention(stage.width, stage.width, 1, stage.heads, hidden, side)
    return (first + rest.times(stage.depth - 1)).named(f"stage{index + 1}:{stage.block}")


@functools.lru_cache(maxsize=65536)
def _pooled_head(width: int, hw: int, embed_dim: int, hidden: bool) -> Part:
    """timm's `NormMlpClassifierHead` (global average pool, LayerNorm, for CoAtNet a tanh hidden layer as wide
    as its input), then the CLIP projection."""
    part = Part("pool", macs=width * hw) + _ln(width, 1)
    if hidden:
        part = part + _linear(width, width, 1)
    part = part + _linear(width, embed_dim, 1, bias=False)
    # kept: the pool's input, LN in and out; the hidden layer's output and its tanh
    return part.named("head", width * hw + (4 if hidden else 2) * width)


def _pure_parts(arch: Arch) -> list[Part]:
    """A tower without a Transformer stage: timm's ConvNeXt (patch stem) or CoAtNet (conv stem)."""
    last = arch.stages[-1].width
    if arch.stem == "patch":
        parts = [_patchify_stem(arch.stages[0].width, arch.patch_size, arch.image_size)]
        cin, hw = arch.stages[0].width, (arch.image_size // arch.patch_size) ** 2
        for i, stage in enumerate(arch.stages):
            parts.append(_convnext_stage(i, cin, stage.width, stage.depth, stage.kernel, hw))
            cin, hw = stage.width, hw // 4 if i else hw
        return [*parts, _pooled_head(last, hw, arch.embed_dim, hidden=False)]
    parts = [_coatnet_stem(arch.stem_width, arch.image_size)]
    cin, side = arch.stem_width, arch.image_size // 2
    for i, stage in enumerate(arch.stages):
        parts.append(_coatnet_stage(i, cin, stage, side))
        cin, side = stage.width, side // 2
    return [*parts, _pooled_head(last, side * side, arch.embed_dim, hidden=True)]


def image_parts(arch: Arch) -> list[Part]:
    """The cost of each part of the image tower, in forward order.

    Each part is one cached call on plain numbers: candidates of a space share most of their parts, which is
    what lets `cost` price 10,000+ candidates per second on one core.
    """
    if arch.transformer is None:
        return _pure_parts(arch)
    t = arch.transformer
    if arch.stem == "patch":
        patch_embed = _conv(3, t.width, arch.patch_size, arch.grid_size**2, bias=False)
        parts = [patch_embed.named("patch_embed", 3 * arch.image_size**2)]
    else:
        parts = [_stem(arch.stem_width, arch.image_size)]
        cin, hw = arch.stem_width, (arch.image_size // 2) ** 2
        for i, stage in enumerate(arch.stages):
            if stage.block == "attention":
                part = _attention_stage(cin, stage, hw, arch.pos_embed == "learn").named(f"stage{i + 1}:attention")
            else:
                part = _conv_stage(i, stage.block, cin, stage.width, stage.depth, stage.expansion, stage.kernel, hw)
            parts.append(part)
            cin, hw = stage.width, hw // 4
        parts.append(_strided_conv(cin, t.width, hw).named("transition"))
    tokens = arch.num_tokens
    embed, head = _tokens_and_head(t.width, tokens, arch.embed_dim, arch.pool == "token", arch.pos_embed == "learn",
                                   arch.stem == "patch")
    parts += [embed, _transformer(t.width, t.depth, t.mlp, t.hidden, tokens), head]
    return parts


@functools.lru_cache(maxsize=65536)
def text_parts(text: TextTower, embed_dim: int) -> tuple[Part, ...]:
    """open_clip's text Transformer (`TextTransformer`), counted the same way."""
    w, n = text.width, text.context_length
    embed = Part("token_embedding", text.vocab_size * w + n * w + 1)  # + CLIP's logit_scale
    blocks = _block(w, "mlp", int(w * text.mlp_ratio), n).times(text.layers)
    head = _ln(w, n) + _linear(w, embed_dim, 1, bias=False)
    return embed, blocks.named("transformer"), head.named("head")


@functools.lru_cache(maxsize=1024)
def _text_total(text: TextTower, embed_dim: int) -> Part:
    return _sum(text_parts(text, embed_dim), "text")


def _sum(parts: tuple[Part, ...] | list[Part], name: str) -> Part:
    _, *columns = zip(*parts)
    return Part(name, *map(sum, columns))


#: The analytic cost under the names results, objectives and constraints use: image tower alone, or with the
#: text tower (`gmacs`, `params_m`); `_full` counts the attention matmuls; `train_gflops` per training sample.
COST_METRICS = ("image_gmacs", "image_gmacs_full", "image_params_m", "gmacs", "gmacs_full", "params_m",
                "train_gflops")


class Cost(NamedTuple):
    """What a candidate costs. MACs in the paper's convention unless the name says `full`.

    Counts are per sample (one image, one caption). `text_*` are zero when no text tower was given.
    """

    image_params: int
    text_params: int
    image_macs: int
    text_macs: int
    image_attn_macs: int
    text_attn_macs: int
    image_activations: int
    text_activations: int
    parts: tuple[Part, ...]

    @property
    def params(self) -> int:
        return self.image_params + self.text_params

    @property
    def image_gmacs(self) -> float:
        """Paper convention (fvcore, attention matmuls excluded)."""
        return self.image_macs / 1e9

    @property
    def text_gmacs(self) -> float:
        return self.text_macs / 1e9

    @property
    def gmacs(self) -> float:
        return self.image_gmacs + self.text_gmacs

    @property
    def image_gmacs_full(self) -> float:
        return (self.image_macs + self.image_attn_macs) / 1e9

    @property
    def gmacs_full(self) -> float:
        return (self.image_macs + self.image_attn_macs + self.text_macs + self.text_attn_macs) / 1e9

    @property
    def gflops(self) -> float:
        """2 x MACs, paper convention."""
        return 2 * self.gmacs

    @property
    def gflops_full(self) -> float:
        """2 x MACs including attention: the forward FLOPs that MFU is measured against."""
        return 2 * self.gmacs_full

    @property
    def train_gflops(self) -> float:
        """Forward + backward FLOPs per sample (3 x forward, full convention)."""
        return 3 * self.gflops_full

    def activation_bytes(self, batch: int, bytes_per_element: int = BF16) -> int:
        """Activations autograd keeps for backward for a batch (no gradient checkpointing)."""
        return batch * (self.image_activations + self.text_activations) * bytes_per_element

    def train_memory_bytes(self, batch: int, bytes_per_element: int = BF16) -> int:
        """Estimated peak training memory: fp32 weights, gradients and AdamW's two moments, plus activations."""
        return 16 * self.params + self.activation_bytes(batch, bytes_per_element)

    def metrics(self) -> dict[str, float]:
        """The cost under the `COST_METRICS` names."""
        return {"image_gmacs": self.image_gmacs, "image_gmacs_full": self.image_gmacs_full,
                "image_params_m": self.image_params / 1e6, "gmacs": self.gmacs, "gmacs_full": self.gmacs_full,
                "params_m": self.params / 1e6, "train_gflops": self.train_gflops}


def cost(arch: Arch, text: TextTower | None = None) -> Cost:
    """The exact parameter and MAC counts of `build_clip(arch, text)` (or the image tower alone)."""
    image = image_parts(arch)
    img = _sum(image, "image")
    txt = _text_total(text, arch.embed_dim) if text is not None else Part("text")
    return Cost(img.params, txt.params, img.macs, txt.macs, img.attn_macs, txt.attn_macs,
                img.activations, txt.activations, tuple(image))


def fvcore_gmacs(arch: Arch, text: TextTower | None = None, count_attention: bool = False) -> tuple[float, float]:
    """(image, text) GMACs of the built model as fvcore counts them: the cross-check of `cost`.

    With `count_attention`, a handle for `aten::scaled_dot_product_attention` is registered so that the
    attention matmuls are counted (the full convention); without it, fvcore skips them (the paper's).
    Slow (seconds per model): for verification, not for filtering a space.
    """
    import torch
    from fvcore.nn import FlopCountAnalysis

    from nas.models import build_clip

    # The text tower in train mode: no MHA fast path (pitfalls.md). The image tower in eval mode, as the authors
    # profiled: fvcore counts BatchNorm 2 per element in eval mode, 5 in train mode.
    model = build_clip(arch, text or TextTower()).train()
    model.visual.eval()

    class EncodeText(torch.nn.Module):
        def __init__(self, clip: torch.nn.Module):
            super().__init__()
            self.clip = clip

        def forward(self, tokens: torch.Tensor) -> torch.Tensor:
            return self.clip.encode_text(tokens)

    def count(module: torch.nn.Module, example: torch.Tensor) -> float:
        analysis = FlopCountAnalysis(module, example).unsupported_ops_warnings(False).uncalled_modules_warnings(False)
        if count_attention:
            analysis.set_op_handle("aten::scaled_dot_product_attention", _sdpa_macs)
        with torch.no_grad():
            return analysis.total() / 1e9

    image = count(model.visual, torch.zeros(1, 3, arch.image_size, arch.image_size))
    text_gmacs = count(EncodeText(model), torch.zeros(1, model.context_length, dtype=torch.long)) if text else 0.0
    return image, text_gmacs


def _sdpa_macs(inputs: list, outputs: list) -> int:
    """QK^T and AV of `scaled_dot_product_attention(q, k, v)`: 2 * batch * heads * Nq * Nk * head_dim."""
    from fvcore.nn.jit_handles import get_shape

    q, k = get_shape(inputs[0]), get_shape(inputs[1])
    batch_heads = 1
    for dim in q[:-2]:
        batch_heads *= dim
    return 2 * batch_heads * q[-2] * k[-2] * q[-1]
