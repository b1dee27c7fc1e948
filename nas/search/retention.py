"""Which checkpoints a search keeps on disk: with `storage: {keep: K}` in the study, the rung checkpoints of only
the best K trials at each rung.

A search keeps each trial's newest training checkpoint (where a retry or a resumed search continues) and one
checkpoint per rung it reached (`nas.run_dir`), which `export` and `select` read: one checkpoint per trial
per rung, which on a cluster search of hundreds of trials is more than the disk holds. `storage.keep: K`
deletes, as the search runs, the rung checkpoints of trials outside the best K at that rung, by the study's
first measured objective, as `export --best` ranks them (and, with several objectives, outside the rung's
Pareto front, which `select` and the report read). A measurement's place at a rung can only get worse as
other trials reach the rung, so a checkpoint outside the best K is settled for good as soon as K others are
better: it is deleted then, and its row in the database says no checkpoint was kept (`export` then names the
rungs that have one; `select` takes the furthest kept).

Never deleted: anything of a trial that may still train (pending, running, interrupted, or failed, which a
resumed search retries), so that its newest checkpoint stays where it resumes. A trial that ended for good
(completed, stopped early, diverged, out of memory) is never resumed, so its training checkpoints go too: the
one it kept of its last rung (a hard link to the same file) is what remains of it.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, NamedTuple

from nas import status
from nas.metrics import TRAINED, direction
from nas.pareto import minimization, pareto_mask
from nas.run_dir import CHECKPOINT, RunDir
from nas.study import Study

if TYPE_CHECKING:
    from nas.results import ResultStore

#: Trials that will never train again: their checkpoints serve export and select only.
ENDED = (status.COMPLETED, status.STOPPED_EARLY, status.DIVERGED, status.OOM)


class Kept(NamedTuple):
    """A rung checkpoint a search kept: the trial's rung, its budget, and the checkpoint's directory as stored."""

    trial_id: str
    rung: int
    budget: int
    checkpoint: str


def settled(store: ResultStore, study: Study) -> list[Kept]:
    """(trial_id, rung) of the kept rung checkpoints that `study.storage.keep` lets go now: ended trials'
    rungs outside the best K (and outside the Pareto front) at their budget, where K others measured better."""
    keep = study.storage.keep
    frame = store.frame()
    if keep is None or frame.empty:
        return []
    metric = next(m for m in study.objectives if m in TRAINED)
    going = []
    for _, rows in frame.groupby("budget", sort=True):
        measured = rows.dropna(subset=[metric]) if metric in rows else rows.iloc[0:0]
        if len(measured) <= keep:
            continue
        ranked = measured.sort_values([metric, "created_at", "trial_id"], kind="stable",
                                      ascending=[direction(metric) == "min", True, True])
        best = set(ranked.trial_id.iloc[:keep])
        if study.multi_objective and set(study.objectives) <= set(rows.columns):
            front = rows.dropna(subset=list(study.objectives))
            best |= set(front.trial_id[pareto_mask(minimization(front, study.objectives))])
        for row in rows.itertuples():
            if isinstance(row.checkpoint, str) and row.status in ENDED and row.trial_id not in best:
                going.append(Kept(row.trial_id, int(row.rung), int(row.budget), row.checkpoint))
    return going


def prune(store: ResultStore, study: Study) -> list[Kept]:
    """Delete what `settled` lets go, and the training checkpoints of ended trials; record that those rungs
    keep no checkpoint. Returns the rung checkpoints that went."""
    if study.storage.keep is None:
        return []
    run_dir = RunDir(store.path.parent)
    going = settled(store, study)
    for kept in going:
        _remove(store.checkpoint_path(kept.checkpoint) / CHECKPOINT)
        store.forget_checkpoint(kept.trial_id, kept.rung)
    for trial in store.trials(status=ENDED):
        for training in run_dir.trainings(trial["trial_id"]):
            _remove(training / CHECKPOINT)
    return going


def _remove(checkpoint: Path) -> None:
    """A checkpoint file, and its directory when nothing else is left in it."""
    checkpoint.unlink(missing_ok=True)
    if checkpoint.parent.is_dir() and not any(checkpoint.parent.iterdir()):
        checkpoint.parent.rmdir()
