"""How one run trains: `TrainConfig`, the recipe's defaults, the budget and the engineering options, validated
where it is made. Kept apart from the trainer (`nas.train`) so that a study, and every command that reads one
back from a results database, loads without torch.

    config = TrainConfig(samples=2_000_000, batch_size=1024, lr=5e-4, warmup=500)
    config = dataclasses.replace(config, accum_freq=2)   # derived, never rebuilt from a dict
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, fields
from typing import Any

from nas.errors import reject_unknown, require, require_choice, require_int

LOSSES = ("clip", "siglip")
PRECISIONS = ("auto", "bf16", "fp32")


@dataclass(frozen=True)
class TrainConfig:
    """How to train: the recipe's defaults, the budget, and the engineering options.

    `samples` is the budget in samples seen over all ranks; `batch_size` is the global batch of one
    optimizer step (the contrastive batch), split over ranks and then into `accum_freq` micro-batches,
    as open_clip_train does with `--accum-freq` (features of the whole batch are the negatives).
    `warmup` is in optimizer steps. `rungs` are samples-seen thresholds; the end of the budget is always
    one. `checkpoint_every` is in samples; None writes ten checkpoints over the run, 0 only at rungs.
    `pretrained` is a checkpoint or export whose whole model the run starts from (a fine-tune: open_clip_train's
    --pretrained); the optimizer and schedule start afresh.
    `workers` are data loader processes per rank (with a `nas.data.DataSource`).
    """

    samples: int
    batch_size: int = 256
    lr: float = 5e-4
    betas: tuple[float, float] = (0.9, 0.98)
    eps: float = 1e-6
    weight_decay: float = 0.2
    warmup: int = 500
    loss: str = "clip"
    drop_path: float = 0.1
    mask_ratio: float = 0.0
    precision: str = "auto"
    compile: bool = False
    compile_backend: str = "inductor"
    grad_checkpointing: bool = False
    accum_freq: int = 1
    grad_clip_norm: float | None = None
    lock_text: str | None = None
    lock_text_unlocked_layers: int = 0
    pretrained: str | None = None
    rungs: tuple[int, ...] = ()
    checkpoint_every: int | None = None
    log_every: int = 10
    eval_batch_size: int = 256
    eval_workers: int = 0
    workers: int = 2
    seed: int = 0
    peak_tflops: float | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "betas", tuple(self.betas))
        object.__setattr__(self, "rungs", tuple(sorted(set(self.rungs))))
        for name in ("samples", "batch_size", "accum_freq", "log_every", "eval_batch_size"):
            require_int(getattr(self, name), name, low=1)
        for name in ("warmup", "lock_text_unlocked_layers", "eval_workers", "workers", "seed"):
            require_int(getattr(self, name), name, low=0)
        require_choice(self.loss, LOSSES, "loss")
        require_choice(self.precision, PRECISIONS, "precision")
        for name in ("lr", "eps"):
            require(getattr(self, name) > 0, name, f"must be positive, got {getattr(self, name)}")
        require(self.weight_decay >= 0, "weight_decay", f"must be >= 0, got {self.weight_decay}")
        require(0 <= self.drop_path < 1, "drop_path", f"must be in [0, 1), got {self.drop_path}")
        require(isinstance(self.mask_ratio, (int, float)) and not isinstance(self.mask_ratio, bool)
                and 0 <= self.mask_ratio < 1, "mask_ratio",
                f"must be a fraction of the tokens in [0, 1), got {self.mask_ratio!r}")
        require(len(self.betas) == 2 and all(0 <= b < 1 for b in self.betas), "betas",
                f"must be two numbers in [0, 1), got {self.betas}")
        require(self.batch_size % self.accum_freq == 0, "accum_freq",
                f"batch_size {self.batch_size} does not split into {self.accum_freq} micro-batches")
        require(self.warmup < self.steps, "warmup",
                f"{self.warmup} warmup steps leave nothing of the run's {self.steps} steps")
        require(all(0 < r <= self.samples for r in self.rungs), "rungs",
                f"every rung must be in (0, samples={self.samples}], got {list(self.rungs)}")
        require(self.checkpoint_every is None or self.checkpoint_every >= 0, "checkpoint_every",
                f"must be >= 0 or null, got {self.checkpoint_every}")
        require(self.grad_clip_norm is None or self.grad_clip_norm > 0, "grad_clip_norm",
                f"must be positive or null, got {self.grad_clip_norm}")

    @property
    def steps(self) -> int:
        """Optimizer steps in the budget (the last one smaller when the budget is not a multiple)."""
        return math.ceil(self.samples / self.batch_size)

    @property
    def checkpoint_interval(self) -> int:
        if self.checkpoint_every is None:
            return max(self.batch_size, self.samples // 10)
        return self.checkpoint_every

    def to_dict(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in fields(self)}

    @classmethod
    def from_dict(cls, values: Mapping[str, Any], source: str | None = None) -> TrainConfig:
        reject_unknown(values, (f.name for f in fields(cls)), source=source)
        return cls(**values)
