"""The search driver: `search(study, out)` measures a study's candidates on Ray Tune and records them.

    store = search(load_study("studies/quickstart.yaml"), "runs/quickstart")
    store.pareto_front(budget=store.budgets()[-1])

The pieces, each the library's own where it has one:

- `nas.search.searcher.StudySearcher`: Optuna's ask/tell behind Ray Tune's `Searcher` interface (feasible,
  unmeasured candidates; Optuna told the budget each reached).
- `nas.search.screen.SupernetScreen`: a study's `proxy`, loaded, checked and (a list's candidates) scored here
  before Ray starts; the only path by which the driver imports torch.
- `nas.search.schedulers`: ASHA on samples seen; `ParetoASHA` with several objectives.
- `nas.search.trainable.trainable`: the function trainable that runs a `nas.search.trial.Trial` (around
  `nas.train.train`) or a data-parallel one, with each trial's CPU/GPU share; its checkpoints live in the run
  directory (`nas.run_dir`).
- `nas.search.recorder.Recorder`: a Tune callback on the driver that writes every trial, rung and end to the
  `ResultStore` (the only writer of `RUN/study.db`), keeps the `Ledger` actor that trials read, and prints
  progress.
- `nas.search.session`: the driver session (signals; what the pickled callback and searcher write to) and
  `nas.heartbeat`: the driver's record in the database, so that `status` tells a live search from a dead one.

Faults: Ray's `FailureConfig` retries a trial whose worker died or raised, and the trial resumes from the
newest checkpoint it wrote (at most `train.checkpoint_every` samples back). `search(..., resume=True)` after
the driver was stopped or killed restores the Tune experiment and the Optuna study, from the run directory
wherever it now is; trials that had finished report their recorded results instead of training. SIGINT and
SIGTERM stop the search cleanly (`SearchInterrupted`). Requests the Ray instance cannot meet (a trial's CPUs,
GPUs or memory on any node), an address where no cluster answers and a dashboard without its packages are
`ConfigError`s before any trial starts.

Ray starts locally in its single-machine mode, so that every process it starts (GCS, raylet, workers, agents,
the driver's own gRPC server) listens on 127.0.0.1 only, with its temporary directory made for the session and
removed at its end; the dashboard only when asked, on `dashboard_host`. Or the search joins a cluster
(`address`). Ray Tune's experiment state goes to `storage`: RUN/ray by default, a shared filesystem or s3://
on a cluster.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import signal
import socket
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import ray
import yaml
from ray import tune

from nas import heartbeat, status
from nas.disk import DiskFull, full_disk
from nas.errors import ConfigError
from nas.results import ResultStore
from nas.run_dir import RunDir
from nas.search import placement
from nas.search.loopback import RAY_TEMP_PREFIX, ray_session
from nas.search.protocol import LEDGER_NAMESPACE
from nas.search.recorder import Ledger, Recorder, ledger_entries
from nas.search.schedulers import make_scheduler
from nas.search.screen import SupernetScreen
from nas.search.searcher import StudySearcher
from nas.search.session import DriverSession, SearchInterrupted, running
from nas.search.trainable import TrialSettings, trainable
from nas.study import Study
from nas.train import ReportTo

#: Seconds to wait for an `--address` to answer.
CONNECT_TIMEOUT_S = 10.0
#: The cluster launcher's config on a `ray up` cluster's head (what its autoscaler can add).
BOOTSTRAP_CONFIG = Path("~/ray_bootstrap_config.yaml")

# ---- running a study ---------------------------------------------------------------------------------------


def search(study: Study, out: str | os.PathLike, *, resume: bool = False, address: str | None = None,
           storage: str | None = None, dashboard: bool = False, dashboard_host: str = "127.0.0.1",
           verbose: bool = False, progress_every: float = 30.0, command: str | None = None,
           report_to: str = "tensorboard", on_start: Callable[[], Any] | None = None) -> ResultStore:
    """Run (or with `resume`, continue) `study`; results go to `out/study.db`, Ray's experiment to `storage`,
    the trials' curves to `out/tensorboard` (and W&B, with `report_to="tensorboard,wandb"`).

    `command` is how a user continues the search (recorded for `vitamin-nas status`); `on_start` is called once
    the study, its data and the resources it asks for are checked, as the search begins. Returns the results
    database. Raises `ConfigError` for a study that cannot run as given (an existing search without `resume`, a
    changed study, missing data, resources no node has, no cluster at `address`), `SearchInterrupted` when a
    SIGINT or SIGTERM stopped it.
    """
    run_dir = RunDir(out)
    ReportTo.parse(report_to, run_dir.root)  # a missing wandb is a one-line error here, not in every trial
    store = open_store(study, run_dir.root, resume)
    storage = storage or str(run_dir.root / "ray")
    experiment = f"{storage.rstrip('/')}/{study.name}"
    if dashboard and not address:
        require_dashboard()
    if address:
        probe_address(address)
    prepare_data(study)
    # a new search's proxy scores before Ray starts; a resumed one's searcher holds what it scored
    screen = SupernetScreen.prepare(study) if study.proxy is not None and not resume else None
    os.environ["TUNE_DISABLE_STRICT_METRIC_CHECKING"] = "1"  # oom/diverged ends report no objective metrics
    os.environ["TUNE_DISABLE_SIGINT_HANDLER"] = "1"  # the session handles SIGINT (and SIGTERM) itself
    # Tune saves its experiment state at every result: what resume wants, not a warning.
    os.environ["TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S"] = "0"
    # The results database and RUN/tensorboard hold every result: Ray's own CSV, JSON and TensorBoard copies in
    # each trial directory only cost disk and time, and its "tensorboard --logdir" hint pointed at them.
    os.environ["TUNE_DISABLE_AUTO_CALLBACK_LOGGERS"] = "1"
    # Ray Tune's legacy output engine, silent at verbose=0: the new one prints its "Configuration for experiment"
    # box and "View detailed results here" whatever the verbosity; the Recorder prints the toolkit's progress.
    os.environ["RAY_AIR_NEW_OUTPUT"] = "0"
    driver = DriverSession(study, run_dir, store)
    command = command or f"vitamin-nas search {study.source} --out {run_dir.root} --resume"
    # The session's handlers go in once Ray is up: Ray's core installs its own for SIGTERM (a stack dump, then abort).
    with running(driver), \
            ray_session(address, dashboard=dashboard, dashboard_host=dashboard_host, verbose=verbose) as ray_temp, \
            driver.catching_signals():
        check_resources(study)
        restore = tune.Tuner.can_restore(experiment)
        if restore and not resume:
            raise ConfigError(f"a search of this study already exists at {experiment}; use --resume",
                              field="--storage")
        store = driver.store = store or ResultStore.create(run_dir.root, study)  # a failed start leaves nothing
        beat = heartbeat.Heartbeat(store.path, command, ray_temp).start()
        if on_start is not None:
            on_start()
        end, reason = heartbeat.FAILED, None
        ledger = Ledger.options(name=driver.ledger, namespace=LEDGER_NAMESPACE).remote(ledger_entries(store))
        try:
            settings = TrialSettings(study, driver.ledger, str(run_dir.root), report_to)
            function = tune.with_resources(tune.with_parameters(trainable, settings=settings),
                                          placement.trial_request(study.resources))
            with ray_tune_hints_silenced(verbose):
                if restore:
                    tuner = tune.Tuner.restore(experiment, trainable=function, resume_unfinished=True,
                                               resume_errored=True)
                else:
                    tuner = tune.Tuner(function, tune_config=tune_config(study, store, screen),
                                       run_config=tune_run_config(study, storage, progress_every))
                tuner.fit()
            end, reason = (heartbeat.INTERRUPTED, driver.signal_name) if driver.stopping else (heartbeat.FINISHED, None)
            if driver.failure is not None:  # a trial found the disk full (the Recorder stopped the search)
                end, reason = heartbeat.FAILED, str(driver.failure)
        except KeyboardInterrupt:
            end, reason = heartbeat.INTERRUPTED, driver.signal_name or "SIGINT"
            raise
        except BaseException as err:
            reason = f"{type(err).__name__}: {err}".splitlines()[0][:300]
            if not full_disk(err):
                raise
            driver.failure = DiskFull(run_dir.root)  # the driver's own writes (study.db, Ray Tune's state)
            reason = str(driver.failure)
            raise driver.failure from None
        finally:
            if end == heartbeat.INTERRUPTED or driver.failure is not None:
                mark_interrupted(store, reason)  # resumable
            with contextlib.suppress(Exception):
                ray.kill(ledger)
            beat.end(end, reason)
    if driver.failure is not None:
        raise driver.failure
    if driver.stopping:
        raise SearchInterrupted(driver.signal_name, len(store.trials(status=status.INTERRUPTED)))
    return store


def open_store(study: Study, out: Path, resume: bool) -> ResultStore | None:
    """With `resume`, the existing database, which must hold this very study and no live driver; otherwise None
    (a new search), after checking that `out` holds none. Everything is checked through a read-only connection
    (`heartbeat.refuse_if_running`) before the database is opened for writing: a refused driver writes nothing."""
    exists = (out / "study.db").exists()
    previous = heartbeat.refuse_if_running(out)
    if exists and not resume:
        raise ConfigError("holds a search already: add --resume to continue it, or choose another --out",
                          source=str(out))
    if not exists and resume:
        raise ConfigError("holds no search to resume (no study.db)", source=str(out))
    if not exists:
        return None
    resolved = json.loads(json.dumps(study.resolved()))
    with contextlib.closing(ResultStore.open(out, readonly=True)) as recorded_store:
        recorded = recorded_store.meta("study") or {}
    changed = sorted(k for k in resolved.keys() | recorded.keys() if resolved.get(k) != recorded.get(k))
    if changed:
        raise ConfigError(f"the study changed since this search began ({', '.join(changed)}); resuming would mix "
                          "results: run it with another --out", source=study.source)
    if previous is not None and previous.ray_temp and Path(previous.ray_temp).name.startswith(RAY_TEMP_PREFIX):
        shutil.rmtree(previous.ray_temp, ignore_errors=True)  # left by a killed driver
    store = ResultStore.open(out)
    for row in store.trials(status=(status.RUNNING, status.INTERRUPTED)):  # until Tune restarts them (or finds it
        store.update_trial(row["trial_id"], status=status.PENDING)       # never knew them)
    return store


def mark_interrupted(store: ResultStore, reason: str | None) -> None:
    """The trials a stopped driver cut off (the Recorder does this when Tune ends cleanly; a second signal
    leaves it here)."""
    for row in store.trials(status=(status.PENDING, status.RUNNING)):
        store.update_trial(row["trial_id"], status=status.INTERRUPTED, ended_at=time.time(),
                           error=f"interrupted: the driver was stopped by {reason}")


def prepare_data(study: Study) -> None:
    """Write the synthetic data when it is absent; check that local shards and eval sets exist (on the driver,
    before any trial starts)."""
    from nas.data import expand_shards, synthesize
    from nas.data.synth import synthesized

    data = study.data
    if data.synthetic is not None:
        try:
            complete = synthesized(data.dir, data.synthetic)
        except ConfigError as err:  # data.dir holds another study's dataset: refused, never overwritten
            raise ConfigError(f"data.dir {err.message}", source=study.source, field="data.synthetic") from None
        if not complete:
            print(f"writing the synthetic dataset to {data.dir}", file=sys.stderr)
            synthesize(data.dir, data.synthetic, progress=True)
    for name, source in (("urls", data.source.urls), ("retrieval", data.retrieval)):
        if source:
            try:
                expand_shards(source)
            except ConfigError as err:
                raise ConfigError(err.message, source=study.source, field=f"data.{name}") from None
    if data.zeroshot and not Path(data.zeroshot).is_dir():
        raise ConfigError(f"{data.zeroshot} is not a directory of class folders", source=study.source,
                          field="data.zeroshot")
    if data.source.captions:  # per-shard metadata with the template's columns (the trials would each fail)
        from nas.data.shard_metadata import ShardCaptions

        try:
            ShardCaptions(data.source.metadata, data.source.captions, expand_shards(data.source.urls))
        except ConfigError as err:
            message = f"{err.source}: {err.message}" if err.source else err.message
            raise ConfigError(message, source=study.source, field=f"data.{err.field or 'metadata'}") from None


def probe_address(address: str) -> None:
    """A `ConfigError` within `CONNECT_TIMEOUT_S` when nothing answers at a HOST:PORT address (Ray itself retries
    for minutes); `auto` and ray:// addresses are left to Ray."""
    if address == "auto" or "://" in address or ":" not in address:
        return
    host, _, port = address.rpartition(":")
    try:
        with socket.create_connection((host.strip("[]"), int(port)), timeout=CONNECT_TIMEOUT_S):
            pass
    except (OSError, ValueError) as err:
        why = "timed out" if isinstance(err, TimeoutError) else (getattr(err, "strerror", None) or str(err))
        raise ConfigError(f"no Ray cluster answers at {address} ({why}); start its head with `ray start --head` or "
                          "give the address it printed", field="--address") from None


def require_dashboard() -> None:
    """A one-line `ConfigError` when Ray's dashboard cannot start: `ray[tune]` does not bring its packages."""
    try:
        import ray.dashboard.optional_deps  # noqa: F401  (what Ray checks before it starts its dashboard)
    except ImportError as err:
        raise ConfigError(f"Ray's dashboard needs packages this installation lacks ({err.name or err}): "
                          "pip install 'vitamin-nas[dashboard]'", field="--dashboard") from None


def check_resources(study: Study) -> None:
    """A `ConfigError` when no node of the Ray instance (nor of a node type its autoscaler can add) has the CPUs,
    GPUs and memory one trial (one rank of a data-parallel trial) asks for, or when the instance cannot hold all
    of a data-parallel trial's ranks at once: Ray would wait for them forever."""
    need = placement.worker_request(study.resources)
    nodes = [n["Resources"] for n in ray.nodes() if n.get("Alive")]
    scalable = [t for t in autoscaler_node_types() if placement.places(study.resources, [t])]
    one = "a trial" if not study.resources.data_parallel else f"each of a trial's {study.resources.workers} workers"
    if not scalable and not placement.places(study.resources, nodes):
        largest = max(nodes, key=lambda n: (n.get("GPU", 0), n.get("CPU", 0), n.get("memory", 0)), default={})
        raise ConfigError(f"{one} asks for {_resources(need)}, but no node of this Ray instance has that much: "
                          f"{len(nodes)} node(s), the largest with {_resources(largest)}", source=study.source,
                          field="resources")
    held = placement.places(study.resources, nodes)
    if not scalable and held < study.resources.workers:
        raise ConfigError(f"a trial's {study.resources.workers} workers ask for {_resources(need)} each, but this Ray "
                          f"instance's {len(nodes)} node(s) hold only {held} of them at once", source=study.source,
                          field="resources.workers")


def autoscaler_node_types(config: Path = BOOTSTRAP_CONFIG) -> list[dict[str, float]]:
    """The resources of each node type a cluster's autoscaler can start (none without an autoscaler), from the
    cluster launcher's config on the head node (`ray up` writes it there, and Ray Tune reads it to tell an
    autoscaling cluster); nothing where there is none (a fixed cluster, KubeRay: their nodes are all up)."""
    try:
        launched = yaml.safe_load(config.expanduser().read_text()) or {}
    except (OSError, yaml.YAMLError):
        return []
    types = launched.get("available_node_types") or {}
    return [{key: float(value) for key, value in (kind.get("resources") or {}).items()}
            for kind in types.values() if isinstance(kind, dict) and kind.get("max_workers", 0) != 0]


def _resources(resources: dict[str, float]) -> str:
    cpus, gpus, memory = resources.get("CPU", 0), resources.get("GPU", 0), resources.get("memory", 0)
    return f"{cpus:g} CPU(s), {gpus:g} GPU(s), {memory / 2**30:.1f} GiB memory"


@contextlib.contextmanager
def ray_tune_hints_silenced(verbose: bool) -> Iterator[None]:
    """Without Ray Tune's own stop and restore hints (`Tuner.restore(...)`: the toolkit prints its `--resume`), its
    result grid's warning that trials have no result files (Ray's loggers are off: `study.db` holds every result),
    Optuna's notes on creating and loading the study, and Ray Tune's traceback of each failed trial (kept in the
    trial's error log). SIGUSR1, which Ray Tune takes over while it runs, is given back afterwards."""
    import optuna

    previous = signal.getsignal(signal.SIGUSR1)
    loggers = [logging.getLogger(name) for name in _RayTuneHints.LOGGERS]
    quiet = _RayTuneHints()
    verbosity = optuna.logging.get_verbosity()
    if not verbose:
        for logger in loggers:
            logger.addFilter(quiet)
        optuna.logging.set_verbosity(max(verbosity, optuna.logging.WARNING))
    try:
        yield
    finally:
        for logger in loggers:
            logger.removeFilter(quiet)
        optuna.logging.set_verbosity(verbosity)
        signal.signal(signal.SIGUSR1, previous)


class _RayTuneHints(logging.Filter):
    #: Ray Tune's traceback of every failed trial attempt: the Recorder keeps it in the trial's error log and
    #: the search ends with one line per kind of error (`nas.search.outcome`).
    TRIAL_ERRORS = ("ray.tune.execution.tune_controller", "Trial task failed for trial")
    LOGGERS = ("ray.tune.tune", "ray.tune.analysis.experiment_analysis", TRIAL_ERRORS[0])
    HINTS = ("Tuner.restore", "Stop signal received", "Trials did not complete",
             "both result.json and progress.csv were not found", TRIAL_ERRORS[1])

    def filter(self, record: logging.LogRecord) -> bool:
        return not any(hint in record.getMessage() for hint in self.HINTS)


def concurrency(study: Study) -> int:
    """The study's limit, else as many trials as the cluster's CPUs and GPUs hold (`nas.search.placement`)."""
    return placement.concurrency(study.resources, ray.cluster_resources())


def tune_config(study: Study, store: ResultStore, screen: SupernetScreen | None = None) -> tune.TuneConfig:
    """Workers are reused across trials (no torch import per trial), except under a memory limit, where each
    trial starts in a fresh process so that its limit counts from a clean start, and for data-parallel trials,
    whose Ray Train job must end with the trial's process. `screen`: the study's proxy, prepared."""
    return tune.TuneConfig(search_alg=StudySearcher(study, store, screen), scheduler=make_scheduler(study),
                           num_samples=study.max_trials, max_concurrent_trials=concurrency(study),
                           reuse_actors=study.resources.memory_gib is None and not study.resources.data_parallel,
                           trial_name_creator=trial_name, trial_dirname_creator=trial_name)


def tune_run_config(study: Study, storage: str, progress_every: float) -> tune.RunConfig:
    """Trials report no checkpoints to Ray Tune (theirs are in the run directory): its storage holds the
    experiment state only."""
    return tune.RunConfig(name=study.name, storage_path=storage, verbose=0, log_to_file=True,
                          callbacks=[Recorder(study, progress_every)],
                          failure_config=tune.FailureConfig(max_failures=study.failures.max_retries))


def trial_name(trial: Any) -> str:
    return f"trial_{trial.trial_id}"
