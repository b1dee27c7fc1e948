"""Early stopping on samples seen: Ray Tune's ASHA for one objective, `ParetoASHA` for several.

ASHA (asynchronous successive halving, Li et al. 2020) records each trial's result at rungs min_samples x
reduction_factor^k and lets it continue past a rung only when it is among the best 1 / reduction_factor of the
trials recorded there so far. With several objectives, `ParetoASHA` (MO-ASHA, Schmucker et al. 2021) orders the
trials at a rung by non-dominated front, then crowding distance, so that cheap candidates are not judged on
accuracy alone.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import numpy as np
from ray.tune.schedulers import AsyncHyperBandScheduler, FIFOScheduler, TrialScheduler

from nas.results import minimization, pareto_order
from nas.study import Budget, Study


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


class ParetoASHA(FIFOScheduler):
    """ASHA for several objectives: at a rung, a trial continues when it is in the top 1/reduction_factor of the
    trials recorded there (itself included), ordered by non-dominated front, then crowding distance."""

    def __init__(self, objectives: Mapping[str, str], *, time_attr: str, max_t: int, grace_period: int,
                 reduction_factor: float):
        super().__init__()
        self.objectives = dict(objectives)
        self.time_attr = time_attr
        self.max_t = max_t
        self.reduction_factor = reduction_factor
        milestones = Budget(grace_period, max_t, reduction_factor).rungs[:-1]
        self.rungs: dict[int, dict[str, np.ndarray]] = {m: {} for m in milestones}  # milestone -> trial -> reward
        self.stopped = 0

    def reward(self, result: Mapping[str, Any]) -> np.ndarray | None:
        """The trial's objectives as one vector to minimise; None for a result without them (an oom end)."""
        if self.time_attr not in result or any(name not in result for name in self.objectives):
            return None
        return minimization({k: [result[k]] for k in self.objectives}, self.objectives)[0]

    def decide(self, trial_id: str, samples_seen: int, reward: np.ndarray) -> str:
        """Record the trial at the highest rung it reached and has not been recorded at, and decide there."""
        for milestone in sorted(self.rungs, reverse=True):
            recorded = self.rungs[milestone]
            if samples_seen < milestone or trial_id in recorded:
                continue
            recorded[trial_id] = reward
            ids = list(recorded)
            position = list(pareto_order(np.stack([recorded[i] for i in ids]))).index(ids.index(trial_id))
            keep = math.ceil(len(ids) / self.reduction_factor)
            return TrialScheduler.CONTINUE if position < keep else TrialScheduler.STOP
        return TrialScheduler.CONTINUE

    def on_trial_result(self, tune_controller: Any, trial: Any, result: dict[str, Any]) -> str:
        reward = self.reward(result)
        if reward is None:
            return TrialScheduler.CONTINUE
        if result[self.time_attr] >= self.max_t:
            action = TrialScheduler.STOP
        else:
            action = self.decide(trial.trial_id, result[self.time_attr], reward)
        self.stopped += action == TrialScheduler.STOP
        return action

    def on_trial_complete(self, tune_controller: Any, trial: Any, result: dict[str, Any]) -> None:
        reward = self.reward(result) if result else None
        if reward is not None and result[self.time_attr] < self.max_t:
            self.decide(trial.trial_id, result[self.time_attr], reward)

    def debug_string(self) -> str:
        rungs = " | ".join(f"{m:g}: {len(r)} trials" for m, r in sorted(self.rungs.items()))
        return f"ParetoASHA: {self.stopped} stopped; {rungs}"
