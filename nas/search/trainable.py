"""Ray Tune's entry point into a trial: `trainable(config, settings)`, the function trainable the driver gives
its Tuner, which measures `config[CANDIDATE_KEY]` (`nas.search.protocol`) with a `Trial` in the Tune trial's
process, or with a `DataParallelTrial` (a Ray Train job of `resources.workers` ranks) when the study asks for
several workers, or with a `nas.search.stand_in.StandInTrial` (no training: a synthetic curve) when the study
asks for its `stand_in`. This module and the stand-in's import no torch: a trial process imports it only to
train.

Its training curves go to TensorBoard under the study's run directory, `RUN/tensorboard/<number>-<arch name>`
(`trial_events`), so that `tensorboard --logdir RUN/tensorboard` compares every trial of the study; on a
cluster, RUN must then be on a filesystem the nodes share. With `report_to` naming wandb too, each trial is also
a W&B run, grouped by the study's name.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from nas.run_dir import RunDir
from nas.search.protocol import CANDIDATE_KEY, LEDGER_NAMESPACE, NUMBER_KEY, Candidate, trial_id_of
from nas.study import Study


@dataclass(frozen=True)
class TrialSettings:
    """What every trial of a search shares: the study, where to find the driver's ledger, the run directory as
    the driver sees it (on a cluster, a filesystem every node mounts at that path; the trials' checkpoints and
    TensorBoard events go there) and where the curves go (`--report-to`)."""

    study: Study
    ledger: str
    run_dir: str
    report_to: str = "tensorboard"


def trial_events(run_dir: str | os.PathLike, number: int, candidate: Candidate) -> Path:
    """A trial's TensorBoard directory: named by its Optuna number and arch, the run's name in TensorBoard."""
    from nas.train.log import TENSORBOARD

    return Path(run_dir) / TENSORBOARD / f"{number:03d}-{candidate.arch.name()}"


def trainable(config: dict[str, Any], settings: TrialSettings) -> None:
    """Ray Tune's trainable: measure `config[CANDIDATE_KEY]` under `settings.study`."""
    import ray
    from ray import tune

    candidate = config[CANDIDATE_KEY]
    ledger = ray.get_actor(settings.ledger, namespace=LEDGER_NAMESPACE)
    trial_id = trial_id_of(config, tune.get_context().get_trial_id())
    if settings.study.stand_in.active:
        from nas.search.stand_in import StandInTrial

        StandInTrial(settings.study, candidate, trial_id, RunDir(settings.run_dir), ledger).run()
        return
    from nas.search.trial import Trial
    from nas.train.log import ReportTo

    events = trial_events(settings.run_dir, config[NUMBER_KEY], candidate)
    report_to = ReportTo.parse(settings.report_to, events, name=events.name, group=settings.study.name)
    kind = Trial
    if settings.study.resources.data_parallel:  # a Ray Train job per training run
        from nas.search.data_parallel import DataParallelTrial

        kind = DataParallelTrial
    kind(settings.study, candidate, trial_id, RunDir(settings.run_dir), ledger, report_to).run()
