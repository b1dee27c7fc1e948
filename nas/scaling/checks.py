"""What is checked after a fit, so that it never claims more than the data hold: which parameters the data do not
identify (each additive term dropped and the law refitted), lack of fit (a runs test of the residuals, and the
law's richer or rival law by BIC), and held-out checks (fit on the smaller runs, score the largest).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

import numpy as np
from scipy import special, stats

from nas.errors import ConfigError
from nas.scaling.fitting import Fit, Interval, LackOfFit, best, objectives
from nas.scaling.registry import Law, get_law

#: A runs test below this p-value, or a richer (or rival) law better by more than this much BIC, is a lack-of-fit
#: warning (a BIC difference over 10 is "very strong" evidence, Kass and Raftery 1995).
LACK_OF_FIT_P = 0.01
LACK_OF_FIT_BIC = 10.0


@dataclass(frozen=True, eq=False)
class HeldOutCheck:
    """How well a law fitted on the smaller runs predicts the larger ones."""

    fit: Fit  # fitted on the smaller runs only
    prediction: Interval  # at the held-out runs
    y: np.ndarray  # what the held-out runs measured
    relative_error: np.ndarray  # (predicted - measured) / measured, per held-out run
    mean_abs_relative_error: float
    rmse_log: float
    coverage: float  # fraction of held-out runs inside the prediction interval


def identification(form: Law, theta: np.ndarray, value: float, free: np.ndarray, x: np.ndarray, y: np.ndarray,
                   starts: np.ndarray, delta: float, level: float) -> tuple[dict[str, tuple], list[str]]:
    """Which free parameters the data do not identify, and why.

    Each additive term is dropped and the law refitted: when the fit is not worse at the fit's level (an F test
    of the criterion's rise, with the residual scale as denominator), the data cannot tell the term from zero
    and the parameters only it uses are not identified. An exponent estimated on a bound of its declared range
    is not identified either, nor are the other parameters of its term.
    """
    log_x, log_y, ones = np.log(x), np.log(y), np.ones(len(y))
    resid = form.log_predict(theta, log_x) - log_y
    dof = max(1, len(y) - len(free))
    psi = np.clip(resid, -delta, delta) if form.criterion == "huber" else resid
    scale = float(psi @ resid) / dof
    droppable: dict[str, float] = {}
    for term in form.terms:
        drops = dict(term.drop)
        if not set(drops) <= set(free.tolist()):
            continue
        kept = np.array([i for i in free if i not in drops and i not in term.uses], dtype=int)
        restricted = np.vstack([theta, starts[:3]]) if len(starts) else theta[None]
        restricted = restricted.copy()
        restricted[:, list(term.uses)] = theta[list(term.uses)]
        for i, v in drops.items():
            restricted[:, i] = v
        if len(kept):
            _, dropped_value = best(form, restricted, kept, log_x, log_y, ones, delta)
        else:
            dropped_value = float(objectives(form, restricted[:1], log_x, log_y, ones, delta)[0])
        rise = dropped_value - value
        q = max(1, len(set(term.uses) & set(free.tolist())))
        if rise <= 1e-9 * max(abs(value), 1e-300) + 1e-15 * len(y):
            droppable[term.name] = 1.0
        elif scale > 0:
            droppable_p = float(stats.f.sf(2 * rise / q / scale, q, dof))
            if droppable_p > 1 - level:
                droppable[term.name] = droppable_p
    reasons: dict[int, str] = {}
    for i in free:
        using = [t for t in form.terms if i in t.uses]
        if using and all(t.name in droppable for t in using):
            reasons[i] = "; ".join(f"the fit is as good without the {t.name} (p = {droppable[t.name]:.2g})"
                                   for t in using)
    for i in form.exponents:
        if i not in free:
            continue
        low, high = form.bounds[i]
        span = high - low
        for bound in (low, high):
            if abs(theta[i] - bound) <= 1e-6 * span:
                shown = math.exp(bound) if form.log[i] else bound
                reasons.setdefault(i, f"the estimate is on the bound {shown:g} of its declared range")
                if i in form.decays:
                    continue
                for term in form.terms:
                    if i in term.uses:
                        for j in term.uses:
                            if j in free and j != i:
                                reasons.setdefault(j, f"{form.params[i]} is on a bound of its declared range")
    hints = []
    if x.ndim == 2:
        for k, variable in enumerate(form.variables):
            distinct = len(np.unique(x[:, k]))
            if distinct < 3:
                hints.append(f"the runs span {distinct} value(s) of {variable}")
    not_identified = {form.params[i]: form.admissible(i, y) for i in sorted(reasons)}
    grouped: dict[str, list[str]] = {}
    for i in sorted(reasons):
        grouped.setdefault(reasons[i], []).append(form.params[i])
    messages = [f"{', '.join(names)} not identified: {why}" + (f" ({'; '.join(hints)})" if hints else "")
                for why, names in grouped.items()]
    return not_identified, messages


def _runs_p(residuals: np.ndarray) -> tuple[int, float, float]:
    """Wald-Wolfowitz runs test, exact one-sided p of so few runs of equal-signed residuals (a systematic
    bend): (runs, expected runs, p). Residuals of exactly zero are left out."""
    signs = np.sign(residuals[np.abs(residuals) > 1e-12 * max(1.0, np.abs(residuals).max())])
    n1, n2 = int(np.sum(signs > 0)), int(np.sum(signs < 0))
    n = n1 + n2
    if n1 == 0 or n2 == 0:
        return 1, 1.0, 1.0
    runs = 1 + int(np.sum(signs[1:] != signs[:-1]))
    total = special.comb(n, n1)

    def probability(r: int) -> float:
        k = r // 2
        if r % 2 == 0:
            return 2 * special.comb(n1 - 1, k - 1) * special.comb(n2 - 1, k - 1) / total
        return (special.comb(n1 - 1, k) * special.comb(n2 - 1, k - 1)
                + special.comb(n1 - 1, k - 1) * special.comb(n2 - 1, k)) / total

    p = float(min(1.0, sum(probability(r) for r in range(2, runs + 1))))
    return runs, 1.0 + 2.0 * n1 * n2 / n, p


def _bic(log_resid: np.ndarray, n_params: int) -> float:
    n = len(log_resid)
    return float(n * np.log(np.mean(log_resid**2) + 1e-12) + n_params * np.log(n))


def lack_of_fit(law: Law, x: np.ndarray, y: np.ndarray, log_resid: np.ndarray, n_params: int) -> LackOfFit:
    """The runs test of the residuals' signs, and the BIC of `law.richer` fitted to the same points when there are
    enough of them (and, for the laws of several variables, runs spanning three or more values of each)."""
    if x.ndim == 2:  # along model size (then data), and along data (then model size)
        orders = [np.lexsort((x[:, 1], x[:, 0])), np.lexsort((x[:, 0], x[:, 1]))]
    else:
        orders = [np.argsort(x, kind="stable")]
    tests = [_runs_p(log_resid[order]) for order in orders]
    runs, expected, p = min(tests, key=lambda t: t[2])
    p = min(1.0, p * len(tests))  # Bonferroni over the orderings (N, then D)
    along = "compute" if x.ndim == 1 else "model size and data"
    warnings = []
    if p < LACK_OF_FIT_P:
        warnings.append(f"lack of fit: ordered by {along}, the residuals change sign only {runs - 1} times in "
                        f"{len(y)} points ({expected:.1f} runs expected; runs test p = {p:.2g}): the {law.name} law is "
                        "the wrong shape for these data")
    richer, starts = law.richer or (None, None)
    delta = None
    spans = x.ndim == 1 or all(len(np.unique(column)) >= 3 for column in x.T)  # else the rival fits a degenerate law
    if richer is not None and spans and len(y) >= get_law(richer).min_points():
        try:
            other = get_law(richer).fit(x, y, n_bootstrap=0, checks=False, starts=starts)
        except ConfigError:
            other = None
        if other is not None:
            other_resid = np.log(y) - np.log(other.predict(x))
            delta = _bic(log_resid, n_params) - _bic(other_resid, len(other.theta) - len(other.fixed))
            if delta > LACK_OF_FIT_BIC:
                warnings.append(f"lack of fit: a {richer} law fits these data much better (BIC lower by "
                                f"{delta:.1f})")
    return LackOfFit(runs=runs, expected_runs=expected, runs_p=p, richer=richer if delta is not None else None,
                     delta_bic=delta, warnings=tuple(warnings))


def with_checks(result: Fit, x: np.ndarray, y: np.ndarray, log_resid: np.ndarray) -> Fit:
    """The fit with its lack-of-fit check (at the points fitted, `x` and `y`) and the check's warnings."""
    check = lack_of_fit(result.form, x, y, log_resid, len(result.theta) - len(result.fixed))
    return replace(result, lack_of_fit=check, warnings=(*result.warnings, *check.warnings))


def held_out_check(law: str, x, y, *, n_test: int | None = None, test_fraction: float = 0.25,
                   level: float = 0.95, **options) -> HeldOutCheck:
    """Fit on the smaller runs, predict the larger ones, and say how far off the extrapolation was.

    "Larger" is compute (N * D for the laws of (N, D)). The `n_test` largest runs (default: `test_fraction` of
    them) are held out; for ``isoflop`` whole budgets are held out and scored on their parabola optima, for
    ``pareto-power`` on the held-out runs that are on the compute-error frontier.
    """
    model = get_law(law)
    x, y, refit = model.held_out(np.asarray(x, dtype=float), np.asarray(y, dtype=float), level=level, **options)
    size = model.size(x)
    n_test = n_test if n_test is not None else max(1, int(round(test_fraction * len(y))))
    if not 0 < n_test < len(y):
        raise ConfigError(f"cannot hold out {n_test} of {len(y)} runs", field="n_test")
    test = np.zeros(len(y), dtype=bool)
    test[np.argsort(size, kind="stable")[-n_test:]] = True
    train_fit = refit(~test)
    scored = model.scored(test, size, y)
    if not scored.any():
        raise ConfigError(f"none of the {n_test} held-out runs is on the compute-error frontier", field="n_test")
    prediction = train_fit.extrapolate(x[scored], level=level)
    measured = y[scored]
    relative = (prediction.y - measured) / measured
    return HeldOutCheck(
        fit=train_fit,
        prediction=prediction,
        y=measured,
        relative_error=relative,
        mean_abs_relative_error=float(np.mean(np.abs(relative))),
        rmse_log=float(np.sqrt(np.mean(np.log(prediction.y / measured) ** 2))),
        coverage=float(np.mean((measured >= prediction.lower) & (measured <= prediction.upper))),
    )
