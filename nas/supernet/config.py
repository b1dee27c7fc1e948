"""`SupernetConfig`: what a supernet is of and how its sandwich steps train it; torch-free, validated where made.

    config = SupernetConfig(image_size=32, random_subnets=2, distill_weight=1.0)
    config = dataclasses.replace(config, random_subnets=4)
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, fields
from typing import Any

from nas.errors import is_int, reject_unknown, require, require_int


@dataclass(frozen=True)
class SupernetConfig:
    """`image_size` is the one resolution the supernet is built and trained at (None: the space's largest; its
    learned position embeddings belong to one token grid). Each sandwich step trains the largest subnet, the
    smallest and `random_subnets` uniformly sampled ones (BigNAS); every subnet but the largest adds
    `distill_weight` times the KL divergence of its image-text logits from the largest one's (in-place
    distillation, in both directions, as the CLIP loss) to its CLIP loss."""

    image_size: int | None = None
    random_subnets: int = 2
    distill_weight: float = 1.0

    def __post_init__(self) -> None:
        require(self.image_size is None or is_int(self.image_size, 1), "image_size",
                f"must be a positive integer or null, got {self.image_size!r}")
        require_int(self.random_subnets, "random_subnets", low=0)
        require(isinstance(self.distill_weight, (int, float)) and not isinstance(self.distill_weight, bool)
                and self.distill_weight >= 0, "distill_weight", f"must be a number >= 0, got {self.distill_weight!r}")

    @property
    def subnets_per_step(self) -> int:
        return 2 + self.random_subnets

    def to_dict(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in fields(self)}

    @classmethod
    def from_dict(cls, values: Mapping[str, Any], source: str | None = None) -> SupernetConfig:
        reject_unknown(values, (f.name for f in fields(cls)), source=source)
        return cls(**values)
