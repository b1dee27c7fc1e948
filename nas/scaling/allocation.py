"""Compute-optimal allocation: N*(C) and D*(C) from a joint or tied L(N, D) fit (Hoffmann et al.'s approach 3, in
closed form, with bootstrap intervals), and the optimal size per compute budget from IsoFLOP sweeps (their
approach 2: a local fit around each budget's best size, each optimum with its own uncertainty), which the
``isoflop`` law then fits N*(C) through.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from nas.errors import ConfigError
from nas.scaling.fitting import Fit, Interval, check_positive, percentiles
from nas.scaling.registry import LAWS


@dataclass(frozen=True, eq=False)
class Allocation:
    """Compute-optimal model size and data, N*(C) and D*(C), from a ``joint`` or ``tied`` fit (Hoffmann et al.
    eq. 4), with bootstrap intervals on the exponents and on N*, D* when the fit has draws."""

    compute: np.ndarray
    n: np.ndarray
    d: np.ndarray
    n_exponent: float  # a = beta / (alpha + beta)
    d_exponent: float  # b = alpha / (alpha + beta)
    n_bounds: tuple[np.ndarray, np.ndarray] | None  # bootstrap interval, when the fit has draws
    d_bounds: tuple[np.ndarray, np.ndarray] | None
    loss: Interval  # L(N*, D*) with its prediction interval
    n_exponent_ci: tuple[float, float] | None = None
    d_exponent_ci: tuple[float, float] | None = None


@dataclass(frozen=True, eq=False)
class IsoflopOptima:
    """Per compute budget, the optimal size and its uncertainty (sd of log size); budgets left out, and why."""

    budgets: np.ndarray
    optima: np.ndarray
    log_sd: np.ndarray
    skipped: dict[float, str]
    loss_noise: float  # sd of log loss between runs, used for the noise part of log_sd


def _require_allocation(fit: Fit) -> None:
    if not fit.form.allocates:
        allocating = " or ".join(name for name, law in LAWS.items() if law.allocates)
        raise ConfigError(f"compute-optimal allocation needs a {allocating} L(N, D) fit, not {fit.law!r}")
    missing = [name for name in ("A", "B", "alpha", "beta") if name in fit.not_identified]
    if missing:
        raise ConfigError(f"not identified: it depends on {', '.join(missing)}, which the runs do not pin down")


def _exponents(fit: Fit, theta: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(alpha, beta) of theta; a law with one exponent (tied) has beta = alpha."""
    params = fit.form.params
    alpha = theta[..., params.index("alpha")]
    return alpha, (theta[..., params.index("beta")] if "beta" in params else alpha)


def compute_optimal_exponent(fit: Fit, level: float | None = None) -> tuple[float, tuple[float | None, float | None]]:
    """a = beta / (alpha + beta) in N* ∝ C^a, with its bootstrap interval (None without draws; for the tied law
    a = 1/2 by construction and has no interval)."""
    _require_allocation(fit)
    alpha, beta = _exponents(fit, fit.theta)
    a = float(beta / (alpha + beta))
    if fit.draws is None or "beta" not in fit.params:
        return a, (None, None)
    alphas, betas = _exponents(fit, fit.draws)
    low, high = percentiles(betas / (alphas + betas), level or fit.level)
    return a, (float(low), float(high))


def compute_optimal(fit: Fit, compute, *, flops_per_param_token: float = 6.0,
                    level: float = 0.95) -> Allocation:
    """N*(C), D*(C) minimising the joint law subject to C = k N D (k = 6 FLOPs per parameter and token).

    Closed form (Hoffmann et al. eq. 4): N* = G (C/k)^a, D* = (C/k)^b / G, G = (alpha A / (beta B))^(1/(alpha
    + beta)), a = beta / (alpha + beta), b = alpha / (alpha + beta). Refused (ConfigError) when A, B, alpha or
    beta is not identified: an allocation built on them would be a guess with a narrow interval.
    """
    _require_allocation(fit)
    compute = np.asarray(compute, dtype=float)
    n_opt, d_opt = _allocation(fit, fit.theta, compute / flops_per_param_token)
    n_bounds = d_bounds = None
    a, (low, high) = compute_optimal_exponent(fit, level)
    exponent_ci = None if low is None else (low, high)
    if fit.draws is not None:
        n_draws, d_draws = _allocation(fit, fit.draws[:, None, :], compute.reshape(-1) / flops_per_param_token)
        shape = compute.shape
        n_bounds = tuple(b.reshape(shape) for b in percentiles(n_draws, level))
        d_bounds = tuple(b.reshape(shape) for b in percentiles(d_draws, level))
    return Allocation(
        compute=compute,
        n=n_opt,
        d=d_opt,
        n_exponent=a,
        d_exponent=1.0 - a,
        n_bounds=n_bounds,
        d_bounds=d_bounds,
        loss=fit.extrapolate(np.stack([n_opt, d_opt], axis=-1), level=level),
        n_exponent_ci=exponent_ci,
        d_exponent_ci=None if exponent_ci is None else (1.0 - exponent_ci[1], 1.0 - exponent_ci[0]),
    )


def _allocation(fit: Fit, theta: np.ndarray, tokens_times_params: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    a, b = theta[..., fit.form.params.index("A")], theta[..., fit.form.params.index("B")]
    alpha, beta = _exponents(fit, theta)
    log_g = (np.log(alpha / beta) + a - b) / (alpha + beta)
    log_c = np.log(tokens_times_params)
    log_n = log_g + beta / (alpha + beta) * log_c
    return np.exp(log_n), np.exp(log_c - log_n)


def exponent_line(fit: Fit) -> str:
    """The compute-optimal exponent for a fit's summary, or why there is none."""
    try:
        a, (low, high) = compute_optimal_exponent(fit)
    except ConfigError as err:
        return f"compute-optimal allocation: {err.message}"
    interval = f" [{low:.4f}, {high:.4f}] ({fit.level:.0%} bootstrap interval)" if low is not None else ""
    return f"compute-optimal exponent: N* ∝ C^{a:.4f}{interval}, D* ∝ C^{1 - a:.4f}"


def _budget_sweeps(compute, size, loss, budget_rtol: float) -> list[tuple[float, np.ndarray, np.ndarray]]:
    """Runs grouped into budgets (compute within `budget_rtol`: one budget, its median), each a sweep of
    distinct sizes (sorted) with the mean log loss of the runs at that size."""
    order = np.argsort(compute)
    log_c = np.log(compute[order])
    group = np.concatenate([[0], np.cumsum(np.diff(log_c) > np.log1p(budget_rtol))])
    sweeps = []
    for g in np.unique(group):
        members = order[group == g]
        sizes, inverse = np.unique(np.log(size[members]), return_inverse=True)
        mean_log_loss = np.bincount(inverse, np.log(loss[members])) / np.bincount(inverse)
        sweeps.append((float(np.median(compute[members])), sizes, mean_log_loss))
    return sweeps


def _window(n: int, best: int, half: int | None) -> np.ndarray:
    return np.arange(n) if half is None else np.arange(max(0, best - half), min(n, best + half + 1))


def _local_vertex(log_n: np.ndarray, log_loss: np.ndarray, near: np.ndarray, best: int, degree: int) -> float | str:
    """The minimum of a polynomial of log loss in log size through the sizes `near` the best one: a parabola's
    vertex (inside the sizes it was fitted to), or a cubic's local minimum between the best size's neighbours."""
    centre = log_n[best]
    coef = np.polyfit(log_n[near] - centre, log_loss[near], degree)
    if degree == 2:
        if coef[0] <= 0:
            return "the parabola through its best sizes opens downwards"
        vertex = centre - coef[1] / (2 * coef[0])
        if not log_n[near].min() <= vertex <= log_n[near].max():
            return "the parabola's vertex falls outside the sizes it was fitted to"
        return float(vertex)
    slope = np.polyder(coef)
    low, high = log_n[best - 1] - centre, log_n[best + 1] - centre
    minima = [r.real for r in np.roots(slope) if abs(r.imag) < 1e-12 and low <= r.real <= high
              and np.polyval(np.polyder(slope), r.real) > 0]
    return float(centre + minima[0]) if minima else "the cubic through its best sizes has no minimum between them"


def _sweep_estimate(log_n: np.ndarray, log_loss: np.ndarray, best: int, window: int | None) -> float | str:
    """A local cubic through the best size and `window` sizes on each side (4 or more sizes: it follows the
    curve's asymmetry), else the parabola through the best size and its two neighbours; `window` None: the
    parabola through the whole sweep (Hoffmann et al.'s and Llama 3's approach 2)."""
    if window is None:
        return _local_vertex(log_n, log_loss, np.arange(len(log_n)), best, 2)
    near = _window(len(log_n), best, window)
    if len(near) >= 4:
        found = _local_vertex(log_n, log_loss, near, best, 3)
        if not isinstance(found, str):
            return found
    return _local_vertex(log_n, log_loss, _window(len(log_n), best, 1), best, 2)


def _sweep_noise(sweeps) -> float:
    """The run-to-run sd of log loss, pooled over budgets from the residuals of a cubic through the best size
    and two sizes on each side (smooth enough near the minimum that what is left is noise)."""
    rss = dof = 0.0
    for _, log_n, log_loss in sweeps:
        near = _window(len(log_n), int(np.argmin(log_loss)), 2)
        if len(near) >= 5:
            centred = log_n[near] - log_n[near].mean()
            coef = np.polyfit(centred, log_loss[near], 3)
            rss += float(np.sum((np.polyval(coef, centred) - log_loss[near]) ** 2))
            dof += len(near) - 4
    return math.sqrt(rss / dof) if dof else 0.0


def _sweep_optimum(log_n: np.ndarray, log_loss: np.ndarray, window: int | None,
                   noise: float) -> tuple[float, float] | str:
    """The optimal log size of one budget's sweep (`_sweep_estimate`) with its sd; or why there is none.

    The sd adds three parts: the resolution of the sweep (the data place the optimum between the best size's
    neighbours: uniform over the cell between the midpoints, width / sqrt(12)), the run-to-run noise carried
    through the estimate (its gradient in each loss, by finite differences), and the local model's own
    assumption (how far the estimate is from the parabola through the best size and its two neighbours).
    """
    if len(log_n) < 3:
        return f"only {len(log_n)} distinct size(s); a parabola needs 3"
    best = int(np.argmin(log_loss))
    if best in (0, len(log_n) - 1):
        side = "smallest" if best == 0 else "largest"
        return f"its best size is the {side} tried: the optimum is not bracketed"
    estimate = _sweep_estimate(log_n, log_loss, best, window)
    if isinstance(estimate, str):
        return estimate
    resolution = ((log_n[best + 1] - log_n[best - 1]) / 2) ** 2 / 12
    carried = 0.0
    if noise > 0:
        step = 1e-6
        for j in _window(len(log_n), best, window):
            nudged = log_loss.copy()
            nudged[j] += step
            moved = _sweep_estimate(log_n, nudged, best, window)
            carried += 0.0 if isinstance(moved, str) else ((moved - estimate) / step) ** 2
        carried *= noise**2
    parabola = _local_vertex(log_n, log_loss, _window(len(log_n), best, 1), best, 2)
    model = 0.0 if isinstance(parabola, str) else (estimate - parabola) ** 2
    return estimate, math.sqrt(resolution + carried + model)


def isoflop_optima(compute, size, loss, *, window: int | None = 2, budget_rtol: float = 0.05,
                   loss_noise: float | None = None) -> IsoflopOptima:
    """Per compute budget, the optimal size from a local fit of log loss in log size around the best size
    tried (`_sweep_estimate`, `window` sizes on each side), each with its uncertainty (`_sweep_optimum`).

    A parabola over a whole sweep (often two decades, and lopsided: loss rises faster on one side) pulls its
    vertex toward the flatter side; near the minimum a low-order polynomial holds. Runs whose compute differs
    by less than `budget_rtol` are one budget; runs of one size in a budget are averaged (in log loss). A budget
    without an interior optimum is skipped and named with its reason. `loss_noise` is the sd of log loss
    between runs (default: pooled from the sweeps, `_sweep_noise`).
    """
    compute, size, loss = (check_positive(name, v) for name, v in (("x", compute), ("N", size), ("y", loss)))
    if window is not None and window < 1:
        raise ConfigError(f"must be at least 1 (sizes on each side of the best one), got {window}", field="window")
    sweeps = _budget_sweeps(compute, size, loss, budget_rtol)
    noise = _sweep_noise(sweeps) if loss_noise is None else float(loss_noise)
    budgets, optima, log_sd, skipped = [], [], [], {}
    for budget, log_n, log_loss in sweeps:
        found = _sweep_optimum(log_n, log_loss, window, noise)
        if isinstance(found, str):
            skipped[budget] = found
            continue
        budgets.append(budget)
        optima.append(math.exp(found[0]))
        log_sd.append(found[1])
    return IsoflopOptima(np.array(budgets), np.array(optima), np.array(log_sd), skipped, noise)

