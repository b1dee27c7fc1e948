"""Which data a run trains on, and how one run reads it: the configs of the training stream.

    source = DataSource("data/shards", subset="keep.npy", augment="vitamin_long")    # a study's `data:`
    settings = StreamSettings(batch_size=256, image_size=224, samples=1_000_000)    # what only the run knows
    loader, stats = nas.data.stream(source, settings)

Kept apart from the stream itself (`nas.data.streaming`, which needs torch and webdataset) so that a study, and
every command that reads one back from a results database, loads without them.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from typing import Any

from nas.data.limits import MAX_PIXELS, MIN_SIDE, ImageLimits
from nas.data.stall import DEFAULT_TIMEOUT_S
from nas.errors import ConfigError, reject_unknown, require, require_int


@dataclass(frozen=True)
class Augment:
    """Training augmentation, in open_clip's `AugmentationCfg` terms.

    The default is open_clip's (RandomResizedCrop scale 0.9-1.0, nothing else); `vitamin_long()` is the
    ViTamin long schedule's (scale 0.4-1.0, colour jitter 0.32/0.32/0.32/0.08 with p=0.8, grayscale p=0.2).
    """

    scale: tuple[float, float] = (0.9, 1.0)
    color_jitter: tuple[float, float, float, float] | None = None
    color_jitter_prob: float = 0.0
    grayscale_prob: float = 0.0

    def __post_init__(self) -> None:
        low, high = self.scale
        if not 0 < low <= high <= 1:
            raise ConfigError(f"needs 0 < low <= high <= 1, got {self.scale}", field="augment.scale")
        if self.color_jitter_prob and (self.color_jitter is None or len(self.color_jitter) != 4):
            raise ConfigError("color_jitter_prob needs color_jitter = (brightness, contrast, saturation, hue)",
                              field="augment.color_jitter")
        for name in ("color_jitter_prob", "grayscale_prob"):
            if not 0 <= getattr(self, name) <= 1:
                raise ConfigError(f"must be a probability, got {getattr(self, name)}", field=f"augment.{name}")

    @classmethod
    def vitamin_long(cls) -> Augment:
        return cls(scale=(0.4, 1.0), color_jitter=(0.32, 0.32, 0.32, 0.08), color_jitter_prob=0.8,
                   grayscale_prob=0.2)

    @classmethod
    def from_value(cls, value: Augment | str | Mapping | None) -> Augment:
        """From a study file: a preset name (`default`, `vitamin_long`) or a mapping of fields."""
        if value is None or isinstance(value, Augment):
            return value or cls()
        if isinstance(value, str):
            presets = {"default": cls, "vitamin_long": cls.vitamin_long}
            if value not in presets:
                raise ConfigError(f"unknown preset {value!r}; use one of {sorted(presets)}", field="augment")
            return presets[value]()
        if not isinstance(value, Mapping):
            raise ConfigError(f"must be a preset name or a mapping, got {value!r}", field="augment")
        reject_unknown(value, (f.name for f in fields(cls)), field="augment")
        return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in value.items()})


@dataclass(frozen=True)
class DataSource:
    """Which data: the shards and how their samples are chosen and captioned, as `data:` of a study file says.

    urls: shard source(s) (see `nas.data.shards`). resample: draw shards with replacement (open_clip's
    `--dataset-resampled`). shards / shard_selection: use the first or a seeded random K shards. subset: a
    uid allow-list (.npy or .parquet), or a directory of per-shard files whose `uid` column is each shard's
    allow-list (read when the shard is opened). captions / metadata: caption each sample from its metadata row instead
    of its .txt, with a template over the parquet's columns (e.g. "{color} {shape}"; a sample without a row
    is skipped and counted); `metadata` is a directory of per-shard files, `<shard>.parquet`, each read when
    its shard is opened (`nas.data.shard_metadata`). augment: an `Augment`, its fields, or "vitamin_long".
    tokenizer: open_clip's tokenizer name. shuffle_buffer: samples shuffled together (encoded, before
    decoding). max_pixels / min_side: images above max_pixels (width x height; default 40 megapixels) are
    skipped as `too_large` from their header, before any decoding (decompression bombs), and images with a
    side below min_side (default 8 px) as `too_small` (`nas.data.limits`). timeout: seconds a read may wait for
    data from a shard's command or URL (default 600) before the trial fails with "data stalled"
    (`nas.data.stall`).

    How one run reads it (batch size, resolution, budget, resume point, seed, workers) is that run's
    business: `StreamSettings`, given to `stream` together with the source.
    """

    urls: str | tuple[str, ...]
    resample: bool = False
    shards: int | None = None
    shard_selection: str = "first"
    subset: str | None = None
    captions: str | None = None
    metadata: str | None = None
    shuffle_buffer: int = 5000
    augment: Augment = field(default_factory=Augment)
    tokenizer: str = "ViT-B-32"
    max_pixels: int = MAX_PIXELS
    min_side: int = MIN_SIDE
    timeout: float = DEFAULT_TIMEOUT_S

    def __post_init__(self) -> None:
        if not isinstance(self.urls, str):
            object.__setattr__(self, "urls", tuple(self.urls))
        object.__setattr__(self, "augment", Augment.from_value(self.augment))
        require_int(self.shuffle_buffer, "shuffle_buffer", 1)
        require_int(self.max_pixels, "max_pixels", 1)
        require_int(self.min_side, "min_side", 1)
        require(isinstance(self.timeout, (int, float)) and not isinstance(self.timeout, bool) and self.timeout > 0,
                "timeout", f"must be a number of seconds > 0, got {self.timeout!r}")
        if self.shards is not None:
            require_int(self.shards, "shards", 1)
        if (self.captions is None) != (self.metadata is None):
            raise ConfigError("captions from the metadata need both a template (captions) and the parquet "
                              "(metadata)", field="captions" if self.captions is None else "metadata")

    @property
    def limits(self) -> ImageLimits:
        return ImageLimits(self.max_pixels, self.min_side)

    @classmethod
    def from_dict(cls, values: Mapping[str, Any], source: str | None = None) -> DataSource:
        """From a study file's mapping; an unknown key is an error that names it and the file."""
        reject_unknown(values, (f.name for f in fields(cls)), source=source)
        if "urls" not in values:
            raise ConfigError("missing (a path, brace pattern, URL or list of them)", source=source, field="urls")
        try:
            return cls(**values)
        except ConfigError as err:
            raise ConfigError(err.message, source=source, field=err.field) from err


@dataclass(frozen=True)
class StreamSettings:
    """How one run reads a `DataSource`: what only the run knows (the arguments of `nas.data.connect`, as of litgpt's
    `DataModule.connect`).

    batch_size: per rank. image_size: the candidate's resolution. samples: the budget over all ranks (None:
    one pass). start_sample: resume a budgeted stream here (a multiple of batch_size * world_size). seed:
    the run's seed (shard order, shuffle, augmentation). workers: loader processes per rank. context_length:
    the text tower's. train: shuffle and augment (else center crop, shard order). pin_memory: for a GPU.
    """

    batch_size: int = 256
    image_size: int = 224
    samples: int | None = None
    start_sample: int = 0
    seed: int = 0
    workers: int = 2
    context_length: int = 77
    train: bool = True
    pin_memory: bool = False

    def __post_init__(self) -> None:
        for name, low in (("batch_size", 1), ("image_size", 1), ("workers", 0), ("start_sample", 0),
                          ("context_length", 1)):
            require_int(getattr(self, name), name, low)
        if self.samples is not None:
            require_int(self.samples, "samples", 1)
        if self.start_sample and self.samples is None:
            raise ConfigError("resuming needs a budget (samples)", field="start_sample")


SOURCE_FIELDS = frozenset(f.name for f in fields(DataSource))
SETTINGS_FIELDS = frozenset(f.name for f in fields(StreamSettings))
