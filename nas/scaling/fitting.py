"""The fit machinery every law uses: what a fit gives (`Fit`, its `Interval`s, `LackOfFit`), weighted least
squares of a line in log space, least squares or Besiroglu et al.'s Huber loss of log residuals from many starts
(scipy's trust-region and L-BFGS-B), and bootstrap resamples of runs. Which law is fitted how is in
nas/scaling/laws.py; what is checked after a fit, in nas/scaling/checks.py.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

import numpy as np
from scipy import optimize, stats
from threadpoolctl import threadpool_limits

from nas.errors import ConfigError
from nas.pareto import pareto_mask
from nas.scaling.registry import BOOTSTRAP_DOF_PER_PARAM, Law
from nas.tables import format_table


@dataclass(frozen=True, eq=False)
class Interval:
    """A prediction with its prediction interval (where a new run would land, not just the mean)."""

    x: np.ndarray
    y: np.ndarray
    lower: np.ndarray
    upper: np.ndarray
    level: float
    extrapolated: np.ndarray  # True where x lies beyond the largest fitted run
    depends_on: tuple[str, ...] = ()  # unidentified parameters whose allowed values widened the interval


@dataclass(frozen=True, eq=False)
class LackOfFit:
    """Is the law the right shape for the data? A runs test of the residuals' signs ordered along the law's
    variables (too few runs: the residuals bend one way, then the other), where the law has a richer neighbour
    (or a rival of as many parameters) with enough points to fit it, the BIC difference to it (> 10: very strong
    evidence for it), and for a straight line in log space, a test of a bend either way (`curvature_p`)."""

    runs: int
    expected_runs: float
    runs_p: float
    richer: str | None
    delta_bic: float | None
    warnings: tuple[str, ...]
    curvature_p: float | None = None  # two-sided, for a law that is a straight line in log space


@dataclass(frozen=True, eq=False)
class Fit:
    """A fitted scaling law with its uncertainty.

    `params`, `stderr` and `ci` are in the law's usual parametrisation (beta, alpha; E_inf, A, alpha; E, A,
    B, alpha, beta; ...). `theta` is the parametrisation the fit ran in (logs of the positive coefficients),
    with `cov` (delta method / OLS theory) or `draws` (bootstrap) for its uncertainty. `x` and `y` are the
    points the law describes: compute and error for the one-variable laws, (N, D[, U]) and loss for the laws
    of several variables, compute budgets and optimal sizes for ``isoflop`` (with `y_log_sd`, each optimum's
    uncertainty in log size, and `skipped`, each budget left out and why). `frontier` marks the points on the
    compute-error frontier (for ``pareto-power``: the per-bin minima the line was fitted through).

    A parameter in `not_identified` has NaN standard error and its admissible range as interval (`at_bound`: of
    those, the ones on a bound of their declared range, or whose bootstrap interval ends on one); `allowed` are
    rows of theta the data allow with each unidentified parameter moved across its range (the others refitted),
    over which `extrapolate` takes its interval. `fixed` parameters were held at given values. `warnings` are
    what a reader must know before using the fit: unidentified terms, bootstrap refits that ended on an
    exponent's bound, and lack of fit.
    """

    form: Law  # the law as fitted (with its bounds, and BNSL's number of breaks); `law` is its name
    params: dict[str, float]
    stderr: dict[str, float]
    ci: dict[str, tuple[float, float]]
    level: float
    r2_log: float  # R^2 of log y on the fitted points
    rmse: float  # root-mean-square error in y units on the fitted points
    huber: float | None  # the minimised Huber objective (the laws fitted as Besiroglu et al.)
    x: np.ndarray = field(repr=False)
    y: np.ndarray = field(repr=False)
    frontier: np.ndarray = field(repr=False)
    theta: np.ndarray = field(repr=False)
    cov: np.ndarray | None = field(repr=False)
    draws: np.ndarray | None = field(repr=False)
    resid_sd: float = field(repr=False)  # scale of log residuals: the run-to-run noise an interval adds
    dof: int | None = field(repr=False)  # residual degrees of freedom for t intervals; None: normal
    not_identified: tuple[str, ...] = ()
    fixed: tuple[str, ...] = ()
    warnings: tuple[str, ...] = ()
    lack_of_fit: LackOfFit | None = field(default=None, repr=False)
    y_log_sd: np.ndarray | None = field(default=None, repr=False)
    skipped: tuple[str, ...] = ()
    draws_at_bound: dict[str, int] = field(default_factory=dict, repr=False)
    at_bound: tuple[str, ...] = ()
    allowed: np.ndarray | None = field(default=None, repr=False)

    @property
    def law(self) -> str:
        return self.form.name

    def predict(self, x) -> np.ndarray:
        """The law at x (compute; or (..., k) arrays of (N, D[, U]) for the laws of several variables)."""
        flat, shape = self.form.flatten(x)
        return np.exp(self.form.log_predict(self.theta, np.log(flat))).reshape(shape)

    def extrapolate(self, x, level: float = 0.95) -> Interval:
        """The law at x with a `level` prediction interval, computed in log space.

        The interval adds the parameter uncertainty (bootstrap draws, else the delta method) and the
        residual scatter of single runs; with OLS fits it is the textbook t interval. When a parameter is not
        identified, the interval is the union of those intervals over every value of it the data allow
        (`allowed`), not the fit at its fitted value: it names the parameters it then depends on.
        """
        flat, shape = self.form.flatten(x)
        log_x = np.log(flat)
        log_mean = self.form.log_predict(self.theta, log_x)
        half = quantile(level, self.dof) * np.sqrt(self._log_mean_var(flat) + self.resid_sd**2)
        low, high, depends_on = log_mean - half, log_mean + half, ()
        if self.allowed is not None and len(self.allowed):
            roaming = self.form.log_predict(self.allowed, log_x)
            low, high = np.minimum(low, roaming.min(axis=0) - half), np.maximum(high, roaming.max(axis=0) + half)
            depends_on = tuple(name for name in self.not_identified if name not in self.fixed)
        return Interval(
            x=np.asarray(x, dtype=float),
            y=np.exp(log_mean).reshape(shape),
            lower=np.exp(low).reshape(shape),
            upper=np.exp(high).reshape(shape),
            level=level,
            extrapolated=(self.form.size(flat) > self.form.size(self.x).max()).reshape(shape),
            depends_on=depends_on,
        )

    def _log_mean_var(self, flat: np.ndarray) -> np.ndarray:
        log_predict, flat = self.form.log_predict, np.log(flat)
        if self.draws is not None:
            return np.var(log_predict(self.draws, flat), axis=0, ddof=1)
        step = 1e-6 * np.maximum(1.0, np.abs(self.theta))
        shifts = np.diag(step)
        grad = (log_predict(self.theta + shifts, flat) - log_predict(self.theta - shifts, flat)) / (
            2 * step[:, None]
        )
        return np.einsum("in,ij,jn->n", grad, self.cov, grad)

    def summary(self) -> str:
        """Parameters with uncertainty and goodness of fit, for a terminal; no NaN is printed: a parameter
        the data do not identify says so, with its admissible range."""
        how = (f"bootstrap, {len(self.draws)} resamples" if self.draws is not None else
               "no bootstrap: no intervals" if self.huber is not None else "analytic")
        rows = []
        for name, value in self.params.items():
            low, high = self.ci[name]
            if name in self.fixed:
                rows.append([name, _number(value), "fixed", "-", "-"])
            elif name in self.not_identified:
                what = "not identified (at bound)" if name in self.at_bound else "not identified"
                rows.append([name, _number(value), what, _number(low), _number(high)])
            else:
                rows.append([name, _number(value), _number(self.stderr[name], ".3g"), _number(low), _number(high)])
        table = format_table(["parameter", "value", "± s.e.", f"{self.level:.0%} CI low", "high"], rows)
        quality = f"R^2 (log) {self.r2_log:.4f}, RMSE {self.rmse:.4g}"
        if self.huber is not None:
            quality += f", Huber objective {self.huber:.6g}"
        lines = [f"{self.law} law, {self.form.described(self)} ({how}); {quality}", table, *self.form.notes(self)]
        if self.y_log_sd is not None:
            lines.append("optima (x/÷ one sd): " + ", ".join(
                f"{budget:.3g}: {optimum:.4g} x/÷ {math.exp(sd):.3f}"
                for budget, optimum, sd in zip(self.x, self.y, self.y_log_sd, strict=True)))
        lines += [f"skipped {reason}" for reason in self.skipped]
        lines += [f"warning: {text}" for text in self.warnings]
        return "\n".join(lines)


def _number(value: float, spec: str = ".6g") -> str:
    """A printed number: "not estimated" instead of NaN (a joint fit without a bootstrap has no s.e.)."""
    return "not estimated" if math.isnan(value) else format(value, spec)


# Many tiny L-BFGS-B / least-squares steps call BLAS on 5x5 matrices; a multithreaded BLAS then spends
# more time waking threads than computing (15x slower on a busy 2-core machine), so fits run on one thread.
one_blas_thread = threadpool_limits.wrap(limits=1, user_api="blas")


def quantile(level: float, dof: int | None) -> float:
    tail = (1.0 + level) / 2.0
    return float(stats.t.ppf(tail, dof) if dof else stats.norm.ppf(tail))


def cost_frontier(cost: np.ndarray, error: np.ndarray) -> np.ndarray:
    """Runs that no cheaper-or-equal run beats: the compute-error Pareto front."""
    return pareto_mask(np.column_stack([np.asarray(cost, dtype=float), np.asarray(error, dtype=float)]))


def goodness(log_fit: np.ndarray, y: np.ndarray) -> tuple[float, float]:
    """R^2 of log y (the space every law is fitted in) and RMSE in y's own units."""
    total = np.sum((np.log(y) - np.log(y).mean()) ** 2)
    r2 = 1.0 - np.sum((np.log(y) - log_fit) ** 2) / total if total > 0 else float("nan")
    return float(r2), float(np.sqrt(np.mean((y - np.exp(log_fit)) ** 2)))


def check_positive(name: str, values, *, columns: int | None = None) -> np.ndarray:
    values = np.asarray(values, dtype=float)
    if columns is not None and (values.ndim != 2 or values.shape[1] != columns):
        raise ConfigError(f"expected an array of shape (n, {columns}), got {values.shape}", field=name)
    if not np.all(np.isfinite(values)) or np.any(values <= 0):
        raise ConfigError("scaling laws are fitted in log space: every value must be finite and > 0",
                          field=name)
    return values


def check_points(law: Law, n_points: int, needed: int, *, bootstrap: bool = False) -> None:
    """Refuse a fit on fewer points than `needed` (`Law.min_points`), saying why."""
    if n_points < needed:
        why = (f" for bootstrap intervals ({BOOTSTRAP_DOF_PER_PARAM} residual degrees of freedom per fitted "
               f"parameter; fit with n_bootstrap=0 for analytic intervals where the law has them)" if bootstrap
               else "")
        raise ConfigError(f"the {law.name} law needs at least {needed} {law.points}{why}, got {n_points}")


def percentiles(values: np.ndarray, level: float) -> np.ndarray:
    tail = 100 * (1 - level) / 2
    return np.percentile(values, [tail, 100 - tail], axis=0)


def least_squares_line(law: Law, x, y, *, level: float, frontier: np.ndarray, fit_x=None, fit_y=None,
                       log_sd: np.ndarray | None = None, skipped: tuple[str, ...] = ()) -> tuple[Fit, np.ndarray]:
    """Least squares of log y on log x, with exact t-based standard errors and prediction intervals: the fit
    and its log residuals at the points fitted (`fit_x`, `fit_y`: other points than the ones the law describes).

    With `log_sd` (each point's own uncertainty in log y) it is weighted least squares, and the intervals
    are scaled up when the points scatter more than their uncertainties say (the Birge ratio).
    """
    fx = x if fit_x is None else fit_x
    fy = y if fit_y is None else fit_y
    check_points(law, len(fy), law.min_points())
    design = np.column_stack([np.ones(len(fx)), np.log(fx)])
    weights = np.ones(len(fy)) if log_sd is None else 1.0 / np.asarray(log_sd) ** 2
    normal = design.T @ (weights[:, None] * design)
    theta = np.linalg.solve(normal, design.T @ (weights * np.log(fy)))
    resid = np.log(fy) - design @ theta
    dof = len(fy) - 2
    chi2 = float(weights @ resid**2 / dof)
    if log_sd is None:
        scale, resid_sd = chi2, math.sqrt(chi2)
    else:
        scale = max(1.0, chi2)
        resid_sd = math.sqrt(scale) * float(np.median(log_sd))
    cov = scale * np.linalg.inv(normal)
    result = make_fit(law, theta, x, y, fit_x=fx, fit_y=fy, frontier=frontier, cov=cov, resid_sd=resid_sd,
                      dof=dof, level=level, log_sd=log_sd, skipped=skipped)
    return result, resid


def wald(form: Law, theta: np.ndarray, cov: np.ndarray, dof: int | None,
         level: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Standard errors and t intervals of the parameters in their usual parametrisation, from the covariance of
    theta (delta method), clipped to the declared ranges."""
    se_theta = np.sqrt(np.maximum(np.diag(cov), 0.0))  # a pseudo-inverse's rounding can dip below zero
    q = quantile(level, dof)
    se = np.where(form.log, form.natural(theta) * se_theta, se_theta)
    low, high = (np.array(b, dtype=float) for b in zip(*form.bounds))
    lower = form.natural(np.maximum(theta - q * se_theta, low))  # a declared range bounds its intervals too
    upper = form.natural(np.minimum(theta + q * se_theta, high))
    return se, lower, upper


def make_fit(form: Law, theta, x, y, *, fit_x=None, fit_y=None, frontier, cov=None, draws=None, resid_sd, dof,
             level, huber=None, log_sd=None, skipped=(), fixed=(), not_identified: Mapping[str, tuple] | None = None,
             warnings=(), draws_at_bound: Mapping[str, int] | None = None, at_bound=(), allowed=None) -> Fit:
    """A Fit from theta and its uncertainty (bootstrap `draws`, else the covariance `cov` with t intervals
    clipped to the declared ranges); parameters `not_identified` get NaN s.e. and the range given (their
    admissible range, or a bootstrap interval that ends on a bound)."""
    fit_x = x if fit_x is None else fit_x
    fit_y = y if fit_y is None else fit_y
    r2, rmse = goodness(form.log_predict(theta, np.log(fit_x)), fit_y)
    if draws is not None:
        natural = form.natural(draws)
        se, (lower, upper) = natural.std(axis=0, ddof=1), percentiles(natural, level)
    else:
        se, lower, upper = wald(form, theta, cov, dof, level)
    names = form.params
    stderr = dict(zip(names, map(float, se), strict=True))
    ci = {n: (float(lo), float(hi)) for n, lo, hi in zip(names, lower, upper, strict=True)}
    for name, admissible in (not_identified or {}).items():
        stderr[name], ci[name] = float("nan"), (float(admissible[0]), float(admissible[1]))
    return Fit(
        form=form,
        params=dict(zip(names, map(float, form.natural(theta)), strict=True)),
        stderr=stderr,
        ci=ci,
        level=level,
        r2_log=r2,
        rmse=rmse,
        huber=huber,
        x=x,
        y=y,
        frontier=frontier,
        theta=theta,
        cov=cov,
        draws=draws,
        resid_sd=resid_sd,
        dof=dof,
        not_identified=tuple(not_identified or ()),
        fixed=tuple(fixed),
        warnings=tuple(warnings),
        y_log_sd=log_sd,
        skipped=tuple(skipped),
        draws_at_bound=dict(draws_at_bound or {}),
        at_bound=tuple(at_bound),
        allowed=allowed,
    )


def huber(resid: np.ndarray, delta: float) -> np.ndarray:
    size = np.abs(resid)
    return np.where(size <= delta, 0.5 * resid**2, delta * (size - 0.5 * delta))


def _loss(form: Law, resid: np.ndarray, delta: float) -> np.ndarray:
    return huber(resid, delta) if form.criterion == "huber" else 0.5 * resid**2


def objectives(form: Law, thetas: np.ndarray, log_x: np.ndarray, log_y: np.ndarray, weights: np.ndarray,
                delta: float) -> np.ndarray:
    """The criterion at every row of `thetas` at once, in chunks so memory stays small for many runs."""
    chunks = np.array_split(thetas, max(1, len(thetas) * len(log_y) // 1_000_000))
    values = [(_loss(form, form.log_predict(part, log_x) - log_y, delta) * weights).sum(axis=1) for part in chunks]
    values = np.concatenate(values)
    return np.where(np.isfinite(values), values, np.inf)


def _free_bounds(form: Law, free: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    return (np.array([form.bounds[i][0] for i in free], dtype=float),
            np.array([form.bounds[i][1] for i in free], dtype=float))


def refit(form: Law, start: np.ndarray, free: np.ndarray, log_x: np.ndarray, log_y: np.ndarray,
           weights: np.ndarray, delta: float, tight: bool = True) -> tuple[np.ndarray, float]:
    """The criterion minimised over the `free` entries of theta from `start`, within the form's bounds; to
    the last digit when `tight` (an answer: a fit, a bootstrap draw: the Huber objective is so flat along the
    weakly identified directions that a looser stop leaves a draw near its start and shrinks the intervals),
    to about 1e-7 relative otherwise (a start being tried, to be polished if it is the best)."""
    lower, upper = _free_bounds(form, free)
    theta = start.astype(float).copy()
    z0 = np.clip(theta[free], lower, upper)
    if form.criterion == "huber":

        def objective(z):
            theta[free] = z
            log_fit, jac = form.value_jac(theta, log_x)
            resid = log_fit - log_y
            grad = jac[:, free].T @ (weights * np.clip(resid, -delta, delta))
            return float(weights @ huber(resid, delta)), grad

        # The objective is ~1e-3, so scipy's default ftol (relative to max(|f|, 1)) would stop far too early:
        # that early stop is one reason Hoffmann et al.'s published fit could not be reproduced.
        bounds = [(None if np.isinf(lo) else lo, None if np.isinf(hi) else hi) for lo, hi in zip(lower, upper)]
        tolerance = {"ftol": 1e-15, "gtol": 1e-12} if tight else {"ftol": 1e-10, "gtol": 1e-8}
        result = optimize.minimize(objective, z0, jac=True, method="L-BFGS-B", bounds=bounds,
                                   options={**tolerance, "maxiter": 10_000})
        theta[free] = result.x
        return theta, float(result.fun)
    sqrt_w = np.sqrt(weights)

    def residuals(z):
        theta[free] = z
        return sqrt_w * (form.log_predict(theta, log_x) - log_y)

    def jacobian(z):
        theta[free] = z
        return sqrt_w[:, None] * form.value_jac(theta, log_x)[1][:, free]

    tolerance, evaluations = (1e-12, 100) if tight else (1e-8, 60)
    result = optimize.least_squares(residuals, z0, jac=jacobian, bounds=(lower, upper), xtol=tolerance,
                                    ftol=tolerance, gtol=tolerance, max_nfev=evaluations)
    theta[free] = result.x
    return theta, float(result.cost)


def best(form, starts: np.ndarray, free, log_x, log_y, weights, delta, tight: bool = True) -> tuple[np.ndarray, float]:
    """The best of refits from every start (each loosely), polished to the last digit when `tight`."""
    if len(starts) == 1:
        return refit(form, starts[0], free, log_x, log_y, weights, delta, tight=tight)
    fits = [refit(form, start, free, log_x, log_y, weights, delta, tight=False) for start in starts]
    best = min(fits, key=lambda pair: pair[1] if np.isfinite(pair[1]) else np.inf)
    return refit(form, best[0], free, log_x, log_y, weights, delta) if tight else best


def prepare_starts(form: Law, starts: np.ndarray, template: np.ndarray, free: np.ndarray) -> np.ndarray:
    """Starts with the fixed entries set and every entry inside its bounds; duplicates dropped."""
    starts = np.array(starts, dtype=float, copy=True)
    fixed = np.setdiff1d(np.arange(len(template)), free)
    starts[:, fixed] = template[fixed]
    lower, upper = _free_bounds(form, np.arange(len(template)))
    return np.unique(np.clip(starts, lower, upper), axis=0)


def bootstrap(refit: Callable[[np.ndarray], np.ndarray], n_points: int, n_bootstrap: int,
               seed: int) -> np.ndarray:
    """Refit on runs resampled with replacement (as multiplicity weights); failed refits are dropped."""
    rng = np.random.default_rng(seed)
    weights = rng.multinomial(n_points, np.full(n_points, 1.0 / n_points), size=n_bootstrap).astype(float)
    draws = np.array([refit(w) for w in weights])
    return draws[np.all(np.isfinite(draws), axis=1)]


def fixed_template(form: Law, fixed: Mapping[str, float] | None) -> tuple[np.ndarray, np.ndarray]:
    template = np.zeros(len(form.params))
    fixed = dict(fixed or {})
    unknown = sorted(set(fixed) - set(form.params))
    if unknown:
        raise ConfigError(f"the {form.name} law has no parameter {', '.join(unknown)}; its parameters: "
                          f"{', '.join(form.params)}", field="fixed")
    for name, value in fixed.items():
        i = form.params.index(name)
        if form.log[i] and not value > 0:
            raise ConfigError(f"{name} must be > 0, got {value}", field="fixed")
        template[i] = math.log(value) if form.log[i] else float(value)
    free = np.array([i for i, name in enumerate(form.params) if name not in fixed], dtype=int)
    if not len(free):
        raise ConfigError("every parameter is fixed: nothing to fit", field="fixed")
    return template, free


def draws_at_bound(form: Law, draws: np.ndarray | None, free: np.ndarray) -> dict[str, int]:
    if draws is None:
        return {}
    counts = {}
    for i in form.exponents:
        if i in free:
            low, high = form.bounds[i]
            on = np.sum((np.abs(draws[:, i] - low) <= 1e-6 * (high - low))
                        | (np.abs(draws[:, i] - high) <= 1e-6 * (high - low)))
            if on:
                counts[form.params[i]] = int(on)
    return counts

