"""The search driver: `search(study, out)` measures a study's candidates on Ray Tune and records them.

    store = search(Study.load("studies/quickstart.yaml"), "runs/quickstart")
    store.pareto_front(budget=store.budgets()[-1])

The pieces, each the library's own where it has one:

- `nas.search.searcher.StudySearcher`: Optuna's ask/tell behind Ray Tune's `Searcher` interface (feasible,
  unmeasured candidates; Optuna told the budget each reached).
- `nas.search.schedulers`: ASHA on samples seen; `ParetoASHA` with several objectives.
- `nas.search.trial.trainable`: the function trainable around `nas.train.train`, with each trial's CPU/GPU
  share.
- `nas.search.recorder.Recorder`: a Tune callback on the driver that writes every trial, rung and end to the
  `ResultStore` (the only writer of `DIR/study.db`), keeps the `Ledger` actor that trials read, and prints
  progress.
- Faults: Ray's `FailureConfig` retries a trial whose worker died or raised, and the trial resumes from
  its last checkpoint. `search(..., resume=True)` after the driver was killed restores the Tune experiment
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
import os
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import ray
from ray import tune

from nas import status
from nas.errors import ConfigError
from nas.results import ResultStore
from nas.search.recorder import Ledger, Recorder, ledger_entries
from nas.search.schedulers import make_scheduler
from nas.search.searcher import StudySearcher
from nas.search.trial import LEDGER_NAMESPACE, TrialSettings, trainable
from nas.study import Study
from nas.train import ReportTo

# ---- running a study ---------------------------------------------------------------------------------------


def search(study: Study, out: str | os.PathLike, *, resume: bool = False, address: str | None = None,
           storage: str | None = None, dashboard: bool = False, dashboard_host: str = "127.0.0.1",
           verbose: bool = False, progress_every: float = 30.0, report_to: str = "tensorboard") -> ResultStore:
    """Run (or with `resume`, continue) `study`; results go to `out/study.db`, Ray's experiment to `storage`,
    the trials' curves to `out/tensorboard` (and W&B, with `report_to="tensorboard,wandb"`).

    Returns the results database. Raises `ConfigError` for a study that cannot run as given (an existing
    search without `resume`, a changed study, missing data).
    """
    out = Path(out).resolve()
    ReportTo.parse(report_to, out)  # a missing wandb is a one-line error here, not in every trial
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
        store = store or ResultStore.create(out, study)  # once Ray is up: a failed start leaves nothing to resume
        ledger_name = f"ledger-{study.name}-{hashlib.sha1(str(store.path).encode()).hexdigest()[:10]}"
        ledger = Ledger.options(name=ledger_name, namespace=LEDGER_NAMESPACE).remote(ledger_entries(store))
        try:
            settings = TrialSettings(study, ledger_name, str(out), report_to)
            function = tune.with_resources(tune.with_parameters(trainable, settings=settings), trial_resources(study))
            if restore:
                tuner = tune.Tuner.restore(experiment, trainable=function, resume_unfinished=True,
                                           resume_errored=True)
            else:
                tuner = tune.Tuner(function, tune_config=tune_config(study, store),
                                   run_config=tune_run_config(study, store, storage, ledger_name, progress_every))
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
    recorded = store.meta("study") or {}
    changed = sorted(k for k in resolved.keys() | recorded.keys() if resolved.get(k) != recorded.get(k))
    if changed:
        raise ConfigError(f"the study changed since this search began ({', '.join(changed)}); resuming would mix "
                          "results: run it with another --out", source=study.source)
    for row in store.trials(status=status.RUNNING):  # until Tune restarts them (or finds it never knew them)
        store.update_trial(row["trial_id"], status=status.PENDING)
    return store


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


def tune_run_config(study: Study, store: ResultStore, storage: str, ledger_name: str,
                    progress_every: float) -> tune.RunConfig:
    return tune.RunConfig(name=study.name, storage_path=storage, verbose=0, log_to_file=True,
                          callbacks=[Recorder(study, store, ledger_name, storage, progress_every)],
                          failure_config=tune.FailureConfig(max_failures=study.failures.max_retries),
                          checkpoint_config=tune.CheckpointConfig(num_to_keep=1))


def trial_name(trial: Any) -> str:
    return f"trial_{trial.trial_id}"
