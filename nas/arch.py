"""`Arch`: one candidate image tower of the ViTamin family or of the families it is compared with, as data.

Four layouts, each what one timm model file builds, told apart by the stem and whether a Transformer follows:

* **hybrid** (ViTamin; conv stem, Transformer): a conv stem, zero or more 2D stages (MBConv-LN, ConvNeXt or
  attention blocks, each stage halving the resolution in its first block), a strided 3x3 convolution into
  the Transformer stage, the Transformer stage itself, pooling and a bias-free projection to the CLIP
  embedding (timm's `vitamin.py`);
* **ViT** (patch stem, Transformer, no 2D stages): patch embedding straight into the Transformer;
* **ConvNeXt** (patch stem, four `convnext` stages, no Transformer): timm's `ConvNeXt`, whose 4x4 patchify
  stem keeps the first stage at stride 4 and whose later stages each begin with LayerNorm and a 2x2
  stride-2 convolution; global average pooling, LayerNorm, the CLIP projection;
* **CoAtNet** (conv stem, `mbconv_bn` and `rel_attention` stages, no Transformer): timm's `MaxxVit` as its
  `coatnet_*` configs build it: a BatchNorm stem, MBConv blocks with BatchNorm and squeeze-excitation,
  Transformer blocks on the 2D map with relative position bias, each stage halving the resolution in its
  first block; global average pooling, LayerNorm, a tanh hidden layer, the CLIP projection.

Archs are frozen and hashable; `arch_id` is a hash of the canonical JSON, so the same tower has the same
id in every process, study and database.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import dataclass, field
from typing import Any

from nas.errors import ConfigError, is_int, reject_unknown, require, require_choice

#: Blocks of the stages before a Transformer stage (and, `convnext`, of a ConvNeXt tower).
HYBRID_BLOCKS = ("mbconv", "convnext", "attention")
#: CoAtNet's blocks (timm `maxxvit.MbConvBlock`, `maxxvit.TransformerBlock2d`): a tower of its own.
COATNET_BLOCKS = ("mbconv_bn", "rel_attention")
STAGE_BLOCKS = (*HYBRID_BLOCKS, *COATNET_BLOCKS)
#: Stage blocks that attend (they take heads and an MLP type, no kernel).
ATTENTION_BLOCKS = ("attention", "rel_attention")
MLP_TYPES = ("geglu", "mlp")
STEMS = ("conv", "patch")
POS_EMBEDS = ("learn", "none")
POOLS = ("avg", "token")

#: The MLP ratio each MLP type has unless an arch says otherwise (ViTamin's GeGLU 2, ViT's MLP 4).
DEFAULT_MLP_RATIO = {"geglu": 2.0, "mlp": 4.0}
#: The default depthwise kernel of each conv block (MBConv 3x3 as ViTamin and CoAtNet, ConvNeXt 7x7).
DEFAULT_KERNEL = {"mbconv": 3, "convnext": 7, "mbconv_bn": 3}
#: The letter of each stage block in an arch's name and family: MBConv-LN, ConvNeXt, attention with absolute
#: position embedding, CoAtNet's MBConv-BN and its relative-position attention.
STAGE_LETTER = {"mbconv": "C", "convnext": "N", "attention": "A", "mbconv_bn": "M", "rel_attention": "R"}


def _positive_int(value: Any, field_name: str) -> None:
    require(is_int(value, 1), field_name, f"must be a positive integer, got {value!r}")


@dataclass(frozen=True)
class Stage:
    """A 2D stage: `depth` blocks of one type at `width` channels; every stage but a ConvNeXt's first halves the
    resolution once.

    `expansion` is MBConv's inverted-bottleneck ratio (of the output channels, as ViTamin and CoAtNet),
    ConvNeXt's MLP ratio, or an attention stage's MLP ratio. `kernel` is the depthwise kernel of conv
    blocks; `heads` and `mlp` belong to attention stages only (CoAtNet's `rel_attention` has a plain MLP).
    """

    block: str
    depth: int
    width: int
    expansion: float = 4.0
    kernel: int | None = None
    heads: int | None = None
    mlp: str | None = None

    def __post_init__(self) -> None:
        require_choice(self.block, STAGE_BLOCKS, "block")
        _positive_int(self.depth, "depth")
        _positive_int(self.width, "width")
        require(self.expansion > 0, "expansion", f"must be positive, got {self.expansion}")
        if self.block in ATTENTION_BLOCKS:
            require(self.kernel is None, "kernel", "attention stages take no kernel")
            _positive_int(self.heads, "heads")
            require(self.width % self.heads == 0, "heads",
                    f"width {self.width} is not divisible by {self.heads} heads")
            object.__setattr__(self, "mlp", self.mlp or "mlp")
            require_choice(self.mlp, MLP_TYPES if self.block == "attention" else ("mlp",), "mlp")
        else:
            require(self.heads is None and self.mlp is None, "heads",
                    f"{self.block} stages take no heads or mlp")
            object.__setattr__(self, "kernel", self.kernel or DEFAULT_KERNEL[self.block])
            _positive_int(self.kernel, "kernel")
            require(self.kernel % 2 == 1, "kernel", f"must be odd, got {self.kernel}")

    @property
    def head_dim(self) -> int | None:
        return self.width // self.heads if self.heads else None

    def name(self) -> str:
        text = f"{STAGE_LETTER[self.block]}{self.width}x{self.depth}"
        if self.block in ATTENTION_BLOCKS:
            text += f"h{self.heads}"
        elif self.kernel != DEFAULT_KERNEL[self.block]:
            text += f"k{self.kernel}"
        if self.expansion != 4.0:
            text += f"e{self.expansion:g}"
        if self.block == "attention" and self.mlp != "mlp":
            text += f"-{self.mlp}"
        return text


@dataclass(frozen=True)
class Transformer:
    """The Transformer stage on flattened tokens (ViTamin's stage 3): pre-norm blocks, MLP or GeGLU."""

    width: int
    depth: int
    heads: int
    mlp: str = "geglu"
    mlp_ratio: float | None = None

    def __post_init__(self) -> None:
        _positive_int(self.width, "width")
        _positive_int(self.depth, "depth")
        _positive_int(self.heads, "heads")
        require(self.width % self.heads == 0, "heads",
                f"width {self.width} is not divisible by {self.heads} heads")
        require_choice(self.mlp, MLP_TYPES, "mlp")
        object.__setattr__(self, "mlp_ratio", float(self.mlp_ratio or DEFAULT_MLP_RATIO[self.mlp]))
        require(self.mlp_ratio > 0, "mlp_ratio", f"must be positive, got {self.mlp_ratio}")

    @property
    def head_dim(self) -> int:
        return self.width // self.heads

    @property
    def hidden(self) -> int:
        return int(self.width * self.mlp_ratio)

    def name(self) -> str:
        text = f"T{self.width}x{self.depth}h{self.heads}-{self.mlp}"
        if self.mlp_ratio != DEFAULT_MLP_RATIO[self.mlp]:
            text += f"{self.mlp_ratio:g}"
        return text


@dataclass(frozen=True)
class Arch:
    """An image tower. See the module docstring for the layouts; `Arch.from_json` reads what `to_json` wrote.

    `pos_embed` defaults to learned absolute position embeddings where there is a Transformer stage and to
    none where there is not (ConvNeXt has none; CoAtNet's attention has relative position bias instead).
    """

    transformer: Transformer | None = None
    stages: tuple[Stage, ...] = ()
    stem: str = "conv"
    stem_width: int | None = None
    patch_size: int | None = None
    image_size: int = 224
    pos_embed: str | None = None
    pool: str = "avg"
    embed_dim: int = 512
    _id: str = field(default="", init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "stages", tuple(self.stages))
        if self.pos_embed is None:
            object.__setattr__(self, "pos_embed", "learn" if self.transformer else "none")
        require_choice(self.stem, STEMS, "stem")
        require_choice(self.pos_embed, POS_EMBEDS, "pos_embed")
        require_choice(self.pool, POOLS, "pool")
        _positive_int(self.image_size, "image_size")
        _positive_int(self.embed_dim, "embed_dim")
        if self.stem == "conv":
            _positive_int(self.stem_width, "stem_width")
            require(self.patch_size is None, "patch_size", "a conv stem takes no patch_size")
        else:
            _positive_int(self.patch_size, "patch_size")
            require(self.stem_width is None, "stem_width",
                    "a patch stem embeds straight to the width of the stage after it")
        if self.stages and self.stages[0].block in ATTENTION_BLOCKS:
            raise ConfigError("the first stage must be convolutional", field="stages")
        if self.transformer is None:
            self._check_pure_tower()
        else:
            self._check_hybrid_tower()
        require(self.image_size % self.stride == 0, "image_size",
                f"{self.image_size} is not divisible by the tower's stride {self.stride}")
        object.__setattr__(self, "_id", hashlib.sha256(self.to_json().encode()).hexdigest()[:12])

    def _check_hybrid_tower(self) -> None:
        require(self.stem == "conv" or not self.stages, "stages", "a patch stem feeds the Transformer stage directly")
        in_width = self.stem_width
        for i, stage in enumerate(self.stages):
            require(stage.block in HYBRID_BLOCKS, f"stages[{i}].block",
                    f"{stage.block} stages make a CoAtNet tower, which has no Transformer stage")
            # ConvNeXt's strided depthwise conv is grouped by input channel: width must be a multiple of it.
            require(stage.block != "convnext" or stage.width % in_width == 0, f"stages[{i}].width",
                    f"a convnext stage's width ({stage.width}) must be a multiple of its input ({in_width})")
            in_width = stage.width

    def _check_pure_tower(self) -> None:
        """A tower without a Transformer stage is one of timm's: a ConvNeXt or a CoAtNet (MaxxVit)."""
        require(bool(self.stages), "transformer", "a tower needs a Transformer stage, 2D stages or both")
        require(self.pos_embed == "none", "pos_embed", "ConvNeXt and CoAtNet towers have no absolute position "
                                                        "embedding")
        require(self.pool == "avg", "pool", "ConvNeXt and CoAtNet towers pool by global average")
        if self.stem == "patch":
            for i, stage in enumerate(self.stages):
                require(stage.block == "convnext", f"stages[{i}].block",
                        "a patch stem without a Transformer stage makes a ConvNeXt: every stage is convnext")
                require(stage.expansion == 4.0, f"stages[{i}].expansion", "timm's ConvNeXt has MLP ratio 4")
            require(len(self.stages) == 4, "stages", f"timm's ConvNeXt has four stages, got {len(self.stages)}")
            # timm's ConvNeXt strides its first stage too below patch 4, and dilates instead of striding above.
            require(self.patch_size == 4, "patch_size", f"timm's ConvNeXt stem is a 4x4 patchify conv, got "
                                                         f"{self.patch_size}")
            return
        for i, stage in enumerate(self.stages):
            require(stage.block in COATNET_BLOCKS, f"stages[{i}].block",
                    "a conv stem without a Transformer stage makes a CoAtNet: every stage is mbconv_bn or "
                    "rel_attention")
        # MaxxVit configures all its conv blocks with one MaxxVitConvCfg and all attention blocks with one
        # MaxxVitTransformerCfg.
        for block, fields in (("mbconv_bn", ("expansion", "kernel")), ("rel_attention", ("expansion", "head_dim"))):
            stages = [(i, s) for i, s in enumerate(self.stages) if s.block == block]
            for name in fields:
                for i, stage in stages[1:]:
                    require(getattr(stage, name) == getattr(stages[0][1], name), f"stages[{i}].{name}",
                            f"every {block} stage of a CoAtNet shares one {name} (timm's MaxxVit), "
                            f"{getattr(stage, name)} != {getattr(stages[0][1], name)}")

    @property
    def arch_id(self) -> str:
        """12 hex digits of the SHA-256 of the canonical JSON: stable across processes and machines."""
        return self._id

    @property
    def stride(self) -> int:
        """Total downsampling from pixels to Transformer tokens (or the last feature map)."""
        if self.stem == "patch":
            return self.patch_size * 2 ** max(len(self.stages) - 1, 0)
        return 2 ** (len(self.stages) + (2 if self.transformer else 1))

    @property
    def family(self) -> str:
        """The layout without its sizes: `C-C-T/geglu` (ViTamin), `P-T/mlp` (ViT), `P-N-N-N-N` (ConvNeXt), `M-M-R-R`
        (CoAtNet). Stage letters are `STAGE_LETTER`'s, `P` a patch stem, `T` the Transformer stage and its MLP.

        Scaling studies compare members of one family at several widths and depths.
        """
        letters = ["P"] if self.stem == "patch" else []
        letters += [STAGE_LETTER[s.block] for s in self.stages]
        if self.transformer is None:
            return "-".join(letters)
        return "-".join([*letters, "T"]) + f"/{self.transformer.mlp}"

    @property
    def grid_size(self) -> int:
        return self.image_size // self.stride

    @property
    def num_tokens(self) -> int:
        return self.grid_size**2 + (1 if self.pool == "token" else 0)

    def to_dict(self) -> dict[str, Any]:
        data = {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.init}
        data["transformer"] = dataclasses.asdict(self.transformer) if self.transformer else None
        data["stages"] = [dataclasses.asdict(s) for s in self.stages]
        return data

    def to_json(self, indent: int | None = None) -> str:
        """Canonical JSON: sorted keys, no whitespace unless `indent` is given."""
        separators = (",", ":") if indent is None else None
        return json.dumps(self.to_dict(), sort_keys=True, indent=indent, separators=separators)

    @classmethod
    def from_dict(cls, data: dict[str, Any], source: str | None = None) -> Arch:
        reject_unknown(data, (f.name for f in dataclasses.fields(cls) if f.init), source=source)
        try:
            stages = tuple(_make(Stage, s, f"stages[{i}]") for i, s in enumerate(data.get("stages", ())))
            raw = data.get("transformer")
            transformer = None if raw is None else _make(Transformer, raw, "transformer")
            return cls(**{**data, "stages": stages, "transformer": transformer})
        except ConfigError as err:
            raise ConfigError(err.message, source=source, field=err.field) from None

    @classmethod
    def from_json(cls, text: str, source: str | None = None) -> Arch:
        try:
            data = json.loads(text)
        except json.JSONDecodeError as err:
            raise ConfigError(f"not valid JSON ({err})", source=source) from None
        if not isinstance(data, dict):
            raise ConfigError("an arch is a JSON object", source=source)
        return cls.from_dict(data, source)

    def name(self) -> str:
        """One line that a person can read: e.g. `C64x2-C128x4-T384x14h6-geglu@224` (ViTamin-S),
        `P4-N96x3-N192x3-N384x9-N768x3@224` (ConvNeXt-T), `S64-M96x2-M192x3-R384x5h12-R768x2h24@224` (CoAtNet-0)."""
        parts = []
        if self.stem == "patch":
            parts.append(f"P{self.patch_size}")
        elif not self.stages or self.stem_width != self.stages[0].width:
            parts.append(f"S{self.stem_width}")
        parts += [s.name() for s in self.stages]
        if self.transformer:
            parts.append(self.transformer.name())
        text = "-".join(parts)
        if self.transformer and self.pos_embed == "none":
            text += "-nopos"
        if self.pool == "token":
            text += "-cls"
        return f"{text}@{self.image_size}"

    def replace(self, **changes: Any) -> Arch:
        return dataclasses.replace(self, **changes)


def _make(kind: type, data: Any, where: str) -> Any:
    if not isinstance(data, dict):
        raise ConfigError(f"expected a mapping, got {type(data).__name__}", field=where)
    reject_unknown(data, (f.name for f in dataclasses.fields(kind)), field=where)
    try:
        return kind(**data)
    except ConfigError as err:
        raise ConfigError(err.message, field=f"{where}.{err.field}" if err.field else where) from None
    except TypeError as err:
        raise ConfigError(str(err), field=where) from None
