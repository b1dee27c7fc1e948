"""`Drafts`: the in-memory copy of a study's Optuna study in which the searcher draws sampled proposals
(`nas.search.searcher.StudySearcher`), so that only a proposal to train becomes a trial of the study.

It holds the study's trials (but those waiting in its queue) and the proposals passed over, in the order they
were made, so that the sampler learns from both as it did when both were trials of the study. It is built once
(when a driver session first draws a proposal) and then kept as the study changes: a proposal passed over is
told there by the searcher; the draft that became a trial of the study stands for that trial (`adopt`); a trial
of the study the searcher wrote since (`OptunaStudy.changed`: a rung reported, its end told) is copied again.
The copies are made when the next proposal is drawn (`current`), never within one, so that a proposal sees the
study as it stood when the searcher was asked, as when the copy was built again for every proposal: that
copied every trial of the search each time, a cost that grew with the trial count (`benchmarks/driver_scale.py`).

A draft standing for a trial of the study holds that trial's parameters, attributes, intermediate values, state
and values. The system attributes the drafts' sampler set on the draft (NSGA-II's generation, TPE's constant-liar
parameters) are the trial's too (`OptunaStudy.add`): NSGA-II counts a generation by the generations its COMPLETE
trials carry, and a drafts study built again (`--resume`) continues the generations.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import optuna
from optuna.trial import FrozenTrial, TrialState

if TYPE_CHECKING:
    from nas.search.optuna_study import OptunaStudy


class Drafts:
    """The drafts study of `optuna`'s study: its trials but the waiting ones, and `passed`, by start time,
    sampled by `sampler`."""

    def __init__(self, optuna_study: OptunaStudy, sampler: optuna.samplers.BaseSampler, passed: list[FrozenTrial]):
        self.source = optuna_study
        self.storage = optuna.storages.InMemoryStorage()
        self.study = optuna.create_study(storage=self.storage, directions=optuna_study.study.directions,
                                         sampler=sampler)
        self.study_id = self.storage.get_study_id_from_name(self.study.study_name)
        made = [t for t in optuna_study.study.get_trials(deepcopy=False) if t.state != TrialState.WAITING]
        ordered = sorted([*made, *passed], key=lambda t: t.datetime_start)
        self.study.add_trials(ordered)
        ours = {id(t) for t in made}
        #: the study's trials that may still change (by number) -> the id of the draft standing for each
        self.standing = {t.number: self._draft_id(position) for position, t in enumerate(ordered)
                         if id(t) in ours and not t.state.is_finished()}
        optuna_study.changed.clear()  # copied as they are now

    def _draft_id(self, number: int) -> int:
        return self.storage.get_trial_id_from_study_id_trial_number(self.study_id, number)

    def trial(self, draft: optuna.Trial) -> FrozenTrial:
        """The draft as it stands."""
        return self.storage.get_trial(self._draft_id(draft.number))

    def adopt(self, draft: optuna.Trial, number: int) -> None:
        """`draft` became trial `number` of the study (with its parameters): it stands for it from the next
        proposal on."""
        self.standing[number] = self._draft_id(draft.number)
        self.source.changed.add(number)

    def current(self) -> optuna.Study:
        """The drafts study, with the trials of the study written since copied again (one read of each)."""
        for number in sorted(self.source.changed):
            draft_id = self.standing.get(number)
            if draft_id is None:
                continue
            trial = self.source.trial(number)
            self._copy(draft_id, trial)
            if trial.state.is_finished():
                del self.standing[number]
        self.source.changed.clear()
        return self.study

    def _copy(self, draft_id: int, trial: FrozenTrial) -> None:
        for key, value in trial.system_attrs.items():
            self.storage.set_trial_system_attr(draft_id, key, value)
        for key, value in trial.user_attrs.items():
            self.storage.set_trial_user_attr(draft_id, key, value)
        for step, value in trial.intermediate_values.items():
            self.storage.set_trial_intermediate_value(draft_id, step, value)
        if trial.state.is_finished():
            self.storage.set_trial_state_values(draft_id, trial.state, trial.values)
