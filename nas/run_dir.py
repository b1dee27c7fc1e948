"""The layout of a search's run directory (`vitamin-nas search --out RUN`), and its size.

    RUN/study.db                                  the results database (`nas.results.ResultStore`)
    RUN/trials/<trial>/train-accum<k>/            the trial's training run: checkpoint.pt (its newest checkpoint,
                                                  where a retry or a resumed search continues), metrics.jsonl
    RUN/trials/<trial>/rungs/<rung>/checkpoint.pt the checkpoint of every rung the trial reached (for export)
    RUN/trials/<trial>/error.log                  the error of each failed attempt of the trial, whole
    RUN/ray/                                      Ray Tune's experiment state (no checkpoints: `--storage`)

Everything a search stores about the run names paths relative to RUN (`RunDir.relative`), so that a run
directory copied or moved elsewhere resumes and exports from its new place. A rung's checkpoint is a hard link
to the training run's checkpoint file as it stood at that rung (the trainer replaces that file on its next
write), so each checkpoint is on disk once.
"""

from __future__ import annotations

import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

TRIALS = "trials"
RUNGS = "rungs"
CHECKPOINT = "checkpoint.pt"
ERROR_LOG = "error.log"


@dataclass(frozen=True)
class RunDir:
    """A run directory (`root` is absolute where the driver or a worker sees it)."""

    root: Path

    def __post_init__(self) -> None:
        object.__setattr__(self, "root", Path(self.root).resolve())

    def trial(self, trial_id: str) -> Path:
        return self.root / TRIALS / trial_id

    def training(self, trial_id: str, accum_freq: int) -> Path:
        """The trial's training run with `accum_freq` micro-batches (a checkpoint belongs to its accumulation)."""
        return self.trial(trial_id) / f"train-accum{accum_freq}"

    def trainings(self, trial_id: str) -> list[Path]:
        """The trial's training runs, most micro-batches first (the latest out-of-memory retry first)."""
        runs = self.trial(trial_id).glob("train-accum*")
        return sorted(runs, key=lambda p: int(p.name.removeprefix("train-accum")), reverse=True)

    def error_log(self, trial_id: str) -> Path:
        """The trial's error log: what each failed attempt raised (tracebacks kept here, not on the terminal)."""
        return self.trial(trial_id) / ERROR_LOG

    def log_error(self, trial_id: str, attempt: int, error: str) -> Path:
        """Append one failed attempt's error to the trial's error log."""
        path = self.error_log(trial_id)
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path, "a") as log:
            log.write(f"---- attempt {attempt}, {time.strftime('%Y-%m-%d %H:%M:%S')} ----\n{error.rstrip()}\n")
        return path

    def last_written(self, trial_id: str) -> float | None:
        """When the trial's training last wrote a file (its metrics log, a checkpoint): a sign of progress. None
        before it wrote any."""
        times = [item.stat().st_mtime for run in self.trainings(trial_id) for item in run.iterdir() if item.is_file()]
        return max(times, default=None)

    def rung(self, trial_id: str, rung: int) -> Path:
        return self.trial(trial_id) / RUNGS / str(rung)

    def relative(self, path: str | os.PathLike) -> str:
        return Path(path).resolve().relative_to(self.root).as_posix()

    def resolve(self, relative: str) -> Path:
        """A stored path as an absolute one (paths stored before they were relative pass through)."""
        return self.root / relative

    def keep_rung(self, trial_id: str, rung: int, checkpoint: str | os.PathLike) -> Path:
        """Keep `checkpoint` (a training run's file) as the trial's checkpoint of `rung`: a hard link, so that it
        costs no disk until the trainer writes its next checkpoint (a copy where links are not supported)."""
        directory = self.rung(trial_id, rung)
        directory.mkdir(parents=True, exist_ok=True)
        target = directory / CHECKPOINT
        link_or_copy(checkpoint, target)
        return directory

    def size(self) -> dict[str, int]:
        """Bytes on disk under the run, in total and by top-level entry (hard links counted once; SQLite's
        -wal and -shm files with their database)."""
        seen: set[tuple[int, int]] = set()
        parts: dict[str, int] = {}
        for entry in sorted(self.root.iterdir()) if self.root.is_dir() else []:
            name = entry.name.removesuffix("-wal").removesuffix("-shm")
            parts[name] = parts.get(name, 0) + _disk_usage(entry, seen)
        return {"total": sum(parts.values()), **parts}


def link_or_copy(source: str | os.PathLike, target: str | os.PathLike) -> None:
    """`target` becomes the file `source` is now: a hard link where the filesystem has them, else a copy; written
    aside and renamed into place, so that a reader never finds it half made."""
    target = Path(target)
    aside = target.with_name(f".{target.name}.new")
    aside.unlink(missing_ok=True)
    try:
        os.link(source, aside)
    except OSError:
        shutil.copy2(source, aside)
    os.replace(aside, target)


def _disk_usage(path: str | os.PathLike, seen: set[tuple[int, int]]) -> int:
    """Bytes on disk of `path` and, for a directory, of everything under it (below `path`, not through a link to
    a directory), each inode once. Walked with `os.scandir`, whose entries carry their `lstat`: `Path.rglob` and a
    stat per file took 2.4x the CPU (6,500 files, `vitamin-nas status` of a 500-trial run)."""
    try:
        stat = os.lstat(path)
    except OSError:  # removed while walking (a live search writes as `status` reads)
        return 0
    total, pending = _count(stat, seen), [path] if os.path.isdir(path) else []
    while pending:
        try:
            with os.scandir(pending.pop()) as entries:
                for entry in entries:
                    try:
                        total += _count(entry.stat(follow_symlinks=False), seen)
                        if entry.is_dir(follow_symlinks=False):
                            pending.append(entry.path)
                    except OSError:
                        continue
        except OSError:
            continue
    return total


def _count(stat: os.stat_result, seen: set[tuple[int, int]]) -> int:
    if (stat.st_dev, stat.st_ino) in seen:
        return 0
    seen.add((stat.st_dev, stat.st_ino))
    return stat.st_blocks * 512
