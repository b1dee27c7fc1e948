"""A run's checkpoint: where it stands (`RunState`), what it is (its identity, checked before resuming), every
rank's RNG states; written atomically, read with `weights_only`.

A checkpoint holds the run's identity (`run_identity`), its `RunState`, the trainer's state (model, optimizer,
scheduler, step) and every rank's RNG states (`rng_state`): exactly what a resumed run needs to end where the
uninterrupted run ends. `run_progress(out)` reads how far a run got without loading its tensors.
"""

from __future__ import annotations

import os
import random
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import numpy as np
import torch

from nas.arch import Arch
from nas.disk import DiskFull, full_disk
from nas.errors import ConfigError
from nas.jsonable import jsonable
from nas.presets import TextTower
from nas.train_config import TrainConfig

CHECKPOINT = "checkpoint.pt"
CHECKPOINT_FORMAT = 1

#: What a resumed run must share with its checkpoint: what decides the trajectory (loader workers decide the data
#: order). Rungs, checkpointing, logging, evaluation, compilation and gradient checkpointing may change between a
#: run and its resumption; so may `accum_freq` (accumulation is exact), which lets a run that ran out of memory go
#: on with smaller micro-batches.
TRAJECTORY_FIELDS = ("samples", "batch_size", "lr", "betas", "eps", "weight_decay", "warmup", "loss", "drop_path",
                     "mask_ratio", "precision", "grad_clip_norm", "lock_text", "lock_text_unlocked_layers",
                     "pretrained", "seed", "workers")


@dataclass
class RunState:
    """Where a run stands: with the trainer's state (model, optimizer, scheduler, step) and every rank's RNG,
    exactly what its checkpoint stores and reloads.

    `rungs` holds the metrics of every rung reached; `wall_s` the wall time of earlier sessions and `cpu_s` their
    CPU time (every rank's process, summed; 0 in a checkpoint written before it was recorded); `meter` the
    interval since the last rung (`Meter.state`); `compile_s` the time spent compiling; `skipped` the samples
    the stream skipped, by reason.
    """

    samples_seen: int = 0
    rungs: list[dict[str, Any]] = field(default_factory=list)
    wall_s: float = 0.0
    cpu_s: float = 0.0
    meter: dict[str, float] = field(default_factory=dict)
    compile_s: float = 0.0
    skipped: dict[str, int] = field(default_factory=dict)

    @classmethod
    def from_checkpoint(cls, checkpoint: Mapping[str, Any]) -> RunState:
        return cls(**{f.name: checkpoint[f.name] for f in fields(cls) if f.name != "cpu_s"},
                   cpu_s=checkpoint.get("cpu_s", 0.0))


def run_progress(out: str | os.PathLike) -> tuple[RunState, TrainConfig] | None:
    """How far the run in `out` got and the config it ran with, read from its checkpoint without loading its
    tensors (memory-mapped); None when it has written none."""
    path = Path(out) / CHECKPOINT
    if not path.exists():
        return None
    checkpoint = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    return RunState.from_checkpoint(checkpoint), TrainConfig.from_dict(checkpoint["config"])


def run_identity(arch: Arch, text: TextTower, config: TrainConfig, world_size: int) -> dict[str, Any]:
    """What a run is, as its checkpoint records it (a checkpoint of another run must not be resumed as this one)."""
    return {"format": CHECKPOINT_FORMAT, "arch": arch.to_json(), "text": asdict(text),
            "config": jsonable(config.to_dict()), "world_size": world_size}


def check_compatible(checkpoint: Mapping[str, Any], identity: Mapping[str, Any], path: Path) -> None:
    """Raise a `ConfigError` unless resuming `checkpoint` continues the run whose `run_identity` is `identity`."""
    if checkpoint.get("format") != CHECKPOINT_FORMAT:
        raise ConfigError(f"checkpoint format {checkpoint.get('format')!r}, expected {CHECKPOINT_FORMAT}",
                          source=str(path))
    if checkpoint["arch"] != identity["arch"] or checkpoint["text"] != identity["text"]:
        raise ConfigError("holds a different arch or text tower than this run; use another --out",
                          source=str(path))
    changed = sorted(f for f in TRAJECTORY_FIELDS if checkpoint["config"].get(f) != identity["config"][f])
    if checkpoint["world_size"] != identity["world_size"]:
        changed.append(f"world_size ({checkpoint['world_size']} -> {identity['world_size']})")
    if changed:
        raise ConfigError(f"was written with another {', '.join(changed)}; resuming would not continue that "
                          "run (use another --out)", source=str(path))


def save_checkpoint(state: Mapping[str, Any], path: str | os.PathLike) -> None:
    """Write `state` to a temporary file next to `path`, fsync it, then rename it over `path`.

    A process killed at any moment leaves either the previous checkpoint or the new one, never a torn file. A
    full disk (torch says "unexpected pos") raises `nas.disk.DiskFull`, naming `path` and the space left, with
    the temporary file removed.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    try:
        with open(tmp, "wb") as f:
            torch.save(dict(state), f)
            f.flush()
            os.fsync(f.fileno())
    except (OSError, RuntimeError) as err:
        tmp.unlink(missing_ok=True)  # the space a cut write took, back; the previous checkpoint stands
        if full_disk(err):
            raise DiskFull(path) from None
        raise
    os.replace(tmp, path)
    directory = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(directory)
    finally:
        os.close(directory)


def load_checkpoint(path: str | os.PathLike) -> dict[str, Any]:
    """Read a checkpoint with `weights_only=True`: tensors, numbers, strings and containers only."""
    return torch.load(path, map_location="cpu", weights_only=True)


def rng_state() -> dict[str, Any]:
    """This process's RNG states in types that `weights_only` loading accepts."""
    kind, keys, pos, has_gauss, gauss = np.random.get_state()
    state = {"torch": torch.get_rng_state(), "python": random.getstate(),
             "numpy": [kind, torch.from_numpy(keys.astype(np.int64)), pos, has_gauss, gauss]}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: Mapping[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    kind, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((kind, keys.numpy().astype(np.uint32), pos, has_gauss, cached))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
