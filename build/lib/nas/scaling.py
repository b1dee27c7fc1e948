"""Scaling laws: fit how error or loss falls with compute, model size and data, with honest uncertainty.

Laws (names as in `LAWS`):

- ``power``: E = beta * C^alpha, ordinary least squares in log space.
- ``pareto-power``: the same law through an approximate Pareto frontier (Cherti et al. 2023): log10 compute
  is cut into equal-width bins, the lowest error in each bin is kept at the bin centre, then OLS.
- ``saturating``: E = E_inf + A * C^(-alpha) (Zhai et al. 2022), least squares on log E.
- ``joint``: L(N, D) = E + A / N^alpha + B / D^beta fitted as Besiroglu et al. (2024) redo Hoffmann et al.'s
  approach 3: Huber loss (delta 1e-3) of log-space residuals of the log-sum-exp form, L-BFGS-B from a grid
  of starts, bootstrap over runs for the uncertainty. `compute_optimal` gives N*(C), D*(C) in closed form.
- ``isoflop``: Hoffmann et al.'s approach 2: a parabola of loss in log size per compute budget, its vertex
  as the optimal size, and a power law N*(C) = coefficient * C^exponent through the vertices.

Every fit returns a `Fit`. Inputs are arrays (or a DataFrame with `arrays_from_frame`), never files, so a
study's results database and a published CSV go through the same code.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable
from dataclasses import dataclass, field, replace

import numpy as np
import pandas as pd
from scipy import optimize, special, stats
from threadpoolctl import threadpool_limits

from nas.errors import ConfigError
from nas.results import pareto_mask
from nas.tables import format_table

LAWS = ("power", "pareto-power", "saturating", "joint", "isoflop")

# Hoffmann et al. (2022, appendix D.2) grid of starts, kept by Besiroglu et al.: (e, a, b, alpha, beta).
CHINCHILLA_GRID = np.array(
    list(
        itertools.product(
            np.arange(-1.0, 1.5, 0.5),
            np.arange(0.0, 30.0, 5.0),
            np.arange(0.0, 30.0, 5.0),
            np.arange(0.0, 2.5, 0.5),
            np.arange(0.0, 2.5, 0.5),
        )
    )
)

_PARAM_NAMES = {
    "power": ("beta", "alpha"),
    "pareto-power": ("beta", "alpha"),
    "saturating": ("E_inf", "A", "alpha"),
    "joint": ("E", "A", "B", "alpha", "beta"),
    "isoflop": ("coefficient", "exponent"),
}
# Which entries of the fitting parametrisation `theta` are logarithms of the reported parameter.
_LOG_PARAMS = {
    "power": (True, False),
    "pareto-power": (True, False),
    "saturating": (True, True, False),
    "joint": (True, True, True, False, False),
    "isoflop": (True, False),
}


# --------------------------------------------------------------------------------------------- laws


def _log_power(theta: np.ndarray, x: np.ndarray) -> np.ndarray:
    return theta[..., 0:1] + theta[..., 1:2] * np.log(x)


def _log_saturating(theta: np.ndarray, x: np.ndarray) -> np.ndarray:
    return np.logaddexp(theta[..., 1:2] - theta[..., 2:3] * np.log(x), theta[..., 0:1])


def _log_joint(theta: np.ndarray, x: np.ndarray) -> np.ndarray:
    """log L = LSE(a - alpha log N, b - beta log D, e): the form Besiroglu et al. fit, stable for any theta."""
    e, a, b, alpha, beta = (theta[..., i : i + 1] for i in range(5))
    model_term = a - alpha * np.log(x[..., 0])
    data_term = b - beta * np.log(x[..., 1])
    return np.logaddexp(np.logaddexp(model_term, data_term), e)


_LOG_PREDICT: dict[str, Callable[[np.ndarray, np.ndarray], np.ndarray]] = {
    "power": _log_power,
    "pareto-power": _log_power,
    "saturating": _log_saturating,
    "joint": _log_joint,
    "isoflop": _log_power,
}


# ------------------------------------------------------------------------------------------ results


@dataclass(frozen=True, eq=False)
class Interval:
    """A prediction with its prediction interval (where a new run would land, not just the mean)."""

    x: np.ndarray
    y: np.ndarray
    lower: np.ndarray
    upper: np.ndarray
    level: float
    extrapolated: np.ndarray  # True where x lies beyond the largest fitted run


@dataclass(frozen=True, eq=False)
class Fit:
    """A fitted scaling law with its uncertainty.

    `params`, `stderr` and `ci` are in the law's usual parametrisation (beta, alpha; E_inf, A, alpha; E, A,
    B, alpha, beta; coefficient, exponent). `theta` is the parametrisation the fit ran in (logs of the
    positive coefficients), with `cov` (delta method / OLS theory) or `draws` (bootstrap) for its uncertainty.
    `x` and `y` are the points the law describes: compute and error for the one-variable laws, (N, D) and
    loss for ``joint``, compute budgets and optimal sizes for ``isoflop``. `frontier` marks the points on the
    compute-error frontier (for ``pareto-power``: the per-bin minima the line was fitted through).
    """

    law: str
    params: dict[str, float]
    stderr: dict[str, float]
    ci: dict[str, tuple[float, float]]
    level: float
    r2_log: float  # R^2 of log y on the fitted points
    rmse: float  # root-mean-square error in y units on the fitted points
    huber: float | None  # the minimised Huber objective (``joint``)
    x: np.ndarray = field(repr=False)
    y: np.ndarray = field(repr=False)
    frontier: np.ndarray = field(repr=False)
    theta: np.ndarray = field(repr=False)
    cov: np.ndarray | None = field(repr=False)
    draws: np.ndarray | None = field(repr=False)
    resid_sd: float = field(repr=False)  # scale of log residuals: the run-to-run noise an interval adds
    dof: int | None = field(repr=False)  # residual degrees of freedom for t intervals; None: normal

    def predict(self, x) -> np.ndarray:
        """The law at x (compute; or (..., 2) arrays of (N, D) for ``joint``)."""
        flat, shape = _flatten(self.law, x)
        return np.exp(_LOG_PREDICT[self.law](self.theta, flat)).reshape(shape)

    def extrapolate(self, x, level: float = 0.95) -> Interval:
        """The law at x with a `level` prediction interval, computed in log space.

        The interval adds the parameter uncertainty (bootstrap draws, else the delta method) and the
        residual scatter of single runs; with OLS fits it is the textbook t interval.
        """
        flat, shape = _flatten(self.law, x)
        log_mean = _LOG_PREDICT[self.law](self.theta, flat)
        half = _quantile(level, self.dof) * np.sqrt(self._log_mean_var(flat) + self.resid_sd**2)
        return Interval(
            x=np.asarray(x, dtype=float),
            y=np.exp(log_mean).reshape(shape),
            lower=np.exp(log_mean - half).reshape(shape),
            upper=np.exp(log_mean + half).reshape(shape),
            level=level,
            extrapolated=(_size(self.law, flat) > _size(self.law, self.x).max()).reshape(shape),
        )

    def _log_mean_var(self, flat: np.ndarray) -> np.ndarray:
        log_predict = _LOG_PREDICT[self.law]
        if self.draws is not None:
            return np.var(log_predict(self.draws, flat), axis=0, ddof=1)
        step = 1e-6 * np.maximum(1.0, np.abs(self.theta))
        shifts = np.diag(step)
        grad = (log_predict(self.theta + shifts, flat) - log_predict(self.theta - shifts, flat)) / (
            2 * step[:, None]
        )
        return np.einsum("in,ij,jn->n", grad, self.cov, grad)

    def summary(self) -> str:
        """Parameters with uncertainty and goodness of fit, for a terminal."""
        how = f"bootstrap, {len(self.draws)} resamples" if self.draws is not None else "analytic"
        rows = [[name, f"{value:.6g}", f"{self.stderr[name]:.3g}", f"{self.ci[name][0]:.6g}",
                 f"{self.ci[name][1]:.6g}"] for name, value in self.params.items()]
        table = format_table(["parameter", "value", "± s.e.", f"{self.level:.0%} CI low", "high"], rows)
        quality = f"R^2 (log) {self.r2_log:.4f}, RMSE {self.rmse:.4g}"
        if self.huber is not None:
            quality += f", Huber objective {self.huber:.6g}"
        fitted = f"{len(self.y)} {'budget optima' if self.law == 'isoflop' else 'runs'}"
        if self.law == "pareto-power":
            fitted += f" in {self.frontier.sum()} frontier bins"
        return f"{self.law} law, {fitted} ({how}); {quality}\n{table}"


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


@dataclass(frozen=True, eq=False)
class Allocation:
    """Compute-optimal model size and data, N*(C) and D*(C), from a ``joint`` fit (Hoffmann et al. eq. 4)."""

    compute: np.ndarray
    n: np.ndarray
    d: np.ndarray
    n_exponent: float  # a = beta / (alpha + beta)
    d_exponent: float  # b = alpha / (alpha + beta)
    n_bounds: tuple[np.ndarray, np.ndarray] | None  # bootstrap interval, when the fit has draws
    d_bounds: tuple[np.ndarray, np.ndarray] | None
    loss: Interval  # L(N*, D*) with its prediction interval


# ------------------------------------------------------------------------------------------ helpers

# Many tiny L-BFGS-B / least-squares steps call BLAS on 5x5 matrices; a multithreaded BLAS then spends
# more time waking threads than computing (15x slower on a busy 2-core machine), so fits run on one thread.
_one_blas_thread = threadpool_limits.wrap(limits=1, user_api="blas")


def _quantile(level: float, dof: int | None) -> float:
    tail = (1.0 + level) / 2.0
    return float(stats.t.ppf(tail, dof) if dof else stats.norm.ppf(tail))


def _flatten(law: str, x) -> tuple[np.ndarray, tuple[int, ...]]:
    x = np.asarray(x, dtype=float)
    if law == "joint":
        return x.reshape(-1, 2), x.shape[:-1]
    return x.reshape(-1), x.shape


def _size(law: str, x: np.ndarray) -> np.ndarray:
    """What "larger run" means: compute, or N * D (proportional to compute) for the joint law."""
    return x[..., 0] * x[..., 1] if law == "joint" else x


def cost_frontier(cost: np.ndarray, error: np.ndarray) -> np.ndarray:
    """Runs that no cheaper-or-equal run beats: the compute-error Pareto front."""
    return pareto_mask(np.column_stack([np.asarray(cost, dtype=float), np.asarray(error, dtype=float)]))


def _goodness(law: str, theta: np.ndarray, x: np.ndarray, y: np.ndarray) -> tuple[float, float]:
    """R^2 of log y (the space every law is fitted in) and RMSE in y's own units."""
    log_fit = _LOG_PREDICT[law](theta, x)
    total = np.sum((np.log(y) - np.log(y).mean()) ** 2)
    r2 = 1.0 - np.sum((np.log(y) - log_fit) ** 2) / total if total > 0 else float("nan")
    return float(r2), float(np.sqrt(np.mean((y - np.exp(log_fit)) ** 2)))


def _natural(law: str, theta: np.ndarray) -> np.ndarray:
    return np.where(_LOG_PARAMS[law], np.exp(theta), theta)


def _uncertainty_from_cov(law: str, theta, cov, level, dof):
    """Standard errors by the delta method; CIs mapped through exp for log parameters (so they stay > 0)."""
    se_theta = np.sqrt(np.diag(cov))
    q = _quantile(level, dof)
    natural = _natural(law, theta)
    se = np.where(_LOG_PARAMS[law], natural * se_theta, se_theta)
    lower, upper = _natural(law, theta - q * se_theta), _natural(law, theta + q * se_theta)
    return se, lower, upper


def _uncertainty_from_draws(law: str, draws, level):
    natural = _natural(law, draws)
    tail = 100 * (1 - level) / 2
    return natural.std(axis=0, ddof=1), *np.percentile(natural, [tail, 100 - tail], axis=0)


def _make_fit(law, theta, x, y, *, fit_x=None, fit_y=None, frontier, cov=None, draws=None, resid_sd,
              dof, level, huber=None) -> Fit:
    fit_x = x if fit_x is None else fit_x
    fit_y = y if fit_y is None else fit_y
    r2, rmse = _goodness(law, theta, fit_x, fit_y)
    if draws is not None:
        se, lower, upper = _uncertainty_from_draws(law, draws, level)
    else:
        se, lower, upper = _uncertainty_from_cov(law, theta, cov, level, dof)
    names = _PARAM_NAMES[law]
    return Fit(
        law=law,
        params=dict(zip(names, map(float, _natural(law, theta)), strict=True)),
        stderr=dict(zip(names, map(float, se), strict=True)),
        ci={n: (float(lo), float(hi)) for n, lo, hi in zip(names, lower, upper, strict=True)},
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
    )


def _check_positive(name: str, values, *, columns: int | None = None) -> np.ndarray:
    values = np.asarray(values, dtype=float)
    if columns is not None and (values.ndim != 2 or values.shape[1] != columns):
        raise ConfigError(f"expected an array of shape (n, {columns}), got {values.shape}", field=name)
    if not np.all(np.isfinite(values)) or np.any(values <= 0):
        raise ConfigError("scaling laws are fitted in log space: every value must be finite and > 0",
                          field=name)
    return values


def _check_points(law: str, n_points: int, needed: int) -> None:
    if n_points < needed:
        raise ConfigError(f"the {law} law needs at least {needed} points, got {n_points}")


# ------------------------------------------------------------------------------------- power laws


def _ols_power(law: str, x, y, *, level: float, frontier: np.ndarray, fit_x=None, fit_y=None) -> Fit:
    """OLS of log y on log x, with the exact t-based standard errors and prediction intervals."""
    fx = x if fit_x is None else fit_x
    fy = y if fit_y is None else fit_y
    _check_points(law, len(fy), 3)
    design = np.column_stack([np.ones(len(fx)), np.log(fx)])
    theta, *_ = np.linalg.lstsq(design, np.log(fy), rcond=None)
    dof = len(fy) - 2
    resid_sd = float(np.sqrt(np.sum((np.log(fy) - design @ theta) ** 2) / dof))
    cov = resid_sd**2 * np.linalg.inv(design.T @ design)
    return _make_fit(law, theta, x, y, fit_x=fx, fit_y=fy, frontier=frontier, cov=cov,
                     resid_sd=resid_sd, dof=dof, level=level)


def fit_power(compute, error, *, level: float = 0.95) -> Fit:
    """E = beta * C^alpha by least squares on (log C, log E)."""
    compute, error = _check_positive("x", compute), _check_positive("y", error)
    return _ols_power("power", compute, error, level=level, frontier=cost_frontier(compute, error))


def pareto_bins(compute, error, *, bins: int = 5, pad: float = 0.1) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Cherti et al.'s approximate frontier: (bin centres in compute, per-bin minimum error, index of it).

    log10 compute is cut into `bins` equal-width bins over [min, max + pad] (the pad, in decades, is theirs:
    it keeps the largest run inside the last bin); empty bins are dropped.
    """
    log_c = np.log10(compute)
    edges = np.linspace(log_c.min(), log_c.max() + pad, bins + 1)
    which = np.digitize(log_c, edges) - 1
    order = np.lexsort((error, which))
    filled, first = np.unique(which[order], return_index=True)
    best = order[first]
    centres = (edges[filled] + edges[filled + 1]) / 2
    return 10.0**centres, error[best], best


def fit_pareto_power(compute, error, *, bins: int = 5, pad: float = 0.1, level: float = 0.95) -> Fit:
    """E = beta * C^alpha through the approximate Pareto frontier (Cherti et al. 2023), as they fitted it."""
    compute, error = _check_positive("x", compute), _check_positive("y", error)
    centres, minima, best = pareto_bins(compute, error, bins=bins, pad=pad)
    frontier = np.zeros(len(compute), dtype=bool)
    frontier[best] = True
    return _ols_power("pareto-power", compute, error, level=level, frontier=frontier,
                      fit_x=centres, fit_y=minima)


# ------------------------------------------------------------------------------- saturating law


def _saturating_residuals(theta, log_x, log_y, sqrt_w):
    return sqrt_w * (np.logaddexp(theta[1] - theta[2] * log_x, theta[0]) - log_y)


def _saturating_jacobian(theta, log_x, log_y, sqrt_w):
    power_share = special.expit(theta[1] - theta[2] * log_x - theta[0])  # d log E / d log(A C^-alpha)
    return sqrt_w[:, None] * np.column_stack([1.0 - power_share, power_share, -power_share * log_x])


def _saturating_refit(theta0, log_x, log_y, weights) -> np.ndarray:
    result = optimize.least_squares(
        _saturating_residuals, theta0, jac=_saturating_jacobian, args=(log_x, log_y, np.sqrt(weights)),
        xtol=1e-12, ftol=1e-12, gtol=1e-12, max_nfev=2000,
    )
    return result.x


def _saturating_starts(compute, error) -> np.ndarray:
    """Starts spread over the floor E_inf (fractions of the best error) and the exponent; A by OLS given both."""
    starts = []
    for share, alpha in itertools.product((1e-3, 0.25, 0.5, 0.75, 0.9, 0.99), (0.05, 0.1, 0.2, 0.4, 0.8)):
        floor = share * error.min()
        log_a = np.mean(np.log(error - floor) + alpha * np.log(compute))
        starts.append((np.log(floor), log_a, alpha))
    return np.array(starts)


@_one_blas_thread
def fit_saturating(compute, error, *, n_bootstrap: int = 0, seed: int = 0, level: float = 0.95) -> Fit:
    """E = E_inf + A * C^(-alpha) by least squares on log E from a spread of starts.

    Uncertainty is the Wald (Jacobian) covariance, or a bootstrap over runs when `n_bootstrap` > 0. When the
    best floor is negligible at every point (the data follow a plain power law over their range), the floor is
    not identified: its standard error is NaN and its interval [0, the smallest error measured].
    """
    compute, error = _check_positive("x", compute), _check_positive("y", error)
    _check_points("saturating", len(error), 4)
    log_x, log_y, ones = np.log(compute), np.log(error), np.ones(len(error))
    fits = [_saturating_refit(start, log_x, log_y, ones) for start in _saturating_starts(compute, error)]
    theta = min(fits, key=lambda t: np.sum(_saturating_residuals(t, log_x, log_y, ones) ** 2))
    resid = _saturating_residuals(theta, log_x, log_y, ones)
    dof = len(error) - 3
    resid_sd = float(np.sqrt(np.sum(resid**2) / dof))
    jac = _saturating_jacobian(theta, log_x, log_y, ones)
    cov = resid_sd**2 * np.linalg.pinv(jac.T @ jac)
    draws = None
    if n_bootstrap:
        draws = _bootstrap(lambda w: _saturating_refit(theta, log_x, log_y, w), len(error), n_bootstrap, seed)
    result = _make_fit("saturating", theta, compute, error, frontier=cost_frontier(compute, error), cov=cov,
                       draws=draws, resid_sd=resid_sd, dof=None if draws is not None else dof, level=level)
    floor_share = 1.0 - special.expit(theta[1] - theta[2] * log_x - theta[0])  # E_inf / E at each point
    if floor_share.max() < 1e-6:
        result = replace(result, stderr={**result.stderr, "E_inf": float("nan")},
                         ci={**result.ci, "E_inf": (0.0, float(error.min()))})
    return result


def _bootstrap(refit: Callable[[np.ndarray], np.ndarray], n_points: int, n_bootstrap: int,
               seed: int) -> np.ndarray:
    """Refit on runs resampled with replacement (as multiplicity weights); failed refits are dropped."""
    rng = np.random.default_rng(seed)
    weights = rng.multinomial(n_points, np.full(n_points, 1.0 / n_points), size=n_bootstrap).astype(float)
    draws = np.array([refit(w) for w in weights])
    return draws[np.all(np.isfinite(draws), axis=1)]


# ------------------------------------------------------------------------------------ joint law


def _huber(resid: np.ndarray, delta: float) -> np.ndarray:
    small = np.abs(resid) <= delta
    return np.where(small, 0.5 * resid**2, delta * (np.abs(resid) - 0.5 * delta))


def _huber_objective(theta, log_n, log_d, log_l, weights, delta):
    """Weighted sum of Huber losses of log residuals, and its gradient, for L-BFGS-B."""
    e, a, b, alpha, beta = theta
    terms = np.stack([a - alpha * log_n, b - beta * log_d, np.full_like(log_n, e)])
    top = terms.max(axis=0)
    expo = np.exp(terms - top)
    total = expo.sum(axis=0)
    resid = top + np.log(total) - log_l
    slope = weights * np.clip(resid, -delta, delta)  # the Huber loss's derivative
    share = expo / total
    grad = np.array([
        slope @ share[2],
        slope @ share[0],
        slope @ share[1],
        -(slope * share[0]) @ log_n,
        -(slope * share[1]) @ log_d,
    ])
    return float(weights @ _huber(resid, delta)), grad


def _lbfgs(theta0, args) -> optimize.OptimizeResult:
    # The objective is ~1e-3, so scipy's default ftol (relative to max(|f|, 1)) would stop far too early:
    # that early stop is one reason Hoffmann et al.'s published fit could not be reproduced.
    return optimize.minimize(
        _huber_objective, theta0, args=args, jac=True, method="L-BFGS-B",
        options={"ftol": 1e-15, "gtol": 1e-12, "maxiter": 10_000},
    )


def _grid_objective(grid: np.ndarray, x: np.ndarray, log_l: np.ndarray, delta: float) -> np.ndarray:
    """The objective at every grid point at once, in chunks so memory stays small for many runs."""
    chunks = np.array_split(grid, max(1, len(grid) * len(log_l) // 1_000_000))
    return np.concatenate([_huber(_log_joint(part, x) - log_l, delta).sum(axis=1) for part in chunks])


@_one_blas_thread
def fit_joint(n, d, loss, *, delta: float = 1e-3, grid: np.ndarray = CHINCHILLA_GRID,
              starts: int | None = 32, n_bootstrap: int = 400, seed: int = 0, level: float = 0.95) -> Fit:
    """L(N, D) = E + A / N^alpha + B / D^beta, fitted as Besiroglu et al. (2024).

    The objective is evaluated at every point of `grid` (rows of (e, a, b, alpha, beta)) and L-BFGS-B runs
    from the `starts` best of them (None: from all, as in the paper; on published data every one of the
    best few hundred starts reaches the same optimum). The bootstrap resamples runs with replacement and
    warm-starts each refit from the full-data optimum, which makes it fast and keeps it on the same basin;
    `n_bootstrap=0` skips it, and the parameters then carry no uncertainty (NaN).
    """
    n, d, loss = (_check_positive(name, v) for name, v in (("N", n), ("D", d), ("y", loss)))
    _check_points("joint", len(loss), 6)
    log_n, log_d, log_l = np.log(n), np.log(d), np.log(loss)
    ones = np.ones(len(loss))
    x = np.column_stack([n, d])
    order = np.argsort(_grid_objective(grid, x, log_l, delta))
    chosen = grid[order if starts is None else order[:starts]]
    args = (log_n, log_d, log_l, ones, delta)
    best = min((_lbfgs(start, args) for start in chosen), key=lambda r: r.fun)
    theta = best.x
    resid = log_l - _log_joint(theta, x)
    draws = None
    if n_bootstrap:
        draws = _bootstrap(lambda w: _lbfgs(theta, (log_n, log_d, log_l, w, delta)).x, len(loss), n_bootstrap,
                           seed)
    # Robust scale: the Huber fit ignores outliers, so the prediction noise should too.
    resid_sd = float(1.4826 * np.median(np.abs(resid - np.median(resid))))
    cov = None if draws is not None else np.full((5, 5), np.nan)
    return _make_fit("joint", theta, x, loss, frontier=cost_frontier(n * d, loss), cov=cov, draws=draws,
                     resid_sd=resid_sd, dof=None, level=level, huber=float(best.fun))


def compute_optimal(fit: Fit, compute, *, flops_per_param_token: float = 6.0,
                    level: float = 0.95) -> Allocation:
    """N*(C), D*(C) minimising the joint law subject to C = k N D (k = 6 FLOPs per parameter and token).

    Closed form (Hoffmann et al. eq. 4): N* = G (C/k)^a, D* = (C/k)^b / G, G = (alpha A / (beta B))^(1/(alpha
    + beta)), a = beta / (alpha + beta), b = alpha / (alpha + beta).
    """
    if fit.law != "joint":
        raise ConfigError(f"compute-optimal allocation needs a joint L(N, D) fit, not {fit.law!r}")
    compute = np.asarray(compute, dtype=float)
    n_opt, d_opt = _allocation(fit.theta, compute / flops_per_param_token)
    n_bounds = d_bounds = None
    if fit.draws is not None:
        n_draws, d_draws = _allocation(fit.draws[:, None, :], compute.reshape(-1) / flops_per_param_token)
        tail = 100 * (1 - level) / 2
        shape = compute.shape
        n_bounds = tuple(b.reshape(shape) for b in np.percentile(n_draws, [tail, 100 - tail], axis=0))
        d_bounds = tuple(b.reshape(shape) for b in np.percentile(d_draws, [tail, 100 - tail], axis=0))
    alpha, beta = fit.params["alpha"], fit.params["beta"]
    return Allocation(
        compute=compute,
        n=n_opt,
        d=d_opt,
        n_exponent=beta / (alpha + beta),
        d_exponent=alpha / (alpha + beta),
        n_bounds=n_bounds,
        d_bounds=d_bounds,
        loss=fit.extrapolate(np.stack([n_opt, d_opt], axis=-1), level=level),
    )


def _allocation(theta: np.ndarray, tokens_times_params: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    _, a, b, alpha, beta = (theta[..., i] for i in range(5))
    log_g = (np.log(alpha / beta) + a - b) / (alpha + beta)
    log_c = np.log(tokens_times_params)
    log_n = log_g + beta / (alpha + beta) * log_c
    return np.exp(log_n), np.exp(log_c - log_n)


# -------------------------------------------------------------------------------------- isoflop


def isoflop_optima(compute, size, loss, *, budget_rtol: float = 0.05) -> tuple[np.ndarray, np.ndarray]:
    """Per compute budget, the vertex of a parabola of loss in log size: (budgets, optimal sizes).

    Runs whose compute differs by less than `budget_rtol` are one budget (its median). A budget is
    skipped when it has under 3 distinct sizes, the parabola opens downwards, or its vertex falls outside
    the sizes tried there (an extrapolated optimum is not a measurement).
    """
    compute, size = _check_positive("x", compute), _check_positive("N", size)
    loss = np.asarray(loss, dtype=float)
    order = np.argsort(compute)
    log_c = np.log(compute[order])
    group = np.concatenate([[0], np.cumsum(np.diff(log_c) > np.log1p(budget_rtol))])
    budgets, optima = [], []
    for g in np.unique(group):
        members = order[group == g]
        log_n = np.log(size[members])
        if len(np.unique(log_n)) < 3:
            continue
        curvature, slope, _ = np.polyfit(log_n, loss[members], 2)
        vertex = -slope / (2 * curvature) if curvature > 0 else np.nan
        if log_n.min() <= vertex <= log_n.max():
            budgets.append(np.median(compute[members]))
            optima.append(np.exp(vertex))
    return np.array(budgets), np.array(optima)


def fit_isoflop(compute, size, loss, *, budget_rtol: float = 0.05, level: float = 0.95) -> Fit:
    """Approach 2: optimal size per budget from parabolas, then N*(C) = coefficient * C^exponent by OLS."""
    budgets, optima = isoflop_optima(compute, size, loss, budget_rtol=budget_rtol)
    return _ols_power("isoflop", budgets, optima, level=level, frontier=np.ones(len(budgets), dtype=bool))


# ------------------------------------------------------------------------------------ one entry


def fit(law: str, x, y, **options) -> Fit:
    """Fit `law` to x (compute; (N, D) columns for ``joint``; (compute, size) columns for ``isoflop``) and y."""
    if law not in LAWS:
        raise ConfigError(f"unknown law {law!r}; choose from {', '.join(LAWS)}", field="law")
    if law in ("joint", "isoflop"):
        x = _check_positive("x", x, columns=2)
        first, second = x[:, 0], x[:, 1]
        if law == "joint":
            return fit_joint(first, second, y, **options)
        return fit_isoflop(first, second, y, **options)
    single = {"power": fit_power, "pareto-power": fit_pareto_power, "saturating": fit_saturating}[law]
    return single(x, y, **options)


def held_out_check(law: str, x, y, *, n_test: int | None = None, test_fraction: float = 0.25,
                   level: float = 0.95, **options) -> HeldOutCheck:
    """Fit on the smaller runs, predict the larger ones, and say how far off the extrapolation was.

    "Larger" is compute (N * D for ``joint``). The `n_test` largest runs (default: `test_fraction` of them)
    are held out; for ``isoflop`` whole budgets are held out and scored on their parabola optima, for
    ``pareto-power`` on the held-out runs that are on the compute-error frontier.
    """
    if law == "isoflop":
        runs = _check_positive("x", x, columns=2)
        x, y = isoflop_optima(runs[:, 0], runs[:, 1], y, budget_rtol=options.pop("budget_rtol", 0.05))

        def refit(xs, ys):
            return _ols_power("isoflop", xs, ys, level=level, frontier=np.ones(len(ys), dtype=bool))
    else:

        def refit(xs, ys):
            return fit(law, xs, ys, level=level, **options)

    x, y = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    size = _size(law, x)
    n_test = n_test if n_test is not None else max(1, int(round(test_fraction * len(y))))
    if not 0 < n_test < len(y):
        raise ConfigError(f"cannot hold out {n_test} of {len(y)} runs", field="n_test")
    test = np.zeros(len(y), dtype=bool)
    test[np.argsort(size, kind="stable")[-n_test:]] = True
    train_fit = refit(x[~test], y[~test])
    scored = test & cost_frontier(size, y) if law == "pareto-power" else test
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


# ------------------------------------------------------------------------------------ DataFrames


def column(frame: pd.DataFrame, spec: str, *, field: str, source: str | None = None) -> np.ndarray:
    """A column by name, or an expression of columns (``1 - acc1``; backticks for names with spaces)."""
    if spec in frame.columns:
        values = frame[spec]
    else:
        try:
            values = frame.eval(spec)
        except Exception as err:  # pandas raises many exception types for a bad expression
            available = ", ".join(map(str, frame.columns))
            raise ConfigError(f"no column {spec!r} (nor an expression of columns: {err}); available columns: "
                              f"{available}", source=source, field=field) from err
        if not isinstance(values, pd.Series):
            raise ConfigError(f"{spec!r} is not a column or an expression giving one", source=source,
                              field=field)
    numbers = pd.to_numeric(values, errors="coerce")
    bad = numbers.isna() & values.notna()
    if bad.any():
        raise ConfigError(f"{spec!r} has non-numeric values, e.g. {values[bad].iloc[0]!r}", source=source,
                          field=field)
    return numbers.to_numpy(dtype=float)


def arrays_from_frame(frame: pd.DataFrame, law: str, *, y: str, x: str | None = None, n: str | None = None,
                      d: str | None = None, flops_per_param_token: float = 6.0,
                      source: str | None = None) -> tuple[np.ndarray, np.ndarray]:
    """The (x, y) that `fit(law, x, y)` takes, from named columns; rows with a missing value are dropped.

    ``joint`` takes `n` and `d`, or `n` and compute `x` with D = C / (k N); ``isoflop`` takes compute `x` and
    size `n`; the other laws take `x`.
    """
    if law not in LAWS:
        raise ConfigError(f"unknown law {law!r}; choose from {', '.join(LAWS)}", field="law")
    specs = {"x": x, "y": y, "n": n, "d": d}
    needed = {"joint": ("n", "d" if d is not None else "x", "y"), "isoflop": ("x", "n", "y")}.get(law, ("x", "y"))
    for name in needed:
        if specs[name] is None:
            raise ConfigError(f"the {law} law needs this column", source=source, field=f"--{name}")
    get = {name: column(frame, specs[name], field=f"--{name}", source=source) for name in needed}
    keep = np.all(np.isfinite(np.column_stack(list(get.values()))), axis=1)
    if not keep.any():
        raise ConfigError("no row has a numeric value in every column used", source=source)
    for name, values in get.items():
        if np.any(values[keep] <= 0):
            raise ConfigError(f"{specs[name]!r} has {np.sum(values[keep] <= 0)} values <= 0; scaling laws are "
                              "fitted in log space", source=source, field=f"--{name}")
        get[name] = values[keep]
    if law == "joint":
        data = get["d"] if "d" in get else get["x"] / (flops_per_param_token * get["n"])
        return np.column_stack([get["n"], data]), get["y"]
    if law == "isoflop":
        return np.column_stack([get["x"], get["n"]]), get["y"]
    return get["x"], get["y"]


def fit_frame(frame: pd.DataFrame, law: str, *, y: str, x: str | None = None, n: str | None = None,
              d: str | None = None, flops_per_param_token: float = 6.0, source: str | None = None,
              **options) -> Fit:
    """`fit` on named columns of a DataFrame (a CSV, or a study's results)."""
    xs, ys = arrays_from_frame(frame, law, y=y, x=x, n=n, d=d, flops_per_param_token=flops_per_param_token,
                               source=source)
    return fit(law, xs, ys, **options)


__all__ = [
    "CHINCHILLA_GRID",
    "LAWS",
    "Allocation",
    "Fit",
    "HeldOutCheck",
    "Interval",
    "arrays_from_frame",
    "column",
    "compute_optimal",
    "fit",
    "fit_frame",
    "fit_isoflop",
    "fit_joint",
    "fit_pareto_power",
    "fit_power",
    "fit_saturating",
    "held_out_check",
    "isoflop_optima",
    "pareto_bins",
]
