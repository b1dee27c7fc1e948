"""A data-parallel trial: one candidate trained by a Ray Train job of several ranks, inside its Ray Tune trial.

`resources: {workers: N, cpus: C, gpus: G}` in a study makes every trial such a job. It follows Ray's "Tune +
Train" pattern (Ray Train V2): the Tune trial's function (`DataParallelTrial`, in the Tune trial's process)
builds a `ray.train.torch.TorchTrainer` whose `ScalingConfig` places N ranks with C CPUs, G GPUs (and
`memory_gib`) each; Ray Train sets up their process group (NCCL on GPUs, gloo on CPUs) and every rank runs
`rank_loop`, which is `nas.train.train` as under torchrun: the trainer takes the process group it finds
(`nas.train.runtime.setup_runtime`). What a one-process trial does around training stays in the Tune trial (`Trial`):
the ledger, where to start, replays, out-of-memory retries, the ends it reports.

- Rungs are reported once, by rank 0, and synchronously: rank 0 hands the rung's metrics to its trial
  (`RungChannel`) and waits until Ray Tune took them, while the other ranks wait for rank 0 at the trainer's
  next collective. A decision to stop the trial (ASHA) thus reaches the ranks before they train past the rung,
  as in a one-process trial (Ray's `TuneReportCallback` forwards reports without waiting for Tune).
- Checkpoints: rank 0 writes the trial's checkpoint in the run directory (`RUN/trials/<trial>/train-accum<k>/`)
  with every rank's RNG state, and keeps each rung's; a restarted trial's ranks resume from it and draw the same
  samples (each rank's stream resumes at the checkpoint's sample: `nas.data.streaming`).
- Failures: an error on any rank ends the Ray Train job (`FailureConfig(max_failures=0)`) and reaches the trial
  as Ray Train's `WorkerGroupError`. Out of memory on any rank is retried with twice the accumulation, as in a
  one-process trial; anything else (a killed rank, a lost node) fails the Tune trial, which Ray Tune retries from
  the newest checkpoint (`failures.max_retries`). Divergence is seen by every rank at once (the trainer
  all-reduces it), and rank 0 hands the trial its end.

`rank_trainer` builds the job (a supernet's data-parallel run is one too: `nas.supernet.data_parallel`).
The Tune trial itself holds no CPU or GPU (`nas.search.placement.trial_request`): Ray Train places the ranks, and
the trial's process only drives them. Every rank and the trial must see the run directory at the same path (on a
cluster it is on a shared filesystem already: docs/cluster.md); Ray Train's own record of each job goes to
`RUN/trials/<trial>/ray-train/`.
"""

from __future__ import annotations

import asyncio
import os
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import ray

from nas.arch import Arch
from nas.search.placement import worker_request
from nas.search.protocol import process_place
from nas.search.trial import Trial, cpu_share, eval_sets, memory_limit
from nas.study import Resources, Study
from nas.train import OOMError, ReportTo, TrainResult
from nas.train.runtime import is_oom
from nas.train_config import TrainConfig

#: Seconds the trial waits for a message from rank 0 before it looks whether the job still runs.
POLL_S = 0.5
#: Where a trial's Ray Train jobs keep their state, under the trial's directory.
RAY_TRAIN = "ray-train"


@ray.remote(num_cpus=0)
class RungChannel:
    """Rank 0's line to its trial: a rung's report, answered once Ray Tune took it (True: stop the run), and the
    run's end. One message at a time: rank 0 waits for each answer."""

    def __init__(self) -> None:
        self.messages: asyncio.Queue = asyncio.Queue(maxsize=1)
        self.answers: asyncio.Queue = asyncio.Queue(maxsize=1)

    async def rung(self, metrics: dict[str, Any], where: dict[str, Any]) -> bool:
        await self.messages.put(("rung", (metrics, where)))
        return await self.answers.get()

    async def end(self, result: TrainResult) -> None:
        await self.messages.put(("end", result))

    async def receive(self, timeout: float) -> tuple[str, Any] | None:
        try:
            return await asyncio.wait_for(self.messages.get(), timeout)
        except asyncio.TimeoutError:
            return None

    async def answer(self, stop: bool) -> None:
        await self.answers.put(stop)


@dataclass(frozen=True)
class RankJob:
    """What every rank of one training run needs (Ray sends it to each): the run and where rank 0 reports."""

    study: Study
    arch: Arch
    config: TrainConfig
    out: str
    report_to: ReportTo | None
    channel: Any  # a RungChannel actor
    trial_id: str
    ledger: Any  # the search's Ledger actor


def rank_loop(config: dict[str, RankJob]) -> None:
    """Ray Train's `train_loop_per_worker`: one rank of the run. Rank 0 evaluates, writes the checkpoints and
    the curves (`nas.train`), and hands its trial every rung and the end."""
    import ray.train
    import ray.train.torch

    from nas.train import train

    job = config["job"]
    main = ray.train.get_context().get_world_rank() == 0
    if main:  # for the driver to remove should the trial's process end before this job
        ray.get(job.ledger.hold.remote(job.trial_id, ray.util.get_current_placement_group()))
    resources = job.study.resources
    device = str(ray.train.torch.get_device()) if resources.gpus else "cpu"
    data = job.study.data
    sets = eval_sets(data.zeroshot, data.retrieval, job.arch.image_size, data.zeroshot_templates) if main else \
        (None,) * 2
    where = process_place(device)

    def on_rung(metrics: dict[str, Any]) -> bool:
        return ray.get(job.channel.rung.remote(metrics, where))

    with cpu_share(resources.threads), memory_limit(resources, device):
        result = train(job.arch, job.study.text, job.study.data.source, job.config, out=job.out, zeroshot=sets[0],
                       retrieval=sets[1], on_rung=on_rung if main else None, device=device, report_to=job.report_to)
    if main:
        ray.get(job.channel.end.remote(result))


def rank_trainer(loop: Callable[[dict[str, Any]], Any], config: dict[str, Any], resources: Resources,
                 storage: str | os.PathLike, name: str) -> Any:
    """A Ray Train job (`TorchTrainer`) of `resources.workers` ranks, each holding `resources`' CPUs, GPU and
    memory (`worker_request`) and running `loop(config)` in the process group Ray Train sets up (NCCL on GPUs,
    gloo on CPUs); its record goes to `storage/name`. An error on any rank ends the job, which Ray Train does not
    restart: its caller resumes the run from the run's own checkpoint."""
    from ray.train import FailureConfig, RunConfig, ScalingConfig
    from ray.train.torch import TorchConfig, TorchTrainer

    return TorchTrainer(
        loop, train_loop_config=config, torch_config=TorchConfig(backend="nccl" if resources.gpus else "gloo"),
        scaling_config=ScalingConfig(num_workers=resources.workers, use_gpu=bool(resources.gpus),
                                     resources_per_worker=worker_request(resources)),
        run_config=RunConfig(name=name, storage_path=str(storage), failure_config=FailureConfig(max_failures=0)))


class DataParallelTrial(Trial):
    """A `Trial` whose every training run is a Ray Train job of `resources.workers` ranks."""

    def __init__(self, *args: Any, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.device = "cuda" if self.study.resources.gpus else "cpu"  # its ranks' (this process holds no GPU)

    def _training(self, config: TrainConfig) -> TrainResult:
        """One training run as a Ray Train job; its rungs are reported here as rank 0 reaches them. Raises the
        out-of-memory error of a rank that ran out (for `Trial._train` to retry), or the job's error."""
        channel = RungChannel.remote()
        job = RankJob(self.study, self.arch, config, str(self.out), self.report_to, channel, self.trial_id,
                      self.ledger)
        trainer = rank_trainer(rank_loop, {"job": job}, self.study.resources,
                               self.run_dir.trial(self.trial_id) / RAY_TRAIN, f"accum{self.accum_freq}-{self.session}")
        fitting = _Fitting(trainer)
        fitting.start()
        result = None
        for kind, payload in _messages(channel, fitting):
            if kind == "end":
                result = payload
                continue
            stop = True  # unless Ray Tune takes the report and asks for more (it ends this thread to stop)
            try:
                stop = self._report(*payload)  # True: the run did not learn (`nas.learning`)
            finally:
                channel.answer.remote(stop)
        if fitting.error is not None:
            raise rank_oom(fitting.error) or fitting.error
        if result is None:
            raise RuntimeError("the Ray Train job ended without rank 0's result")
        return result


class _Fitting(threading.Thread):
    """`trainer.fit()` beside the trial's thread, which reports what rank 0 sends meanwhile."""

    def __init__(self, trainer: Any):
        super().__init__(daemon=True, name="ray-train-fit")
        self.trainer = trainer
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            self.trainer.fit()
        except BaseException as err:
            self.error = err


def _messages(channel: Any, fitting: _Fitting) -> Iterator[tuple[str, Any]]:
    """Rank 0's messages until the job has ended and none is left (each one sent before the job ended is in the
    channel by the time the job is seen ended)."""
    while True:
        ended = not fitting.is_alive()
        message = ray.get(channel.receive.remote(POLL_S))
        if message is not None:
            yield message
        elif ended:
            return


def rank_oom(error: BaseException) -> BaseException | None:
    """A rank's out-of-memory error inside Ray Train's `WorkerGroupError` (the other ranks then fail on the
    collective it left), or None."""
    return _rank_cause(error, lambda cause: isinstance(cause, OOMError) or is_oom(cause))


def rank_error(error: BaseException, kind: type[BaseException]) -> BaseException | None:
    """A rank's own error of `kind` (a `ConfigError`: the run as given cannot go on) inside Ray Train's
    `WorkerGroupError`, the lowest rank's, or None."""
    return _rank_cause(error, lambda cause: isinstance(cause, kind))


def _rank_cause(error: BaseException, matches: Callable[[BaseException], bool]) -> BaseException | None:
    failures = getattr(error, "worker_failures", None) or {}
    for rank in sorted(failures):
        for cause in _causes(failures[rank]):
            if matches(cause):
                return cause
    return None


def _causes(error: BaseException) -> Iterator[BaseException]:
    """An error and what it wraps: Ray Train's `UserExceptionWithTraceback` holds the rank's own exception."""
    seen: set[int] = set()
    while error is not None and id(error) not in seen:
        seen.add(id(error))
        yield error
        error = getattr(error, "_base_exc", None) or error.__cause__

