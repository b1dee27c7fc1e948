"""Where a nonlinear fit starts: Hoffmann et al.'s grid for the laws of (N, D), spreads of starts for the other
laws, and variable projections (for fixed exponents a law linear in its coefficients is solved exactly by
non-negative least squares; the best exponents of a grid over the declared range start a refit).
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable

import numpy as np

from nas.scaling.registry import EXPONENT_RANGE

#: Hoffmann et al.'s (2022, appendix D.2) grid of starts, kept by Besiroglu et al.: (e, a, b, alpha, beta).
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
#: The exponents a variable projection tries (`joint_profile`, `saturating_profile`), and their spacing: a
#: bootstrap refit whose exponents are within 1.5 steps of the full data's is in the same basin.
PROFILE_GRID = np.linspace(*EXPONENT_RANGE, 30)
PROFILE_STEP = float(PROFILE_GRID[1] - PROFILE_GRID[0])


def saturating_profile(x: np.ndarray, y: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """Variable projection of the saturating law: for a fixed alpha, E_inf and A >= 0 solve a non-negative least
    squares of relative residuals in closed form; the best alpha of the grid over the declared range, with its
    coefficients, is a start (a floor NNLS sets to zero starts on its lower bound)."""
    u = weights / y**2
    power = np.exp(-np.outer(PROFILE_GRID, np.log(x)))  # (30, n): C^-alpha at every grid alpha
    g00, g01, g11 = u.sum(), power @ u, power**2 @ u
    m0, m1 = u @ y, power @ (u * y)
    det = g00 * g11 - g01**2
    both = np.column_stack([(g11 * m0 - g01 * m1) / det, (g00 * m1 - g01 * m0) / det])
    candidates = [(np.all(both >= 0, axis=1) & (det > 1e-12 * g00 * g11), both),
                  (np.full(len(g01), True), np.column_stack([np.zeros(len(g01)), m1 / g11])),
                  (np.full(len(g01), True), np.column_stack([np.full(len(g01), m0 / g00), np.zeros(len(g01))]))]
    best, coef = np.full(len(g01), np.inf), np.zeros((len(g01), 2))
    for ok, c in candidates:
        residual = u @ y**2 - 2 * (c[:, 0] * m0 + c[:, 1] * m1) + c[:, 0] ** 2 * g00 + 2 * c[:, 0] * c[:, 1] * g01 \
            + c[:, 1] ** 2 * g11
        better = ok & (residual < best)
        best[better], coef[better] = residual[better], c[better]
    top = int(np.argmin(best))
    floor = max(coef[top, 0], 1e-300)
    return np.array([[math.log(floor), math.log(max(coef[top, 1], 1e-300)), PROFILE_GRID[top]]])


def saturating_starts(compute, error) -> np.ndarray:
    """Starts spread over the floor E_inf (fractions of the best error) and the exponent; A by OLS given both."""
    starts = []
    for share, alpha in itertools.product((1e-3, 0.25, 0.5, 0.75, 0.9, 0.99), (0.05, 0.1, 0.2, 0.4, 0.8)):
        floor = share * error.min()
        log_a = np.mean(np.log(error - floor) + alpha * np.log(compute))
        starts.append((np.log(floor), log_a, alpha))
    return np.array(starts)



def joint_profile(tied: bool, count: int = 1) -> Callable[[np.ndarray, np.ndarray, np.ndarray], np.ndarray]:
    """Variable projection: for fixed exponents the joint law is linear in (E, A, B) >= 0, so a non-negative
    least-squares solve (of relative residuals, which approximate log residuals) gives the best coefficients at
    every pair of exponents on a grid over the declared range; the `count` best pairs are starts.

    The normal equations of every pair come from a few matrix products over the grid's distinct exponents, and
    non-negative least squares with three coefficients is the best least-squares solution on a subset of them
    whose coefficients are all >= 0, so the whole profile costs about as much as one objective evaluation.
    """
    grid = PROFILE_GRID
    pairs = np.column_stack([grid, grid]) if tied else np.array(list(itertools.product(range(30), range(30))))
    i_alpha, i_beta = (np.arange(30), np.arange(30)) if tied else (pairs[:, 0], pairs[:, 1])

    def profile(x: np.ndarray, y: np.ndarray, weights: np.ndarray) -> np.ndarray:
        u = weights / y**2  # weights of (y - fit) that make it a relative residual
        model = np.exp(-np.outer(grid, np.log(x[:, 0])))  # (30, n): N^-alpha at every grid alpha
        data = np.exp(-np.outer(grid, np.log(x[:, 1])))
        norm0 = math.sqrt(u.sum())
        norm_m, norm_d = np.sqrt(model**2 @ u), np.sqrt(data**2 @ u)
        norm_m, norm_d = np.maximum(norm_m, 1e-300), np.maximum(norm_d, 1e-300)
        g01 = (model @ u / norm_m / norm0)[i_alpha]
        g02 = (data @ u / norm_d / norm0)[i_beta]
        g12 = ((model * u) @ data.T / np.outer(norm_m, norm_d))[i_alpha, i_beta]
        m = np.column_stack([np.full(len(i_alpha), u @ y / norm0), (model @ (u * y) / norm_m)[i_alpha],
                             (data @ (u * y) / norm_d)[i_beta]])
        gram = np.empty((len(i_alpha), 3, 3))
        gram[:, 0, 0] = gram[:, 1, 1] = gram[:, 2, 2] = 1.0
        gram[:, 0, 1] = gram[:, 1, 0] = g01
        gram[:, 0, 2] = gram[:, 2, 0] = g02
        gram[:, 1, 2] = gram[:, 2, 1] = g12
        total = float(u @ y**2)
        best, solution = np.full(len(i_alpha), np.inf), np.zeros((len(i_alpha), 3))
        for subset in (s for k in (1, 2, 3) for s in itertools.combinations(range(3), k)):
            sub = list(subset)
            inner = gram[:, sub][:, :, sub]
            det = np.linalg.det(inner)
            ok = det > 1e-12
            c = np.zeros((len(i_alpha), len(sub)))
            c[ok] = np.linalg.solve(inner[ok], m[ok][:, sub, None])[..., 0]
            residual = total - np.sum(c * m[:, sub], axis=1)
            better = ok & np.all(c >= 0, axis=1) & (residual < best)
            best[better] = residual[better]
            solution[better] = 0.0
            solution[np.ix_(better, sub)] = c[better]
        top = np.argsort(best, kind="stable")[:count]
        coef = solution[top] / np.column_stack([np.full(len(top), norm0), norm_m[i_alpha[top]], norm_d[i_beta[top]]])
        # A coefficient NNLS set to zero starts its term small, not absent, so that the refit can still use it.
        typical = np.column_stack([np.ones(len(top)), np.median(model[i_alpha[top]], axis=1),
                                   np.median(data[i_beta[top]], axis=1)])
        logs = np.log(np.maximum(coef, 1e-3 * np.median(y) / typical))
        exponents = [grid[i_alpha[top]]] if tied else [grid[i_alpha[top]], grid[i_beta[top]]]
        return np.column_stack([logs, *exponents])

    return profile


def tied_grid() -> np.ndarray:
    return np.unique(CHINCHILLA_GRID[:, :4], axis=0)



def kaplan_starts(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Floors below the smallest loss, exponent pairs, and a share of the excess loss for the model term at
    the median run; N_c and D_c then follow."""
    log_n, log_d = np.median(np.log(x[:, 0])), np.median(np.log(x[:, 1]))
    rows = []
    for share_e, alpha_n, alpha_d, share in itertools.product((1e-3, 0.3, 0.6, 0.85), (0.05, 0.1, 0.2, 0.4, 0.8),
                                                             (0.05, 0.1, 0.2, 0.4, 0.8), (0.25, 0.5, 0.75)):
        floor = share_e * y.min()
        inner = math.log(np.median(y) - floor) / alpha_d
        rows.append((math.log(floor), log_n + alpha_d / alpha_n * (math.log(share) + inner),
                     log_d + math.log(1 - share) + inner, alpha_n, alpha_d))
    return np.array(rows)



def data_constrained_starts(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    base = CHINCHILLA_GRID[np.random.default_rng(0).choice(len(CHINCHILLA_GRID), 256, replace=False)]
    decays = np.log(list(itertools.product((1.0, 5.0, 15.0, 50.0), (1.0, 5.0, 15.0, 50.0))))
    return np.array([np.concatenate([b, r]) for b in base for r in decays])

