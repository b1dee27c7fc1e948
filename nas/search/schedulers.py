"""Early stopping on samples seen: Ray Tune's ASHA for one objective, `ParetoASHA` for several, `CurveASHA` on
predicted learning curves (`budget.early_stopping: curve`).

ASHA (asynchronous successive halving, Li et al. 2020) records each trial's result at rungs min_samples x
reduction_factor^k and lets it continue past a rung only when it is among the best 1 / reduction_factor of the
trials recorded there so far. With several objectives, `ParetoASHA` (MO-ASHA, Schmucker et al. 2021) orders the
trials at a rung by non-dominated front, then crowding distance, so that cheap candidates are not judged on
accuracy alone. A finalist's confirmation run (`confirm`) is never stopped: it is trained to the full budget.

ASHA compares candidates at equal samples seen, so a larger tower that learns slower early but ends higher
(the crossover of the ViTamin paper's data-scaling curves) is stopped before it can cross over. `CurveASHA`
keeps ParetoASHA's rule but ranks by each trial's predicted value at the full budget, optimistic by its
uncertainty: the error (1 - accuracy; the loss itself) is taken to fall as a power law in samples seen,
log error = c + s log samples, fitted to the trial's own evaluations so far, with a prior on the exponent s
shared across candidates: a line in log image parameters fitted to the exponents of the candidates measured
at two budgets or more (those measured further), with their spread about it. A candidate with one
evaluation is predicted by the prior exponent for its size; one with several, by its own curve shrunk
towards that prior as far as its measurement noise (binomial, from the eval set's size) leaves it unsure.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from ray.tune.schedulers import AsyncHyperBandScheduler, FIFOScheduler, TrialScheduler

from nas.metrics import TRAINED, direction
from nas.pareto import minimization, pareto_order
from nas.search.protocol import CANDIDATE_KEY, REPLAY_KEY, RESUMED_FROM_KEY
from nas.study import Budget, Study


def make_scheduler(study: Study) -> TrialScheduler:
    budget = study.budget
    if budget.early_stopping == "none":
        return FIFOScheduler()
    common = {"time_attr": "samples_seen", "max_t": budget.max_samples, "grace_period": budget.min_samples,
              "reduction_factor": budget.reduction_factor}
    if budget.early_stopping == "curve":
        return CurveASHA(study.objectives, **common)
    if study.multi_objective:
        return ParetoASHA(study.objectives, **common)
    (metric, mode), = study.objectives.items()
    return ASHA(metric=metric, mode=mode, brackets=1, **common)


def finalist(trial: Any) -> bool:
    """Whether a Tune trial is a finalist's confirmation run, which early stopping leaves to the full budget."""
    config = getattr(trial, "config", None) or {}  # a Ray Tune trial's; a stand-in may have none
    return bool(getattr(config.get(CANDIDATE_KEY), "finalist", False))


def promoted_before(result: Mapping[str, Any], time_attr: str) -> bool:
    """Whether `result` is a rung replayed by a trial resumed from a checkpoint past that rung: the trial was
    promoted there, in the session that measured it. A resumed search's scheduler starts empty (Ray Tune restores
    trials and the searcher, not the scheduler), so deciding that rung again, against whatever this session has
    recorded there so far, could stop the trial now at a rung it passed (seen once: a trial promoted at 800
    samples, stopped at 800 after a driver kill, its 2,400 never measured). Such a rung is recorded (other
    trials are compared with it) but never stops its trial."""
    resumed = result.get(RESUMED_FROM_KEY)
    return bool(result.get(REPLAY_KEY)) and resumed is not None and resumed > result.get(time_attr, math.inf)


class ASHA(AsyncHyperBandScheduler):
    """Ray Tune's ASHA, except for finalists' runs, which it neither stops nor records at its rungs, and a rung
    replayed by a trial promoted past it before, which goes on (`promoted_before`)."""

    def __init__(self, *, time_attr: str, **options: Any):
        super().__init__(time_attr=time_attr, **options)
        self.samples_attr = time_attr

    def on_trial_result(self, tune_controller: Any, trial: Any, result: dict[str, Any]) -> str:
        if finalist(trial):
            return TrialScheduler.CONTINUE
        action = super().on_trial_result(tune_controller, trial, result)
        return TrialScheduler.CONTINUE if promoted_before(result, self.samples_attr) else action

    def on_trial_complete(self, tune_controller: Any, trial: Any, result: dict[str, Any]) -> None:
        if not finalist(trial):
            super().on_trial_complete(tune_controller, trial, result)


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
        milestones = Budget(grace_period, max_t, reduction_factor).ladder[:-1]
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
            position = list(pareto_order(self.ranked(ids, recorded))).index(ids.index(trial_id))
            keep = math.ceil(len(ids) / self.reduction_factor)
            return TrialScheduler.CONTINUE if position < keep else TrialScheduler.STOP
        return TrialScheduler.CONTINUE

    def ranked(self, ids: Sequence[str], recorded: Mapping[str, np.ndarray]) -> np.ndarray:
        """What a rung orders its trials by (one row per trial, to minimise): their objectives there."""
        return np.stack([recorded[i] for i in ids])

    def on_trial_result(self, tune_controller: Any, trial: Any, result: dict[str, Any]) -> str:
        reward = self.reward(result)
        if reward is None or finalist(trial):
            return TrialScheduler.CONTINUE
        if result[self.time_attr] >= self.max_t:
            action = TrialScheduler.STOP
        else:
            action = self.decide(trial.trial_id, result[self.time_attr], reward)
            if promoted_before(result, self.time_attr):
                action = TrialScheduler.CONTINUE
        self.stopped += action == TrialScheduler.STOP
        return action

    def on_trial_complete(self, tune_controller: Any, trial: Any, result: dict[str, Any]) -> None:
        reward = self.reward(result) if result and not finalist(trial) else None
        if reward is not None and result[self.time_attr] < self.max_t:
            self.decide(trial.trial_id, result[self.time_attr], reward)

    def debug_string(self) -> str:
        rungs = " | ".join(f"{m:g}: {len(r)} trials" for m, r in sorted(self.rungs.items()))
        return f"ParetoASHA: {self.stopped} stopped; {rungs}"


# ---- learning-curve-aware promotion ----------------------------------------------------------------------------

#: Spread of candidates' log-log slopes about the prior's line when too few were measured further to tell,
#: and the least it is taken to be (a handful of candidates underestimate it).
DEFAULT_SLOPE_SPREAD = 0.1
MIN_SLOPE_SPREAD = 0.02
#: Variance of one log-loss measurement (the loss has no eval-set size to derive it from): about 1 %.
LOSS_VARIANCE = 1e-4


@dataclass
class Curve:
    """One trial's evaluations of one metric: samples seen, values and eval-set sizes (None: unknown)."""

    samples: list[float] = field(default_factory=list)
    values: list[float] = field(default_factory=list)
    sizes: list[float | None] = field(default_factory=list)

    def add(self, samples: float, value: float, size: float | None) -> None:
        if samples in self.samples:  # a rung reported again (a resumed trial): the latest stands
            index = self.samples.index(samples)
            self.values[index], self.sizes[index] = value, size
        else:
            self.samples.append(samples)
            self.values.append(value)
            self.sizes.append(size)


def log_curve(curve: Curve, mode: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(log samples, log error or log loss, its variance): what the power law is fitted to.

    For an accuracy p measured on n items, var(log(1 - p)) = p / (n (1 - p)) (the binomial variance, by the
    delta method), with p kept half an item from 0 and 1; an unknown n counts as 100 items.
    """
    x = np.log(np.asarray(curve.samples, dtype=float))
    values = np.asarray(curve.values, dtype=float)
    if mode == "min":
        return x, np.log(np.maximum(values, 1e-12)), np.full(len(values), LOSS_VARIANCE)
    n = np.array([100.0 if size is None else max(float(size), 1.0) for size in curve.sizes])
    p = np.clip(values, 0.5 / n, 1 - 0.5 / n)
    return x, np.log(1 - p), p / (n * (1 - p))


def own_slope(x: np.ndarray, y: np.ndarray, variance: np.ndarray) -> tuple[float, float] | None:
    """Weighted least-squares slope of y on x and its variance; None with fewer than two distinct x."""
    if len(np.unique(x)) < 2:
        return None
    w = 1 / variance
    xm = (w * x).sum() / w.sum()
    sxx = (w * (x - xm) ** 2).sum()
    return float((w * (x - xm) * (y - (w * y).sum() / w.sum())).sum() / sxx), float(1 / sxx)


@dataclass(frozen=True)
class SlopePrior:
    """The log-log slope expected of a candidate before its own curve is seen: intercept + coefficient x log size
    (with `cov`, their covariance), and the spread of candidates' slopes about that line."""

    intercept: float = 0.0
    coefficient: float = 0.0
    cov: tuple[tuple[float, float], tuple[float, float]] = ((DEFAULT_SLOPE_SPREAD**2, 0.0), (0.0, 0.0))
    spread: float = DEFAULT_SLOPE_SPREAD

    def slope(self, log_size: float | None) -> tuple[float, float]:
        """The prior's mean slope for a candidate of log size `log_size` (None: unknown), and its variance."""
        z = np.array([1.0, 0.0 if log_size is None else log_size])
        return (float(self.intercept + self.coefficient * z[1]),
                float(self.spread**2 + z @ np.asarray(self.cov) @ z))


def fit_prior(slopes: Sequence[tuple[float, float, float | None]]) -> SlopePrior:
    """The prior from the candidates measured further: (slope, its variance, log size) each.

    Weighted least squares of slope on log size (on the mean slope alone with one candidate or one size), each
    candidate weighted by 1 / (its variance + spread^2); the spread is the residual variance less the slopes'
    own (method of moments), at least `MIN_SLOPE_SPREAD`, and `DEFAULT_SLOPE_SPREAD` when nothing is left to
    estimate it from.
    """
    if not slopes:
        return SlopePrior()
    s = np.array([v[0] for v in slopes])
    own = np.array([v[1] for v in slopes])
    sizes = [v[2] for v in slopes]
    by_size = None not in sizes and len(set(sizes)) > 1
    design = np.column_stack([np.ones(len(s)), np.asarray(sizes, dtype=float) if by_size else np.zeros(len(s))])
    columns = 2 if by_size else 1
    spread = DEFAULT_SLOPE_SPREAD if len(s) <= columns else None
    if spread is None:
        beta = np.linalg.lstsq(design[:, :columns], s, rcond=None)[0]
        residual = s - design[:, :columns] @ beta
        spread = math.sqrt(max((residual**2).sum() / (len(s) - columns) - own.mean(), MIN_SLOPE_SPREAD**2))
    w = 1 / (own + spread**2)
    a = design[:, :columns]
    cov = np.linalg.inv(a.T @ (w[:, None] * a))
    beta = cov @ (a.T @ (w * s))
    full = np.zeros((2, 2))
    full[:columns, :columns] = cov
    return SlopePrior(float(beta[0]), float(beta[1]) if by_size else 0.0,
                      tuple(map(tuple, full.tolist())), spread)


def predict(x: np.ndarray, y: np.ndarray, variance: np.ndarray, slope: tuple[float, float],
            target: float) -> tuple[float, float]:
    """Mean and standard deviation of log error (or log loss) at log samples `target`.

    The line y = c + s (x - x_last) with a flat prior on c and the prior N(slope) on s, conditioned on the
    measurements (Gaussian, with their `variance`): Bayesian linear regression in closed form.
    """
    u = x - x[-1]
    w = 1 / variance
    precision = np.array([[w.sum(), (w * u).sum()], [(w * u).sum(), (w * u * u).sum() + 1 / slope[1]]])
    rhs = np.array([(w * y).sum(), (w * u * y).sum() + slope[0] / slope[1]])
    cov = np.linalg.inv(precision)
    z = np.array([1.0, target - x[-1]])
    return float(z @ cov @ rhs), float(math.sqrt(max(z @ cov @ z, 0.0)))


class CurveASHA(ParetoASHA):
    """ParetoASHA's promotion rule on each trial's predicted objectives at `max_t` (the module docstring).

    A trial's measured objectives are replaced by their prediction at the full budget, `optimism` standard
    deviations towards better (an upper confidence bound: a candidate that may still cross over is not stopped
    for want of evidence); cost objectives stay as they are. Every reported evaluation is used, between rungs
    and below the first too (`budget.between`, `budget.below`). `size` is the result key of the candidate's
    size that the prior's exponent depends on.
    """

    def __init__(self, objectives: Mapping[str, str], *, time_attr: str, max_t: int, grace_period: int,
                 reduction_factor: float, size: str = "image_params_m", optimism: float = 1.0):
        super().__init__(objectives, time_attr=time_attr, max_t=max_t, grace_period=grace_period,
                         reduction_factor=reduction_factor)
        self.size = size
        self.optimism = optimism
        self.measured = [name for name in self.objectives if name in TRAINED]
        self.curves: dict[str, dict[str, Curve]] = {}  # trial -> metric -> its evaluations
        self.log_sizes: dict[str, float | None] = {}

    def record(self, trial_id: str, result: Mapping[str, Any]) -> None:
        if self.time_attr not in result:
            return
        curves = self.curves.setdefault(trial_id, {name: Curve() for name in self.measured})
        for name in self.measured:
            if result.get(name) is not None:
                curves[name].add(float(result[self.time_attr]), float(result[name]), result.get(f"{name}_n"))
        size = result.get(self.size)
        self.log_sizes[trial_id] = math.log(size) if size else None

    def on_trial_result(self, tune_controller: Any, trial: Any, result: dict[str, Any]) -> str:
        self.record(trial.trial_id, result)
        return super().on_trial_result(tune_controller, trial, result)

    def on_trial_complete(self, tune_controller: Any, trial: Any, result: dict[str, Any]) -> None:
        if result:
            self.record(trial.trial_id, result)
        super().on_trial_complete(tune_controller, trial, result)

    def priors(self) -> dict[str, SlopePrior]:
        """Each measured objective's prior, from every trial measured at two budgets or more."""
        priors = {}
        for name in self.measured:
            slopes = []
            for trial_id, curves in self.curves.items():
                fitted = own_slope(*log_curve(curves[name], direction(name))) if curves[name].values else None
                if fitted is not None:
                    slopes.append((*fitted, self.log_sizes.get(trial_id)))
            priors[name] = fit_prior(slopes)
        return priors

    def predicted(self, trial_id: str, name: str, prior: SlopePrior) -> tuple[float, float] | None:
        """The trial's predicted value of `name` at `max_t`, and its optimistic bound (None: no evaluation)."""
        curve = self.curves.get(trial_id, {}).get(name)
        if curve is None or not curve.values:
            return None
        mode = direction(name)
        mean, sd = predict(*log_curve(curve, mode), prior.slope(self.log_sizes.get(trial_id)), math.log(self.max_t))
        value, bound = math.exp(mean), math.exp(mean - self.optimism * sd)
        return (1 - value, 1 - bound) if mode == "max" else (value, bound)

    def ranked(self, ids: Sequence[str], recorded: Mapping[str, np.ndarray]) -> np.ndarray:
        """The trials' objectives with the measured ones replaced by their optimistic predictions at `max_t`."""
        priors = self.priors()
        rows = []
        for trial_id in ids:
            row = np.array(recorded[trial_id], dtype=float)
            for column, name in enumerate(self.objectives):
                if name in priors and (predicted := self.predicted(trial_id, name, priors[name])) is not None:
                    bound = predicted[1]
                    row[column] = -bound if self.objectives[name] == "max" else bound
            rows.append(row)
        return np.stack(rows)

    def debug_string(self) -> str:
        return "CurveASHA" + super().debug_string().removeprefix("ParetoASHA")
