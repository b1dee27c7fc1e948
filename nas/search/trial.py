"""One trial of a search as it runs on a Ray worker: train a candidate through its rungs, report each to Tune.

A `Trial` measures a `nas.search.protocol.Candidate` (arch, schedule, analytic cost), started by Ray Tune's
function trainable (`nas.search.trainable`), and reports what `nas.search.protocol` defines. It is idempotent,
so that retries, resumed searches and repeated candidates never train what is already measured:

- It first asks the search's ledger (`nas.search.recorder.Ledger`, kept by the driver from the results database)
  what is known. A trial that already ended (a driver killed after the trial finished but before Ray Tune
  saved that) reports its rungs again and ends the same way; an arch measured to the full budget by another
  trial reports those results. Reports of known results carry `REPLAY_KEY: True` and are not written again.
- Otherwise it starts from the newest checkpoint of the arch: the trial's own (`RUN/trials/<trial>/`, written by
  its earlier attempts, whichever worker or driver session ran them) or, when the ledger knows another trial
  of the arch that got further (one that failed or was cut off), that trial's; `nas.train.train` resumes from
  it exactly. The trainer checkpoints every `train.checkpoint_every` samples (`nas.train_config.TrainConfig`) and at
  every rung, so a killed worker or driver loses at most one interval of training. At every rung the
  trainer's metrics, the analytic cost and where it ran are reported, and the rung's checkpoint is kept in
  `RUN/trials/<trial>/rungs/<rung>/` (`nas.run_dir`): one copy of each checkpoint, none in Ray's storage.
- Failures are results: a non-finite loss ends the trial as `diverged`, a run that stopped learning near where
  it started (`nas.learning`, judged at every rung) as `did_not_learn`; out of memory is retried with half
  the micro-batch and twice the gradient accumulation (same effective batch) up to the study's
  `oom_retries`, then ends as `oom`. Anything else raises, and Ray Tune retries the trial from its last
  checkpoint up to `max_retries` times before recording `failed`.

The trial takes exactly its CPU share (torch threads, loader workers) and at most its share of memory: with
`resources.memory_gib`, that much; on a GPU it shares with other trials (`gpus: 0.25`), its share of the
device's memory (`nas.search.placement.device_memory_fraction`). With `resources.workers > 1` the trial trains
through a Ray Train job of that many ranks (`nas.search.data_parallel.DataParallelTrial`), everything else the
same. This module imports torch only where it trains, so that `nas.search.stand_in.StandInTrial` (a `Trial`
whose training is a synthetic curve) runs in processes without it.
"""

from __future__ import annotations

import contextlib
import ctypes
import functools
import gc
import json
import resource
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from nas import status
from nas.learning import did_not_learn, losses_of
from nas.run_dir import CHECKPOINT, RUNGS, RunDir, link_or_copy
from nas.search.placement import device_memory_fraction
from nas.search.protocol import (
    ACCUM_FREQ_KEY,
    ARCH_ID_KEY,
    ERROR_KEY,
    HITS_KEY,
    REPLAY_KEY,
    RESUMED_FROM_KEY,
    RUNG_CHECKPOINT_KEY,
    SCHEDULE_KEY,
    SESSION_KEY,
    STATUS_KEY,
    Candidate,
    process_place,
)
from nas.study import Resources, Study
from nas.train_config import TrainConfig

if TYPE_CHECKING:
    from nas.train import ReportTo, TrainResult


@dataclass(frozen=True)
class StartingPoint:
    """Where training starts: a checkpoint file, what it holds, and the trial that wrote it."""

    samples_seen: int
    accum_freq: int
    checkpoint: Path
    trial_id: str


class Trial:
    """One trial on its worker; its methods are the steps of `run`."""

    def __init__(self, study: Study, candidate: Candidate, trial_id: str, run_dir: RunDir, ledger: Any,
                 report_to: ReportTo | None = None):
        self.study, self.candidate, self.trial_id, self.run_dir, self.ledger = study, candidate, trial_id, run_dir, \
            ledger
        self.report_to = report_to
        self.arch, self.schedule = candidate.arch, candidate.schedule
        gpu = study.resources.gpus > 0 and cuda_available()
        self.device = "cuda" if gpu else "cpu"
        self.session = uuid.uuid4().hex[:12]
        self.accum_freq = study.train.accum_freq
        self.resumed_from: int | None = None
        self.reported: set[int] = set()  # budgets reported in this session
        self.losses: dict[int, float] = {}  # budget -> the rung's training loss, what `did_not_learn` judges
        self.not_learned: str | None = None  # why the run did not learn, once it is caught

    # ---- the trial -------------------------------------------------------------------------------------------
    def run(self) -> None:
        import ray

        own, furthest = ray.get(self.ledger.lookup.remote(self.trial_id, self.candidate.key))
        if own is not None and own["status"] in status.KNOWN:
            self._replay(own["rungs"])
            if own["status"] in status.REPORTED_ENDS:
                self._report_end(own["status"], own.get("error"), replay=True)
            return
        if furthest is not None and furthest["status"] == status.COMPLETED:
            self._replay(furthest["rungs"])
            return
        self._measure(furthest)

    def _measure(self, furthest: dict[str, Any] | None) -> None:
        """Train from the newest checkpoint there is (`_starting_point`), in the trial's CPU share."""
        with cpu_share(self.study.resources.threads):
            self._train(self._starting_point(furthest))

    def _train(self, start: StartingPoint | None) -> None:
        from nas.train import OOMError, run_progress
        from nas.train.runtime import is_oom

        if start is not None:
            self.accum_freq = start.accum_freq
            self.resumed_from = start.samples_seen
            self._materialize(start)
            self._replay(run_progress(self.out)[0].rungs)
        while True:
            try:
                result = self._training(self.study.run_config(self.schedule, self.accum_freq, self.candidate.seed))
                break
            except Exception as err:  # OOM can also hit building the model or the loader, outside the trainer
                if not (isinstance(err, OOMError) or is_oom(err)):
                    raise
                message = f"{type(err).__name__}: {err}"
            free_memory()
            if not self._halve_micro_batch():
                self._report_end(status.OOM, message)
                return
        if self.not_learned is not None:
            self._report_end(status.DID_NOT_LEARN, self.not_learned)
        elif result.status == status.DIVERGED:
            self._report_end(status.DIVERGED,
                             f"non-finite loss by step {result.step} ({result.samples_seen} samples)")
        elif result.rungs and result.rungs[-1]["budget"] not in self.reported:
            self._replay(result.rungs[-1:])  # resumed from the final checkpoint: the end is known, report it

    def _training(self, config: TrainConfig) -> TrainResult:
        """One training run in this process, reporting each rung as the trainer reaches it."""
        from nas.train import train

        data = self.study.data
        zeroshot, retrieval = eval_sets(data.zeroshot, data.retrieval, self.arch.image_size, data.zeroshot_templates)
        with memory_limit(self.study.resources, self.device):
            return train(self.arch, self.study.text, self.study.data.source, config, out=self.out,
                         zeroshot=zeroshot, retrieval=retrieval, on_rung=self._report, device=self.device,
                         report_to=self.report_to)

    def _halve_micro_batch(self) -> bool:
        """The next OOM retry: twice the accumulation, if the policy and the batch (over every rank) allow it."""
        accum = self.accum_freq * 2
        retries = (accum // self.study.train.accum_freq).bit_length() - 1
        if retries > self.study.failures.oom_retries or \
                self.study.train.batch_size % (accum * self.study.resources.workers):
            return False
        self.accum_freq = accum
        self.resumed_from = None
        return True

    @property
    def out(self) -> Path:
        """The trial's training directory; one per accumulation, since a checkpoint is tied to its config."""
        return self.run_dir.training(self.trial_id, self.accum_freq)

    # ---- where to start ------------------------------------------------------------------------------------
    def _starting_point(self, furthest: dict[str, Any] | None) -> StartingPoint | None:
        """The newest checkpoint of this trial's earlier attempts, or of the trial that measured the arch furthest
        when it got further (own first when they stand at the same point)."""
        own = newest_checkpoint(self.run_dir, self.trial_id, self._progress)
        other = None
        if furthest is not None and furthest.get("trial_id") not in (None, self.trial_id):
            other = newest_checkpoint(self.run_dir, furthest["trial_id"], self._progress)
        if other is not None and (own is None or other.samples_seen > own.samples_seen):
            return other
        return own

    @staticmethod
    def _progress(directory: Path) -> tuple[int, int] | None:
        """Samples seen and the accumulation of the run whose checkpoint is in `directory` (None: none there)."""
        from nas.train import run_progress

        progress = run_progress(directory)
        return None if progress is None else (progress[0].samples_seen, progress[1].accum_freq)

    def _materialize(self, start: StartingPoint) -> None:
        """The starting checkpoint as this trial's training run, and another trial's rung checkpoints as this
        one's (hard links: no copies)."""
        target = self.out / CHECKPOINT
        if start.checkpoint.resolve() != target.resolve():
            self.out.mkdir(parents=True, exist_ok=True)
            link_or_copy(start.checkpoint, target)
        if start.trial_id != self.trial_id:
            for kept in sorted(self.run_dir.trial(start.trial_id).glob(f"{RUNGS}/*/{CHECKPOINT}")):
                self.run_dir.keep_rung(self.trial_id, int(kept.parent.name), kept)

    # ---- reporting ---------------------------------------------------------------------------------------------
    def _extras(self, replay: bool, where: dict[str, Any] | None = None) -> dict[str, Any]:
        return {ARCH_ID_KEY: self.arch.arch_id, **(where or process_place(self.device)), SESSION_KEY: self.session,
                ACCUM_FREQ_KEY: self.accum_freq, RESUMED_FROM_KEY: self.resumed_from, REPLAY_KEY: replay,
                STATUS_KEY: status.RUNNING, SCHEDULE_KEY: self.schedule, **self.candidate.cost}

    def _report(self, metrics: dict[str, Any], where: dict[str, Any] | None = None) -> bool:
        """The trainer's rung callback (its checkpoint is written): keep the rung's checkpoint and report, with
        where the rung was measured (`where`: another process's, default this one's). Never asks to stop: when
        ASHA stops the trial, Ray ends this thread inside `tune.report`. Stops the run (True) once it did not learn."""
        from ray import tune

        rung = self.study.budget.rung_of(metrics["budget"])
        kept = self.run_dir.relative(self.run_dir.keep_rung(self.trial_id, rung, self.out / CHECKPOINT))
        self.reported.add(metrics["budget"])
        tune.report({**_reported(metrics), **self._extras(False, where), RUNG_CHECKPOINT_KEY: kept})
        self.losses.update(losses_of([metrics]))
        train = self.study.train
        self.not_learned = did_not_learn(self.losses, batch_size=train.batch_size, loss=train.loss,
                                         reduction_factor=self.study.budget.reduction_factor)
        return self.not_learned is not None

    def _replay(self, rungs: list[dict[str, Any]]) -> None:
        """Report rungs measured before (by this trial in an earlier session, or by another trial of the arch),
        each with the checkpoint kept for it, when there is one."""
        from ray import tune

        self.losses.update(losses_of(rungs))
        for metrics in rungs:
            self.reported.add(metrics["budget"])
            kept = metrics.get(RUNG_CHECKPOINT_KEY)
            own = self.run_dir.rung(self.trial_id, self.study.budget.rung_of(metrics["budget"]))
            if kept is None and (own / CHECKPOINT).is_file():
                kept = self.run_dir.relative(own)
            tune.report({**_reported(metrics), **self._extras(replay=True), RUNG_CHECKPOINT_KEY: kept or ""})

    def _report_end(self, end: str, error: str | None, replay: bool = False) -> None:
        from ray import tune

        tune.report({**self._extras(replay), STATUS_KEY: end, ERROR_KEY: error or ""})


def _reported(metrics: dict[str, Any]) -> dict[str, Any]:
    """A rung's metrics as Tune takes them: the numbers, and the per-item eval hits as JSON text (the trainer
    gives them as a mapping; the ledger, replaying a measurement, as the text it was recorded with)."""
    numbers = {k: v for k, v in metrics.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}
    hits = metrics.get(HITS_KEY)
    if hits:
        numbers[HITS_KEY] = hits if isinstance(hits, str) else json.dumps(hits, sort_keys=True)
    return numbers


def newest_checkpoint(run_dir: RunDir, trial_id: str,
                      progress: Callable[[Path], tuple[int, int] | None]) -> StartingPoint | None:
    """The newest checkpoint a trial wrote: its training runs' (where the trainer writes every interval) or its
    rungs' (a training run replaced since), whichever stands furthest by `progress` (samples seen and
    accumulation of a directory's checkpoint)."""
    newest = None
    rungs = sorted(run_dir.trial(trial_id).glob(f"{RUNGS}/*"))
    for directory in [*run_dir.trainings(trial_id), *rungs]:
        found = progress(directory)
        if found is not None and (newest is None or found[0] > newest.samples_seen):
            newest = StartingPoint(found[0], found[1], directory / CHECKPOINT, trial_id)
    return newest


@functools.lru_cache(maxsize=4)
def eval_sets(zeroshot: str | None, retrieval: str | None, image_size: int,
              templates: tuple[str, ...] | None = None) -> tuple[Any, Any]:
    """The zero-shot and retrieval sets at a resolution, loaded once per worker process (Ray reuses workers)."""
    from nas.data import retrieval_set, zeroshot_set

    return (zeroshot_set(zeroshot, image_size, templates=templates) if zeroshot else None,
            retrieval_set(retrieval, image_size) if retrieval else None)


def cuda_available() -> bool:
    import torch

    return torch.cuda.is_available()


@contextlib.contextmanager
def cpu_share(threads: int) -> Iterator[None]:
    """Torch's intra-op threads set to the trial's CPUs (trials sharing a node do not oversubscribe it)."""
    import torch

    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


@contextlib.contextmanager
def memory_limit(resources: Resources, device: str) -> Iterator[None]:
    """At most this process's share of memory for what runs inside. On a GPU, its fraction of the device
    (`nas.search.placement.device_memory_fraction`: a fractional `gpus`, `memory_gib`), past which the caching
    allocator raises out of memory; on a CPU, with `memory_gib`, that much address space beyond what the
    process holds now (RLIMIT_AS), so that an allocation past it fails with an out-of-memory error the
    trainer reports, instead of the kernel killing the node's processes.

    Each training attempt takes its own: the heap a failed attempt leaves mapped (free, and reused by the
    next) is not counted against the retry."""
    import torch

    if device.startswith("cuda"):
        index = torch.device(device).index
        index = torch.cuda.current_device() if index is None else index
        fraction = device_memory_fraction(resources, torch.cuda.get_device_properties(index).total_memory)
        if fraction is None:
            yield
            return
        torch.cuda.set_per_process_memory_fraction(fraction, index)
        try:
            yield
        finally:
            torch.cuda.set_per_process_memory_fraction(1.0, index)
        return
    if resources.memory_gib is None:
        yield
        return
    soft, hard = resource.getrlimit(resource.RLIMIT_AS)
    limit = _address_space() + int(resources.memory_gib * 2**30)
    resource.setrlimit(resource.RLIMIT_AS, (limit if hard == resource.RLIM_INFINITY else min(limit, hard), hard))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_AS, (soft, hard))


def _address_space() -> int:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmSize:"):
                return int(line.split()[1]) * 1024
    raise OSError("no VmSize in /proc/self/status")


def free_memory() -> None:
    """Return what a failed attempt allocated before the next one (its frames are gone once the error is):
    to the GPU's pool, and to the operating system, since glibc keeps freed heap memory in the process."""
    import torch

    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
    with contextlib.suppress(OSError, AttributeError):  # glibc only
        ctypes.CDLL("libc.so.6").malloc_trim(0)
