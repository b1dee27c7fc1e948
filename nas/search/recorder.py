"""What the search driver keeps: the results database, written by `Recorder` as Ray Tune reports, and the
`Ledger` actor through which trials on any node learn what is already measured.

The `Recorder` is a Tune callback on the driver: it writes every trial, rung (with the path of the rung's
checkpoint, relative to the run directory) and end to the `ResultStore` (the only writer of `RUN/study.db`),
keeps the ledger current and prints the progress table. When the driver is stopped by a signal it records the
running trials as `interrupted` and leaves their Optuna trials running, for `--resume` to finish. With
`storage.keep` it deletes the rung checkpoints the study no longer needs (`nas.search.retention`); with
data-parallel trials it removes what a trial's Ray Train jobs reserved once the trial ended.
"""

from __future__ import annotations

import contextlib
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import ray
from optuna.trial import TrialState
from ray import tune
from ray.util.placement_group import remove_placement_group

from nas import status
from nas.disk import DiskFull, full_disk
from nas.progress import progress_report
from nas.run_dir import CHECKPOINT
from nas.search import retention, session
from nas.search.optuna_study import OptunaStudy
from nas.search.protocol import (
    ACCUM_FREQ_KEY,
    CANDIDATE_KEY,
    ERROR_KEY,
    HITS_KEY,
    LEDGER_NAMESPACE,
    NUMBER_KEY,
    PLACE_KEYS,
    REPLAY_KEY,
    RESUMED_FROM_KEY,
    RUNG_CHECKPOINT_KEY,
    SESSION_KEY,
    STATUS_KEY,
    WORKER_PID_KEY,
    final_status,
    rung_metrics,
    trial_id_of,
)
from nas.study import Study

if TYPE_CHECKING:
    from nas.results import ResultStore


@ray.remote(num_cpus=0)
class Ledger:
    """What the driver knows of every trial (status, rung metrics with their checkpoints), for trials to read.

    Filled from the results database when the search starts and kept current by the `Recorder`, so that a
    trial (on any node) learns what is already measured without opening the database. Entries are keyed by
    trial; `key` is the candidate's (arch_id, schedule).
    """

    def __init__(self, entries: dict[str, dict[str, Any]]):
        self.entries = entries
        self.by_key: dict[tuple, list[str]] = {}  # a candidate's key -> its trials, in the entries' order
        for trial_id, entry in entries.items():
            self.by_key.setdefault(tuple(entry["key"]), []).append(trial_id)
        self.placement_groups: dict[str, list[Any]] = {}

    def lookup(self, trial_id: str, key: tuple[str, int]) -> tuple[dict[str, Any] | None, dict[str, Any] | None]:
        """This trial's own entry, and the furthest-measured entry of its candidate (its trials only: a trial's
        start reads no other candidate's)."""
        same = [e for e in map(self.entries.get, self.by_key.get(tuple(key), ())) if e["rungs"]]
        furthest = max(same, key=lambda e: (e["rungs"][-1]["budget"], e["status"] == status.COMPLETED), default=None)
        return self.entries.get(trial_id), furthest

    def update(self, trial_id: str, key: tuple[str, int], rung: dict[str, Any] | None = None, **changes: Any) -> None:
        if trial_id not in self.entries:
            self.entries[trial_id] = {"trial_id": trial_id, "key": key, "status": status.RUNNING, "rungs": [],
                                      "error": None}
            self.by_key.setdefault(tuple(key), []).append(trial_id)
        entry = self.entries[trial_id]
        entry.update(changes)
        if rung is not None:
            entry["rungs"] = [r for r in entry["rungs"] if r["budget"] != rung["budget"]] + [rung]
            entry["rungs"].sort(key=lambda r: r["budget"])

    def forget_checkpoint(self, trial_id: str, budget: int) -> None:
        """A rung's checkpoint was deleted (`storage.keep`)."""
        for rung in self.entries.get(trial_id, {}).get("rungs", []):
            if rung["budget"] == budget:
                rung[RUNG_CHECKPOINT_KEY] = None

    def hold(self, trial_id: str, placement_group: Any) -> None:
        """Note the placement group a data-parallel trial's Ray Train job reserved (`nas.search.data_parallel`)."""
        self.placement_groups.setdefault(trial_id, []).append(placement_group)

    def release(self, trial_id: str | None = None) -> list[Any]:
        """The placement groups noted for a trial (for every trial with None), forgotten here."""
        if trial_id is None:
            groups = [g for held in self.placement_groups.values() for g in held]
            self.placement_groups.clear()
            return groups
        return self.placement_groups.pop(trial_id, [])


def ledger_entries(store: ResultStore) -> dict[str, dict[str, Any]]:
    """The ledger's starting content: every trial in the database with its rungs (and their checkpoints)."""
    entries = {t["trial_id"]: {"trial_id": t["trial_id"], "key": (t["arch_id"], t["schedule"], t["seed"]),
                               "status": t["status"], "rungs": [], "error": t["error"]} for t in store.trials()}
    for row in store.rungs():
        entries[row["trial_id"]]["rungs"].append({**row["metrics"], RUNG_CHECKPOINT_KEY: row["checkpoint"],
                                                   **({HITS_KEY: row["hits"]} if row["hits"] else {})})
    return entries


class Recorder(tune.Callback):
    """Writes what Tune sees into the results database and the ledger, and prints the progress table.

    Picklable (Tune saves it with the experiment): the database and the ledger are those of the driver session
    that runs it (`nas.search.session.current()`), taken in `setup` on every (re)start.
    """

    def __init__(self, study: Study, progress_every: float):
        self.study = study
        self.progress_every = progress_every

    def __getstate__(self) -> dict[str, Any]:
        return {"study": self.study, "progress_every": self.progress_every}

    def setup(self, **info: Any) -> None:
        self.session = session.current()
        self.store = self.session.store
        self.ledger = ray.get_actor(self.session.ledger, namespace=LEDGER_NAMESPACE)
        self.started: set[str] = set()
        self.replaying: set[str] = set()
        self.printed = 0.0

    # ---- Tune's events -------------------------------------------------------------------------------------
    def on_trial_start(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        """A trial (re)starts. One whose end is recorded (a driver killed after it ended, before Ray Tune saved
        that) keeps its record: it replays its results and ends as it did."""
        candidate = trial.config[CANDIDATE_KEY]
        self.started.add(_id(trial))
        row = self.store.trial(_id(trial))
        if row is not None and row["status"] in status.KNOWN and row["ended_at"]:
            self.replaying.add(_id(trial))  # what it reports, and how Tune ends it, are recorded already
            return
        self.store.add_trial(_id(trial), candidate.arch, candidate.cost, number=trial.config[NUMBER_KEY],
                             schedule=candidate.schedule, seed=candidate.seed)
        self.store.start_attempt(_id(trial))
        self.ledger.update.remote(_id(trial), candidate.key, status=status.RUNNING)
        self._print(force=True)

    def on_trial_result(self, iteration: int, trials: list, trial: Any, result: dict[str, Any], **info: Any) -> None:
        if result.get(STATUS_KEY) != status.RUNNING or "budget" not in result or _id(trial) in self.replaying:
            return
        metrics = rung_metrics(result)
        where = {k: result[k] for k in PLACE_KEYS}
        checkpoint = result.get(RUNG_CHECKPOINT_KEY) or None
        if checkpoint and result[REPLAY_KEY] and not (self.store.checkpoint_path(checkpoint) / CHECKPOINT).is_file():
            checkpoint = None  # a replayed measurement whose checkpoint `storage.keep` let go meanwhile
        hits = result.get(HITS_KEY)
        self.store.record_rung(_id(trial), {**metrics, **where}, rung=self.study.budget.rung_of(result["budget"]),
                               checkpoint=checkpoint, hits=hits, session=result[SESSION_KEY],
                               replace=not result[REPLAY_KEY], pid=result[WORKER_PID_KEY],
                               accum_freq=result[ACCUM_FREQ_KEY], resumed_from=result[RESUMED_FROM_KEY])
        if not result[REPLAY_KEY]:
            self.ledger.update.remote(_id(trial), trial.config[CANDIDATE_KEY].key,
                                      rung={**metrics, RUNG_CHECKPOINT_KEY: checkpoint,
                                            **({HITS_KEY: hits} if hits else {})})
        self._prune()
        self._print(force=True)

    def on_trial_complete(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        result = trial.last_result
        self._release(_id(trial))
        self._finish(trial, final_status(result, False), result.get(ERROR_KEY) or None)

    def on_trial_recover(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self._release(_id(trial))
        if _id(trial) in self.replaying:
            return
        self.store.update_trial(_id(trial), status=status.PENDING, error=self._logged_error(trial))
        self._print(force=True)

    def on_trial_error(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self._release(_id(trial))
        error = self._logged_error(trial)
        self._finish(trial, status.INTERRUPTED if full_disk(error) else status.FAILED, error)  # a full disk: resumable

    def on_step_end(self, iteration: int, trials: list, **info: Any) -> None:
        self._print()

    def on_experiment_end(self, trials: list, **info: Any) -> None:
        """A stopped driver: its running trials are `interrupted` (their Optuna trials stay running, told when
        `--resume` finishes them). A finished search: close what a killed driver left open, trials Tune never
        heard of (cut off for good) and Optuna trials never told."""
        self._release(None)
        optuna = OptunaStudy(self.study, self.store)
        now = time.time()
        if self.session.stopping:
            for row in self.store.trials(status=(status.PENDING, status.RUNNING)):
                self.store.update_trial(row["trial_id"], status=status.INTERRUPTED, ended_at=now,
                                        error=f"interrupted: the driver was stopped by {self.session.stop_reason}")
                if row["number"] is not None:
                    optuna.set_user_attr(row["number"], "status", status.INTERRUPTED)
            self._print(force=True, final=True)
            return
        for row in self.store.trials(status=(status.PENDING, status.RUNNING, status.INTERRUPTED)):
            if row["trial_id"] not in self.started:
                self.store.update_trial(row["trial_id"], status=status.INTERRUPTED, ended_at=now,
                                        error="interrupted: the driver was killed before Ray Tune recorded this trial")
        for frozen in optuna.study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
            optuna.set_user_attr(frozen.number, "skipped", "interrupted: the driver was killed")
            optuna.set_user_attr(frozen.number, "status", status.INTERRUPTED)
            optuna.study.tell(frozen.number, state=TrialState.FAIL)
        self._print(force=True, final=True)

    # ---- helpers ---------------------------------------------------------------------------------------------
    def _release(self, trial_id: str | None) -> None:
        """Remove the placement groups of a trial's Ray Train jobs (every trial's with None) once the trial's
        process ended. A job removes its own when it ends, but not when the trial's process, which owns the
        job, ends first (Ray Tune stopping the trial at a rung, a lost node): Ray Train's cleaner for that case
        needs Ray's state API, which a search without Ray's dashboard does not have. Left, they would hold
        their CPUs and GPUs until the search ends."""
        if not self.study.resources.data_parallel:
            return
        for group in ray.get(self.ledger.release.remote(trial_id)):
            with contextlib.suppress(Exception):  # removed already, by its job
                remove_placement_group(group)

    def _prune(self) -> None:
        """With `storage.keep`, delete the rung checkpoints the study no longer needs (`nas.search.retention`),
        and tell the ledger, so that no trial reports them again."""
        for gone in retention.prune(self.store, self.study):
            self.ledger.forget_checkpoint.remote(gone.trial_id, gone.budget)

    def _logged_error(self, trial: Any) -> str:
        """The trial's latest error, appended whole to its error log under the run directory (which outlives Ray's
        temporary directory): the terminal shows one line per kind of error (`nas.search.outcome`)."""
        error = _error_text(trial)
        row = self.store.trial(_id(trial))
        self.session.run_dir.log_error(_id(trial), row["attempts"] if row else 0, error)
        if full_disk(error):  # every trial would fail so: the search stops, its trials resumable
            self.session.fail(DiskFull.told(error, self.session.run_dir.root))
        return error[-4000:]

    def _finish(self, trial: Any, end: str, error: str | None) -> None:
        row = self.store.trial(_id(trial))
        if _id(trial) in self.replaying or (row is not None and row["status"] == end and row["ended_at"]):
            return  # a replayed end: the recorded one stands (ASHA may stop a replay early)
        self.store.update_trial(_id(trial), status=end, error=error, ended_at=time.time())
        self.ledger.update.remote(_id(trial), trial.config[CANDIDATE_KEY].key, status=end, error=error)
        self._prune()
        self._print(force=True)

    def _print(self, force: bool = False, final: bool = False) -> None:
        """The progress table: on events at most every 5 s, else every `progress_every` seconds."""
        now = time.time()
        if not final and now - self.printed < (5.0 if force else self.progress_every):
            return
        self.printed = now
        if not session.say(progress_report(self.store)):
            self.session.output_broken()


def _id(trial: Any) -> str:
    """The id the Ray Tune trial is recorded under (`nas.search.protocol.trial_id_of`)."""
    return trial_id_of(trial.config, trial.trial_id)


def _error_text(trial: Any) -> str:
    """The trial's latest error: Ray Tune writes it on the driver first (`error_file`), then copies it to its
    storage (`get_error`)."""
    if trial.error_file and Path(trial.error_file).is_file():
        return Path(trial.error_file).read_text()
    error = trial.get_error()
    return str(error) if error is not None else "unknown error"
