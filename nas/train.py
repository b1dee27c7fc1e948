"""Proxy CLIP training of one candidate for a budget of samples seen: one trial of a search.

    result = train(arch, text, DataSource("shards/"), TrainConfig(samples=2_000_000, batch_size=1024),
                   zeroshot=zeroshot_set("eval/zeroshot", 64), out="runs/a1b2c3", on_rung=report)

The recipe is the OpenCLIP one the ViTamin paper trains with (its section 4): AdamW with betas (0.9, 0.98),
eps 1e-6 and weight decay 0.2 except on norms, biases, gains and the logit scale (open_clip_train's
`exclude` rule), a cosine schedule after a linear warmup (open_clip_train's `cosine_lr`, step for step),
open_clip's `ClipLoss` gathered across ranks with `local_loss` and `gather_with_grad` (or `SigLipLoss`),
the logit scale clamped to ln(100) after every step, and drop-path 0.1 in the Transformer stage only.
bf16 autocast on CUDA, fp32 on CPU. `mask_ratio` drops that fraction of the Transformer stage's tokens at
random in every training forward pass (FLIP, Li et al. 2023: CLIP trained on half its patches, at about half
the cost per image), never in evaluation.

What a search needs from a trial, beyond the loop:

- Rungs: at chosen samples-seen thresholds, the budgets (and at the end of the budget), the model is
  evaluated, a checkpoint is written and `on_rung(metrics)` is called with the rung's budget among the
  metrics; it returns True to stop the run there. Metrics are one flat dict (`RUNG_METRICS` names the keys)
  so that Ray Tune and Optuna take it as is.
- Kill and resume: a run's `RunState` (where it stands) is exactly what its checkpoint stores beside the
  model, optimizer, scheduler and every rank's RNG states; checkpoints are written atomically; `train`
  resumes from `out/checkpoint.pt` when it exists, and ends where the uninterrupted run ends.
  `run_progress(out)` reads how far a run got without loading its tensors.
- Failures are results: a non-finite loss ends the run with status `diverged` (`nas.status`); out-of-memory
  raises `OOMError`, which carries the batch size so that a search can record `oom` and never retry it as is.
- Several GPUs: run under `torchrun` (the process group is set up from its environment) or in ranks whose
  process group is set up already (Ray Train's workers: `nas.search.data_parallel`).
"""

from __future__ import annotations

import errno
import hashlib
import importlib.util
import json
import math
import os
import random
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import nullcontext
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any

import numpy as np
import open_clip
import torch
from open_clip.loss import ClipLoss, SigLipLoss
from torch import nn

from nas import status
from nas.arch import Arch
from nas.cost import cost
from nas.errors import ConfigError
from nas.metrics import EVALUATED
from nas.models import build_clip
from nas.presets import TextTower
from nas.train_config import TrainConfig

LOGIT_SCALE_MAX = math.log(100)
CHECKPOINT = "checkpoint.pt"
METRICS = "metrics.jsonl"
CHECKPOINT_FORMAT = 1

RUNG_METRICS = {
    "budget": "the samples-seen threshold the rung stands for (one of the config's rungs, or its samples)",
    "samples_seen": "training samples seen by all ranks together (the budget, or up to one batch more)",
    "step": "optimizer steps taken",
    "loss": "mean training loss since the previous rung",
    "lr": "learning rate of the last step",
    "logit_scale": "exp of the learned logit scale (temperature inverse), at most 100",
    "zeroshot_top1": "zero-shot top-1 accuracy (when a zero-shot set is given)",
    "zeroshot_top5": "zero-shot top-5 accuracy",
    "image_to_text_R@1": "retrieval recall at 1, 5, 10 in both directions (when a retrieval set is given)",
    "wall_s": "wall time of the whole run so far, across resumes: compilation, evaluation, checkpoints",
    "train_s": "time spent in training steps since the previous rung",
    "images_per_s": "training throughput since the previous rung (all ranks; compiling steps excluded)",
    "data_wait_share": "the share of training time since the previous rung spent waiting for data",
    "tflops": "achieved training TFLOP/s (GPU; analytic FLOPs from nas.cost, full convention)",
    "mfu": "tflops over the peak dense bf16 TFLOP/s of the run's devices (GPU)",
    "peak_memory_gib": "peak GPU memory allocated on this rank (GPU)",
    "eval_s": "time the evaluation took",
    "checkpoint": "path of the checkpoint written at this rung",
}

#: What a resumed run must share with its checkpoint: what decides the trajectory (loader workers decide the data
#: order). Rungs, checkpointing, logging, evaluation, compilation and gradient checkpointing may change between a
#: run and its resumption; so may `accum_freq` (accumulation is exact), which lets a run that ran out of memory go
#: on with smaller micro-batches.
TRAJECTORY_FIELDS = ("samples", "batch_size", "lr", "betas", "eps", "weight_decay", "warmup", "loss", "drop_path",
                     "mask_ratio", "precision", "grad_clip_norm", "lock_text", "lock_text_unlocked_layers", "seed",
                     "workers")

#: Dense bf16 peak TFLOP/s by device-name fragment, most specific first (vendor datasheets).
PEAK_BF16_TFLOPS = (("H100 PCIe", 756.0), ("H100", 989.4), ("H200", 989.4), ("GH200", 989.4), ("B200", 2250.0),
                    ("A100", 312.0), ("L40S", 362.0), ("L4", 121.0), ("A10G", 70.0), ("A10", 125.0))


class OOMError(RuntimeError):
    """Out of memory at a batch size: a search records the trial as `oom` and does not retry it unchanged."""

    def __init__(self, batch_size: int, micro_batch_size: int, phase: str, device: str):
        self.batch_size = batch_size
        self.micro_batch_size = micro_batch_size
        self.phase = phase
        self.device = device
        super().__init__(f"out of memory on {device} during {phase} at batch size {batch_size} "
                         f"(micro-batch {micro_batch_size} per rank)")

    def __reduce__(self) -> tuple:  # pickled whole: Ray sends a rank's error to the trial that runs the ranks
        return OOMError, (self.batch_size, self.micro_batch_size, self.phase, self.device)


@dataclass
class TrainResult:
    """What one run measured. `rungs` holds the metrics of every rung reached, in order; `status` is
    `completed`, `stopped_early` (`on_rung` asked to stop) or `diverged` (`nas.status`)."""

    status: str
    samples_seen: int
    step: int
    rungs: list[dict[str, Any]]
    wall_s: float
    checkpoint: str | None
    compile: dict[str, Any]
    data: dict[str, Any] = field(default_factory=dict)
    resumed_from: int | None = None

    @property
    def final(self) -> dict[str, Any]:
        """The last rung's metrics ({} when none was reached)."""
        return self.rungs[-1] if self.rungs else {}


# ----------------------------------------------------------------------------------------------------------
# Where the run executes: device, ranks, precision.


@dataclass(frozen=True)
class Runtime:
    """This process's device and place among the ranks (from torchrun's environment when it is set)."""

    device: torch.device
    rank: int = 0
    world_size: int = 1
    bf16: bool = False

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def autocast(self):
        if not self.bf16:
            return nullcontext()
        return torch.autocast(device_type=self.device.type, dtype=torch.bfloat16)

    def barrier(self) -> None:
        if self.distributed:
            torch.distributed.barrier()


def setup_runtime(precision: str = "auto", device: str | None = None) -> Runtime:
    """This process's place among the ranks and its device.

    The process group is the caller's when one is set up already (Ray Train's workers: NCCL on GPUs, gloo on
    CPUs), else torchrun's, joined from its environment when WORLD_SIZE > 1. The device is `device` when it
    names one ("cuda:1": Ray Train's choice for the rank), else the GPU of the local rank, else the CPU."""
    joined = torch.distributed.is_available() and torch.distributed.is_initialized()
    world_size = torch.distributed.get_world_size() if joined else int(os.environ.get("WORLD_SIZE", "1"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    cuda = torch.cuda.is_available() and (device is None or device.startswith("cuda"))
    if cuda:
        dev = torch.device(device) if device is not None and ":" in device else torch.device("cuda", local_rank)
        torch.cuda.set_device(dev)
        # cuDNN picks each convolution's algorithm by timing it (open_clip_train does the same): the depthwise
        # convolutions of the conv stages are the step's memory-bound part, and its heuristics are no match for it.
        torch.backends.cudnn.benchmark = True
    else:
        dev = torch.device(device or "cpu")
    if world_size > 1 and not joined:
        torch.distributed.init_process_group(backend="nccl" if cuda else "gloo")
    rank = torch.distributed.get_rank() if world_size > 1 else 0
    bf16 = precision == "bf16" or (precision == "auto" and dev.type == "cuda")
    return Runtime(dev, rank, world_size, bf16)


# ----------------------------------------------------------------------------------------------------------
# The model and what it trains with.


def build_model(arch: Arch, text: TextTower, config: TrainConfig) -> open_clip.CustomTextCLIP:
    """`build_clip` for training: drop-path and token masking in the Transformer stage, SigLIP's bias, LTT,
    checkpointing."""
    siglip = config.loss == "siglip"
    model = build_clip(arch, text, drop_path=config.drop_path, init_logit_scale=math.log(10) if siglip else None,
                       mask_ratio=config.mask_ratio)
    if siglip:  # open_clip's SigLIP configs: logit scale 10, bias -10
        model.logit_bias = nn.Parameter(torch.full_like(model.logit_scale, -10.0))
    if config.lock_text:
        load_text_tower(model, config.lock_text)
        model.lock_text_tower(unlocked_layers=config.lock_text_unlocked_layers, freeze_layer_norm=True)
    if config.grad_checkpointing:
        model.set_grad_checkpointing(True)
    return model


def load_text_tower(model: open_clip.CustomTextCLIP, path: str | os.PathLike) -> None:
    """Load the text tower (`model.text`) from a checkpoint, strictly: LTT's pretrained text encoder.

    Accepts this trainer's checkpoints, `nas.export` directories and open_clip state dicts, both the
    custom-text layout (`text.*`) and the classic CLIP one (`transformer.*`, `token_embedding`, ...).
    """
    path = Path(path)
    file = _state_dict_file(path) if path.is_dir() else path
    if not file.exists():
        raise ConfigError("text tower checkpoint not found", source=str(path), field="lock_text")
    state = _load(file)
    state = state.get("model", state.get("state_dict", state))
    if "text.token_embedding.weight" not in state and "token_embedding.weight" in state:
        state = open_clip.model.convert_to_custom_text_state_dict(state)
    text_state = {k.removeprefix("text."): v for k, v in state.items() if k.startswith("text.")}
    if not text_state:
        raise ConfigError("holds no text tower (no text.* or token_embedding weights)", source=str(file),
                          field="lock_text")
    try:
        model.text.load_state_dict(text_state, strict=True)
    except RuntimeError as err:
        raise ConfigError(f"text tower does not match the run's text tower and embed_dim: {err}",
                          source=str(file), field="lock_text") from None


def _state_dict_file(directory: Path) -> Path:
    for name in ("open_clip_pytorch_model.bin", CHECKPOINT):
        if (directory / name).exists():
            return directory / name
    return directory / CHECKPOINT


def param_groups(model: nn.Module, weight_decay: float) -> list[dict[str, Any]]:
    """open_clip_train's split: no weight decay on gains, biases, norms and the logit scale/bias."""
    decay, no_decay = [], []
    for name, param in model.named_parameters():
        if not param.requires_grad:
            continue
        exclude = param.ndim < 2 or "bn" in name or "ln" in name or "bias" in name or "logit_scale" in name
        (no_decay if exclude else decay).append(param)
    return [{"params": no_decay, "weight_decay": 0.0}, {"params": decay, "weight_decay": weight_decay}]


def cosine_schedule(warmup: int, steps: int) -> Callable[[int], float]:
    """open_clip_train's `cosine_lr` as a LambdaLR factor: (step + 1) / warmup, then half a cosine to 0."""

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        return 0.5 * (1 + math.cos(math.pi * (step - warmup) / (steps - warmup)))

    return factor


def make_loss(config: TrainConfig, runtime: Runtime) -> nn.Module:
    if config.loss == "siglip":
        return SigLipLoss(rank=runtime.rank, world_size=runtime.world_size)
    return ClipLoss(local_loss=True, gather_with_grad=True, cache_labels=True, rank=runtime.rank,
                              world_size=runtime.world_size)


# ----------------------------------------------------------------------------------------------------------
# Checkpoints: atomic, weights-only, per-rank RNG.


def save_checkpoint(state: Mapping[str, Any], path: str | os.PathLike) -> None:
    """Write `state` to a temporary file next to `path`, fsync it, then rename it over `path`.

    A process killed at any moment leaves either the previous checkpoint or the new one, never a torn file.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "wb") as f:
        torch.save(dict(state), f)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    directory = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(directory)
    finally:
        os.close(directory)


def _load(path: str | os.PathLike) -> dict[str, Any]:
    return torch.load(path, map_location="cpu", weights_only=True)


def load_checkpoint(path: str | os.PathLike) -> dict[str, Any]:
    """Read a checkpoint with `weights_only=True`: tensors, numbers, strings and containers only."""
    return _load(path)


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


def _gather_objects(value: Any, runtime: Runtime) -> list[Any]:
    if not runtime.distributed:
        return [value]
    values: list[Any] = [None] * runtime.world_size
    torch.distributed.all_gather_object(values, value)
    return values


def _seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


# ----------------------------------------------------------------------------------------------------------
# Data: a nas.data stream, or any factory of (images, texts) batches.

DataFactory = Callable[[int], Iterable[Any]]
"""`factory(start_sample) -> iterable of (images, texts[, ...]) batches for this rank`, resuming at a position."""


def _data_factory(data: Any, arch: Arch, text: TextTower, config: TrainConfig, runtime: Runtime,
                  stats: dict[str, Any]) -> DataFactory:
    """Connect a `nas.data.DataSource` to this run: the trainer supplies what must agree with the model, the
    budget and the ranks (`StreamSettings`); `stats["stream"]` follows the stream's skip counts."""
    from nas.data import DataSource, StreamSettings, stream

    if not isinstance(data, DataSource):
        if not callable(data):
            raise ConfigError("data must be a nas.data.DataSource or a callable(start_sample) -> batches",
                              field="data")
        return data
    micro = config.batch_size // (runtime.world_size * config.accum_freq)

    def factory(start_sample: int) -> Iterable[Any]:
        settings = StreamSettings(batch_size=micro, image_size=arch.image_size, samples=config.samples,
                                  start_sample=start_sample, seed=config.seed, workers=config.workers,
                                  context_length=text.context_length, pin_memory=runtime.device.type == "cuda")
        loader, stream_stats = stream(data, settings, rank=runtime.rank, world_size=runtime.world_size)
        stats["stream"] = stream_stats
        return loader

    return factory


def _micro_batches(batches: Iterable[Any], remaining: int) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """(images, texts) pairs, the last one cut so that this rank takes exactly `remaining` samples."""
    for batch in batches:
        if remaining <= 0:
            return
        images, texts = batch[0], batch[1]
        if len(images) > remaining:
            images, texts = images[:remaining], texts[:remaining]
        remaining -= len(images)
        yield images, texts


# ----------------------------------------------------------------------------------------------------------
# One optimizer step.


class Trainer:
    """Model, optimizer, schedule and loss of one run, and the optimizer step (with accumulation)."""

    def __init__(self, model: nn.Module, config: TrainConfig, runtime: Runtime):
        self.config = config
        self.runtime = runtime
        self.model = model.to(runtime.device)
        self.module = self.model
        if runtime.distributed:
            device_ids = [runtime.device.index] if runtime.device.type == "cuda" else None
            self.module = nn.parallel.DistributedDataParallel(self.model, device_ids=device_ids,
                                                              static_graph=config.grad_checkpointing)
        self.forward = self.module  # the compiled module once `enable_compile` ran, until compilation fails
        self.optimizer = torch.optim.AdamW(param_groups(self.model, config.weight_decay), lr=config.lr,
                                           betas=config.betas, eps=config.eps,
                                           fused=runtime.device.type in ("cpu", "cuda"))
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(self.optimizer,
                                                           cosine_schedule(config.warmup, config.steps))
        self.loss = make_loss(config, runtime)
        self.step = 0
        self.compile = {"requested": config.compile, "compiled": False, "error": None, "compile_s": 0.0}
        self.compiled_from: int | None = None
        self.compiled_batch: int | None = None

    def enable_compile(self) -> None:
        """Compile the forward pass; the first step after this compiles (see `compiling`)."""
        self.forward = torch.compile(self.module, backend=self.config.compile_backend)
        self.compile["compiled"] = True
        self.compiled_from = self.step

    @property
    def compiling(self) -> bool:
        """Whether the next step is the one that compiles (its time is compilation, not training)."""
        return self.compile["compiled"] and self.step == self.compiled_from

    def train_step(self, micro: list[tuple[torch.Tensor, torch.Tensor]]) -> torch.Tensor:
        """One optimizer step over `micro` (one or `accum_freq` micro-batches); returns the loss, on device.

        A compiled step that fails (the first, or a recompilation) reruns eagerly and the run records why.
        Compilation fails inside the forward or backward pass, before the optimizer steps, so the rerun starts
        from the same weights; the RNG is rewound so that it also draws the same drop-path masks.

        The compiled forward serves the micro-batch size it was compiled for; a smaller one (the budget's last
        batch) runs eagerly: recompiling for a dynamic batch would cost more than the step and count as training.
        """
        if not self.compile["compiled"]:
            return self._step(micro, self.module)
        self.compiled_batch = self.compiled_batch or len(micro[0][0])
        if any(len(images) != self.compiled_batch for images, _ in micro):
            return self._step(micro, self.module)
        state, step = rng_state(), self.step
        try:
            return self._step(micro, self.forward)
        except Exception as err:
            if is_oom(err):
                raise
            self.compile.update(compiled=False, error=f"{type(err).__name__}: {err}"[:2000])
            self.forward, self.step = self.module, step
            set_rng_state(state)
            return self._step(micro, self.module)

    def _step(self, micro: list[tuple[torch.Tensor, torch.Tensor]], forward: Callable) -> torch.Tensor:
        self.model.train()
        self.optimizer.zero_grad(set_to_none=True)
        micro = [(i.to(self.runtime.device, non_blocking=True), t.to(self.runtime.device, non_blocking=True))
                 for i, t in micro]
        loss = self._single(forward, *micro[0]) if len(micro) == 1 else self._accumulated(forward, micro)
        if self.config.grad_clip_norm is not None:
            nn.utils.clip_grad_norm_(self.model.parameters(), self.config.grad_clip_norm)
        self.optimizer.step()
        self.scheduler.step()
        with torch.no_grad():
            self.model.logit_scale.clamp_(0, LOGIT_SCALE_MAX)
        self.step += 1
        return loss

    def _loss(self, out: Mapping[str, torch.Tensor], **features: torch.Tensor) -> torch.Tensor:
        kwargs = {"image_features": out["image_features"], "text_features": out["text_features"],
                  "logit_scale": out["logit_scale"], **features}
        if self.config.loss == "siglip":
            kwargs["logit_bias"] = out["logit_bias"]
        return self.loss(**kwargs)

    def _single(self, forward: Callable, images: torch.Tensor, texts: torch.Tensor) -> torch.Tensor:
        with self.runtime.autocast():
            loss = self._loss(forward(images, texts))
        loss.backward()
        return loss.detach()

    def _accumulated(self, forward: Callable, micro: list[tuple[torch.Tensor, torch.Tensor]]) -> torch.Tensor:
        """open_clip_train's `--accum-freq`: the features of every micro-batch are each one's negatives.

        Features are first computed without gradients; then each micro-batch is run again with gradients,
        its cached features swapped for live ones. Unlike open_clip_train, the logit scale (and bias) take
        gradient from one pass only, so the step equals a step on the whole batch.
        """
        with torch.no_grad(), self.runtime.autocast():
            cached = [forward(images, texts) for images, texts in micro]
        last = len(micro) - 1
        for j, (images, texts) in enumerate(micro):
            sync = nullcontext() if j == last or not self.runtime.distributed else self.module.no_sync()
            with sync:
                with self.runtime.autocast():
                    out = dict(forward(images, texts))
                    if j != last:
                        out = {k: v.detach() if k in ("logit_scale", "logit_bias") else v for k, v in out.items()}
                    features = {key: torch.cat([c[key] for c in cached[:j]] + [out[key]] +
                                               [c[key] for c in cached[j + 1:]])
                                for key in ("image_features", "text_features")}
                    loss = self._loss(out, **features)
                loss.backward()
        return loss.detach()

    def state_dict(self) -> dict[str, Any]:
        return {"model": self.model.state_dict(), "optimizer": self.optimizer.state_dict(),
                "scheduler": self.scheduler.state_dict(), "step": self.step}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.step = state["step"]


# ----------------------------------------------------------------------------------------------------------
# Measuring: throughput between rungs, FLOP/s, memory.


class Meter:
    """Samples, loss and time since the last rung: the training loop's wall time, data waits included, minus
    what is not training (checkpoint writes, the compiling step); `data_s` is the part spent waiting for data."""

    def __init__(self, train_gflops: float):
        self.train_gflops = train_gflops
        self.reset()

    def reset(self) -> None:
        self.samples = 0
        self.data_s = 0.0
        self.loss_sum: torch.Tensor | float = 0.0
        self.steps = 0
        self.carried_s = 0.0
        self.start()

    def start(self) -> None:
        """Start the clock (set-up before the first step is not training time)."""
        self.started = time.perf_counter()
        self.excluded_s = 0.0

    def add(self, samples: int, loss: torch.Tensor, data_s: float) -> None:
        self.samples += samples
        self.data_s += data_s
        self.loss_sum = self.loss_sum + loss.float()
        self.steps += 1

    def add_untimed(self, loss: torch.Tensor, seconds: float) -> None:
        """A step whose time is not training throughput (compilation): its loss counts, its time does not."""
        self.loss_sum = self.loss_sum + loss.float()
        self.steps += 1
        self.exclude(seconds)

    def exclude(self, seconds: float) -> None:
        self.excluded_s += seconds

    @property
    def train_s(self) -> float:
        return self.carried_s + time.perf_counter() - self.started - self.excluded_s

    def state(self) -> dict[str, float]:
        return {"samples": self.samples, "data_s": self.data_s, "train_s": self.train_s,
                "loss_sum": float(self.loss_sum), "steps": self.steps}

    def load(self, state: Mapping[str, float]) -> None:
        """Continue a checkpoint's interval."""
        self.samples, self.data_s, self.steps = state["samples"], state["data_s"], state["steps"]
        self.loss_sum = state["loss_sum"]
        self.carried_s = state["train_s"]
        self.start()

    def summary(self, runtime: Runtime, peak_tflops: float | None) -> dict[str, Any]:
        if runtime.device.type == "cuda":
            torch.cuda.synchronize(runtime.device)
        train_s = self.train_s
        images_per_s = self.samples / train_s if self.samples and train_s > 0 else None
        loss = mean_over_ranks(torch.as_tensor(self.loss_sum, dtype=torch.float32, device=runtime.device), runtime)
        metrics: dict[str, Any] = {"loss": loss / max(self.steps, 1), "train_s": train_s, "data_s": self.data_s,
                                   "images_per_s": images_per_s,
                                   "data_wait_share": self.data_s / train_s if train_s > 0 else None}
        if runtime.device.type == "cuda":
            tflops = images_per_s * self.train_gflops / 1e3 if images_per_s else None
            peak = peak_tflops or (device_peak_tflops(runtime.device) if runtime.bf16 else None)
            metrics.update(tflops=tflops, mfu=model_flops_utilization(tflops, peak, runtime.world_size),
                           peak_memory_gib=torch.cuda.max_memory_allocated(runtime.device) / 2**30)
        return metrics


def model_flops_utilization(tflops: float | None, peak_tflops: float | None, devices: int) -> float | None:
    """MFU: the TFLOP/s of all ranks together over the peak of as many devices (one GPU per rank)."""
    return tflops / (peak_tflops * devices) if tflops and peak_tflops else None


def mean_over_ranks(value: torch.Tensor, runtime: Runtime) -> float:
    """A rank's local loss averaged over the ranks: with `local_loss`, the loss of the whole global batch."""
    if runtime.distributed:
        value = value.detach().clone()
        torch.distributed.all_reduce(value)
        value /= runtime.world_size
    return value.item()


def device_peak_tflops(device: torch.device) -> float | None:
    """The dense bf16 peak of a known GPU (`PEAK_BF16_TFLOPS`), None for anything else."""
    name = torch.cuda.get_device_name(device)
    return next((peak for fragment, peak in PEAK_BF16_TFLOPS if fragment in name), None)


#: How running out of memory reads when it is not a `torch.OutOfMemoryError` or a `MemoryError`: the CPU
#: allocator (the machine's memory, or a limit on the process), a C++ allocation torch turns into a RuntimeError,
#: a thread whose stack cannot be mapped, and cuBLAS/cuDNN failing to allocate their workspaces.
OOM_MESSAGES = ("DefaultCPUAllocator: can't allocate memory", "std::bad_alloc", "can't start new thread",
                "CUBLAS_STATUS_ALLOC_FAILED", "CUDNN_STATUS_ALLOC_FAILED")


def is_oom(err: BaseException) -> bool:
    """Out of memory: a GPU allocation, or a CPU one (including an OS call refused with ENOMEM)."""
    return isinstance(err, (torch.OutOfMemoryError, MemoryError)) or (
        isinstance(err, OSError) and err.errno == errno.ENOMEM) or (
        isinstance(err, RuntimeError) and any(message in str(err) for message in OOM_MESSAGES))


# ----------------------------------------------------------------------------------------------------------
# The run: its state (what the checkpoint holds), its log, and the loop.


@dataclass
class RunState:
    """Where a run stands: with the trainer's state (model, optimizer, scheduler, step) and every rank's RNG,
    exactly what its checkpoint stores and reloads.

    `rungs` holds the metrics of every rung reached; `wall_s` the wall time of earlier sessions; `meter` the
    interval since the last rung (`Meter.state`); `compile_s` the time spent compiling; `skipped` the samples
    the stream skipped, by reason.
    """

    samples_seen: int = 0
    rungs: list[dict[str, Any]] = field(default_factory=list)
    wall_s: float = 0.0
    meter: dict[str, float] = field(default_factory=dict)
    compile_s: float = 0.0
    skipped: dict[str, int] = field(default_factory=dict)

    @classmethod
    def from_checkpoint(cls, checkpoint: Mapping[str, Any]) -> RunState:
        return cls(**{f.name: checkpoint[f.name] for f in fields(cls)})


def run_progress(out: str | os.PathLike) -> tuple[RunState, TrainConfig] | None:
    """How far the run in `out` got and the config it ran with, read from its checkpoint without loading its
    tensors (memory-mapped); None when it has written none."""
    path = Path(out) / CHECKPOINT
    if not path.exists():
        return None
    checkpoint = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    return RunState.from_checkpoint(checkpoint), TrainConfig.from_dict(checkpoint["config"])


#: Where a run's TensorBoard events go by default: `OUT/tensorboard` for a single run, `RUN/tensorboard/<trial>`
#: for the trials of a search (one `tensorboard --logdir RUN/tensorboard` compares them).
TENSORBOARD = "tensorboard"
#: What `--report-to` takes (open_clip_train's names); metrics.jsonl is always written.
REPORT_TO = ("tensorboard", "wandb")
#: Rung metrics that are positions or bookkeeping, not curves.
_NOT_SCALARS = frozenset({"budget", "samples_seen", "step", "checkpoint", "hits"})


@dataclass(frozen=True)
class ReportTo:
    """Where a run's scalars go besides its `metrics.jsonl`, all against samples seen (open_clip_train's
    `--report-to`): TensorBoard event files in the directory `tensorboard`, and a W&B run in the project
    `wandb_project`, named `name` and grouped by `group` (a study's trials share its name as their group).

    `ReportTo.parse("tensorboard,wandb", ...)` reads the option; W&B must be installed (it is no dependency)."""

    tensorboard: str | None = None
    wandb_project: str | None = None
    name: str | None = None
    group: str | None = None

    def __post_init__(self) -> None:
        if self.wandb_project is not None and importlib.util.find_spec("wandb") is None:
            raise ConfigError("wandb is not installed: `pip install wandb`, or leave wandb out of --report-to",
                              field="report_to")

    @classmethod
    def parse(cls, names: str | Iterable[str], tensorboard: str | os.PathLike | None,
              wandb_project: str = "vitamin-nas", name: str | None = None, group: str | None = None) -> ReportTo:
        """`names` as `--report-to` gives them ("tensorboard,wandb"; "" or "none" for neither)."""
        chosen = [n.strip() for n in (names.split(",") if isinstance(names, str) else names) if n.strip()]
        chosen = [n for n in chosen if n != "none"]
        unknown = sorted(set(chosen) - set(REPORT_TO))
        if unknown:
            raise ConfigError(f"unknown {', '.join(unknown)}; allowed: {', '.join(REPORT_TO)} (comma-separated) or "
                              "none", field="report_to")
        return cls(tensorboard=str(tensorboard) if "tensorboard" in chosen and tensorboard is not None else None,
                   wandb_project=wandb_project if "wandb" in chosen else None, name=name, group=group)


def scalars(record: Mapping[str, Any]) -> dict[str, float]:
    """A metrics line as the curves TensorBoard and W&B show: `train/*` every `log_every` steps, and at each rung
    `eval/*` (every evaluation metric with its interval, `_low` and `_high`) and `rung/*` (the interval's mean
    loss, images/s, data-wait share, time, and on GPU TFLOP/s, MFU and peak memory)."""
    event = record.get("event")
    if event not in ("train", "rung"):
        return {}
    out = {}
    for key, value in record.items():
        if key in _NOT_SCALARS or key == "event" or value is None or isinstance(value, bool) or \
                not isinstance(value, (int, float)) or key.endswith("_n"):
            continue
        if event == "train":
            out[f"train/{key}"] = float(value)
        elif any(key == m or key in (f"{m}_low", f"{m}_high") for m in EVALUATED):
            out[f"eval/{key}"] = float(value)
        else:
            out[f"rung/{key}"] = float(value)
    return out


class MetricsLog:
    """A run's one metrics writer: `metrics.jsonl` (one JSON object per line: `train` every `log_every` steps,
    `rung`, `diverged`) and `config.json` in the run directory, and the same scalars by samples seen to
    TensorBoard and W&B (`ReportTo`); written by the main rank only.

    A resumed run keeps what was written up to its checkpoint and writes the rest again: the JSON lines past it
    are dropped, and TensorBoard is told to purge its events past it (a `SessionLog.START` at the next sample,
    torch's `purge_step`), so that every curve holds each step once."""

    def __init__(self, out: Path | None, runtime: Runtime, report_to: ReportTo | None = None):
        self.path = out / METRICS if out is not None and runtime.is_main else None
        self.report_to = (report_to or ReportTo()) if runtime.is_main else ReportTo()
        self.tensorboard: Any = None
        self.wandb: Any = None
        self.run_id = hashlib.sha1(str(out.resolve()).encode()).hexdigest()[:16] if out is not None else None

    def start(self, samples_seen: int, resolved: dict[str, Any]) -> None:
        """Open the run's log at `samples_seen` (0, or where a resumed run's checkpoint stands)."""
        self._truncate(samples_seen)
        if self.path is not None:  # the resolved config next to the checkpoints (litgpt's habit): what produced them
            self.path.parent.mkdir(parents=True, exist_ok=True)
            (self.path.parent / "config.json").write_text(json.dumps(resolved, indent=2) + "\n")
        if self.report_to.tensorboard is not None:
            from torch.utils.tensorboard import SummaryWriter

            self.tensorboard = SummaryWriter(self.report_to.tensorboard, purge_step=samples_seen + 1, flush_secs=30)
        if self.report_to.wandb_project is not None:
            import wandb

            self.wandb = wandb.init(project=self.report_to.wandb_project, name=self.report_to.name,
                                    group=self.report_to.group, config=resolved, id=self.run_id, resume="allow",
                                    dir=str(self.path.parent) if self.path is not None else None)
            self.wandb.define_metric("samples_seen")
            self.wandb.define_metric("*", step_metric="samples_seen")

    def write(self, record: dict[str, Any]) -> None:
        if self.path is not None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            with open(self.path, "a") as f:
                f.write(json.dumps(_jsonable(record)) + "\n")
        values = scalars(record)
        if not values:
            return
        if self.tensorboard is not None:
            for tag, value in values.items():
                self.tensorboard.add_scalar(tag, value, global_step=record["samples_seen"])
            if record["event"] == "rung":
                self.tensorboard.flush()
        if self.wandb is not None:
            self.wandb.log({**values, "samples_seen": record["samples_seen"]})

    def close(self) -> None:
        if self.tensorboard is not None:
            self.tensorboard.close()
            self.tensorboard = None
        if self.wandb is not None:
            self.wandb.finish()
            self.wandb = None

    def _truncate(self, samples_seen: int) -> None:
        """Keep the lines up to a resumed checkpoint: the rest will be written again by this run."""
        if self.path is None or not self.path.exists():
            return
        records = [json.loads(line) for line in self.path.read_text().splitlines() if line.strip()]
        kept = [r for r in records if 0 < r["samples_seen"] <= samples_seen and r["event"] != "diverged"]
        self.path.write_text("".join(json.dumps(r) + "\n" for r in kept))


def train(arch: Arch, text: TextTower, data: Any, config: TrainConfig, *, out: str | os.PathLike | None = None,
          zeroshot: Any = None, retrieval: Any = None, on_rung: Callable[[dict[str, Any]], bool | None] | None = None,
          progress: bool = False, device: str | None = None, report_to: ReportTo | None = None) -> TrainResult:
    """Train `build_clip(arch, text)` on `data` for `config.samples` samples seen; evaluate at every rung.

    `data` is a `nas.data.DataSource` (the trainer reads it with its budget, micro-batch, resolution, context
    length, seed, workers and resume position) or a callable `(start_sample) -> iterable of (images, texts)
    batches`. `zeroshot` / `retrieval` are `nas.data` eval sets. With `out`, checkpoints and `metrics.jsonl`
    go there and a run found there is resumed; `report_to` sends the same curves to TensorBoard or W&B. Returns
    when the budget is spent, the loss diverges or `on_rung` returns True; raises `OOMError` on out-of-memory.
    """
    return TrainingLoop(arch, text, data, config, out, zeroshot, retrieval, on_rung, progress, device,
                        report_to).execute()


class TrainingLoop:
    """One `train` call: the trainer, the run's state, its log; its methods are the loop's parts."""

    def __init__(self, arch: Arch, text: TextTower, data: Any, config: TrainConfig, out: str | os.PathLike | None,
                 zeroshot: Any, retrieval: Any, on_rung: Callable | None, progress: bool, device: str | None,
                 report_to: ReportTo | None = None):
        self.arch, self.text, self.config = arch, text, config
        self.runtime = setup_runtime(config.precision, device)
        world = self.runtime.world_size * config.accum_freq
        if config.batch_size % world:
            raise ConfigError(f"{config.batch_size} does not split over {self.runtime.world_size} ranks x "
                              f"{config.accum_freq} micro-batches", field="batch_size")
        self.out = Path(out) if out is not None else None
        self.zeroshot, self.retrieval, self.on_rung, self.progress = zeroshot, retrieval, on_rung, progress
        self.stream_stats: dict[str, Any] = {}
        self.factory = _data_factory(data, arch, text, config, self.runtime, self.stream_stats)
        _seed_everything(config.seed)
        self.trainer = Trainer(build_model(arch, text, config), config, self.runtime)
        _seed_everything(config.seed + self.runtime.rank)
        self.meter = Meter(cost(arch, text).train_gflops)
        self.log = MetricsLog(self.out, self.runtime, report_to)
        self.state = RunState()
        self.resumed_from: int | None = None
        self.last_window = (0, 0.0, 0.0)
        self.status = status.COMPLETED

    @property
    def checkpoint_path(self) -> Path | None:
        return self.out / CHECKPOINT if self.out else None

    def execute(self) -> TrainResult:
        self.start = time.perf_counter()
        self._resume()
        if self.config.compile:
            self.trainer.enable_compile()
        self.log.start(self.state.samples_seen, self._resolved())
        bar = self._progress_bar()
        try:
            self._loop(bar)
        finally:
            if bar is not None:
                bar.close()
            self.log.close()
        self.runtime.barrier()
        self.trainer.compile["compile_s"] += self.state.compile_s
        return TrainResult(self.status, self.state.samples_seen, self.trainer.step, self.state.rungs, self._wall(),
                           str(self.checkpoint_path) if self.checkpoint_path else None, dict(self.trainer.compile),
                           {"skipped": self._skipped()}, self.resumed_from)

    def _wall(self) -> float:
        return self.state.wall_s + time.perf_counter() - self.start

    def _loop(self, bar: Any) -> None:
        config, runtime = self.config, self.runtime
        per_rank_left = (config.samples - self.state.samples_seen) // runtime.world_size
        batches = _micro_batches(self.factory(self.state.samples_seen), per_rank_left)
        budgets = [r for r in (*config.rungs, config.samples) if r > self.state.samples_seen]
        next_checkpoint = self._next_multiple(config.checkpoint_interval)
        self.meter.start()
        while self.state.samples_seen < config.samples:
            begin = time.perf_counter()
            micro = [b for _, b in zip(range(config.accum_freq), batches, strict=False)]
            if not micro:
                raise RuntimeError(f"the data ran out after {self.state.samples_seen} of {config.samples} samples")
            loss = self._timed_step(micro, begin)
            if bar is not None:
                bar.update(sum(len(i) for i, _ in micro) * runtime.world_size)
            if self.trainer.step % config.log_every == 0 and not self._log(loss, bar):
                return
            if self.state.samples_seen >= budgets[0]:
                reached = max(b for b in budgets if b <= self.state.samples_seen)
                if not self._finite() or self._rung(reached):
                    return
                budgets = [b for b in budgets if b > self.state.samples_seen]
                next_checkpoint = self._next_multiple(config.checkpoint_interval)
            elif next_checkpoint is not None and self.state.samples_seen >= next_checkpoint:
                if not self._finite():
                    return
                begin = time.perf_counter()
                self._save()
                self.meter.exclude(time.perf_counter() - begin)
                next_checkpoint = self._next_multiple(config.checkpoint_interval)

    def _next_multiple(self, interval: int) -> int | None:
        if not interval or self.out is None:
            return None
        return (self.state.samples_seen // interval + 1) * interval

    def _timed_step(self, micro: list[tuple[torch.Tensor, torch.Tensor]], fetched_from: float) -> torch.Tensor:
        """One step; the step that compiles is counted in `compile_s`, not in throughput."""
        compiling = self.trainer.compiling
        begin = time.perf_counter()
        try:
            loss = self.trainer.train_step(micro)
        except Exception as err:
            if not is_oom(err):
                raise
            raise OOMError(self.config.batch_size, len(micro[0][0]), "train", str(self.runtime.device)) from err
        if self.runtime.device.type == "cuda" and (compiling or self.trainer.step % self.config.log_every == 0):
            torch.cuda.synchronize(self.runtime.device)
        samples = sum(len(i) for i, _ in micro) * self.runtime.world_size
        self.state.samples_seen += samples
        if compiling:
            self.trainer.compile["compile_s"] += time.perf_counter() - begin
            self.meter.add_untimed(loss, time.perf_counter() - fetched_from)
        else:
            self.meter.add(samples, loss, begin - fetched_from)
        return loss

    def _finite(self) -> bool:
        """Whether the loss has stayed finite; otherwise the run ends here as `diverged` (on every rank)."""
        bad = torch.tensor(0.0 if torch.isfinite(torch.as_tensor(self.meter.loss_sum)).all() else 1.0,
                           device=self.runtime.device)
        if self.runtime.distributed:
            torch.distributed.all_reduce(bad, op=torch.distributed.ReduceOp.MAX)
        if bad.item():
            self.status = status.DIVERGED
            self.log.write({"event": "diverged", "samples_seen": self.state.samples_seen, "step": self.trainer.step,
                            "wall_s": self._wall()})
            return False
        return True

    def _log(self, loss: torch.Tensor, bar: Any) -> bool:
        """Every `log_every` steps: check the loss, report throughput. False when the run diverged."""
        if not self._finite():
            return False
        value = mean_over_ranks(loss, self.runtime)
        lr = self.trainer.optimizer.param_groups[0]["lr"]
        record = {"event": "train", "samples_seen": self.state.samples_seen, "step": self.trainer.step,
                  "loss": value, "lr": lr, "logit_scale": self.trainer.model.logit_scale.exp().item(),
                  "wall_s": self._wall()}
        rate, data_share = self._window()
        if rate is not None:
            record.update(images_per_s=rate, data_wait_share=data_share)
        self.log.write(record)
        if bar is not None:
            bar.set_postfix({"loss": f"{value:.3f}", "img/s": f"{rate:.0f}" if rate else "-", "lr": f"{lr:.2e}"},
                            refresh=False)
        return True

    def _window(self) -> tuple[float | None, float | None]:
        """Images/s since the previous log line (training time only) and the share of it spent waiting for data."""
        samples, seconds, data_s = self.meter.samples, self.meter.train_s, self.meter.data_s
        prev_samples, prev_seconds, prev_data_s = self.last_window
        self.last_window = (samples, seconds, data_s)
        if seconds - prev_seconds <= 0:
            return None, None
        return (samples - prev_samples) / (seconds - prev_seconds), (data_s - prev_data_s) / (seconds - prev_seconds)

    def _rung(self, budget: int) -> bool:
        """Evaluate, checkpoint and report the rung at `budget`; True when `on_rung` asks to stop."""
        from nas.evaluate import evaluate

        metrics: dict[str, Any] = {"budget": budget, "samples_seen": self.state.samples_seen,
                                   "step": self.trainer.step, "lr": self.trainer.optimizer.param_groups[0]["lr"],
                                   "logit_scale": self.trainer.model.logit_scale.exp().item()}
        metrics.update(self.meter.summary(self.runtime, self.config.peak_tflops))
        begin = time.perf_counter()
        if self.runtime.is_main and (self.zeroshot is not None or self.retrieval is not None):
            try:
                evaluation = evaluate(self.trainer.model, zeroshot=self.zeroshot, retrieval=self.retrieval,
                                      context_length=self.text.context_length, device=self.runtime.device,
                                      bf16=self.runtime.bf16, batch_size=self.config.eval_batch_size,
                                      workers=self.config.eval_workers)
                metrics.update(evaluation.flat())
                metrics["hits"] = evaluation.packed_hits()  # per item, for paired tests (nas.uncertainty)
            except Exception as err:
                if not is_oom(err):
                    raise
                raise OOMError(self.config.eval_batch_size, self.config.eval_batch_size, "evaluation",
                               str(self.runtime.device)) from err
        self.runtime.barrier()
        metrics["eval_s"] = time.perf_counter() - begin
        metrics["wall_s"] = self._wall()
        self.meter.reset()
        self.last_window = (0, 0.0, 0.0)
        self.state.rungs.append(metrics)
        if self.checkpoint_path is not None:
            metrics["checkpoint"] = str(self.checkpoint_path)
        self._save()
        self.log.write({"event": "rung", **metrics})
        stop = bool(self.on_rung(dict(metrics))) if self.on_rung is not None and self.runtime.is_main else False
        stop = self._agree(stop)
        self.meter.start()  # the checkpoint and the report are not the next interval's training time
        if stop and self.state.samples_seen < self.config.samples:
            self.status = status.STOPPED_EARLY
            return True
        return False

    def _agree(self, flag: bool) -> bool:
        """Rank 0's decision, on every rank."""
        if not self.runtime.distributed:
            return flag
        value = torch.tensor(float(flag), device=self.runtime.device)
        torch.distributed.broadcast(value, src=0)
        return bool(value.item())

    # -- persistence ---------------------------------------------------------------------------------------

    def _identity(self) -> dict[str, Any]:
        """What the run is (a checkpoint of another run must not be resumed as this one)."""
        return {"format": CHECKPOINT_FORMAT, "arch": self.arch.to_json(), "text": asdict(self.text),
                "config": _jsonable(self.config.to_dict()), "world_size": self.runtime.world_size}

    def _save(self) -> None:
        if self.checkpoint_path is None:
            return
        rng = _gather_objects(rng_state(), self.runtime)
        if self.runtime.is_main:
            state = replace(self.state, wall_s=self._wall(), meter=self.meter.state(), skipped=self._skipped(),
                            compile_s=self.state.compile_s + self.trainer.compile["compile_s"])
            save_checkpoint({**self._identity(), **_jsonable(asdict(state)), **self.trainer.state_dict(), "rng": rng},
                            self.checkpoint_path)
        self.runtime.barrier()

    def _resume(self) -> None:
        path = self.checkpoint_path
        if path is None or not path.exists():
            return
        checkpoint = load_checkpoint(path)
        self._check_compatible(checkpoint, path)
        self.trainer.load_state_dict(checkpoint)
        self.state = RunState.from_checkpoint(checkpoint)
        self.meter.load(self.state.meter)
        set_rng_state(checkpoint["rng"][self.runtime.rank])
        self.resumed_from = self.state.samples_seen

    def _check_compatible(self, checkpoint: Mapping[str, Any], path: Path) -> None:
        if checkpoint.get("format") != CHECKPOINT_FORMAT:
            raise ConfigError(f"checkpoint format {checkpoint.get('format')!r}, expected {CHECKPOINT_FORMAT}",
                              source=str(path))
        ours = self._identity()
        if checkpoint["arch"] != ours["arch"] or checkpoint["text"] != ours["text"]:
            raise ConfigError("holds a different arch or text tower than this run; use another --out",
                              source=str(path))
        changed = sorted(f for f in TRAJECTORY_FIELDS if checkpoint["config"].get(f) != ours["config"][f])
        if checkpoint["world_size"] != self.runtime.world_size:
            changed.append(f"world_size ({checkpoint['world_size']} -> {self.runtime.world_size})")
        if changed:
            raise ConfigError(f"was written with another {', '.join(changed)}; resuming would not continue that "
                              "run (use another --out)", source=str(path))

    def _resolved(self) -> dict[str, Any]:
        return {"arch": json.loads(self.arch.to_json()), "arch_name": self.arch.name(),
                "arch_id": self.arch.arch_id, "text": asdict(self.text),
                "train": _jsonable(self.config.to_dict()), "world_size": self.runtime.world_size,
                "device": str(self.runtime.device), "bf16": self.runtime.bf16}

    def _skipped(self) -> dict[str, int]:
        """Skips by reason over the whole run: earlier sessions' and this one's stream."""
        skipped = dict(self.state.skipped)
        stream_stats = self.stream_stats.get("stream")
        if stream_stats is not None:
            for reason, count in stream_stats.skipped.items():
                skipped[reason] = skipped.get(reason, 0) + count
        return skipped

    def _progress_bar(self) -> Any:
        if not self.progress or not self.runtime.is_main:
            return None
        from tqdm import tqdm

        return tqdm(total=self.config.samples, initial=self.state.samples_seen, unit="img", unit_scale=True,
                    dynamic_ncols=True, desc=self.arch.name())


def _jsonable(value: Any) -> Any:
    """Tuples as lists, tensors as numbers: what JSON and `weights_only` loading both take."""
    if isinstance(value, Mapping):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, torch.Tensor):
        return value.item() if value.numel() == 1 else value.tolist()
    return value
