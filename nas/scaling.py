"""Scaling laws: fit how error or loss falls with compute, model size and data, and never claim more than the
data hold.

Laws (names as in `LAWS`; docs/scaling_laws.md says what each assumes and which published fits they reproduce):

- ``power``: E = beta * C^alpha, ordinary least squares in log space (exact t intervals).
- ``pareto-power``: the same law through an approximate Pareto frontier (Cherti et al. 2023): log10 compute
  is cut into equal-width bins, the lowest error in each bin is kept at the bin centre, then OLS.
- ``saturating``: E = E_inf + A * C^(-alpha) (Zhai et al. 2022), least squares on log E.
- ``bnsl``: a broken neural scaling law (Caballero et al. 2023) with one or more breaks, least squares on log E.
- ``joint``: L(N, D) = E + A / N^alpha + B / D^beta fitted as Besiroglu et al. (2024) redo Hoffmann et al.'s
  approach 3: Huber loss (delta 1e-3) of log-space residuals, L-BFGS-B from a grid of starts, bootstrap.
- ``tied``: the joint law with alpha = beta (as Muennighoff et al. 2023 and Gadre et al. 2024 fit it).
- ``kaplan``: L(N, D) = E + ((N_c / N)^(alpha_N / alpha_D) + D_c / D)^alpha_D (Kaplan et al. 2020, eq. 1.5,
  plus a floor): the model and data terms interact.
- ``data-constrained``: Muennighoff et al.'s (2023) law of repeated data, L(N, D, U): the joint law with
  effective data D' and effective size N' that decay with the epochs (R_D*) and the excess parameters (R_N*).
- ``isoflop``: Hoffmann et al.'s approach 2: per compute budget, a local fit of log loss in log size around the
  best size tried (a cubic through 5 sizes, else a parabola through 3), its minimum (with its own uncertainty)
  as the optimal size, and N*(C) = coefficient * C^exponent by weighted least squares through the optima.

What keeps a fit honest:

- a minimum number of points per law (`min_points`), refused below it with a ConfigError;
- exponents bounded to a declared range (`EXPONENT_RANGE`), bootstrap refits ending on a bound counted;
- every additive term tested by dropping it: a term the data cannot tell from zero (a floor far below every
  loss, a data term on runs that all share one data size) leaves its parameters "not identified", with their
  admissible range as interval (never a zero-width one), and `compute_optimal` refuses to build on them;
- bootstrap refits restart from fresh starts (a profile over the exponents for the joint, tied and saturating
  laws), not only from the full-data optimum, so a resample can leave its basin;
- a lack-of-fit check on every fit (a runs test of the residuals and, where there is one, a comparison with
  the next richer law, or a rival law, by BIC) whose warnings are on `Fit.warnings`.

Every fit returns a `Fit`. Inputs are arrays (or a DataFrame with `arrays_from_frame`), never files, so a
study's results database and a published CSV go through the same code.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace

import numpy as np
import pandas as pd
from scipy import optimize, special, stats
from threadpoolctl import threadpool_limits

from nas.errors import ConfigError
from nas.pareto import pareto_mask
from nas.tables import format_table

LAWS = ("power", "pareto-power", "saturating", "bnsl", "joint", "tied", "kaplan", "data-constrained", "isoflop")
#: Laws of several variables: x has one column per variable (N, D; and U for data-constrained).
VARIABLES = {"joint": ("N", "D"), "tied": ("N", "D"), "kaplan": ("N", "D"), "data-constrained": ("N", "D", "U"),
             "isoflop": ("C", "N")}
#: Where a fitted power-law exponent may lie (joint, tied, kaplan, data-constrained, saturating, BNSL's first
#: segment). Published exponents lie well inside; an estimate on a bound is reported as not identified.
EXPONENT_RANGE = (0.01, 3.0)
#: Muennighoff et al.'s decay constants R_D*, R_N* (epochs, excess-parameter multiples) are searched here.
DECAY_RANGE = (0.01, 1000.0)
#: BNSL's change of exponent at a break, and the sharpness of a break.
BREAK_EXPONENT_RANGE = (-10.0, 10.0)
BREAK_SHARPNESS_RANGE = (1e-3, 10.0)
#: A runs test below this p-value, or a richer (or rival) law better by more than this much BIC, is a lack-of-fit
#: warning (a BIC difference over 10 is "very strong" evidence, Kass and Raftery 1995).
LACK_OF_FIT_P = 0.01
LACK_OF_FIT_BIC = 10.0
#: The smallest floor a law is fitted with, as a share of the smallest value measured.
FLOOR_SHARE = 1e-6
#: Residual degrees of freedom each fitted parameter needs for a bootstrap (`min_points`).
BOOTSTRAP_DOF_PER_PARAM = 3

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
_DROPPED = -60.0  # a log-coefficient that removes its term (e^-60 ~ 1e-26)
#: The exponents a variable projection tries (`_joint_profile`, `_saturating_profile`), and their spacing: a
#: bootstrap refit whose exponents are within 1.5 steps of the full data's is in the same basin.
_PROFILE_GRID = np.linspace(*EXPONENT_RANGE, 30)
_PROFILE_STEP = float(_PROFILE_GRID[1] - _PROFILE_GRID[0])


# --------------------------------------------------------------------------------------------- law forms


def _log_power(theta: np.ndarray, log_x: np.ndarray) -> np.ndarray:
    return theta[..., 0:1] + theta[..., 1:2] * log_x


def _log_saturating(theta: np.ndarray, log_x: np.ndarray) -> np.ndarray:
    return np.logaddexp(theta[..., 1:2] - theta[..., 2:3] * log_x, theta[..., 0:1])


def _bnsl_breaks(theta: np.ndarray) -> int:
    return (theta.shape[-1] - 3) // 3


def _log_bnsl(theta: np.ndarray, log_x: np.ndarray) -> np.ndarray:
    """log E = LSE(e, b - c0 log x - sum_i c_i f_i softplus((log x - log d_i) / f_i)) (Caballero et al. eq. 1)."""
    k = _bnsl_breaks(theta)
    power = theta[..., 1:2] - theta[..., 2:3] * log_x
    for i in range(k):
        change, log_d, log_f = (theta[..., j : j + 1] for j in (3 + i, 3 + k + i, 3 + 2 * k + i))
        sharpness = np.exp(log_f)
        power = power - change * sharpness * np.logaddexp(0.0, (log_x - log_d) / sharpness)
    return np.logaddexp(power, theta[..., 0:1])


def _bnsl_jacobian(theta: np.ndarray, log_x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """log y and its Jacobian: the power part's share s of y carries every derivative but the floor's."""
    k = _bnsl_breaks(theta)
    power = theta[1] - theta[2] * log_x
    columns = []
    for i in range(k):
        change, log_d, sharpness = theta[3 + i], theta[3 + k + i], math.exp(theta[3 + 2 * k + i])
        z = (log_x - log_d) / sharpness
        soft, sigmoid = np.logaddexp(0.0, z), special.expit(z)
        power = power - change * sharpness * soft
        columns.append((-sharpness * soft, change * sigmoid, -change * sharpness * (soft - sigmoid * z)))
    log_y = np.logaddexp(power, theta[0])
    share = np.exp(power - log_y)
    changes, locations, sharpnesses = zip(*columns)
    jac = [1.0 - share, share, -share * log_x, *(share * c for c in changes), *(share * c for c in locations),
           *(share * c for c in sharpnesses)]
    return log_y, np.column_stack(jac)


def _joint_terms(theta: np.ndarray, log_x: np.ndarray, tied: bool) -> tuple[np.ndarray, ...]:
    e, a, b, alpha = (theta[..., i : i + 1] for i in range(4))
    beta = alpha if tied else theta[..., 4:5]
    model, data = a - alpha * log_x[..., 0], b - beta * log_x[..., 1]
    return model, data, np.broadcast_to(e, model.shape)


def _log_joint(theta: np.ndarray, log_x: np.ndarray) -> np.ndarray:
    """log L = LSE(a - alpha log N, b - beta log D, e): the form Besiroglu et al. fit, stable for any theta."""
    model, data, floor = _joint_terms(theta, log_x, tied=False)
    return np.logaddexp(np.logaddexp(model, data), floor)


def _log_tied(theta: np.ndarray, log_x: np.ndarray) -> np.ndarray:
    model, data, floor = _joint_terms(theta, log_x, tied=True)
    return np.logaddexp(np.logaddexp(model, data), floor)


def _joint_value_jac(theta: np.ndarray, log_x: np.ndarray, tied: bool) -> tuple[np.ndarray, np.ndarray]:
    """log L and its Jacobian in one pass (each term's share of L is its derivative): the fit's inner loop."""
    e, a, b, alpha = (float(v) for v in theta[:4])
    beta = alpha if tied else float(theta[4])
    log_n, log_d = log_x[:, 0], log_x[:, 1]
    model, data = a - alpha * log_n, b - beta * log_d
    top = np.maximum(np.maximum(model, data), e)
    model, data, floor = np.exp(model - top), np.exp(data - top), np.exp(e - top)
    total = model + data + floor
    model /= total
    data /= total
    floor /= total
    jac = np.empty((len(top), 4 if tied else 5))
    jac[:, 0], jac[:, 1], jac[:, 2] = floor, model, data
    if tied:
        jac[:, 3] = -model * log_n - data * log_d
    else:
        jac[:, 3], jac[:, 4] = -model * log_n, -data * log_d
    return top + np.log(total), jac


def _joint_jacobian(theta: np.ndarray, log_x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    return _joint_value_jac(theta, log_x, tied=False)


def _tied_jacobian(theta: np.ndarray, log_x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    return _joint_value_jac(theta, log_x, tied=True)


def _saturating_jacobian(theta: np.ndarray, log_x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    power_share = special.expit(theta[1] - theta[2] * log_x - theta[0])  # d log E / d log(A C^-alpha)
    return _log_saturating(theta, log_x), np.column_stack([1.0 - power_share, power_share, -power_share * log_x])


def _log_kaplan(theta: np.ndarray, log_x: np.ndarray) -> np.ndarray:
    """log L = LSE(e, alpha_D * LSE((alpha_N / alpha_D) (log N_c - log N), log D_c - log D))."""
    e, log_nc, log_dc, alpha_n, alpha_d = (theta[..., i : i + 1] for i in range(5))
    inner = np.logaddexp(alpha_n / alpha_d * (log_nc - log_x[..., 0]), log_dc - log_x[..., 1])
    return np.logaddexp(alpha_d * inner, e)


def _log_data_constrained(theta: np.ndarray, log_x: np.ndarray) -> np.ndarray:
    """Muennighoff et al.'s L(N, D, U): the joint law at effective size N' and effective data D'.

    D' = U (1 + R_D* (1 - exp(-R_D / R_D*))) with R_D = D / U - 1 epochs repeated; U_N = min(N, the
    compute-optimal size for U unique tokens under the joint law), R_N = N / U_N - 1, and N' = U_N (1 + R_N*
    (1 - exp(-R_N / R_N*))).
    """
    e, a, b, alpha, beta, log_rd, log_rn = (theta[..., i : i + 1] for i in range(7))
    log_n, log_d, log_u = (log_x[..., i] for i in range(3))
    log_g = (np.log(alpha / beta) + a - b) / (alpha + beta)
    log_un = np.minimum(log_n, log_g + beta / alpha * (log_g + log_u))  # N*(C) at the C whose D*(C) = U
    with np.errstate(over="ignore"):  # a size far above U_N: infinitely many excess multiples, fully decayed
        excess_params = np.expm1(log_n - log_un)
    epochs = np.maximum(np.expm1(log_d - log_u), 0.0)
    rd, rn = np.exp(log_rd), np.exp(log_rn)
    log_data = log_u + np.log1p(-rd * np.expm1(-epochs / rd))
    log_size = log_un + np.log1p(-rn * np.expm1(-excess_params / rn))
    return np.logaddexp(np.logaddexp(a - alpha * log_size, b - beta * log_data), e)


@dataclass(frozen=True)
class _Term:
    """An additive part of a law: `drop` sets the theta entries that remove it; `uses` are the entries that
    mean nothing without it (a coefficient and its exponent)."""

    name: str
    uses: tuple[int, ...]
    drop: tuple[tuple[int, float], ...]


@dataclass(frozen=True)
class _Form:
    """A law in the parametrisation it is fitted in (`log`: which theta entries are logs of the reported
    parameter), its bounds, its additive terms and how it is fitted ("squares" on log y, or Besiroglu et
    al.'s "huber" on log y)."""

    law: str
    params: tuple[str, ...]
    log: tuple[bool, ...]
    log_predict: Callable[[np.ndarray, np.ndarray], np.ndarray]  # (theta, log x) -> log y
    bounds: tuple[tuple[float, float], ...]
    terms: tuple[_Term, ...] = ()
    criterion: str = "squares"
    jacobian: Callable[[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]] | None = None
    exponents: tuple[int, ...] = ()  # bounded entries whose draws on a bound are counted
    decays: tuple[int, ...] = ()  # of those, decay constants (R_D*, R_N*): on a bound, they leave their term's
    # coefficient and exponent identified, where a power-law exponent on a bound does not

    def value_jac(self, theta: np.ndarray, log_x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """log y and d log y / d theta at each point, (n,) and (n, p): analytic where the law has it, else
        central differences (one vectorised call: every law broadcasts over rows of theta)."""
        if self.jacobian is not None:
            return self.jacobian(theta, log_x)
        step = 1e-6 * np.maximum(1.0, np.abs(theta))
        shifts = np.diag(step)
        values = self.log_predict(np.concatenate([theta[None], theta + shifts, theta - shifts]), log_x)
        p = len(theta)
        return values[0], ((values[1 : p + 1] - values[p + 1 :]) / (2 * step[:, None])).T


_UNBOUNDED = (-np.inf, np.inf)
_EXP = EXPONENT_RANGE
_LOG_DECAY = (math.log(DECAY_RANGE[0]), math.log(DECAY_RANGE[1]))


def _joint_family_terms(model_uses: tuple[int, ...], data_uses: tuple[int, ...], model_drop: int,
                        data_drop: int) -> tuple[_Term, ...]:
    return (_Term("floor", (0,), ((0, _DROPPED),)),
            _Term("model-size term", model_uses, ((model_drop, _DROPPED),)),
            _Term("data term", data_uses, ((data_drop, _DROPPED),)))


_FORMS = {
    "power": _Form("power", ("beta", "alpha"), (True, False), _log_power, (_UNBOUNDED, _UNBOUNDED)),
    "pareto-power": _Form("pareto-power", ("beta", "alpha"), (True, False), _log_power, (_UNBOUNDED, _UNBOUNDED)),
    "isoflop": _Form("isoflop", ("coefficient", "exponent"), (True, False), _log_power, (_UNBOUNDED, _UNBOUNDED)),
    "saturating": _Form(
        "saturating", ("E_inf", "A", "alpha"), (True, True, False), _log_saturating, (_UNBOUNDED, _UNBOUNDED, _EXP),
        terms=(_Term("floor", (0,), ((0, _DROPPED),)), _Term("power term", (1, 2), ((1, _DROPPED),))),
        jacobian=_saturating_jacobian, exponents=(2,)),
    "joint": _Form(
        "joint", ("E", "A", "B", "alpha", "beta"), (True, True, True, False, False), _log_joint,
        (_UNBOUNDED,) * 3 + (_EXP, _EXP), _joint_family_terms((1, 3), (2, 4), 1, 2), "huber", _joint_jacobian,
        exponents=(3, 4)),
    "tied": _Form(
        "tied", ("E", "A", "B", "alpha"), (True, True, True, False), _log_tied, (_UNBOUNDED,) * 3 + (_EXP,),
        _joint_family_terms((1, 3), (2, 3), 1, 2), "huber", _tied_jacobian, exponents=(3,)),
    "kaplan": _Form(
        "kaplan", ("E", "N_c", "D_c", "alpha_N", "alpha_D"), (True, True, True, False, False), _log_kaplan,
        (_UNBOUNDED,) * 3 + (_EXP, _EXP), _joint_family_terms((1, 3), (2,), 1, 2), "huber", exponents=(3, 4)),
    "data-constrained": _Form(
        "data-constrained", ("E", "A", "B", "alpha", "beta", "R_D*", "R_N*"), (True,) * 3 + (False, False, True, True),
        _log_data_constrained, (_UNBOUNDED,) * 3 + (_EXP, _EXP, _LOG_DECAY, _LOG_DECAY),
        _joint_family_terms((1, 3, 6), (2, 4, 5), 1, 2), "huber", exponents=(3, 4, 5, 6), decays=(5, 6)),
}


def _bnsl_form(breaks: int) -> _Form:
    """BNSL with `breaks` breaks: (E, b, c0, c_1..c_k, d_1..d_k, f_1..f_k); E is its floor ("a" in the paper)."""
    if breaks < 1:
        raise ConfigError(f"a broken neural scaling law has at least one break, got {breaks}", field="breaks")
    idx = range(1, breaks + 1)
    names = ("E", "b", "c0", *(f"c{i}" for i in idx), *(f"d{i}" for i in idx), *(f"f{i}" for i in idx))
    log = (True, True, False) + (False,) * breaks + (True,) * 2 * breaks
    sharp = (math.log(BREAK_SHARPNESS_RANGE[0]), math.log(BREAK_SHARPNESS_RANGE[1]))
    bounds = (_UNBOUNDED, _UNBOUNDED, (0.0, EXPONENT_RANGE[1])) + (BREAK_EXPONENT_RANGE,) * breaks \
        + (_UNBOUNDED,) * breaks + (sharp,) * breaks
    terms = (_Term("floor", (0,), ((0, _DROPPED),)),
             *(_Term(f"break {i}", (2 + i, 2 + breaks + i, 2 + 2 * breaks + i), ((2 + i, 0.0),)) for i in idx))
    return _Form("bnsl", names, log, _log_bnsl, bounds, terms, jacobian=_bnsl_jacobian,
                 exponents=(2, *(2 + i for i in idx)))


def _form(law: str, n_params: int | None = None) -> _Form:
    if law == "bnsl":
        return _bnsl_form(((n_params or 6) - 3) // 3)
    return _FORMS[law]


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
class LackOfFit:
    """Is the law the right shape for the data? A runs test of the residuals' signs ordered along the law's
    variables (too few runs: the residuals bend one way, then the other), and, where the law has a richer
    neighbour (or a rival of as many parameters) with enough points to fit it, the BIC difference to it (> 10:
    very strong evidence for it)."""

    runs: int
    expected_runs: float
    runs_p: float
    richer: str | None
    delta_bic: float | None
    warnings: tuple[str, ...]


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

    A parameter in `not_identified` has NaN standard error and its admissible range as interval; `fixed`
    parameters were held at given values. `warnings` are what a reader must know before using the fit:
    unidentified terms, bootstrap refits that ended on an exponent's bound, and lack of fit.
    """

    law: str
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

    @property
    def _form(self) -> _Form:
        return _form(self.law, len(self.theta))

    def predict(self, x) -> np.ndarray:
        """The law at x (compute; or (..., k) arrays of (N, D[, U]) for the laws of several variables)."""
        flat, shape = _flatten(self.law, x)
        return np.exp(self._form.log_predict(self.theta, np.log(flat))).reshape(shape)

    def extrapolate(self, x, level: float = 0.95) -> Interval:
        """The law at x with a `level` prediction interval, computed in log space.

        The interval adds the parameter uncertainty (bootstrap draws, else the delta method) and the
        residual scatter of single runs; with OLS fits it is the textbook t interval.
        """
        flat, shape = _flatten(self.law, x)
        log_mean = self._form.log_predict(self.theta, np.log(flat))
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
        log_predict, flat = self._form.log_predict, np.log(flat)
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
                rows.append([name, _number(value), "not identified", _number(low), _number(high)])
            else:
                rows.append([name, _number(value), _number(self.stderr[name], ".3g"), _number(low), _number(high)])
        table = format_table(["parameter", "value", "± s.e.", f"{self.level:.0%} CI low", "high"], rows)
        quality = f"R^2 (log) {self.r2_log:.4f}, RMSE {self.rmse:.4g}"
        if self.huber is not None:
            quality += f", Huber objective {self.huber:.6g}"
        fitted = f"{len(self.y)} {'budget optima' if self.law == 'isoflop' else 'runs'}"
        if self.law == "pareto-power":
            fitted += f" in {self.frontier.sum()} frontier bins"
        lines = [f"{self.law} law, {fitted} ({how}); {quality}", table]
        if self.law in ("joint", "tied"):
            lines.append(_exponent_line(self))
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


def _exponent_line(fit: Fit) -> str:
    try:
        a, (low, high) = compute_optimal_exponent(fit)
    except ConfigError as err:
        return f"compute-optimal allocation: {err.message}"
    interval = f" [{low:.4f}, {high:.4f}] ({fit.level:.0%} bootstrap interval)" if low is not None else ""
    return f"compute-optimal exponent: N* ∝ C^{a:.4f}{interval}, D* ∝ C^{1 - a:.4f}"


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


# ------------------------------------------------------------------------------------------ helpers

# Many tiny L-BFGS-B / least-squares steps call BLAS on 5x5 matrices; a multithreaded BLAS then spends
# more time waking threads than computing (15x slower on a busy 2-core machine), so fits run on one thread.
_one_blas_thread = threadpool_limits.wrap(limits=1, user_api="blas")


def _quantile(level: float, dof: int | None) -> float:
    tail = (1.0 + level) / 2.0
    return float(stats.t.ppf(tail, dof) if dof else stats.norm.ppf(tail))


def _columns(law: str) -> int:
    return len(VARIABLES.get(law, ("C",))) if law != "isoflop" else 1


def _flatten(law: str, x) -> tuple[np.ndarray, tuple[int, ...]]:
    x = np.asarray(x, dtype=float)
    k = _columns(law)
    if k > 1:
        return x.reshape(-1, k), x.shape[:-1]
    return x.reshape(-1), x.shape


def _size(law: str, x: np.ndarray) -> np.ndarray:
    """What "larger run" means: compute, or N * D (proportional to compute) for the laws of (N, D)."""
    return x[..., 0] * x[..., 1] if _columns(law) > 1 else x


def cost_frontier(cost: np.ndarray, error: np.ndarray) -> np.ndarray:
    """Runs that no cheaper-or-equal run beats: the compute-error Pareto front."""
    return pareto_mask(np.column_stack([np.asarray(cost, dtype=float), np.asarray(error, dtype=float)]))


def _goodness(log_fit: np.ndarray, y: np.ndarray) -> tuple[float, float]:
    """R^2 of log y (the space every law is fitted in) and RMSE in y's own units."""
    total = np.sum((np.log(y) - np.log(y).mean()) ** 2)
    r2 = 1.0 - np.sum((np.log(y) - log_fit) ** 2) / total if total > 0 else float("nan")
    return float(r2), float(np.sqrt(np.mean((y - np.exp(log_fit)) ** 2)))


def _natural(form: _Form, theta: np.ndarray) -> np.ndarray:
    with np.errstate(over="ignore"):  # an interval's end past 1e308 is infinite, which is what it means
        return np.where(form.log, np.exp(theta), theta)


def _check_positive(name: str, values, *, columns: int | None = None) -> np.ndarray:
    values = np.asarray(values, dtype=float)
    if columns is not None and (values.ndim != 2 or values.shape[1] != columns):
        raise ConfigError(f"expected an array of shape (n, {columns}), got {values.shape}", field=name)
    if not np.all(np.isfinite(values)) or np.any(values <= 0):
        raise ConfigError("scaling laws are fitted in log space: every value must be finite and > 0",
                          field=name)
    return values


def min_points(law: str, n_params: int | None = None, *, bootstrap: bool = False) -> int:
    """The fewest points a law is fitted on.

    Least-squares lines (power, pareto-power bins, isoflop optima) have exact t intervals from one residual
    degree of freedom: p + 1. A nonlinear law's Wald intervals need two (p + 2; with one, the t quantile of
    12.7 makes any interval useless), and a bootstrap `BOOTSTRAP_DOF_PER_PARAM` per fitted parameter ((1 + 3)
    p): a resample holds about 63 % distinct runs, and with fewer the refits overfit and the intervals cover
    far less than they claim (benchmarks/scaling_coverage.py measures it).
    """
    p = n_params if n_params is not None else len(_form(law).params)
    if law in ("power", "pareto-power", "isoflop"):
        return p + 1
    return (1 + BOOTSTRAP_DOF_PER_PARAM) * p if bootstrap else p + 2


def _check_points(law: str, n_points: int, needed: int, *, bootstrap: bool = False) -> None:
    if n_points < needed:
        why = (f" for bootstrap intervals ({BOOTSTRAP_DOF_PER_PARAM} residual degrees of freedom per fitted "
               f"parameter; fit with n_bootstrap=0 for analytic intervals where the law has them)" if bootstrap
               else "")
        unit = "budgets with an optimum" if law == "isoflop" else "points"
        raise ConfigError(f"the {law} law needs at least {needed} {unit}{why}, got {n_points}")


def _percentiles(values: np.ndarray, level: float) -> np.ndarray:
    tail = 100 * (1 - level) / 2
    return np.percentile(values, [tail, 100 - tail], axis=0)


# ------------------------------------------------------------------------------------- power laws


def _wls_power(law: str, x, y, *, level: float, frontier: np.ndarray, fit_x=None, fit_y=None,
               log_sd: np.ndarray | None = None, skipped: tuple[str, ...] = (), checks: bool = True) -> Fit:
    """Least squares of log y on log x, with exact t-based standard errors and prediction intervals.

    With `log_sd` (each point's own uncertainty in log y) it is weighted least squares, and the intervals
    are scaled up when the points scatter more than their uncertainties say (the Birge ratio).
    """
    fx = x if fit_x is None else fit_x
    fy = y if fit_y is None else fit_y
    _check_points(law, len(fy), min_points(law))
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
    result = _make_fit(_FORMS[law], theta, x, y, fit_x=fx, fit_y=fy, frontier=frontier, cov=cov,
                       resid_sd=resid_sd, dof=dof, level=level, log_sd=log_sd, skipped=skipped)
    if checks:
        result = _with_checks(result, fx, fy, resid, level)
    return result


def fit_power(compute, error, *, level: float = 0.95) -> Fit:
    """E = beta * C^alpha by least squares on (log C, log E)."""
    compute, error = _check_positive("x", compute), _check_positive("y", error)
    return _wls_power("power", compute, error, level=level, frontier=cost_frontier(compute, error))


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
    return _wls_power("pareto-power", compute, error, level=level, frontier=frontier, fit_x=centres, fit_y=minima)


# ------------------------------------------------------------------------------ building a Fit


def _make_fit(form: _Form, theta, x, y, *, fit_x=None, fit_y=None, frontier, cov=None, draws=None, resid_sd, dof,
              level, huber=None, log_sd=None, skipped=(), fixed=(), not_identified: Mapping[str, tuple] | None = None,
              warnings=(), draws_at_bound: Mapping[str, int] | None = None) -> Fit:
    fit_x = x if fit_x is None else fit_x
    fit_y = y if fit_y is None else fit_y
    r2, rmse = _goodness(form.log_predict(theta, np.log(fit_x)), fit_y)
    if draws is not None:
        natural = _natural(form, draws)
        se, (lower, upper) = natural.std(axis=0, ddof=1), _percentiles(natural, level)
    else:
        se_theta = np.sqrt(np.maximum(np.diag(cov), 0.0))  # a pseudo-inverse's rounding can dip below zero
        q = _quantile(level, dof)
        se = np.where(form.log, _natural(form, theta) * se_theta, se_theta)
        low, high = (np.array(b, dtype=float) for b in zip(*form.bounds))
        lower = _natural(form, np.maximum(theta - q * se_theta, low))  # a declared range bounds its intervals too
        upper = _natural(form, np.minimum(theta + q * se_theta, high))
    names = form.params
    stderr = dict(zip(names, map(float, se), strict=True))
    ci = {n: (float(lo), float(hi)) for n, lo, hi in zip(names, lower, upper, strict=True)}
    for name, admissible in (not_identified or {}).items():
        stderr[name], ci[name] = float("nan"), (float(admissible[0]), float(admissible[1]))
    return Fit(
        law=form.law,
        params=dict(zip(names, map(float, _natural(form, theta)), strict=True)),
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
    )


# -------------------------------------------------------------------------------- lack of fit


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


#: The law each law is compared with, and how many starts it is refined from for the comparison: the next richer
#: law (power < saturating < bnsl, tied < joint), or for joint and kaplan each other (as many parameters; kaplan's
#: model and data terms interact, joint's add).
_RICHER = {"power": ("saturating", {"starts": 6}), "saturating": ("bnsl", {"starts": 6}),
           "tied": ("joint", {"starts": 8}), "joint": ("kaplan", {"starts": 8}), "kaplan": ("joint", {"starts": 8})}


def _bic(log_resid: np.ndarray, n_params: int) -> float:
    n = len(log_resid)
    return float(n * np.log(np.mean(log_resid**2) + 1e-12) + n_params * np.log(n))


def _lack_of_fit(law: str, x: np.ndarray, y: np.ndarray, log_resid: np.ndarray, n_params: int) -> LackOfFit:
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
                        f"{len(y)} points ({expected:.1f} runs expected; runs test p = {p:.2g}): the {law} law is "
                        "the wrong shape for these data")
    richer, options = _RICHER.get(law, (None, {}))
    delta = None
    spans = x.ndim == 1 or all(len(np.unique(column)) >= 3 for column in x.T)  # else the rival fits a degenerate law
    if richer is not None and spans and len(y) >= min_points(richer):
        try:
            other = fit(richer, x, y, n_bootstrap=0, checks=False, **options)
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


def _with_checks(result: Fit, x: np.ndarray, y: np.ndarray, log_resid: np.ndarray, level: float) -> Fit:
    check = _lack_of_fit(result.law, x, y, log_resid, len(result.theta) - len(result.fixed))
    return replace(result, lack_of_fit=check, warnings=(*result.warnings, *check.warnings))


# --------------------------------------------------------------------------- nonlinear fitting


def _huber(resid: np.ndarray, delta: float) -> np.ndarray:
    size = np.abs(resid)
    return np.where(size <= delta, 0.5 * resid**2, delta * (size - 0.5 * delta))


def _loss(form: _Form, resid: np.ndarray, delta: float) -> np.ndarray:
    return _huber(resid, delta) if form.criterion == "huber" else 0.5 * resid**2


def _objectives(form: _Form, thetas: np.ndarray, log_x: np.ndarray, log_y: np.ndarray, weights: np.ndarray,
                delta: float) -> np.ndarray:
    """The criterion at every row of `thetas` at once, in chunks so memory stays small for many runs."""
    chunks = np.array_split(thetas, max(1, len(thetas) * len(log_y) // 1_000_000))
    values = [(_loss(form, form.log_predict(part, log_x) - log_y, delta) * weights).sum(axis=1) for part in chunks]
    values = np.concatenate(values)
    return np.where(np.isfinite(values), values, np.inf)


def _free_bounds(form: _Form, free: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    return (np.array([form.bounds[i][0] for i in free], dtype=float),
            np.array([form.bounds[i][1] for i in free], dtype=float))


def _refit(form: _Form, start: np.ndarray, free: np.ndarray, log_x: np.ndarray, log_y: np.ndarray,
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
            return float(weights @ _huber(resid, delta)), grad

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


def _best(form, starts: np.ndarray, free, log_x, log_y, weights, delta, tight: bool = True) -> tuple[np.ndarray, float]:
    """The best of refits from every start (each loosely), polished to the last digit when `tight`."""
    if len(starts) == 1:
        return _refit(form, starts[0], free, log_x, log_y, weights, delta, tight=tight)
    fits = [_refit(form, start, free, log_x, log_y, weights, delta, tight=False) for start in starts]
    best = min(fits, key=lambda pair: pair[1] if np.isfinite(pair[1]) else np.inf)
    return _refit(form, best[0], free, log_x, log_y, weights, delta) if tight else best


def _prepare_starts(form: _Form, starts: np.ndarray, template: np.ndarray, free: np.ndarray) -> np.ndarray:
    """Starts with the fixed entries set and every entry inside its bounds; duplicates dropped."""
    starts = np.array(starts, dtype=float, copy=True)
    fixed = np.setdiff1d(np.arange(len(template)), free)
    starts[:, fixed] = template[fixed]
    lower, upper = _free_bounds(form, np.arange(len(template)))
    return np.unique(np.clip(starts, lower, upper), axis=0)


def _bootstrap(refit: Callable[[np.ndarray], np.ndarray], n_points: int, n_bootstrap: int,
               seed: int) -> np.ndarray:
    """Refit on runs resampled with replacement (as multiplicity weights); failed refits are dropped."""
    rng = np.random.default_rng(seed)
    weights = rng.multinomial(n_points, np.full(n_points, 1.0 / n_points), size=n_bootstrap).astype(float)
    draws = np.array([refit(w) for w in weights])
    return draws[np.all(np.isfinite(draws), axis=1)]


def _admissible(form: _Form, index: int, y: np.ndarray) -> tuple[float, float]:
    """What a parameter the data do not identify may be: a floor anywhere below the smallest value measured,
    a coefficient anything positive, an exponent anything in its declared range."""
    name = form.params[index]
    if index == 0 and name in ("E", "E_inf"):
        return 0.0, float(y.min())
    low, high = form.bounds[index]
    if form.log[index]:
        return float(np.exp(low)), float(np.exp(high))
    return float(low), float(high)


def _identification(form: _Form, theta: np.ndarray, value: float, free: np.ndarray, x: np.ndarray, y: np.ndarray,
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
            _, dropped_value = _best(form, restricted, kept, log_x, log_y, ones, delta)
        else:
            dropped_value = float(_objectives(form, restricted[:1], log_x, log_y, ones, delta)[0])
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
        for k, variable in enumerate(VARIABLES.get(form.law, ())):
            distinct = len(np.unique(x[:, k]))
            if distinct < 3:
                hints.append(f"the runs span {distinct} value(s) of {variable}")
    not_identified = {form.params[i]: _admissible(form, i, y) for i in sorted(reasons)}
    grouped: dict[str, list[str]] = {}
    for i in sorted(reasons):
        grouped.setdefault(reasons[i], []).append(form.params[i])
    messages = [f"{', '.join(names)} not identified: {why}" + (f" ({'; '.join(hints)})" if hints else "")
                for why, names in grouped.items()]
    return not_identified, messages


def _fixed_template(form: _Form, fixed: Mapping[str, float] | None) -> tuple[np.ndarray, np.ndarray]:
    template = np.zeros(len(form.params))
    fixed = dict(fixed or {})
    unknown = sorted(set(fixed) - set(form.params))
    if unknown:
        raise ConfigError(f"the {form.law} law has no parameter {', '.join(unknown)}; its parameters: "
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


@_one_blas_thread
def _fit_form(form: _Form, x: np.ndarray, y: np.ndarray, grid: np.ndarray, *, n_bootstrap: int = 0, seed: int = 0,
              level: float = 0.95, fixed: Mapping[str, float] | None = None, delta: float = 1e-3,
              starts: int | None = 16, profile: Callable | None = None, checks: bool = True) -> Fit:
    """Fit `form` from the `starts` best rows of `grid` (None: all), plus `profile`'s starts.

    The bootstrap resamples runs and refits each resample from the full-data optimum and from a fresh start
    (the profile's best under the resample's weights, else the best of a fresh sample of the grid), so that a
    resample can leave the full data's basin.
    """
    template, free = _fixed_template(form, fixed)
    if form.params[0] in ("E", "E_inf"):  # a floor below a millionth of every value is zero for every purpose
        form = replace(form, bounds=((math.log(FLOOR_SHARE * y.min()), np.inf), *form.bounds[1:]))
    _check_points(form.law, len(y), min_points(form.law, len(free), bootstrap=n_bootstrap > 0),
                  bootstrap=n_bootstrap > 0)
    log_x, log_y, ones = np.log(x), np.log(y), np.ones(len(y))
    grid = _prepare_starts(form, grid, template, free)
    order = np.argsort(_objectives(form, grid, log_x, log_y, ones, delta), kind="stable")
    chosen = grid[order if starts is None else order[:starts]]
    if profile is not None:
        chosen = np.vstack([chosen, _prepare_starts(form, profile(x, y, ones), template, free)])
    theta, value = _best(form, chosen, free, log_x, log_y, ones, delta)
    log_resid = log_y - form.log_predict(theta, log_x)
    dof = len(y) - len(free)
    draws = None
    if n_bootstrap:
        rng = np.random.default_rng(seed + 1)

        def refit(weights: np.ndarray) -> np.ndarray:
            """From the full data's optimum and from a fresh start (the resample's own best exponents, else the
            best of a fresh sample of the grid), each loosely, then the better one polished to the last digit.
            A fresh start within 1.5 profile steps of where the warm refit went is the same basin: skipped."""
            warm = _refit(form, theta, free, log_x, log_y, weights, delta, tight=False)
            if profile is not None:
                start = _prepare_starts(form, profile(x, y, weights), template, free)[0]
                exps = list(form.exponents)
                same_basin = np.all(np.abs(start[exps] - warm[0][exps]) <= 1.5 * _PROFILE_STEP)
            else:
                sample = grid[rng.choice(len(grid), size=min(64, len(grid)), replace=False)]
                start = sample[np.argmin(_objectives(form, sample, log_x, log_y, weights, delta))]
                same_basin = False
            best = warm if same_basin else min(warm, _refit(form, start, free, log_x, log_y, weights, delta,
                                                                 tight=False), key=lambda pair: pair[1])
            return _refit(form, best[0], free, log_x, log_y, weights, delta)[0]

        draws = _bootstrap(refit, len(y), n_bootstrap, seed)
    if form.criterion == "huber":
        # Robust scale: the Huber fit ignores outliers, so the prediction noise should too.
        resid_sd = float(1.4826 * np.median(np.abs(log_resid - np.median(log_resid))))
    else:
        resid_sd = float(np.sqrt(np.sum(log_resid**2) / dof))
    cov = np.zeros((len(theta), len(theta)))
    if draws is None:
        if form.criterion == "huber":
            cov[np.ix_(free, free)] = np.nan  # no analytic covariance for the Huber fit: bootstrap it
        else:
            jac = form.value_jac(theta, log_x)[1][:, free]
            cov[np.ix_(free, free)] = resid_sd**2 * np.linalg.pinv(jac.T @ jac)
    not_identified, warnings = {}, []
    if checks:
        not_identified, warnings = _identification(form, theta, value, free, x, y, grid[order[:3]], delta, level)
    at_bound = {name: count for name, count in _draws_at_bound(form, draws, free).items()
                if name not in not_identified}
    for name, count in at_bound.items():
        low, high = _admissible(form, form.params.index(name), y)
        warnings.append(f"{name}: {count} of {len(draws)} bootstrap refits ended on a bound of its declared range "
                        f"[{low:g}, {high:g}]" + (" (so does its interval)" if count > (1 - level) / 2 * len(draws)
                                                    else ""))
    result = _make_fit(form, theta, x, y, frontier=cost_frontier(_size(form.law, x), y),
                       cov=None if draws is not None else cov, draws=draws, resid_sd=resid_sd,
                       dof=None if draws is not None or form.criterion == "huber" else dof, level=level,
                       huber=value if form.criterion == "huber" else None,
                       fixed=tuple(name for name in form.params if name in (fixed or {})),
                       not_identified=not_identified, warnings=warnings, draws_at_bound=at_bound)
    if checks:
        result = _with_checks(result, x, y, log_resid, level)
    return result


def _draws_at_bound(form: _Form, draws: np.ndarray | None, free: np.ndarray) -> dict[str, int]:
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


# ------------------------------------------------------------------------ one-variable nonlinear laws


def _saturating_profile(x: np.ndarray, y: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """Variable projection of the saturating law: for a fixed alpha, E_inf and A >= 0 solve a non-negative least
    squares of relative residuals in closed form; the best alpha of the grid over the declared range, with its
    coefficients, is a start (a floor NNLS sets to zero starts on its lower bound)."""
    u = weights / y**2
    power = np.exp(-np.outer(_PROFILE_GRID, np.log(x)))  # (30, n): C^-alpha at every grid alpha
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
    return np.array([[math.log(floor), math.log(max(coef[top, 1], 1e-300)), _PROFILE_GRID[top]]])


def _saturating_starts(compute, error) -> np.ndarray:
    """Starts spread over the floor E_inf (fractions of the best error) and the exponent; A by OLS given both."""
    starts = []
    for share, alpha in itertools.product((1e-3, 0.25, 0.5, 0.75, 0.9, 0.99), (0.05, 0.1, 0.2, 0.4, 0.8)):
        floor = share * error.min()
        log_a = np.mean(np.log(error - floor) + alpha * np.log(compute))
        starts.append((np.log(floor), log_a, alpha))
    return np.array(starts)


def fit_saturating(compute, error, *, n_bootstrap: int = 0, seed: int = 0, level: float = 0.95,
                   fixed: Mapping[str, float] | None = None, starts: int | None = 10, checks: bool = True) -> Fit:
    """E = E_inf + A * C^(-alpha) by least squares on log E from a spread of starts.

    Trust-region least squares refines the `starts` best of 30 starts (None: all of them).
    Uncertainty is the Wald (Jacobian) covariance, or a bootstrap over runs when `n_bootstrap` > 0. When the
    fit is as good without the floor (the data follow a plain power law over their range), the floor is not
    identified: its standard error is NaN and its interval [0, the smallest error measured].
    """
    compute, error = _check_positive("x", compute), _check_positive("y", error)
    return _fit_form(_FORMS["saturating"], compute, error, _saturating_starts(compute, error), starts=starts,
                     n_bootstrap=n_bootstrap, seed=seed, level=level, fixed=fixed, profile=_saturating_profile,
                     checks=checks)


def _bnsl_starts(x: np.ndarray, y: np.ndarray, breaks: int) -> np.ndarray:
    """Floors below the smallest value, a first exponent, and per break an exponent change, a location
    inside the data and a sharpness; b by least squares given the rest."""
    log_x = np.log(x)
    locations = np.quantile(log_x, [0.2, 0.4, 0.6, 0.8])
    per_break = list(itertools.product((-1.0, 0.5, 2.0, 6.0), locations, np.log([0.03, 0.1, 0.3, 1.0])))
    rows = []
    for share, c0 in itertools.product((1e-3, 0.5, 0.9), (0.0, 0.1, 0.4)):
        for combo in itertools.product(per_break, repeat=breaks):
            changes, log_d, log_f = (np.array(v) for v in zip(*combo))
            rows.append(np.concatenate([[math.log(share * y.min()), 0.0, c0], changes, log_d, log_f]))
    starts = np.array(rows)
    if len(starts) > 4000:
        starts = starts[np.random.default_rng(0).choice(len(starts), 4000, replace=False)]
    shape = _log_bnsl(np.column_stack([np.full(len(starts), -np.inf), starts[:, 1:]]), np.log(x))  # at b = 1
    floor = np.exp(starts[:, :1])
    starts[:, 1] = np.mean(np.log(y - floor) - shape, axis=1)
    return starts


def fit_bnsl(x, y, *, breaks: int = 1, n_bootstrap: int = 0, seed: int = 0, level: float = 0.95,
             fixed: Mapping[str, float] | None = None, starts: int | None = 24, checks: bool = True) -> Fit:
    """A broken neural scaling law (Caballero et al. 2023) with `breaks` breaks, least squares on log y:

    y = E + b x^-c0 prod_i (1 + (x / d_i)^(1 / f_i))^(-c_i f_i)

    Each break bends the power law at d_i by c_i (sharply for a small f_i). Wald intervals by default; a
    bootstrap needs (1 + 3) points per parameter (24 for one break).
    """
    x, y = _check_positive("x", x), _check_positive("y", y)
    form = _bnsl_form(breaks)
    near = (math.log(x.min() / 100), math.log(x.max() * 100))  # a break far outside the data is not seen in them
    form = replace(form, bounds=form.bounds[: 3 + breaks] + (near,) * breaks + form.bounds[3 + 2 * breaks :])
    return _fit_form(form, x, y, _bnsl_starts(x, y, breaks), starts=starts, n_bootstrap=n_bootstrap, seed=seed,
                     level=level, fixed=fixed, checks=checks)


# ---------------------------------------------------------------------------- laws of (N, D)


def _joint_profile(tied: bool, count: int = 1) -> Callable[[np.ndarray, np.ndarray, np.ndarray], np.ndarray]:
    """Variable projection: for fixed exponents the joint law is linear in (E, A, B) >= 0, so a non-negative
    least-squares solve (of relative residuals, which approximate log residuals) gives the best coefficients at
    every pair of exponents on a grid over the declared range; the `count` best pairs are starts.

    The normal equations of every pair come from a few matrix products over the grid's distinct exponents, and
    non-negative least squares with three coefficients is the best least-squares solution on a subset of them
    whose coefficients are all >= 0, so the whole profile costs about as much as one objective evaluation.
    """
    grid = _PROFILE_GRID
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


def _tied_grid() -> np.ndarray:
    return np.unique(CHINCHILLA_GRID[:, :4], axis=0)


def _check_joint_inputs(columns: dict[str, np.ndarray], y) -> tuple[np.ndarray, np.ndarray]:
    arrays = [_check_positive(name, values) for name, values in columns.items()]
    loss = _check_positive("y", y)
    if any(len(a) != len(loss) for a in arrays):
        raise ConfigError(f"{', '.join(columns)} and y must have one value per run")
    return np.column_stack(arrays), loss


def fit_joint(n, d, loss, *, delta: float = 1e-3, grid: np.ndarray = CHINCHILLA_GRID, starts: int | None = 32,
              n_bootstrap: int = 400, seed: int = 0, level: float = 0.95, fixed: Mapping[str, float] | None = None,
              checks: bool = True) -> Fit:
    """L(N, D) = E + A / N^alpha + B / D^beta, fitted as Besiroglu et al. (2024).

    The objective is evaluated at every point of `grid` (rows of (e, a, b, alpha, beta)) and L-BFGS-B runs
    from the `starts` best of them (None: from all, as in the paper; on published data every one of the
    best few hundred starts reaches the same optimum) and from the best pair of exponents of a variable
    projection (`_joint_profile`). Exponents stay in `EXPONENT_RANGE`. The bootstrap resamples runs and
    refits each from the optimum and from the resample's own profile start; `n_bootstrap=0` skips it, and the
    parameters then carry no uncertainty (NaN, printed "not estimated").
    """
    x, loss = _check_joint_inputs({"N": n, "D": d}, loss)
    return _fit_form(_FORMS["joint"], x, loss, grid, n_bootstrap=n_bootstrap, seed=seed, level=level, fixed=fixed,
                     delta=delta, starts=starts, profile=_joint_profile(tied=False), checks=checks)


def fit_tied(n, d, loss, *, delta: float = 1e-3, starts: int | None = 32, n_bootstrap: int = 400, seed: int = 0,
             level: float = 0.95, fixed: Mapping[str, float] | None = None, checks: bool = True) -> Fit:
    """L(N, D) = E + A / N^alpha + B / D^alpha: the joint law with one exponent (Muennighoff et al. 2023, Gadre
    et al. 2024), fitted like `fit_joint`. Its compute-optimal exponents are 1/2 by construction."""
    x, loss = _check_joint_inputs({"N": n, "D": d}, loss)
    return _fit_form(_FORMS["tied"], x, loss, _tied_grid(), n_bootstrap=n_bootstrap, seed=seed, level=level,
                     fixed=fixed, delta=delta, starts=starts, profile=_joint_profile(tied=True), checks=checks)


def _kaplan_starts(x: np.ndarray, y: np.ndarray) -> np.ndarray:
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


def fit_kaplan(n, d, loss, *, delta: float = 1e-3, starts: int | None = 32, n_bootstrap: int = 400, seed: int = 0,
               level: float = 0.95, fixed: Mapping[str, float] | None = None, checks: bool = True) -> Fit:
    """L(N, D) = E + ((N_c / N)^(alpha_N / alpha_D) + D_c / D)^alpha_D: Kaplan et al.'s (2020) form, in which
    model size and data interact (more data helps a large model more than a small one), plus a floor E.
    Fitted like the joint law (Huber on log residuals, L-BFGS-B from a grid, bootstrap)."""
    x, loss = _check_joint_inputs({"N": n, "D": d}, loss)
    return _fit_form(_FORMS["kaplan"], x, loss, _kaplan_starts(x, loss), n_bootstrap=n_bootstrap, seed=seed,
                     level=level, fixed=fixed, delta=delta, starts=starts, checks=checks)


def _data_constrained_starts(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    base = CHINCHILLA_GRID[np.random.default_rng(0).choice(len(CHINCHILLA_GRID), 256, replace=False)]
    decays = np.log(list(itertools.product((1.0, 5.0, 15.0, 50.0), (1.0, 5.0, 15.0, 50.0))))
    return np.array([np.concatenate([b, r]) for b in base for r in decays])


def fit_data_constrained(n, d, u, loss, *, fixed: Mapping[str, float] | None = None, delta: float = 1e-3,
                         starts: int | None = 16, n_bootstrap: int = 400, seed: int = 0, level: float = 0.95,
                         checks: bool = True) -> Fit:
    """Muennighoff et al.'s (2023) data-constrained law L(N, D, U) of runs that repeat U unique tokens D / U
    times: the joint law at an effective data D' and size N' that saturate at R_D* epochs and R_N* excess
    parameter multiples (`_log_data_constrained`). Fitted as they did (Huber on log residuals, L-BFGS).

    They first fit the joint law (tied exponents) on Chinchilla-style runs and hold it fixed while fitting
    R_D* and R_N*: pass those values as `fixed` (E, A, B, alpha, beta) to do the same; without them all seven
    parameters are fitted, and the identification check says which the runs pin down.
    """
    x, loss = _check_joint_inputs({"N": n, "D": d, "U": u}, loss)
    over = int(np.sum(x[:, 2] > x[:, 1] * (1 + 1e-9)))
    if over:
        raise ConfigError(f"{over} run(s) have more unique tokens U than tokens seen D", field="U")
    return _fit_form(_FORMS["data-constrained"], x, loss, _data_constrained_starts(x, loss), n_bootstrap=n_bootstrap,
                     seed=seed, level=level, fixed=fixed, delta=delta, starts=starts, checks=checks)


# ---------------------------------------------------------------------- compute-optimal allocation


def _require_allocation(fit: Fit) -> None:
    if fit.law not in ("joint", "tied"):
        raise ConfigError(f"compute-optimal allocation needs a joint or tied L(N, D) fit, not {fit.law!r}")
    missing = [name for name in ("A", "B", "alpha", "beta") if name in fit.not_identified]
    if missing:
        raise ConfigError(f"not identified: it depends on {', '.join(missing)}, which the runs do not pin down")


def _exponents(law: str, theta: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    alpha = theta[..., 3]
    return alpha, (alpha if law == "tied" else theta[..., 4])


def compute_optimal_exponent(fit: Fit, level: float | None = None) -> tuple[float, tuple[float | None, float | None]]:
    """a = beta / (alpha + beta) in N* ∝ C^a, with its bootstrap interval (None without draws; for the tied law
    a = 1/2 by construction and has no interval)."""
    _require_allocation(fit)
    alpha, beta = _exponents(fit.law, fit.theta)
    a = float(beta / (alpha + beta))
    if fit.draws is None or fit.law == "tied":
        return a, (None, None)
    alphas, betas = _exponents(fit.law, fit.draws)
    low, high = _percentiles(betas / (alphas + betas), level or fit.level)
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
    n_opt, d_opt = _allocation(fit.law, fit.theta, compute / flops_per_param_token)
    n_bounds = d_bounds = None
    a, (low, high) = compute_optimal_exponent(fit, level)
    exponent_ci = None if low is None else (low, high)
    if fit.draws is not None:
        n_draws, d_draws = _allocation(fit.law, fit.draws[:, None, :], compute.reshape(-1) / flops_per_param_token)
        shape = compute.shape
        n_bounds = tuple(b.reshape(shape) for b in _percentiles(n_draws, level))
        d_bounds = tuple(b.reshape(shape) for b in _percentiles(d_draws, level))
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


def _allocation(law: str, theta: np.ndarray, tokens_times_params: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    a, b = theta[..., 1], theta[..., 2]
    alpha, beta = _exponents(law, theta)
    log_g = (np.log(alpha / beta) + a - b) / (alpha + beta)
    log_c = np.log(tokens_times_params)
    log_n = log_g + beta / (alpha + beta) * log_c
    return np.exp(log_n), np.exp(log_c - log_n)


# -------------------------------------------------------------------------------------- isoflop


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
    compute, size, loss = (_check_positive(name, v) for name, v in (("x", compute), ("N", size), ("y", loss)))
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


def fit_isoflop(compute, size, loss, *, window: int | None = 2, budget_rtol: float = 0.05, weighted: bool = True,
                loss_noise: float | None = None, level: float = 0.95) -> Fit:
    """Approach 2: optimal size per budget (`isoflop_optima`), then N*(C) = coefficient * C^exponent by least
    squares in log space, weighted by each optimum's own uncertainty (`weighted=False`: ordinary least squares,
    as Hoffmann et al. and Porian et al.'s "basic" fit)."""
    optima = isoflop_optima(compute, size, loss, window=window, budget_rtol=budget_rtol, loss_noise=loss_noise)
    skipped = tuple(f"budget {budget:.4g}: {reason}" for budget, reason in optima.skipped.items())
    if len(optima.budgets) < min_points("isoflop"):
        raise ConfigError(f"the isoflop law needs at least {min_points('isoflop')} budgets with an optimum, got "
                          f"{len(optima.budgets)}" + (f" (skipped {'; '.join(skipped)})" if skipped else ""))
    return _wls_power("isoflop", optima.budgets, optima.optima, level=level,
                      frontier=np.ones(len(optima.budgets), dtype=bool), skipped=skipped,
                      log_sd=optima.log_sd if weighted else None)


# ------------------------------------------------------------------------------------ one entry


_MULTI = {"joint": fit_joint, "tied": fit_tied, "kaplan": fit_kaplan}


def fit(law: str, x, y, **options) -> Fit:
    """Fit `law` to x (compute; (N, D) columns for joint, tied and kaplan; (N, D, U) for data-constrained;
    (compute, size) columns for isoflop) and y."""
    if law not in LAWS:
        raise ConfigError(f"unknown law {law!r}; choose from {', '.join(LAWS)}", field="law")
    if law in VARIABLES:
        x = _check_positive("x", x, columns=len(VARIABLES[law]))
        if law == "isoflop":
            return fit_isoflop(x[:, 0], x[:, 1], y, **options)
        if law == "data-constrained":
            return fit_data_constrained(x[:, 0], x[:, 1], x[:, 2], y, **options)
        return _MULTI[law](x[:, 0], x[:, 1], y, **options)
    single = {"power": fit_power, "pareto-power": fit_pareto_power, "saturating": fit_saturating,
              "bnsl": fit_bnsl}[law]
    if law in ("power", "pareto-power"):
        options.pop("checks", None)
        options.pop("n_bootstrap", None)
    return single(x, y, **options)


def held_out_check(law: str, x, y, *, n_test: int | None = None, test_fraction: float = 0.25,
                   level: float = 0.95, **options) -> HeldOutCheck:
    """Fit on the smaller runs, predict the larger ones, and say how far off the extrapolation was.

    "Larger" is compute (N * D for the laws of (N, D)). The `n_test` largest runs (default: `test_fraction` of
    them) are held out; for ``isoflop`` whole budgets are held out and scored on their parabola optima, for
    ``pareto-power`` on the held-out runs that are on the compute-error frontier.
    """
    log_sd = None
    if law == "isoflop":
        runs = _check_positive("x", x, columns=2)
        weighted = options.pop("weighted", True)
        optima = isoflop_optima(runs[:, 0], runs[:, 1], y, **options)
        x, y, log_sd = optima.budgets, optima.optima, optima.log_sd if weighted else None

        def refit(keep):
            return _wls_power("isoflop", x[keep], y[keep], level=level, frontier=np.ones(keep.sum(), dtype=bool),
                              log_sd=None if log_sd is None else log_sd[keep])
    else:

        def refit(keep):
            return fit(law, x[keep], y[keep], level=level, **options)

    x, y = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    size = _size(law, x)
    n_test = n_test if n_test is not None else max(1, int(round(test_fraction * len(y))))
    if not 0 < n_test < len(y):
        raise ConfigError(f"cannot hold out {n_test} of {len(y)} runs", field="n_test")
    test = np.zeros(len(y), dtype=bool)
    test[np.argsort(size, kind="stable")[-n_test:]] = True
    train_fit = refit(~test)
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


def _needed_columns(law: str, d: str | None) -> tuple[str, ...]:
    data = "d" if d is not None else "x"
    if law in ("joint", "tied", "kaplan"):
        return ("n", data, "y")
    if law == "data-constrained":
        return ("n", data, "u", "y")
    if law == "isoflop":
        return ("x", "n", "y")
    return ("x", "y")


def arrays_from_frame(frame: pd.DataFrame, law: str, *, y: str, x: str | None = None, n: str | None = None,
                      d: str | None = None, u: str | None = None, flops_per_param_token: float = 6.0,
                      source: str | None = None) -> tuple[np.ndarray, np.ndarray]:
    """The (x, y) that `fit(law, x, y)` takes, from named columns; rows with a missing value are dropped.

    joint, tied and kaplan take `n` and `d`, or `n` and compute `x` with D = C / (k N); data-constrained also
    takes unique data `u`; isoflop takes compute `x` and size `n`; the other laws take `x`.
    """
    if law not in LAWS:
        raise ConfigError(f"unknown law {law!r}; choose from {', '.join(LAWS)}", field="law")
    specs = {"x": x, "y": y, "n": n, "d": d, "u": u}
    needed = _needed_columns(law, d)
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
    if law in ("joint", "tied", "kaplan", "data-constrained"):
        data = get["d"] if "d" in get else get["x"] / (flops_per_param_token * get["n"])
        extra = [get["u"]] if law == "data-constrained" else []
        return np.column_stack([get["n"], data, *extra]), get["y"]
    if law == "isoflop":
        return np.column_stack([get["x"], get["n"]]), get["y"]
    return get["x"], get["y"]


def fit_frame(frame: pd.DataFrame, law: str, *, y: str, x: str | None = None, n: str | None = None,
              d: str | None = None, u: str | None = None, flops_per_param_token: float = 6.0,
              source: str | None = None, **options) -> Fit:
    """`fit` on named columns of a DataFrame (a CSV, or a study's results)."""
    xs, ys = arrays_from_frame(frame, law, y=y, x=x, n=n, d=d, u=u, flops_per_param_token=flops_per_param_token,
                               source=source)
    return fit(law, xs, ys, **options)


__all__ = [
    "CHINCHILLA_GRID",
    "DECAY_RANGE",
    "EXPONENT_RANGE",
    "LAWS",
    "VARIABLES",
    "Allocation",
    "Fit",
    "HeldOutCheck",
    "Interval",
    "IsoflopOptima",
    "LackOfFit",
    "arrays_from_frame",
    "column",
    "compute_optimal",
    "compute_optimal_exponent",
    "fit",
    "fit_bnsl",
    "fit_data_constrained",
    "fit_frame",
    "fit_isoflop",
    "fit_joint",
    "fit_kaplan",
    "fit_pareto_power",
    "fit_power",
    "fit_saturating",
    "fit_tied",
    "held_out_check",
    "isoflop_optima",
    "min_points",
    "pareto_bins",
]
