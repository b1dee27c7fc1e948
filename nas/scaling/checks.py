"""What is checked after a fit, so that it never claims more than the data hold: which parameters the data do not
identify (each additive term dropped and the law refitted) and which values of them the data allow, lack of fit
(a runs test of the residuals, the law's richer or rival law by BIC, and a bend of a line in log space), whether a
fit may be compared with a published one (`fit_gate`), held-out checks (fit on the smaller runs,
score the largest), and the backtest every extrapolation gets.
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


def _residual_scale(form: Law, theta: np.ndarray, free: np.ndarray, log_x: np.ndarray, log_y: np.ndarray,
                    delta: float) -> tuple[float, int]:
    """The residual scale an F test of the criterion's rise divides by, and its degrees of freedom."""
    resid = form.log_predict(theta, log_x) - log_y
    dof = max(1, len(log_y) - len(free))
    psi = np.clip(resid, -delta, delta) if form.criterion == "huber" else resid
    return float(psi @ resid) / dof, dof


def identification(form: Law, theta: np.ndarray, value: float, free: np.ndarray, x: np.ndarray, y: np.ndarray,
                   starts: np.ndarray, delta: float,
                   level: float) -> tuple[dict[str, tuple], list[str], tuple[str, ...]]:
    """Which free parameters the data do not identify, why, and which of them are on a bound.

    Each additive term is dropped and the law refitted: when the fit is not worse at the fit's level (an F test
    of the criterion's rise, with the residual scale as denominator), the data cannot tell the term from zero
    and the parameters only it uses are not identified. An exponent estimated on a bound of its declared range
    is not identified either ("at bound"), nor are the other parameters of its term.
    """
    log_x, log_y, ones = np.log(x), np.log(y), np.ones(len(y))
    scale, dof = _residual_scale(form, theta, free, log_x, log_y, delta)
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
    on_bound = []
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
                on_bound.append(form.params[i])
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
    return not_identified, messages, tuple(on_bound)


#: Values per unidentified parameter at which `allowed_values` refits the others.
ALLOWED_GRID = 17


def allowed_values(form: Law, theta: np.ndarray, value: float, free: np.ndarray, x: np.ndarray, y: np.ndarray,
                   unidentified: tuple[str, ...], delta: float, level: float) -> np.ndarray | None:
    """Rows of theta the data allow with each unidentified parameter moved across its admissible range: at each
    of `ALLOWED_GRID` values of it (a floor up to the smallest value measured, a coefficient twenty-four
    decades either way, an exponent or decay across its declared range), the other free parameters are
    refitted, and the row is kept when the fit is not worse at the fit's level (the identification check's F
    test). A prediction interval taken over these rows carries what the runs do not pin down; None when every
    parameter is identified."""
    if not unidentified:
        return None
    log_x, log_y, ones = np.log(x), np.log(y), np.ones(len(y))
    scale, dof = _residual_scale(form, theta, free, log_x, log_y, delta)
    rows = [theta]
    for name in unidentified:
        i = form.params.index(name)
        low, high = form.bounds[i]
        if i == 0 and name in ("E", "E_inf"):
            values = np.log(y.min() * np.concatenate([[1e-6], np.linspace(0.05, 0.99, ALLOWED_GRID - 1)]))
        elif np.isfinite(low) and np.isfinite(high):
            values = np.linspace(low, high, ALLOWED_GRID)
        else:
            values = theta[i] + np.linspace(-55.0, 55.0, ALLOWED_GRID)  # e^55 ~ 1e24
        others = np.array([j for j in free if j != i], dtype=int)
        for v in np.clip(values, low, high):
            start = theta.copy()
            start[i] = v
            moved, moved_value = best(form, start[None], others, log_x, log_y, ones, delta, tight=False) \
                if len(others) else (start, float(objectives(form, start[None], log_x, log_y, ones, delta)[0]))
            rise = max(0.0, moved_value - value)
            if scale > 0 and float(stats.f.sf(2 * rise / scale, 1, dof)) > 1 - level:
                rows.append(moved)
    return np.array(rows)


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


def curvature_p(x: np.ndarray, y: np.ndarray, *, two_sided: bool = False) -> float:
    """p-value that log y bends up in log x (as a power law does toward its floor), or with `two_sided` either way
    (runs that accelerate bend down): the t test of the quadratic term of log y on log x and its square, exact
    under a power law with log-normal noise. 1 with fewer than 4 points."""
    log_x = np.log(x)
    z = (log_x - log_x.mean()) / log_x.std()
    design = np.column_stack([np.ones(len(z)), z, z**2])
    dof = len(y) - 3
    if dof < 1 or not np.isfinite(z).all():
        return 1.0
    coef, *_ = np.linalg.lstsq(design, np.log(y), rcond=None)
    resid = np.log(y) - design @ coef
    se = math.sqrt(float(resid @ resid) / dof * np.linalg.inv(design.T @ design)[2, 2])
    if not se > 0:
        return 1.0
    t = coef[2] / se
    return float(2 * stats.t.sf(abs(t), dof)) if two_sided else float(stats.t.sf(t, dof))


def local_slopes(x: np.ndarray, y: np.ndarray, groups: int = 8) -> tuple[float, ...]:
    """d log y / d log x between neighbouring runs along x: what a single exponent would have to describe. Runs
    at one x are averaged in log y; more than `groups` distinct x are merged into `groups` consecutive groups
    (their mean log x and log y). Empty for the laws of several variables."""
    if np.ndim(x) != 1 or len(x) < 2:
        return ()
    log_x, log_y = np.log(np.asarray(x, dtype=float)), np.log(np.asarray(y, dtype=float))
    distinct, which = np.unique(log_x, return_inverse=True)
    mean_y = np.bincount(which, weights=log_y) / np.bincount(which)
    if len(distinct) > groups:
        parts = np.array_split(np.arange(len(distinct)), groups)
        distinct = np.array([distinct[part].mean() for part in parts])
        mean_y = np.array([mean_y[part].mean() for part in parts])
    return tuple(float(v) for v in np.diff(mean_y) / np.diff(distinct))


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
    bend = curvature_p(x, y, two_sided=True) if law.curvature_tested and x.ndim == 1 else None
    if bend is not None and bend < LACK_OF_FIT_P:
        slopes = ", ".join(f"{v:.2f}" for v in local_slopes(x, y))
        warnings.append(f"lack of fit: log y is curved in log x (curvature test p = {bend:.2g}; local log-log "
                        f"slopes {slopes}): no single exponent describes these runs")
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
                     delta_bic=delta, warnings=tuple(warnings), curvature_p=bend)


@dataclass(frozen=True)
class FitGate:
    """Whether a fitted exponent may stand beside a published one: only when the law passes its lack-of-fit
    checks (runs test, richer law by BIC, curvature) and the runs identify every parameter. `failed` names each
    check that failed, with its number; `local_slopes` (`local_slopes`) are what to show instead."""

    failed: tuple[str, ...]
    local_slopes: tuple[float, ...]

    @property
    def passed(self) -> bool:
        return not self.failed

    def summary(self) -> str:
        """'passes its lack-of-fit and identification checks', or the failed checks and the local slopes."""
        if self.passed:
            return "passes its lack-of-fit and identification checks"
        slopes = ", ".join(f"{v:.2f}" for v in self.local_slopes)
        return (f"not compared with a published exponent: fails {'; '.join(self.failed)}"
                + (f"; local log-log slopes {slopes}" if slopes else ""))


def fit_gate(result: Fit) -> FitGate:
    """`FitGate` of a fit, from the checks made when it was fitted (`Fit.lack_of_fit`, `Fit.not_identified`)."""
    check, failed = result.lack_of_fit, []
    if check is None:
        failed.append("no lack-of-fit check (fitted without checks)")
    else:
        if check.runs_p < LACK_OF_FIT_P:
            failed.append(f"the runs test (p = {check.runs_p:.2g})")
        if check.delta_bic is not None and check.delta_bic > LACK_OF_FIT_BIC:
            failed.append(f"the comparison with a {check.richer} law (BIC lower by {check.delta_bic:.1f})")
        if check.curvature_p is not None and check.curvature_p < LACK_OF_FIT_P:
            failed.append(f"the curvature test (p = {check.curvature_p:.2g})")
    unidentified = [name for name in result.not_identified if name not in result.fixed]
    if unidentified:
        failed.append(f"identification ({', '.join(unidentified)} not identified)")
    return FitGate(failed=tuple(failed), local_slopes=local_slopes(result.x, result.y))


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


#: The share of the largest runs a backtest holds out (at least one).
BACKTEST_FRACTION = 0.25


@dataclass(frozen=True, eq=False)
class Backtest:
    """An extrapolation's backtest: the law refitted without the largest runs and scored on them (`check`;
    `missed` held-out runs fell outside their prediction intervals), and for a straight line in log space, the
    one-sided p-value of a bend toward a floor (`curvature_p`). `interval` is the extrapolation to print: the law's
    own prediction interval, or for a straight line in log space, widened beyond the runs to hold the richer law's
    (`widened`): a power law assumes no floor, and a short ladder cannot rule one out. `richer` is the richer
    law's prediction at the extrapolation's points (fitted on every run), where it was fitted; on a miss or a bend
    `warnings` say so, with that prediction; `note` says why there is no backtest."""

    check: HeldOutCheck | None
    missed: int
    curvature_p: float | None
    richer: Interval | None
    warnings: tuple[str, ...]
    interval: Interval
    widened: bool = False
    note: str = ""


def _richer_prediction(result: Fit, x: np.ndarray, y: np.ndarray, at, level: float) -> tuple[Interval | None, str]:
    """The richer law (`Law.richer`) fitted to the same runs, at `at`; or None and why not."""
    name = result.form.richer[0]
    richer = get_law(name)
    try:
        other = richer.fit(x, y, level=level, **({"n_bootstrap": 0} if richer.iterated else {}))
    except ConfigError as err:
        return None, f"no {name} law to compare: {err.message}"
    return other.extrapolate(at, level=level), ""


def _widened(own: Interval, other: Interval) -> Interval:
    """`own` beyond the runs stretched to hold `other` there (within the runs it is left as it is)."""
    beyond = own.extrapolated
    return replace(own, lower=np.where(beyond, np.minimum(own.lower, other.lower), own.lower),
                   upper=np.where(beyond, np.maximum(own.upper, other.upper), own.upper))


def backtest(result: Fit, x, y, at, *, level: float = 0.95, **options) -> Backtest:
    """Check an extrapolation of `result` to `at` (points in the law's x) before it is used.

    `x`, `y` are the runs `result` was fitted to (for ``isoflop``, its raw (C, N) runs), the one source every
    part of the check reads. The law is refitted without the `BACKTEST_FRACTION` largest (by compute, or N * D),
    and each held-out run must fall in its prediction interval; for a law that is a straight line in log space
    (`Law.curvature_tested`), log y must not bend toward a floor (`curvature_p`). The two share 1 - `level` (the
    backtest's intervals Bonferroni-adjusted over the k held-out runs), so that a law that holds draws a false
    alarm on few ladders (measured: docs/scaling_laws.md). A miss or a bend is a warning, with the richer law's
    prediction at `at` beside it; `options` are the law's fit options. A straight line's extrapolation interval is
    widened to hold the richer law's (`Backtest.interval`): a bend seven noisy runs cannot show still moves a
    prediction far beyond them, so the interval carries it instead of a warning that could not be raised.
    """
    law = result.law
    x, y = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    own = result.extrapolate(at, level=level)
    alpha = (1 - level) / 2 if result.form.curvature_tested else 1 - level
    findings, note, check, missed = [], "", None, 0
    bend = curvature_p(x, y) if result.form.curvature_tested else None
    if bend is not None and bend < alpha:
        findings.append(f"log y bends toward a floor over the runs (curvature test p = {bend:.2g})")
    k = max(1, int(round(BACKTEST_FRACTION * len(y))))
    try:
        check = held_out_check(law, x, y, n_test=k, level=1 - alpha / k, **options)
    except ConfigError as err:
        note = f"no backtest of the extrapolation: without its {k} largest runs, {err.message}"
    if check is not None and np.isnan(check.prediction.lower).any():
        note = "no backtest of the extrapolation: the refit has no prediction intervals"
    elif check is not None:
        outside = (check.y < check.prediction.lower) | (check.y > check.prediction.upper)
        missed = int(outside.sum())
        if missed:
            errors = ", ".join(f"{e:+.1%}" for e in check.relative_error[outside])
            findings.append(f"refitted without its {len(check.y)} largest runs, its prediction intervals miss "
                            f"{missed} of them (relative errors {errors})")
    other, why_not = None, ""
    if result.form.richer is not None and (findings or result.form.curvature_tested):
        other, why_not = _richer_prediction(result, x, y, at, level)
    widened = other is not None and result.form.curvature_tested and not np.isnan(other.lower).any()
    interval = _widened(own, other) if widened else own
    if not findings:
        return Backtest(check=check, missed=missed, curvature_p=bend, richer=other, warnings=(), interval=interval,
                        widened=widened, note=note)
    warning = f"backtest of the extrapolation: {'; '.join(findings)}: the {law} law's extrapolation may be off"
    name = result.form.richer[0] if result.form.richer else None
    if why_not:
        warning += f"; {why_not}"
    elif other is not None:
        bounded = not np.isnan(other.lower).any()
        shown = "; ".join(f"{v:.4g}" + (f" [{lo:.4g}, {hi:.4g}]" if bounded else "") for v, lo, hi in
                          zip(np.ravel(other.y), np.ravel(other.lower), np.ravel(other.upper), strict=True))
        warning += (f"; the {name} law fitted to the same runs predicts {shown} there "
                    + (f"({level:.0%} interval)" if bounded else "(no interval: fitted without a bootstrap)"))
    return Backtest(check=check, missed=missed, curvature_p=bend, richer=other, warnings=(warning,),
                    interval=interval, widened=widened, note=note)
