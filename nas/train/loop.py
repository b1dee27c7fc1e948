"""The training loop of one run: steps, rungs (evaluate, checkpoint, report), resuming, and what the run returns.

    result = train(arch, text, DataSource("shards/"), TrainConfig(samples=2_000_000, batch_size=1024),
                   zeroshot=zeroshot_set("eval/zeroshot", 64), out="runs/a1b2c3", on_rung=report)
"""

from __future__ import annotations

import json
import os
import random
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from nas import status
from nas.arch import Arch
from nas.cost import cost
from nas.data.source import DataSource, StreamSettings
from nas.data.streaming import RunStream, connect
from nas.errors import ConfigError
from nas.jsonable import jsonable
from nas.presets import TextTower
from nas.train.checkpoint import (
    CHECKPOINT,
    RunState,
    check_compatible,
    load_checkpoint,
    rng_state,
    run_identity,
    save_checkpoint,
    set_rng_state,
)
from nas.train.log import MetricsLog, ReportTo
from nas.train.meter import Meter
from nas.train.recipe import build_model
from nas.train.runtime import (
    OOMError,
    Runtime,
    any_rank,
    gather_objects,
    is_oom,
    main_rank_decides,
    mean_over_ranks,
    setup_runtime,
    sum_over_ranks,
)
from nas.train.trainer import Trainer
from nas.train_config import TrainConfig

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
    "cpu_s": "CPU time of the run so far over the same span as wall_s: every rank's process (all its threads), "
             "summed; not the data loader's worker processes",
    "train_s": "time spent in training steps since the previous rung",
    "images_per_s": "training throughput since the previous rung (all ranks; compiling steps excluded)",
    "data_wait_share": "the share of training time since the previous rung spent waiting for data",
    "tflops": "achieved training TFLOP/s (GPU; analytic FLOPs from nas.cost, full convention)",
    "mfu": "tflops over the peak dense bf16 TFLOP/s of the run's devices (GPU)",
    "peak_memory_gib": "peak GPU memory allocated on this rank (GPU)",
    "eval_s": "time the evaluation took",
    "checkpoint": "path of the checkpoint written at this rung",
}


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
    cpu_s: float = 0.0

    @property
    def final(self) -> dict[str, Any]:
        """The last rung's metrics ({} when none was reached)."""
        return self.rungs[-1] if self.rungs else {}


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
    """One `train` call; its methods are the loop's parts.

    It holds what the run is (arch, text, config, checkpoint path), where its rungs go (eval sets, `on_rung`),
    the objects it builds (runtime, data, trainer, meter, log) and where it stands (the `RunState` a checkpoint
    restores, this session's status and start)."""

    def __init__(self, arch: Arch, text: TextTower, data: Any, config: TrainConfig, out: str | os.PathLike | None,
                 zeroshot: Any, retrieval: Any, on_rung: Callable | None, progress: bool, device: str | None,
                 report_to: ReportTo | None = None):
        self.arch, self.text, self.config = arch, text, config
        self.runtime = setup_runtime(config.precision, device)
        world = self.runtime.world_size * config.accum_freq
        if config.batch_size % world:
            raise ConfigError(f"{config.batch_size} does not split over {self.runtime.world_size} ranks x "
                              f"{config.accum_freq} micro-batches", field="batch_size")
        out = Path(out) if out is not None else None
        self.checkpoint_path = out / CHECKPOINT if out else None
        self.zeroshot, self.retrieval, self.on_rung, self.progress = zeroshot, retrieval, on_rung, progress
        self.data = _connect(data, arch, text, config, self.runtime)
        _seed_everything(config.seed)
        self.trainer = self._build_trainer()
        _seed_everything(config.seed + self.runtime.rank)
        self.meter = Meter(cost(arch, text).train_gflops)
        self.log = MetricsLog(out, self.runtime, report_to)
        self.state = RunState()
        self.status = status.COMPLETED

    def _build_trainer(self) -> Trainer:
        """The model and its optimizer step (`nas.supernet` trains a supernet in this loop by overriding it)."""
        return Trainer(build_model(self.arch, self.text, self.config), self.config, self.runtime)

    def execute(self) -> TrainResult:
        self.start, self.cpu_start = time.perf_counter(), time.process_time()
        resumed_from = self._resume()
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
                           {"skipped": self._skipped()}, resumed_from, self._cpu())

    def _wall(self) -> float:
        return self.state.wall_s + time.perf_counter() - self.start

    def _cpu(self) -> float:
        """The run's CPU seconds so far (`cpu_s`), every rank's summed: a collective, called by every rank."""
        return self.state.cpu_s + sum_over_ranks(time.process_time() - self.cpu_start, self.runtime)

    def _loop(self, bar: Any) -> None:
        config, runtime = self.config, self.runtime
        per_rank_left = (config.samples - self.state.samples_seen) // runtime.world_size
        batches = _micro_batches(self.data(self.state.samples_seen), per_rank_left)
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
        if not interval or self.checkpoint_path is None:
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
        finite = bool(torch.isfinite(torch.as_tensor(self.meter.loss_sum)).all())
        if any_rank(not finite, self.runtime):
            self.status = status.DIVERGED
            self.log.write({"event": "diverged", "samples_seen": self.state.samples_seen, "step": self.trainer.step,
                            "wall_s": self._wall(), "cpu_s": self._cpu()})
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
                  "wall_s": self._wall(), "cpu_s": self._cpu()}
        rate, data_share = self.meter.window()
        if rate is not None:
            record.update(images_per_s=rate, data_wait_share=data_share)
        self.log.write(record)
        if bar is not None:
            bar.set_postfix({"loss": f"{value:.3f}", "img/s": f"{rate:.0f}" if rate else "-", "lr": f"{lr:.2e}"},
                            refresh=False)
        return True

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
        metrics["cpu_s"] = self._cpu()
        self.meter.reset()
        self.state.rungs.append(metrics)
        if self.checkpoint_path is not None:
            metrics["checkpoint"] = str(self.checkpoint_path)
        self._save()
        self.log.write({"event": "rung", **metrics})
        stop = bool(self.on_rung(dict(metrics))) if self.on_rung is not None and self.runtime.is_main else False
        stop = main_rank_decides(stop, self.runtime)
        self.meter.start()  # the checkpoint and the report are not the next interval's training time
        if stop and self.state.samples_seen < self.config.samples:
            self.status = status.STOPPED_EARLY
            return True
        return False

    # -- persistence ---------------------------------------------------------------------------------------

    def _identity(self) -> dict[str, Any]:
        return run_identity(self.arch, self.text, self.config, self.runtime.world_size)

    def _save(self) -> None:
        if self.checkpoint_path is None:
            return
        rng = gather_objects(rng_state(), self.runtime)
        cpu_s = self._cpu()
        if self.runtime.is_main:
            state = replace(self.state, wall_s=self._wall(), cpu_s=cpu_s, meter=self.meter.state(),
                            skipped=self._skipped(), compile_s=self.state.compile_s + self.trainer.compile["compile_s"])
            save_checkpoint({**self._identity(), **jsonable(asdict(state)), **self.trainer.state_dict(), "rng": rng},
                            self.checkpoint_path)
        self.runtime.barrier()

    def _resume(self) -> int | None:
        """Continue the run from its checkpoint when there is one; the samples seen it resumed from, or None."""
        path = self.checkpoint_path
        if path is None or not path.exists():
            return None
        checkpoint = load_checkpoint(path)
        check_compatible(checkpoint, self._identity(), path)
        self.trainer.load_state_dict(checkpoint)
        self.state = RunState.from_checkpoint(checkpoint)
        self.meter.load(self.state.meter)
        set_rng_state(checkpoint["rng"][self.runtime.rank])
        return self.state.samples_seen

    def _resolved(self) -> dict[str, Any]:
        return {"arch": json.loads(self.arch.to_json()), "arch_name": self.arch.name(),
                "arch_id": self.arch.arch_id, "text": asdict(self.text),
                "train": jsonable(self.config.to_dict()), "world_size": self.runtime.world_size,
                "device": str(self.runtime.device), "bf16": self.runtime.bf16}

    def _skipped(self) -> dict[str, int]:
        """Skips by reason over the whole run: earlier sessions' and this one's stream."""
        skipped = dict(self.state.skipped)
        stream_stats = self.data.stats if isinstance(self.data, RunStream) else None
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


DataFactory = Callable[[int], Iterable[Any]]
"""`factory(start_sample) -> iterable of (images, texts[, ...]) batches for this rank`, resuming at a position."""


def _connect(data: Any, arch: Arch, text: TextTower, config: TrainConfig, runtime: Runtime) -> DataFactory:
    """The run's batches: a `nas.data.DataSource` connected to this run (`nas.data.connect`: the trainer supplies
    what must agree with the model, the budget and the ranks), or a factory of batches as given."""
    if not isinstance(data, DataSource):
        if not callable(data):
            raise ConfigError("data must be a nas.data.DataSource or a callable(start_sample) -> batches",
                              field="data")
        return data
    micro = config.batch_size // (runtime.world_size * config.accum_freq)
    settings = StreamSettings(batch_size=micro, image_size=arch.image_size, samples=config.samples, seed=config.seed,
                              workers=config.workers, context_length=text.context_length,
                              pin_memory=runtime.device.type == "cuda")
    return connect(data, settings, rank=runtime.rank, world_size=runtime.world_size)


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


def _seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
