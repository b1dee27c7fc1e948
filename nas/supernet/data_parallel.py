"""A supernet trained data-parallel: `train_supernet(..., workers=N)` runs as a Ray Train job of N ranks.

    result = train_supernet(study, SupernetConfig(random_subnets=2), "runs/sn", workers=4)    # a local Ray
    result = train_supernet(study, config, "/shared/runs/sn", workers=8, address="10.0.0.1:6379")

The job is a data-parallel trial's (`nas.search.data_parallel.rank_trainer`): N ranks in the process group Ray
Train sets up (gloo on CPUs, NCCL with one GPU per rank), each holding the study's `resources.cpus` CPUs (and
`memory_gib`) with torch on as many threads, and each running `SupernetLoop` (`nas.supernet.training.
supernet_rank`) as the trial's ranks run `nas.train.train`. Each rank streams its own shard of every batch
(`nas.data.connect`); the sandwich step draws the same subnets on every rank and averages their gradients over
the ranks (`nas.supernet.sandwich`), so that N ranks take the step one process takes on the whole batch. Rank 0
writes the checkpoints, metrics.jsonl and TensorBoard; a run killed (a rank, or the process driving it) is
resumed by running it again with as many ranks, every rank from the newest checkpoint. Ray is the caller's, a
cluster's (`address`) or a local one (`nas.search.loopback.ray_session`); the run directory must be at the same
path on every node (a shared filesystem on a cluster: docs/cluster.md), and Ray Train's own record goes to
OUT/ray-train/.
"""

from __future__ import annotations

import dataclasses
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from nas.errors import ConfigError
from nas.space import SearchSpace
from nas.study import Resources
from nas.supernet.config import SupernetConfig
from nas.train.log import ReportTo
from nas.train.loop import TrainResult
from nas.train_config import TrainConfig


@dataclass(frozen=True)
class SupernetJob:
    """What every rank of a supernet's run needs (Ray sends it to each)."""

    space: SearchSpace
    supernet: SupernetConfig
    data: Any  # the study's DataSource
    config: TrainConfig
    out: str
    resources: Resources  # each rank's
    report_to: ReportTo | None


def train_ranks(job: SupernetJob, rank: Callable[[dict[str, SupernetJob]], TrainResult], workers: int,
                device: str | None, address: str | None) -> TrainResult:
    """Run `job` on `workers` ranks, each calling `rank({"job": job})` (`nas.supernet.training.supernet_rank`;
    rank 0's result is the job's): on GPUs with `device` "cuda", or by default when the cluster has GPUs, else
    on CPUs. Raises a rank's `OOMError` or `ConfigError` as it is, anything else as Ray Train's error (a rank
    lost, or a rank's error with every rank's story)."""
    from nas.search.data_parallel import RAY_TRAIN, rank_error, rank_oom, rank_trainer
    from nas.search.loopback import ray_session

    if device not in (None, "cpu", "cuda"):
        raise ConfigError(f"{device!r}: Ray Train gives each rank its device; give cpu or cuda", field="device")
    with ray_session(address):
        import ray

        gpus = device == "cuda" or (device is None and ray.cluster_resources().get("GPU", 0) > 0)
        ranks = dataclasses.replace(job.resources, workers=workers, gpus=1.0 if gpus else 0.0, concurrency=None)
        job = dataclasses.replace(job, resources=ranks)
        trainer = rank_trainer(rank, {"job": job}, ranks, Path(job.out).resolve() / RAY_TRAIN,
                               f"supernet-{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}")
        try:
            return trainer.fit().return_value
        except Exception as err:
            raise (rank_oom(err) or rank_error(err, ConfigError) or err) from None
