"""`Arch`: one candidate image tower of the ViTamin family, as data.

An image tower is a stem, zero or more 2D stages (MBConv-LN, ConvNeXt or attention blocks, each stage
halving the resolution in its first block), a strided 3x3 convolution into the Transformer stage (when
there are 2D stages), the Transformer stage itself, pooling and a bias-free projection to the CLIP
embedding. With a `patch` stem and no 2D stages it is a plain ViT.

Archs are frozen and hashable; `arch_id` is a hash of the canonical JSON, so the same tower has the same
id in every process, study and database.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import dataclass, field
from typing import Any

from nas.errors import ConfigError, reject_unknown

CONV_BLOCKS = ("mbconv", "convnext")
STAGE_BLOCKS = (*CONV_BLOCKS, "attention")
MLP_TYPES = ("geglu", "mlp")
STEMS = ("conv", "patch")
POS_EMBEDS = ("learn", "none")
POOLS = ("avg", "token")

#: The MLP ratio each MLP type has unless an arch says otherwise (ViTamin's GeGLU 2, ViT's MLP 4).
DEFAULT_MLP_RATIO = {"geglu": 2.0, "mlp": 4.0}
#: The default depthwise kernel of each conv block (MBConv-LN 3x3 as ViTamin, ConvNeXt 7x7).
DEFAULT_KERNEL = {"mbconv": 3, "convnext": 7}
_STAGE_LETTER = {"mbconv": "C", "convnext": "N", "attention": "A"}


def _require(ok: bool, field_name: str, message: str) -> None:
    if not ok:
        raise ConfigError(message, field=field_name)


def _one_of(value: Any, allowed: tuple[str, ...], field_name: str) -> None:
    _require(value in allowed, field_name, f"{value!r} is not one of {', '.join(allowed)}")


def _positive_int(value: Any, field_name: str) -> None:
    _require(isinstance(value, int) and not isinstance(value, bool) and value > 0, field_name,
             f"must be a positive integer, got {value!r}")


@dataclass(frozen=True)
class Stage:
    """A 2D stage: `depth` blocks of one type at `width` channels; the first block halves the resolution.

    `expansion` is MBConv's inverted-bottleneck ratio (of the output channels, as ViTamin), ConvNeXt's MLP
    ratio, or an attention stage's MLP ratio. `kernel` is the depthwise kernel of conv blocks; `heads`
    and `mlp` belong to attention stages only.
    """

    block: str
    depth: int
    width: int
    expansion: float = 4.0
    kernel: int | None = None
    heads: int | None = None
    mlp: str | None = None

    def __post_init__(self) -> None:
        _one_of(self.block, STAGE_BLOCKS, "block")
        _positive_int(self.depth, "depth")
        _positive_int(self.width, "width")
        _require(self.expansion > 0, "expansion", f"must be positive, got {self.expansion}")
        if self.block == "attention":
            _require(self.kernel is None, "kernel", "attention stages take no kernel")
            _positive_int(self.heads, "heads")
            _require(self.width % self.heads == 0, "heads",
                     f"width {self.width} is not divisible by {self.heads} heads")
            object.__setattr__(self, "mlp", self.mlp or "mlp")
            _one_of(self.mlp, MLP_TYPES, "mlp")
        else:
            _require(self.heads is None and self.mlp is None, "heads",
                     f"{self.block} stages take no heads or mlp")
            object.__setattr__(self, "kernel", self.kernel or DEFAULT_KERNEL[self.block])
            _positive_int(self.kernel, "kernel")
            _require(self.kernel % 2 == 1, "kernel", f"must be odd, got {self.kernel}")

    @property
    def is_conv(self) -> bool:
        return self.block in CONV_BLOCKS

    def name(self) -> str:
        text = f"{_STAGE_LETTER[self.block]}{self.width}x{self.depth}"
        if self.block == "attention":
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
        _require(self.width % self.heads == 0, "heads",
                 f"width {self.width} is not divisible by {self.heads} heads")
        _one_of(self.mlp, MLP_TYPES, "mlp")
        object.__setattr__(self, "mlp_ratio", float(self.mlp_ratio or DEFAULT_MLP_RATIO[self.mlp]))
        _require(self.mlp_ratio > 0, "mlp_ratio", f"must be positive, got {self.mlp_ratio}")

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
    """An image tower. See the module docstring for the layout; `Arch.from_json` reads what `to_json` wrote."""

    transformer: Transformer
    stages: tuple[Stage, ...] = ()
    stem: str = "conv"
    stem_width: int | None = None
    patch_size: int | None = None
    image_size: int = 224
    pos_embed: str = "learn"
    pool: str = "avg"
    embed_dim: int = 512
    _id: str = field(default="", init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "stages", tuple(self.stages))
        _one_of(self.stem, STEMS, "stem")
        _one_of(self.pos_embed, POS_EMBEDS, "pos_embed")
        _one_of(self.pool, POOLS, "pool")
        _positive_int(self.image_size, "image_size")
        _positive_int(self.embed_dim, "embed_dim")
        if self.stem == "conv":
            _positive_int(self.stem_width, "stem_width")
            _require(self.patch_size is None, "patch_size", "a conv stem takes no patch_size")
        else:
            _positive_int(self.patch_size, "patch_size")
            _require(self.stem_width is None, "stem_width", "a patch stem embeds straight to transformer.width")
            _require(not self.stages, "stages", "a patch stem feeds the Transformer stage directly")
        _require(self.image_size % self.stride == 0, "image_size",
                 f"{self.image_size} is not divisible by the tower's stride {self.stride}")
        if self.stages and self.stages[0].block == "attention":
            raise ConfigError("the first stage must be convolutional (mbconv or convnext)", field="stages")
        in_width = self.stem_width
        for i, stage in enumerate(self.stages):
            # ConvNeXt's strided depthwise conv is grouped by input channel: width must be a multiple of it.
            _require(stage.block != "convnext" or stage.width % in_width == 0, f"stages[{i}].width",
                     f"a convnext stage's width ({stage.width}) must be a multiple of its input ({in_width})")
            in_width = stage.width
        object.__setattr__(self, "_id", hashlib.sha256(self.to_json().encode()).hexdigest()[:12])

    @property
    def arch_id(self) -> str:
        """12 hex digits of the SHA-256 of the canonical JSON: stable across processes and machines."""
        return self._id

    @property
    def stride(self) -> int:
        """Total downsampling from pixels to Transformer tokens."""
        if self.stem == "patch":
            return self.patch_size
        return 2 ** (len(self.stages) + 2)

    @property
    def grid_size(self) -> int:
        return self.image_size // self.stride

    @property
    def num_tokens(self) -> int:
        return self.grid_size**2 + (1 if self.pool == "token" else 0)

    def to_dict(self) -> dict[str, Any]:
        data = {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.init}
        data["transformer"] = dataclasses.asdict(self.transformer)
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
            transformer = _make(Transformer, data["transformer"], "transformer")
            return cls(**{**data, "stages": stages, "transformer": transformer})
        except KeyError as err:
            raise ConfigError(f"missing field {err}", source=source) from None
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
        """One line that a person can read: e.g. `C64x2-C128x4-T384x14h6-geglu@224`."""
        parts = []
        if self.stem == "patch":
            parts.append(f"P{self.patch_size}")
        elif not self.stages or self.stem_width != self.stages[0].width:
            parts.append(f"S{self.stem_width}")
        parts += [s.name() for s in self.stages]
        parts.append(self.transformer.name())
        text = "-".join(parts)
        if self.pos_embed == "none":
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
