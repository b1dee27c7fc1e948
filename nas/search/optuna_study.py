"""`OptunaStudy`: the study's Optuna study in its results database, its trials addressed by number through the
storage (the searcher writes through it, `nas.search.drafts` copies what it wrote, the recorder tells the ends)."""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from typing import Any

import optuna
from optuna.trial import FrozenTrial, TrialState

from nas.results import ResultStore
from nas.study import Study


class OptunaStudy:
    """The study's Optuna study in its results database (created on first use, with its metric names), and its
    trials addressed by number, through the storage it lives in: a trial asked in an earlier driver session is
    annotated and told as one asked in this one."""

    def __init__(self, study: Study, store: ResultStore, sampler: optuna.samplers.BaseSampler | None = None):
        self.storage = store.optuna_storage()
        directions = ["maximize" if way == "max" else "minimize" for way in study.objectives.values()]
        self.study = optuna.create_study(study_name=study.name, storage=self.storage, sampler=sampler,
                                         directions=directions, load_if_exists=True)
        self.study_id = self.storage.get_study_id_from_name(study.name)
        self.changed: set[int] = set()  # trials written here since `Drafts` last copied them (by number)
        self._ids: dict[int, int] = {}  # number -> the storage's trial id (neither ever changes)
        self._states: dict[int, TrialState] = {}  # the trials whose state is known without a read (`state`)
        if self.study.metric_names is None:
            with warnings.catch_warnings():  # experimental since Optuna 3.2, and what optuna-dashboard shows
                warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
                self.study.set_metric_names(list(study.objectives))

    def add(self, proposal: FrozenTrial) -> int:
        """A running trial with the parameters and attributes of `proposal` (a draft): the trial that enqueuing
        its parameters, asking and proposing them again would make, in one transaction (`ask` first reads every
        running trial of the study again). Its system attributes are the draft's (its constraints, and what the
        drafts' sampler set on it: NSGA-II's generation, TPE's constant-liar parameters), as the sampler would
        have set them on a trial of the study, so that they survive a new drafts study (`--resume`). Its number."""
        template = optuna.trial.create_trial(state=TrialState.RUNNING, params=proposal.params,
                                             distributions=proposal.distributions, user_attrs=proposal.user_attrs,
                                             system_attrs={"fixed_params": proposal.params, **proposal.system_attrs})
        trial_id = self.storage.create_new_trial(self.study_id, template)
        number = self.storage.get_trial_number_from_id(trial_id)
        self._ids[number], self._states[number] = trial_id, TrialState.RUNNING
        return number

    def _trial_id(self, number: int) -> int:
        if number not in self._ids:
            self._ids[number] = self.storage.get_trial_id_from_study_id_trial_number(self.study_id, number)
        return self._ids[number]

    def trial(self, number: int) -> FrozenTrial:
        trial = self.storage.get_trial(self._trial_id(number))  # one trial, not every trial of the study
        if trial.state.is_finished():
            self._states[number] = trial.state
        return trial

    def state(self, number: int) -> TrialState:
        """Read once a trial is finished (Optuna changes a finished trial no more) and never for a trial made
        here (`add`), which only `tell` finishes while a driver runs: a result reported costs no read of its
        trial."""
        return self._states[number] if number in self._states else self.trial(number).state

    def finished(self, number: int) -> bool:
        """Whether trial `number` of this study was told its end (False when the study has no such trial)."""
        try:
            return self.state(number).is_finished()
        except KeyError:
            return False

    def set_user_attr(self, number: int, key: str, value: Any) -> None:
        self.storage.set_trial_user_attr(self._trial_id(number), key, value)
        self.changed.add(number)

    def set_constraint(self, number: int, key: str, value: float) -> None:
        """A constraint's value (<= 0: feasible), stored where `optuna.Trial.set_constraint` stores it, from
        which `FrozenTrial.constraints` and the samplers read it."""
        self.storage.set_trial_system_attr(self._trial_id(number), f"constraints:{key}", float(value))
        self.changed.add(number)

    def report(self, number: int, value: float, step: int) -> None:
        """An intermediate value (one objective only, as `optuna.Trial.report`)."""
        self.storage.set_trial_intermediate_value(self._trial_id(number), step, float(value))
        self.changed.add(number)

    def tell(self, number: int, values: float | Sequence[float] | None = None,
             state: TrialState | None = None) -> None:
        self._states[number] = self.study.tell(number, values, state=state).state
        self.changed.add(number)
