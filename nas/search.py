"""Architecture search on Ray Tune and Optuna: `run(study, out)` measures a study's candidates and records them.

    store = run(Study.load("studies/quickstart.yaml"), "runs/quickstart")
    store.pareto_front(budget=store.budgets()[-1])

The pieces, each the library's own where it has one:

- `StudySearcher`, Ray Tune's `OptunaSearch` with the space's define-by-run `suggest` and a seeded TPE,
  NSGA-II or random sampler (grid and fixed studies enqueue their candidates). Constraints are checked on
  the analytic cost before a trial is created (and set on the Optuna trial); an infeasible proposal, and
  one that ran out of memory or diverged, is told to Optuna as PRUNED with a violated constraint, so that
  TPE learns to avoid it. An arch already measured is not trained again: Optuna is told its known result. Optuna is
  told a trial's result only at the budget it reached: a trial that ASHA stopped early is PRUNED (with its
  intermediate values when there is one objective), never COMPLETE with low-budget metrics.
- ASHA on samples seen; with several objectives `ParetoASHA` promotes by non-dominated rank and crowding
  distance (MO-ASHA, Schmucker et al. 2021), so that cheap candidates are not judged on accuracy alone.
- `nas.trial.run_trial`, the function trainable around `nas.train.train`, with each trial's CPU/GPU share.
- `Recorder`, a Tune callback on the driver that writes every trial, rung and end to the `ResultStore`
  (the only writer of `DIR/study.db`), keeps the `Ledger` actor that trials read, and prints progress.
- Faults: Ray's `FailureConfig` retries a trial whose worker died or raised, and the trial resumes from
  its last checkpoint. `run(..., resume=True)` after the driver was killed restores the Tune experiment
  and the Optuna study; trials that had finished report their recorded results instead of training.

Ray starts locally on 127.0.0.1 with no dashboard unless asked, or joins a cluster (`address`); the
experiment (trial checkpoints) goes to `storage`: DIR/ray by default, a shared filesystem or s3:// on a
cluster.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import math
import os
import sys
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import optuna
import ray
from optuna.trial import TrialState
from ray import tune
from ray.tune.result import AUTO_RESULT_KEYS, DEBUG_METRICS
from ray.tune.schedulers import AsyncHyperBandScheduler, FIFOScheduler, TrialScheduler
from ray.tune.schedulers.async_hyperband import _Bracket
from ray.tune.search import Searcher
from ray.tune.search.optuna import OptunaSearch

from nas.arch import Arch
from nas.errors import ConfigError
from nas.results import COST_METRICS, ResultStore, minimization, pareto_order, progress_report
from nas.study import Study
from nas.trial import LEDGER_NAMESPACE, REPORT_KEYS, TrialSettings, candidate_key, run_trial

logger = logging.getLogger(__name__)

STATUS_KEY = "trial_status"
#: Consecutive proposals that may be infeasible or already measured before the searcher stops proposing.
MAX_PROPOSALS = 1000
#: Finite spaces up to this size are enumerated once, so that the search ends when every feasible arch is known.
ENUMERATE_LIMIT = 100_000
#: Measurements that count as known: proposing the arch again tells Optuna the recorded result.
KNOWN = ("completed", "stopped_early", "oom", "diverged")
UNTRAINABLE = ("oom", "diverged")
#: Keys in a Tune result that are not metrics of the rung.
NOT_METRICS = frozenset(REPORT_KEYS) | set(COST_METRICS) | set(AUTO_RESULT_KEYS) | set(DEBUG_METRICS) | \
    {"done", "should_checkpoint", "trial_id", "experiment_tag"}


def final_status(result: Mapping[str, Any] | None, error: bool) -> str:
    """How a trial ended, from its last result: the trial's own verdict, else whether it reached the end of
    its schedule."""
    if error or not result:
        return "failed"
    if result.get(STATUS_KEY) in UNTRAINABLE:
        return result[STATUS_KEY]
    return "completed" if result.get("samples_seen", 0) >= result["schedule"] else "stopped_early"


# ---- running a study ---------------------------------------------------------------------------------------


def run(study: Study, out: str | os.PathLike, *, resume: bool = False, address: str | None = None,
        storage: str | None = None, dashboard: bool = False, dashboard_host: str = "127.0.0.1",
        verbose: bool = False, progress_every: float = 30.0) -> ResultStore:
    """Run (or with `resume`, continue) `study`; results go to `out/study.db`, Ray's experiment to `storage`.

    Returns the results database. Raises `ConfigError` for a study that cannot run as given (an existing
    search without `resume`, a changed study, missing data).
    """
    out = Path(out).resolve()
    store = open_store(study, out, resume)
    storage = storage or str(out / "ray")
    experiment = f"{storage.rstrip('/')}/{study.name}"
    prepare_data(study)
    os.environ["TUNE_DISABLE_STRICT_METRIC_CHECKING"] = "1"  # oom/diverged ends report no objective metrics
    # One checkpoint kept per trial makes Tune save its state at every rung: what resume wants, not a warning.
    os.environ["TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S"] = "0"
    with ray_session(address, dashboard=dashboard, dashboard_host=dashboard_host, verbose=verbose):
        restore = tune.Tuner.can_restore(experiment)
        if restore and not resume:
            raise ConfigError(f"a search of this study already exists at {experiment}; use --resume",
                              field="--storage")
        store = store or new_store(study, out)  # once Ray is up: a failed start leaves no search to --resume
        ledger_name = f"ledger-{study.name}-{hashlib.sha1(str(store.path).encode()).hexdigest()[:10]}"
        ledger = Ledger.options(name=ledger_name, namespace=LEDGER_NAMESPACE).remote(ledger_entries(store))
        try:
            trainable = tune.with_resources(
                tune.with_parameters(run_trial, settings=TrialSettings(study, ledger_name)), trial_resources(study))
            if restore:
                tuner = tune.Tuner.restore(experiment, trainable=trainable, resume_unfinished=True,
                                           resume_errored=True)
            else:
                tuner = tune.Tuner(trainable, tune_config=tune_config(study, store),
                                   run_config=run_config(study, store, storage, ledger_name, progress_every))
            tuner.fit()
        finally:
            ray.kill(ledger)
    return store


def open_store(study: Study, out: Path, resume: bool) -> ResultStore | None:
    """With `resume`, the existing database, which must hold this very study; otherwise None (a new search),
    after checking that `out` holds none."""
    exists = (out / "study.db").exists()
    if exists and not resume:
        raise ConfigError("holds a search already: add --resume to continue it, or choose another --out",
                          source=str(out))
    if not exists and resume:
        raise ConfigError("holds no search to resume (no study.db)", source=str(out))
    if not exists:
        return None
    resolved = json.loads(json.dumps(study.resolved()))
    store = ResultStore.open(out)
    recorded = store.meta("study")
    changed = sorted(k for k in resolved.keys() | recorded.keys() if resolved.get(k) != recorded.get(k))
    if changed:
        raise ConfigError(f"the study changed since this search began ({', '.join(changed)}); resuming would mix "
                          "results: run it with another --out", source=study.source)
    for row in store.trials(status="running"):  # until Tune restarts them (or finds it never knew them)
        store.update_trial(row["trial_id"], status="pending")
    return store


def new_store(study: Study, out: Path) -> ResultStore:
    return ResultStore.create(out, {"study": json.loads(json.dumps(study.resolved())), "objectives": study.objectives,
                                    "rungs": list(study.budget.rungs)})


def prepare_data(study: Study) -> None:
    """Write the synthetic data when it is absent; check that local shards and eval sets exist (on the driver,
    before any trial starts)."""
    from nas.data import expand_shards, synthesize
    from nas.data.synth import SynthConfig

    data = study.data
    if data.synthetic is not None:
        record = Path(data.dir) / "synth.json"
        if not (record.exists() and json.loads(record.read_text()).get("complete")):
            print(f"writing the synthetic dataset to {data.dir}", file=sys.stderr)
            synthesize(data.dir, SynthConfig(**data.synthetic), progress=True)
    for name, source in (("urls", data.stream["urls"]), ("retrieval", data.retrieval)):
        if source:
            try:
                expand_shards(source)
            except ConfigError as err:
                raise ConfigError(err.message, source=study.source, field=f"data.{name}") from None
    if data.zeroshot and not Path(data.zeroshot).is_dir():
        raise ConfigError(f"{data.zeroshot} is not a directory of class folders", source=study.source,
                          field="data.zeroshot")
    if data.stream.get("captions"):  # the template's columns are in the metadata (the trials would each fail)
        from nas.data.subset import caption_source

        try:
            caption_source(data.stream["metadata"], data.stream["captions"])
        except ConfigError as err:
            message = f"{err.source}: {err.message}" if err.source else err.message
            raise ConfigError(message, source=study.source, field=f"data.{err.field or 'metadata'}") from None


@contextlib.contextmanager
def ray_session(address: str | None, *, dashboard: bool = False, dashboard_host: str = "127.0.0.1",
                verbose: bool = False) -> Iterator[None]:
    """Ray for the search: the caller's if initialised, a cluster's with `address`, else a local one on 127.0.0.1."""
    if ray.is_initialized():
        yield
        return
    options = {"log_to_driver": verbose, "logging_level": logging.INFO if verbose else logging.WARNING}
    if address:
        try:
            ray.init(address=address, **options)
        except ConnectionError as err:
            raise ConfigError(f"cannot join the Ray cluster: {err} ({err.__cause__ or 'no cause given'}). A cluster "
                              "started with `ray start` authenticates with a token: set RAY_AUTH_MODE=token here, "
                              "with its token in ~/.ray/auth_token or RAY_AUTH_TOKEN", field="--address") from None
    else:  # never join a cluster by accident (RAY_ADDRESS, /tmp/ray): a private instance on the loopback
        ray.init(address="local", include_dashboard=dashboard, dashboard_host=dashboard_host,
                 _node_ip_address="127.0.0.1", **options)
    if not verbose:
        logging.getLogger("ray.tune").setLevel(logging.WARNING)
    try:
        yield
    finally:
        ray.shutdown()


def trial_resources(study: Study) -> dict[str, float]:
    resources = {"cpu": study.resources.cpus, "gpu": study.resources.gpus}
    if study.resources.memory_gib:
        resources["memory"] = study.resources.memory_gib * 2**30
    return resources


def concurrency(study: Study) -> int:
    """The study's limit, else as many trials as the cluster's CPUs and GPUs hold."""
    if study.resources.concurrency:
        return study.resources.concurrency
    available = ray.cluster_resources()
    fits = [available.get(kind, 0) / need for kind, need in (("CPU", study.resources.cpus),
                                                             ("GPU", study.resources.gpus)) if need > 0]
    return max(1, int(min(fits)))


def tune_config(study: Study, store: ResultStore) -> tune.TuneConfig:
    """Workers are reused across trials (no torch import per trial), except under a memory limit: then each
    trial starts in a fresh process, so that its limit counts from a clean start."""
    return tune.TuneConfig(search_alg=StudySearcher(study, store), scheduler=make_scheduler(study),
                           num_samples=study.trials, max_concurrent_trials=concurrency(study),
                           reuse_actors=study.resources.memory_gib is None,
                           trial_name_creator=trial_name, trial_dirname_creator=trial_name)


def run_config(study: Study, store: ResultStore, storage: str, ledger_name: str,
               progress_every: float) -> tune.RunConfig:
    return tune.RunConfig(name=study.name, storage_path=storage, verbose=0, log_to_file=True,
                          callbacks=[Recorder(study, store, ledger_name, storage, progress_every)],
                          failure_config=tune.FailureConfig(max_failures=study.failures.max_retries),
                          checkpoint_config=tune.CheckpointConfig(num_to_keep=1))


def trial_name(trial: Any) -> str:
    return f"trial_{trial.trial_id}"


# ---- proposing candidates ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Proposer:
    """The define-by-run space given to Optuna: the space's `suggest`, or the index of a listed candidate (and,
    with `schedule: per_budget`, the index of the budget its run ends at)."""

    study: Study

    def __call__(self, trial: optuna.Trial) -> dict[str, Any]:
        """The arch and its schedule, with the space's constraints on its analytic cost set on the trial (<= 0:
        feasible), which TPE and NSGA-II take into account."""
        space, schedules = self.study.space, self.study.budget.schedules
        if self.study.archs:
            arch = self.study.archs[trial.suggest_int("candidate", 0, len(self.study.archs) - 1)]
            trial.set_user_attr("arch", arch.to_json())
            trial.set_user_attr("arch_id", arch.arch_id)
        else:
            arch = space.suggest(trial)
        schedule = schedules[trial.suggest_int("schedule", 0, len(schedules) - 1)] if self.study.budget.per_budget \
            else schedules[0]
        trial.set_user_attr("schedule", schedule)
        for name, value in zip(space.constraints, space.constraint_values(arch)):
            trial.set_constraint(name, value)
        return {"arch": arch.to_json(), "schedule": schedule}


def feasible_archs(study: Study) -> frozenset[str] | None:
    """The ids of every feasible arch of a finite, enumerable space (None for other spaces)."""
    space = study.space
    if study.archs or not space.finite or space.size() > ENUMERATE_LIMIT:
        return None
    return frozenset(arch.arch_id for arch in space.enumerate(feasible=True))


def make_sampler(study: Study) -> optuna.samplers.BaseSampler:
    """The study's sampler, seeded; grid and fixed studies enqueue every parameter, so theirs is never asked."""
    kind = {"tpe": optuna.samplers.TPESampler, "nsga2": optuna.samplers.NSGAIISampler}.get(
        study.algorithm, optuna.samplers.RandomSampler)
    try:
        return kind(seed=study.seed, **study.sampler)
    except TypeError as err:
        raise ConfigError(f"not an option of {kind.__name__}: {err}", source=study.source, field="sampler") from None


class StudySearcher(OptunaSearch):
    """`OptunaSearch` that proposes only feasible, unmeasured archs and tells Optuna the budget reached."""

    def __init__(self, study: Study, store: ResultStore):
        objectives = study.objectives
        names, modes = list(objectives), list(objectives.values())
        super().__init__(space=Proposer(study), metric=names if len(names) > 1 else names[0],
                         mode=modes if len(modes) > 1 else modes[0], sampler=make_sampler(study),
                         study_name=study.name, storage=store.optuna_storage())
        self._study = study
        self._store = store
        self._in_flight: dict[str, tuple[str, int]] = {}  # Tune trial id -> (arch_id, schedule)
        self._reported: dict[str, set[int]] = {}  # Tune trial id -> budgets told to Optuna
        self._feasible = feasible_archs(study)
        per_budget = study.budget.per_budget  # every candidate at the smallest budget first, then the next
        for budget in range(len(study.budget.schedules)):
            for index in range(len(study.archs)):
                self._ot_study.enqueue_trial({"candidate": index, **({"schedule": budget} if per_budget else {})},
                                             skip_if_exists=True)

    def suggest(self, trial_id: str) -> dict[str, Any] | str | None:
        for _ in range(MAX_PROPOSALS):
            if self._exhausted():
                return Searcher.FINISHED
            ot_trial = self._ot_study.ask()
            config = self._space(ot_trial)
            arch = Arch.from_json(config["arch"])
            if not self._skipped(ot_trial, arch, config["schedule"]):
                self._ot_trials[trial_id] = ot_trial
                self._in_flight[trial_id] = (arch.arch_id, config["schedule"])
                return {**config, "number": ot_trial.number}
        logger.warning("the last %d proposals were all infeasible or measured already: the search stops proposing",
                       MAX_PROPOSALS)
        return Searcher.FINISHED

    def _exhausted(self) -> bool:
        """No candidate left: a grid or fixed list all asked, or every feasible arch of a finite space known."""
        if self._study.archs:
            return not self._ot_study.get_trials(deepcopy=False, states=(TrialState.WAITING,))
        if self._feasible is None:
            return False
        return self._feasible <= {a for a, _ in self._in_flight.values()} | self._store.arch_ids(KNOWN)

    def _skipped(self, ot_trial: optuna.Trial, arch: Arch, schedule: int) -> bool:
        """Tell Optuna at once what is known about `arch`; False when it must be trained."""
        violations = self._study.space.violations(arch)
        if violations:
            ot_trial.set_user_attr("skipped", f"infeasible: {'; '.join(violations)}")
            self._ot_study.tell(ot_trial, state=TrialState.PRUNED)
            return True
        training = next((t for t, key in self._in_flight.items() if key == (arch.arch_id, schedule)), None)
        if training is not None:
            ot_trial.set_user_attr("skipped", f"duplicate: the arch is being trained by trial {training}")
            self._ot_study.tell(ot_trial, state=TrialState.FAIL)
            return True
        measured = self._store.measured(arch.arch_id, schedule)
        if measured is None or measured.status not in KNOWN:
            return False
        ot_trial.set_user_attr("skipped", f"measured: by trial {measured.trial_id}")
        trial = self._store.trial(measured.trial_id)
        for rung in measured.rungs:
            self._report(ot_trial, None, rung["budget"], rung["metrics"])
        last = {**measured.rungs[-1]["metrics"], **{k: trial[k] for k in COST_METRICS}, STATUS_KEY: measured.status,
                "schedule": schedule}
        self._tell(ot_trial, measured.status, last)
        return True

    def on_trial_result(self, trial_id: str, result: dict[str, Any]) -> None:
        if "budget" in result and trial_id in self._ot_trials:
            self._report(self._ot_trials[trial_id], trial_id, result["budget"], result)

    def _report(self, ot_trial: optuna.Trial, trial_id: str | None, budget: int, metrics: Mapping[str, Any]) -> None:
        """An intermediate value at a budget (one objective only: Optuna takes none for several)."""
        reported = self._reported.setdefault(trial_id, set()) if trial_id else set()
        if isinstance(self.metric, str) and budget not in reported and self.metric in metrics:
            ot_trial.report(metrics[self.metric], step=int(budget))
            reported.add(budget)

    def on_trial_complete(self, trial_id: str, result: dict[str, Any] | None = None, error: bool = False) -> None:
        ot_trial = self._ot_trials.get(trial_id)
        self._in_flight.pop(trial_id, None)
        if ot_trial is None or trial_id in self._completed_trials:
            return
        self._completed_trials.add(trial_id)
        if self._ot_study._storage.get_trial(ot_trial._trial_id).state.is_finished():
            return  # told before the driver was killed; Tune's experiment state did not know yet
        if result and "budget" in result:  # the rung where the scheduler stopped it reaches no on_trial_result
            self._report(ot_trial, trial_id, result["budget"], result)
        self._tell(ot_trial, final_status(result, error), result)

    def _tell(self, ot_trial: optuna.Trial, status: str, result: Mapping[str, Any] | None) -> None:
        """COMPLETE only at the full budget; an early stop is PRUNED; oom/diverged are PRUNED and violate a
        `trainable` constraint, so that samplers learn to avoid such archs as they avoid infeasible ones."""
        ot_trial.set_user_attr("status", status)
        if status in UNTRAINABLE:
            ot_trial.set_constraint("trainable", 1.0)
        if status == "completed":
            values = [result[name] for name in self._study.objectives]
            self._ot_study.tell(ot_trial, values if len(values) > 1 else values[0])
        elif status == "failed":
            self._ot_study.tell(ot_trial, state=TrialState.FAIL)
        else:
            self._ot_study.tell(ot_trial, state=TrialState.PRUNED)


# ---- early stopping --------------------------------------------------------------------------------------------


def make_scheduler(study: Study) -> TrialScheduler:
    budget = study.budget
    if budget.early_stopping == "none":
        return FIFOScheduler()
    common = {"time_attr": "samples_seen", "max_t": budget.max_samples, "grace_period": budget.min_samples,
              "reduction_factor": budget.reduction_factor}
    if study.multi_objective:
        return ParetoASHA(study.objectives, **common)
    (metric, mode), = study.objectives.items()
    return AsyncHyperBandScheduler(metric=metric, mode=mode, brackets=1, **common)


class _ParetoBracket(_Bracket):
    """ASHA's bracket with vector rewards: at a rung, continue when in the top 1/reduction_factor of the
    trials recorded there, ordered by non-dominated front, then crowding distance."""

    def on_result(self, trial: Any, cur_iter: int, cur_rew: np.ndarray) -> str:
        for milestone, recorded in self._rungs:
            if cur_iter < milestone or trial.trial_id in recorded:
                continue
            recorded[trial.trial_id] = cur_rew
            ids = list(recorded)
            position = list(pareto_order(np.stack([recorded[i] for i in ids]))).index(ids.index(trial.trial_id))
            keep = math.ceil(len(ids) / self.rf)
            return TrialScheduler.CONTINUE if position < keep else TrialScheduler.STOP
        return TrialScheduler.CONTINUE

    def debug_str(self) -> str:
        return "ParetoBracket: " + " | ".join(f"{milestone:g}: {len(recorded)} trials" for milestone, recorded in
                                               self._rungs)


class ParetoASHA(AsyncHyperBandScheduler):
    """ASHA for several objectives (MO-ASHA): trials compete at a rung by Pareto rank, not one metric."""

    def __init__(self, objectives: Mapping[str, str], *, time_attr: str, max_t: int, grace_period: int,
                 reduction_factor: float):
        first = next(iter(objectives))
        super().__init__(time_attr=time_attr, metric=first, mode=objectives[first], max_t=max_t,
                         grace_period=grace_period, reduction_factor=reduction_factor, brackets=1)
        self._objectives = dict(objectives)
        self._brackets = [_ParetoBracket(grace_period, max_t, reduction_factor, 0)]

    def _reward(self, result: Mapping[str, Any]) -> np.ndarray | None:
        if self._time_attr not in result or any(name not in result for name in self._objectives):
            return None
        return minimization({k: [result[k]] for k in self._objectives}, self._objectives)[0]

    def on_trial_result(self, tune_controller: Any, trial: Any, result: dict[str, Any]) -> str:
        reward = self._reward(result)
        if reward is None:
            return TrialScheduler.CONTINUE
        if result[self._time_attr] >= self._max_t:
            action = TrialScheduler.STOP
        else:
            action = self._trial_info[trial.trial_id].on_result(trial, result[self._time_attr], reward)
        self._num_stopped += action == TrialScheduler.STOP
        return action

    def on_trial_complete(self, tune_controller: Any, trial: Any, result: dict[str, Any]) -> None:
        bracket = self._trial_info.pop(trial.trial_id, None)
        reward = self._reward(result)
        if bracket is not None and reward is not None:
            bracket.on_result(trial, result[self._time_attr], reward)


# ---- the driver's records ------------------------------------------------------------------------------------


@ray.remote(num_cpus=0)
class Ledger:
    """What the driver knows of every trial (status, rung metrics, latest checkpoint), for trials to read.

    Filled from the results database when the search starts and kept current by the `Recorder`, so that a
    trial (on any node) learns what is already measured without opening the database.
    """

    def __init__(self, entries: dict[str, dict[str, Any]]):
        self.entries = entries

    def lookup(self, trial_id: str, key: str) -> tuple[dict[str, Any] | None, dict[str, Any] | None]:
        """This trial's own entry, and the furthest-measured entry of its candidate (`candidate_key`)."""
        same = [e for e in self.entries.values() if e["key"] == key and e["rungs"]]
        furthest = max(same, key=lambda e: (e["rungs"][-1]["rung"], e["status"] == "completed"), default=None)
        return self.entries.get(trial_id), furthest

    def update(self, trial_id: str, key: str, rung: dict[str, Any] | None = None, **changes: Any) -> None:
        entry = self.entries.setdefault(trial_id, {"key": key, "status": "running", "rungs": [],
                                                   "checkpoint": None, "error": None})
        entry.update(changes)
        if rung is not None:
            entry["rungs"] = [r for r in entry["rungs"] if r["rung"] != rung["rung"]] + [rung]
            entry["rungs"].sort(key=lambda r: r["rung"])


def ledger_entries(store: ResultStore) -> dict[str, dict[str, Any]]:
    """The ledger's starting content: every trial in the database, with its latest persisted checkpoint."""
    entries = {t["trial_id"]: {"key": candidate_key(t["arch_id"], t["schedule"]), "status": t["status"],
                               "rungs": [], "checkpoint": None, "error": t["error"]} for t in store.trials()}
    for row in store.rungs():
        entry = entries[row["trial_id"]]
        entry["rungs"].append(row["metrics"])
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
        arch = Arch.from_json(trial.config["arch"])
        self.store.add_trial(trial.trial_id, arch, self.study.text, number=trial.config["number"],
                             schedule=trial.config["schedule"])
        self.store.start_attempt(trial.trial_id)
        self.ledger.update.remote(trial.trial_id, candidate_key(arch.arch_id, trial.config["schedule"]),
                                  status="running")
        self.started.add(trial.trial_id)
        self._print(force=True)

    def on_trial_result(self, iteration: int, trials: list, trial: Any, result: dict[str, Any], **info: Any) -> None:
        if result.get(STATUS_KEY) != "running" or "budget" not in result:
            return
        metrics = {k: v for k, v in result.items() if k not in NOT_METRICS and isinstance(v, (int, float))}
        where = {k: result[k] for k in ("host", "node", "device")}
        self.store.record_rung(trial.trial_id, {**metrics, **where}, budget=result["budget"],
                               session=result["session"], replace=not result["replay"])
        self.store.update_trial(trial.trial_id, pid=result["pid"], accum_freq=result["accum_freq"],
                                resumed_from=result["resumed_from"])
        if not result["replay"]:
            self.ledger.update.remote(trial.trial_id, candidate_key(result["arch_id"], result["schedule"]),
                                      rung=metrics)
        self._print(force=True)

    def on_checkpoint(self, iteration: int, trials: list, trial: Any, checkpoint: Any, **info: Any) -> None:
        uri = checkpoint.path if self.scheme is None else f"{self.scheme}://{checkpoint.path}"
        self.store.set_checkpoint(trial.trial_id, checkpoint.get_metadata()["rung"], uri)
        result = trial.last_result
        self.ledger.update.remote(trial.trial_id, candidate_key(result["arch_id"], result["schedule"]),
                                  checkpoint=checkpoint)

    def on_trial_complete(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        result = trial.last_result
        self._finish(trial, final_status(result, False), result.get("error") or None)

    def on_trial_recover(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self.store.update_trial(trial.trial_id, status="pending", error=_error_text(trial))
        self._print(force=True)

    def on_trial_error(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self._finish(trial, "failed", _error_text(trial))

    def on_step_end(self, iteration: int, trials: list, **info: Any) -> None:
        self._print()

    def on_experiment_end(self, trials: list, **info: Any) -> None:
        """Close what a killed driver left open: trials Tune never heard of, Optuna trials never told."""
        for row in self.store.trials(status=("pending", "running")):
            if row["trial_id"] not in self.started:
                self.store.update_trial(row["trial_id"], status="failed", ended_at=time.time(),
                                        error="interrupted: the driver was killed before Ray Tune recorded this trial")
        study = optuna.load_study(study_name=self.study.name, storage=self.store.optuna_storage())
        for frozen in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
            study._storage.set_trial_user_attr(frozen._trial_id, "skipped", "interrupted: the driver was killed")
            study.tell(frozen.number, state=TrialState.FAIL)
        self._print(force=True, final=True)

    # ---- helpers ---------------------------------------------------------------------------------------------
    def _finish(self, trial: Any, status: str, error: str | None) -> None:
        row = self.store.trial(trial.trial_id)
        if row is not None and row["status"] == status and row["ended_at"]:
            return  # a replayed end: the recorded one stands
        self.store.update_trial(trial.trial_id, status=status, error=error, ended_at=time.time())
        arch_id = row["arch_id"] if row else Arch.from_json(trial.config["arch"]).arch_id
        self.ledger.update.remote(trial.trial_id, candidate_key(arch_id, trial.config["schedule"]), status=status,
                                  error=error)
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
