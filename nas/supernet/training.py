"""Training a supernet on the toolkit's trainer, and reading a trained one back from its run directory.

    result = train_supernet(load_study("studies/quickstart.yaml"), SupernetConfig(random_subnets=2), out="runs/sn")
    supernet = load_supernet("runs/sn")              # the newest checkpoint's weights

`SupernetLoop` is `nas.train.loop`'s loop with a `SandwichTrainer` in place of the one-candidate trainer: the
same stream (at the supernet's resolution), rungs, atomic checkpoints every `train.checkpoint_every` samples,
resume from `out/checkpoint.pt`, metrics.jsonl and TensorBoard, on CPU or GPUs. A checkpoint also records
the space and the `SupernetConfig` (its `supernet` entry), which a resumed run must share and from which
`load_supernet` rebuilds the supernet. Rungs checkpoint and log; subnets are evaluated by ranking them afterwards.
With `workers` (and `address`), the same loop runs on every rank of a Ray Train job (`nas.supernet.data_parallel`).
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path
from typing import Any

import torch

from nas.errors import ConfigError, require_int
from nas.jsonable import jsonable
from nas.space import SearchSpace
from nas.study import Study
from nas.supernet.config import SupernetConfig
from nas.supernet.sandwich import SandwichTrainer
from nas.supernet.supernet import Supernet
from nas.train.checkpoint import CHECKPOINT, load_checkpoint
from nas.train.log import ReportTo
from nas.train.loop import TrainingLoop, TrainResult
from nas.train.meter import Meter
from nas.train_config import TrainConfig


class SupernetLoop(TrainingLoop):
    """The training loop of a supernet; `arch` is its largest subnet (the resolution the stream reads at)."""

    def __init__(self, space: SearchSpace, supernet: SupernetConfig, data: Any, config: TrainConfig,
                 out: str | os.PathLike | None, progress: bool = False, device: str | None = None,
                 report_to: ReportTo | None = None):
        torch.manual_seed(config.seed)  # the supernet's initial weights, as the loop seeds a candidate's
        self.supernet = Supernet(space, supernet, drop_path=config.drop_path)
        super().__init__(self.supernet.largest, space.text, data, config, out, None, None, None, progress, device,
                         report_to)
        self.meter = Meter(_sandwich_gflops(self.supernet))

    def _build_trainer(self) -> SandwichTrainer:
        return SandwichTrainer(self.supernet, self.config, self.runtime)

    def _identity(self) -> dict[str, Any]:
        return {**super()._identity(), "supernet": supernet_identity(self.supernet)}

    def _resolved(self) -> dict[str, Any]:
        return {**super()._resolved(), "supernet": supernet_identity(self.supernet)}

    def _resume(self) -> int | None:
        path = self.checkpoint_path
        if path is not None and path.exists():
            stored = torch.load(path, map_location="cpu", weights_only=True, mmap=True).get("supernet")
            if stored != supernet_identity(self.supernet):
                raise ConfigError("holds another supernet (space or supernet settings) than this run; use another "
                                  "--out", source=str(path))
        return super()._resume()


def supernet_identity(supernet: Supernet) -> dict[str, Any]:
    """What a supernet run is beyond its largest arch: its space (the file's spec) and settings."""
    return jsonable({"space": supernet.space.spec, "space_source": supernet.space.source,
                     "config": supernet.config.to_dict()})


def _sandwich_gflops(supernet: Supernet) -> float:
    """Training GFLOPs per sample of one sandwich step, in expectation: the largest, the smallest and n subnets
    at the candidates' mean (what the meter's TFLOP/s and MFU count)."""
    costs = [supernet.cost(a).train_gflops for a in supernet.candidates]
    return supernet.cost(supernet.largest).train_gflops + supernet.cost(supernet.smallest).train_gflops \
        + supernet.config.random_subnets * sum(costs) / len(costs)


def train_supernet(study: Study, supernet: SupernetConfig, out: str | os.PathLike, *, samples: int | None = None,
                   progress: bool = False, device: str | None = None, report_to: ReportTo | None = None,
                   workers: int = 1, address: str | None = None) -> TrainResult:
    """Train the supernet of the study's space on its data with its recipe, to `samples` (default the study's
    largest budget), checkpointing at its rungs below that; resumes a run found in `out`.

    In this process, or with `workers` above 1 or an `address` as a Ray Train job of that many ranks, each
    training on its shard of every batch (`nas.supernet.data_parallel`; no progress bar: its curves are in
    `out`)."""
    from nas.data.synth import synthesize, synthesized

    require_int(workers, "workers", low=1)
    data = study.data
    if data.synthetic is not None and not synthesized(data.dir, data.synthetic):
        synthesize(data.dir, data.synthetic, progress=progress)
    config = study.run_config()
    if samples is not None:
        config = dataclasses.replace(config, samples=samples, rungs=tuple(r for r in config.rungs if r < samples))
    if workers == 1 and address is None:
        return SupernetLoop(study.space, supernet, data.source, config, out, progress, device, report_to).execute()
    from nas.supernet.data_parallel import SupernetJob, train_ranks

    if report_to is not None and report_to.tensorboard is not None:  # the ranks' working directory is Ray's
        report_to = dataclasses.replace(report_to, tensorboard=str(Path(report_to.tensorboard).resolve()))
    job = SupernetJob(study.space, supernet, data.source, config, str(Path(out).resolve()), study.resources,
                      report_to)
    return train_ranks(job, supernet_rank, workers, device, address)


def supernet_rank(config: dict[str, Any]) -> TrainResult:
    """One rank of a data-parallel run (Ray Train's `train_loop_per_worker`; `config["job"]` a
    `nas.supernet.data_parallel.SupernetJob`): the loop on the rank's device, with its CPUs' threads."""
    import ray.train.torch

    from nas.search.trial import cpu_share, memory_limit

    job = config["job"]
    device = str(ray.train.torch.get_device()) if job.resources.gpus else "cpu"
    with cpu_share(job.resources.threads), memory_limit(job.resources, device):
        return SupernetLoop(job.space, job.supernet, job.data, job.config, job.out, device=device,
                            report_to=job.report_to).execute()


def load_supernet(run: str | os.PathLike) -> Supernet:
    """The supernet a `train_supernet` run wrote, with the weights of its newest checkpoint, in eval mode."""
    path = Path(run) / CHECKPOINT
    if not path.is_file():
        raise ConfigError(f"not a supernet run (no {CHECKPOINT})", source=str(run))
    checkpoint = load_checkpoint(path)
    identity = checkpoint.get("supernet")
    if identity is None:
        raise ConfigError("a checkpoint of one candidate, not of a supernet", source=str(path))
    space = SearchSpace(identity["space"], identity["space_source"])
    supernet = Supernet(space, SupernetConfig.from_dict(identity["config"], source=str(path)),
                        drop_path=checkpoint["config"]["drop_path"])
    supernet.load_state_dict(checkpoint["model"])
    return supernet.eval()
