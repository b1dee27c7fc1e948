"""What the search driver keeps: the results database, written by `Recorder` as Ray Tune reports, and the
`Ledger` actor through which trials on any node learn what is already measured.

The `Recorder` is a Tune callback on the driver: it writes every trial, rung and end to the `ResultStore` (the
only writer of `DIR/study.db`), keeps the ledger current and prints the progress table.
"""

from __future__ import annotations

import time
from typing import Any

import ray
from optuna.trial import TrialState
from ray import tune
from ray.tune.result import AUTO_RESULT_KEYS, DEBUG_METRICS

from nas import status
from nas.cost import COST_METRICS
from nas.metrics import ZERO_COST
from nas.results import ResultStore, progress_report
from nas.search.searcher import STATUS_KEY, OptunaStudy, final_status
from nas.search.trial import LEDGER_NAMESPACE, REPORT_KEYS
from nas.study import Study

#: Keys in a Tune result that are not metrics of the rung.
NOT_METRICS = frozenset(REPORT_KEYS) | set(COST_METRICS) | set(ZERO_COST) | set(AUTO_RESULT_KEYS) | \
    set(DEBUG_METRICS) | {"done", "should_checkpoint", "trial_id", "experiment_tag", "hits"}


@ray.remote(num_cpus=0)
class Ledger:
    """What the driver knows of every trial (status, rung metrics, latest checkpoint), for trials to read.

    Filled from the results database when the search starts and kept current by the `Recorder`, so that a
    trial (on any node) learns what is already measured without opening the database. Entries are keyed by
    trial; `key` is the candidate's (arch_id, schedule).
    """

    def __init__(self, entries: dict[str, dict[str, Any]]):
        self.entries = entries

    def lookup(self, trial_id: str, key: tuple[str, int]) -> tuple[dict[str, Any] | None, dict[str, Any] | None]:
        """This trial's own entry, and the furthest-measured entry of its candidate."""
        same = [e for e in self.entries.values() if tuple(e["key"]) == tuple(key) and e["rungs"]]
        furthest = max(same, key=lambda e: (e["rungs"][-1]["budget"], e["status"] == status.COMPLETED), default=None)
        return self.entries.get(trial_id), furthest

    def update(self, trial_id: str, key: tuple[str, int], rung: dict[str, Any] | None = None, **changes: Any) -> None:
        entry = self.entries.setdefault(trial_id, {"key": key, "status": status.RUNNING, "rungs": [],
                                                   "checkpoint": None, "error": None})
        entry.update(changes)
        if rung is not None:
            entry["rungs"] = [r for r in entry["rungs"] if r["budget"] != rung["budget"]] + [rung]
            entry["rungs"].sort(key=lambda r: r["budget"])


def ledger_entries(store: ResultStore) -> dict[str, dict[str, Any]]:
    """The ledger's starting content: every trial in the database, with its latest persisted checkpoint."""
    entries = {t["trial_id"]: {"key": (t["arch_id"], t["schedule"]), "status": t["status"], "rungs": [],
                               "checkpoint": None, "error": t["error"]} for t in store.trials()}
    for row in store.rungs():
        entry = entries[row["trial_id"]]
        entry["rungs"].append({**row["metrics"], **({"hits": row["hits"]} if row["hits"] else {})})
        if row["checkpoint"]:
            entry["checkpoint"] = tune.Checkpoint(row["checkpoint"])
    return entries


class Recorder(tune.Callback):
    """Writes what Tune sees into the results database and the ledger, and prints the progress table.

    Picklable (Tune saves it with the experiment): handles are opened in `setup`, on every (re)start.
    """

    def __init__(self, study: Study, store: ResultStore, ledger_name: str, storage: str, progress_every: float):
        self.study = study
        self.store_path = store.path
        self.ledger_name = ledger_name
        self.scheme = storage.split("://")[0] if "://" in storage else None
        self.progress_every = progress_every

    def __getstate__(self) -> dict[str, Any]:
        return {k: v for k, v in self.__dict__.items() if k in ("study", "store_path", "ledger_name", "scheme",
                                                                 "progress_every")}

    def setup(self, **info: Any) -> None:
        self.store = ResultStore(self.store_path)
        self.ledger = ray.get_actor(self.ledger_name, namespace=LEDGER_NAMESPACE)
        self.started: set[str] = set()
        self.printed = 0.0

    # ---- Tune's events -------------------------------------------------------------------------------------
    def on_trial_start(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        candidate = trial.config["candidate"]
        self.store.add_trial(trial.trial_id, candidate.arch, candidate.cost, number=trial.config["number"],
                             schedule=candidate.schedule)
        self.store.start_attempt(trial.trial_id)
        self.ledger.update.remote(trial.trial_id, candidate.key, status=status.RUNNING)
        self.started.add(trial.trial_id)
        self._print(force=True)

    def on_trial_result(self, iteration: int, trials: list, trial: Any, result: dict[str, Any], **info: Any) -> None:
        if result.get(STATUS_KEY) != status.RUNNING or "budget" not in result:
            return
        metrics = {k: v for k, v in result.items() if k not in NOT_METRICS and isinstance(v, (int, float))}
        where = {k: result[k] for k in ("host", "node", "device")}
        hits = result.get("hits")
        self.store.record_rung(trial.trial_id, {**metrics, **where}, rung=self.study.budget.rung_of(result["budget"]),
                               hits=hits, session=result["session"], replace=not result["replay"])
        self.store.update_trial(trial.trial_id, pid=result["pid"], accum_freq=result["accum_freq"],
                                resumed_from=result["resumed_from"])
        if not result["replay"]:
            self.ledger.update.remote(trial.trial_id, trial.config["candidate"].key,
                                      rung={**metrics, **({"hits": hits} if hits else {})})
        self._print(force=True)

    def on_checkpoint(self, iteration: int, trials: list, trial: Any, checkpoint: Any, **info: Any) -> None:
        uri = checkpoint.path if self.scheme is None else f"{self.scheme}://{checkpoint.path}"
        self.store.set_checkpoint(trial.trial_id, self.study.budget.rung_of(checkpoint.get_metadata()["budget"]),
                                  uri)
        self.ledger.update.remote(trial.trial_id, trial.config["candidate"].key, checkpoint=checkpoint)

    def on_trial_complete(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        result = trial.last_result
        self._finish(trial, final_status(result, False), result.get("error") or None)

    def on_trial_recover(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self.store.update_trial(trial.trial_id, status=status.PENDING, error=_error_text(trial))
        self._print(force=True)

    def on_trial_error(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self._finish(trial, status.FAILED, _error_text(trial))

    def on_step_end(self, iteration: int, trials: list, **info: Any) -> None:
        self._print()

    def on_experiment_end(self, trials: list, **info: Any) -> None:
        """Close what a killed driver left open: trials Tune never heard of, Optuna trials never told."""
        for row in self.store.trials(status=(status.PENDING, status.RUNNING)):
            if row["trial_id"] not in self.started:
                self.store.update_trial(row["trial_id"], status=status.FAILED, ended_at=time.time(),
                                        error="interrupted: the driver was killed before Ray Tune recorded this trial")
        optuna = OptunaStudy(self.study, self.store)
        for frozen in optuna.study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
            optuna.trial(frozen.number).set_user_attr("skipped", "interrupted: the driver was killed")
            optuna.study.tell(frozen.number, state=TrialState.FAIL)
        self._print(force=True, final=True)

    # ---- helpers ---------------------------------------------------------------------------------------------
    def _finish(self, trial: Any, end: str, error: str | None) -> None:
        row = self.store.trial(trial.trial_id)
        if row is not None and row["status"] == end and row["ended_at"]:
            return  # a replayed end: the recorded one stands
        self.store.update_trial(trial.trial_id, status=end, error=error, ended_at=time.time())
        self.ledger.update.remote(trial.trial_id, trial.config["candidate"].key, status=end, error=error)
        self._print(force=True)

    def _print(self, force: bool = False, final: bool = False) -> None:
        """The progress table: on events at most every 5 s, else every `progress_every` seconds."""
        now = time.time()
        if not final and now - self.printed < (5.0 if force else self.progress_every):
            return
        self.printed = now
        print(progress_report(self.store), flush=True)


def _error_text(trial: Any) -> str:
    error = trial.get_error()
    return str(error)[-4000:] if error is not None else "unknown error"
