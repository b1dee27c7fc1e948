"""Every scaling law, one registered class each: its variables, its form (in log space), its bounds, its additive
terms, its starts, its minimum number of points, its richer law for the lack-of-fit check, and how it is fitted.
`fit(law, x, y)` fits one by name. docs/scaling_laws.md says what each assumes and which published fits they
reproduce.

Least-squares lines (`LineLaw`: power, pareto-power, isoflop) have exact t intervals; the other laws
(`NonlinearLaw`) are fitted by iteration from many starts, with Wald or bootstrap intervals, and checked for what
the data do not identify.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Mapping
from typing import ClassVar

import numpy as np
from scipy import special

from nas.errors import ConfigError
from nas.scaling.allocation import exponent_line, isoflop_optima
from nas.scaling.checks import identification, with_checks
from nas.scaling.fitting import (
    Fit,
    best,
    bootstrap,
    check_points,
    check_positive,
    cost_frontier,
    draws_at_bound,
    fixed_template,
    least_squares_line,
    make_fit,
    objectives,
    one_blas_thread,
    prepare_starts,
    refit,
)
from nas.scaling.registry import DROPPED, EXPONENT_RANGE, Law, Term, get_law, register
from nas.scaling.starts import (
    CHINCHILLA_GRID,
    PROFILE_STEP,
    data_constrained_starts,
    joint_profile,
    kaplan_starts,
    saturating_profile,
    saturating_starts,
    tied_grid,
)

#: Muennighoff et al.'s decay constants R_D*, R_N* (epochs, excess-parameter multiples) are searched here.
DECAY_RANGE = (0.01, 1000.0)
#: BNSL's change of exponent at a break, and the sharpness of a break.
BREAK_EXPONENT_RANGE = (-10.0, 10.0)
BREAK_SHARPNESS_RANGE = (1e-3, 10.0)
#: The smallest floor a law is fitted with, as a share of the smallest value measured.
FLOOR_SHARE = 1e-6

_UNBOUNDED = (-np.inf, np.inf)
_EXP = EXPONENT_RANGE
_LOG_DECAY = (math.log(DECAY_RANGE[0]), math.log(DECAY_RANGE[1]))
_FLOOR = Term("floor", (0,), ((0, DROPPED),))


# ------------------------------------------------------------------------------------------ lines


class LineLaw(Law):
    """log y = log beta + alpha log x, by (weighted) least squares: exact t intervals from one residual degree
    of freedom, so p + 1 points."""

    params = ("beta", "alpha")
    log = (True, False)
    bounds = (_UNBOUNDED, _UNBOUNDED)

    def log_predict(self, theta: np.ndarray, log_x: np.ndarray) -> np.ndarray:
        return theta[..., 0:1] + theta[..., 1:2] * log_x

    def min_points(self, n_params: int | None = None, *, bootstrap: bool = False) -> int:
        return (n_params if n_params is not None else len(self.params)) + 1

    def fit_line(self, x, y, *, level: float, frontier: np.ndarray, fit_x=None, fit_y=None,
                 log_sd: np.ndarray | None = None, skipped: tuple[str, ...] = ()) -> Fit:
        """`least_squares_line` and its lack-of-fit check."""
        result, resid = least_squares_line(self, x, y, level=level, frontier=frontier, fit_x=fit_x, fit_y=fit_y,
                                           log_sd=log_sd, skipped=skipped)
        return with_checks(result, x if fit_x is None else fit_x, y if fit_y is None else fit_y, resid)


@register
class Power(LineLaw):
    """E = beta * C^alpha, ordinary least squares in log space."""

    name = "power"
    help = "E = beta C^alpha (least squares in log space)"
    richer = ("saturating", 6)

    def fit(self, x, y, *, level: float = 0.95) -> Fit:
        compute, error = check_positive("x", x), check_positive("y", y)
        return self.fit_line(compute, error, level=level, frontier=cost_frontier(compute, error))


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


@register
class ParetoPower(LineLaw):
    """E = beta * C^alpha through an approximate Pareto frontier (Cherti et al. 2023), as they fitted it: log10
    compute is cut into equal-width bins (`pareto_bins`), the lowest error in each bin is kept at the bin centre,
    then OLS. A held-out check scores the held-out runs on the compute-error frontier."""

    name = "pareto-power"
    help = "the same through Cherti et al.'s binned frontier"

    def fit(self, x, y, *, bins: int = 5, pad: float = 0.1, level: float = 0.95) -> Fit:
        compute, error = check_positive("x", x), check_positive("y", y)
        centres, minima, best = pareto_bins(compute, error, bins=bins, pad=pad)
        frontier = np.zeros(len(compute), dtype=bool)
        frontier[best] = True
        return self.fit_line(compute, error, level=level, frontier=frontier, fit_x=centres, fit_y=minima)

    def described(self, fit: Fit) -> str:
        return f"{len(fit.y)} runs in {fit.frontier.sum()} frontier bins"

    def scored(self, test: np.ndarray, size: np.ndarray, y: np.ndarray) -> np.ndarray:
        return test & cost_frontier(size, y)


# ------------------------------------------------------------------------------------ iterated laws


class NonlinearLaw(Law):
    """A law fitted by iteration: least squares on log y (or Huber), refined from the best of many starts
    (`starts`, plus a variable projection where the law has one: `profile`), with Wald or bootstrap intervals,
    then checked for what the data do not identify and for lack of fit."""

    iterated = True
    profile: ClassVar[Callable[[np.ndarray, np.ndarray, np.ndarray], np.ndarray] | None] = None

    def inputs(self, x, y) -> tuple[np.ndarray, np.ndarray]:
        """x (one column per variable) and y, checked: finite, positive, one value per run."""
        if self.x_columns == 1:
            return check_positive("x", x), check_positive("y", y)
        x = np.ascontiguousarray(check_positive("x", x, columns=self.x_columns))
        y = check_positive("y", y)
        if len(x) != len(y):
            raise ConfigError(f"{', '.join(self.variables)} and y must have one value per run")
        return x, y

    @one_blas_thread
    def fit_from(self, x: np.ndarray, y: np.ndarray, grid: np.ndarray, *, n_bootstrap: int = 0, seed: int = 0,
                 level: float = 0.95, fixed: Mapping[str, float] | None = None, delta: float = 1e-3,
                 starts: int | None = 16, checks: bool = True) -> Fit:
        """Fit from the `starts` best rows of `grid` (None: all), plus the profile's starts.

        The bootstrap resamples runs and refits each resample from the full-data optimum and from a fresh start
        (the profile's best under the resample's weights, else the best of a fresh sample of the grid), so that a
        resample can leave the full data's basin.
        """
        form, profile = self, self.profile
        template, free = fixed_template(form, fixed)
        if form.params[0] in ("E", "E_inf"):  # a floor below a millionth of every value is zero for every purpose
            form = form.with_bounds(((math.log(FLOOR_SHARE * y.min()), np.inf), *form.bounds[1:]))
        check_points(form, len(y), form.min_points(len(free), bootstrap=n_bootstrap > 0), bootstrap=n_bootstrap > 0)
        log_x, log_y, ones = np.log(x), np.log(y), np.ones(len(y))
        grid = prepare_starts(form, grid, template, free)
        order = np.argsort(objectives(form, grid, log_x, log_y, ones, delta), kind="stable")
        chosen = grid[order if starts is None else order[:starts]]
        if profile is not None:
            chosen = np.vstack([chosen, prepare_starts(form, profile(x, y, ones), template, free)])
        theta, value = best(form, chosen, free, log_x, log_y, ones, delta)
        log_resid = log_y - form.log_predict(theta, log_x)
        dof = len(y) - len(free)
        draws = None
        if n_bootstrap:
            rng = np.random.default_rng(seed + 1)

            def redraw(weights: np.ndarray) -> np.ndarray:
                """From the full data's optimum and from a fresh start (the resample's own best exponents, else
                the best of a fresh sample of the grid), each loosely, then the better one polished to the last
                digit. A fresh start within 1.5 profile steps of where the warm refit went is the same basin:
                skipped."""
                warm = refit(form, theta, free, log_x, log_y, weights, delta, tight=False)
                if profile is not None:
                    start = prepare_starts(form, profile(x, y, weights), template, free)[0]
                    exps = list(form.exponents)
                    same_basin = np.all(np.abs(start[exps] - warm[0][exps]) <= 1.5 * PROFILE_STEP)
                else:
                    sample = grid[rng.choice(len(grid), size=min(64, len(grid)), replace=False)]
                    start = sample[np.argmin(objectives(form, sample, log_x, log_y, weights, delta))]
                    same_basin = False
                better = warm if same_basin else min(warm, refit(form, start, free, log_x, log_y, weights, delta,
                                                                   tight=False), key=lambda pair: pair[1])
                return refit(form, better[0], free, log_x, log_y, weights, delta)[0]

            draws = bootstrap(redraw, len(y), n_bootstrap, seed)
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
            not_identified, warnings = identification(form, theta, value, free, x, y, grid[order[:3]], delta, level)
        at_bound = {name: count for name, count in draws_at_bound(form, draws, free).items()
                    if name not in not_identified}
        for name, count in at_bound.items():
            low, high = form.admissible(form.params.index(name), y)
            warnings.append(f"{name}: {count} of {len(draws)} bootstrap refits ended on a bound of its declared "
                            f"range [{low:g}, {high:g}]" + (" (so does its interval)"
                                                            if count > (1 - level) / 2 * len(draws) else ""))
        result = make_fit(form, theta, x, y, frontier=cost_frontier(form.size(x), y),
                          cov=None if draws is not None else cov, draws=draws, resid_sd=resid_sd,
                          dof=None if draws is not None or form.criterion == "huber" else dof, level=level,
                          huber=value if form.criterion == "huber" else None,
                          fixed=tuple(name for name in form.params if name in (fixed or {})),
                          not_identified=not_identified, warnings=warnings, draws_at_bound=at_bound)
        if checks:
            result = with_checks(result, x, y, log_resid)
        return result


@register
class Saturating(NonlinearLaw):
    """E = E_inf + A * C^(-alpha) (Zhai et al. 2022), least squares on log E."""

    name = "saturating"
    help = "E = E_inf + A C^-alpha"
    params = ("E_inf", "A", "alpha")
    log = (True, True, False)
    bounds = (_UNBOUNDED, _UNBOUNDED, _EXP)
    terms = (_FLOOR, Term("power term", (1, 2), ((1, DROPPED),)))
    exponents = (2,)
    richer = ("bnsl", 6)
    profile = staticmethod(saturating_profile)

    def log_predict(self, theta: np.ndarray, log_x: np.ndarray) -> np.ndarray:
        return np.logaddexp(theta[..., 1:2] - theta[..., 2:3] * log_x, theta[..., 0:1])

    def value_jac(self, theta: np.ndarray, log_x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        power_share = special.expit(theta[1] - theta[2] * log_x - theta[0])  # d log E / d log(A C^-alpha)
        return self.log_predict(theta, log_x), np.column_stack([1.0 - power_share, power_share,
                                                                 -power_share * log_x])

    def fit(self, x, y, *, n_bootstrap: int = 0, seed: int = 0, level: float = 0.95,
            fixed: Mapping[str, float] | None = None, starts: int | None = 10, checks: bool = True) -> Fit:
        """Trust-region least squares refines the `starts` best of 30 starts (None: all of them), and the
        variable projection's. Uncertainty is the Wald (Jacobian) covariance, or a bootstrap over runs when
        `n_bootstrap` > 0. When the fit is as good without the floor (the data follow a plain power law over
        their range), the floor is not identified: its standard error is NaN and its interval [0, the smallest
        error measured]."""
        compute, error = self.inputs(x, y)
        return self.fit_from(compute, error, saturating_starts(compute, error), starts=starts, n_bootstrap=n_bootstrap,
                             seed=seed, level=level, fixed=fixed, checks=checks)


@register
class Bnsl(NonlinearLaw):
    """A broken neural scaling law (Caballero et al. 2023) with `breaks` breaks, least squares on log y:

    y = E + b x^-c0 prod_i (1 + (x / d_i)^(1 / f_i))^(-c_i f_i)

    Each break bends the power law at d_i by c_i (sharply for a small f_i). Its parameters are (E, b, c0,
    c_1..c_k, d_1..d_k, f_1..f_k); E is its floor ("a" in the paper).
    """

    name = "bnsl"
    help = "a broken neural scaling law (Caballero et al.) with --breaks breaks"

    def __init__(self, breaks: int = 1):
        if breaks < 1:
            raise ConfigError(f"a broken neural scaling law has at least one break, got {breaks}", field="breaks")
        self.breaks = breaks
        idx = range(1, breaks + 1)
        self.params = ("E", "b", "c0", *(f"c{i}" for i in idx), *(f"d{i}" for i in idx), *(f"f{i}" for i in idx))
        self.log = (True, True, False) + (False,) * breaks + (True,) * 2 * breaks
        sharp = (math.log(BREAK_SHARPNESS_RANGE[0]), math.log(BREAK_SHARPNESS_RANGE[1]))
        self.bounds = (_UNBOUNDED, _UNBOUNDED, (0.0, EXPONENT_RANGE[1])) + (BREAK_EXPONENT_RANGE,) * breaks \
            + (_UNBOUNDED,) * breaks + (sharp,) * breaks
        self.terms = (_FLOOR, *(Term(f"break {i}", (2 + i, 2 + breaks + i, 2 + 2 * breaks + i), ((2 + i, 0.0),))
                                for i in idx))
        self.exponents = (2, *(2 + i for i in idx))

    def log_predict(self, theta: np.ndarray, log_x: np.ndarray) -> np.ndarray:
        """log E = LSE(e, b - c0 log x - sum_i c_i f_i softplus((log x - log d_i) / f_i)) (Caballero et al. eq. 1)."""
        k = (theta.shape[-1] - 3) // 3
        power = theta[..., 1:2] - theta[..., 2:3] * log_x
        for i in range(k):
            change, log_d, log_f = (theta[..., j : j + 1] for j in (3 + i, 3 + k + i, 3 + 2 * k + i))
            sharpness = np.exp(log_f)
            power = power - change * sharpness * np.logaddexp(0.0, (log_x - log_d) / sharpness)
        return np.logaddexp(power, theta[..., 0:1])

    def value_jac(self, theta: np.ndarray, log_x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """log y and its Jacobian: the power part's share s of y carries every derivative but the floor's."""
        k = (theta.shape[-1] - 3) // 3
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

    def starts(self, x: np.ndarray, y: np.ndarray) -> np.ndarray:
        """Floors below the smallest value, a first exponent, and per break an exponent change, a location
        inside the data and a sharpness; b by least squares given the rest."""
        log_x = np.log(x)
        locations = np.quantile(log_x, [0.2, 0.4, 0.6, 0.8])
        per_break = list(itertools.product((-1.0, 0.5, 2.0, 6.0), locations, np.log([0.03, 0.1, 0.3, 1.0])))
        rows = []
        for share, c0 in itertools.product((1e-3, 0.5, 0.9), (0.0, 0.1, 0.4)):
            for combo in itertools.product(per_break, repeat=self.breaks):
                changes, log_d, log_f = (np.array(v) for v in zip(*combo))
                rows.append(np.concatenate([[math.log(share * y.min()), 0.0, c0], changes, log_d, log_f]))
        starts = np.array(rows)
        if len(starts) > 4000:
            starts = starts[np.random.default_rng(0).choice(len(starts), 4000, replace=False)]
        shape = self.log_predict(np.column_stack([np.full(len(starts), -np.inf), starts[:, 1:]]), np.log(x))  # b = 1
        floor = np.exp(starts[:, :1])
        starts[:, 1] = np.mean(np.log(y - floor) - shape, axis=1)
        return starts

    def fit(self, x, y, *, breaks: int = 1, n_bootstrap: int = 0, seed: int = 0, level: float = 0.95,
            fixed: Mapping[str, float] | None = None, starts: int | None = 24, checks: bool = True) -> Fit:
        """Wald intervals by default; a bootstrap needs (1 + 3) points per parameter (24 for one break)."""
        x, y = self.inputs(x, y)
        law = Bnsl(breaks)
        near = (math.log(x.min() / 100), math.log(x.max() * 100))  # a break far outside the data is not seen in them
        law = law.with_bounds(law.bounds[: 3 + breaks] + (near,) * breaks + law.bounds[3 + 2 * breaks :])
        return law.fit_from(x, y, law.starts(x, y), starts=starts, n_bootstrap=n_bootstrap, seed=seed, level=level,
                            fixed=fixed, checks=checks)


# ---------------------------------------------------------------------------- laws of (N, D)


def _joint_terms(model_uses: tuple[int, ...], data_uses: tuple[int, ...]) -> tuple[Term, ...]:
    return (_FLOOR, Term("model-size term", model_uses, ((1, DROPPED),)),
            Term("data term", data_uses, ((2, DROPPED),)))


@register
class Joint(NonlinearLaw):
    """L(N, D) = E + A / N^alpha + B / D^beta, fitted as Besiroglu et al. (2024) redo Hoffmann et al.'s approach
    3: Huber loss (delta 1e-3) of log-space residuals, L-BFGS-B from a grid of starts, bootstrap."""

    name = "joint"
    help = "L = E + A/N^alpha + B/D^beta (Besiroglu et al.)"
    variables = ("N", "D")
    params = ("E", "A", "B", "alpha", "beta")
    log = (True, True, True, False, False)
    bounds = (_UNBOUNDED,) * 3 + (_EXP, _EXP)
    terms = _joint_terms((1, 3), (2, 4))
    criterion = "huber"
    exponents = (3, 4)
    richer = ("kaplan", 8)
    allocates = True
    tied: ClassVar[bool] = False
    profile = staticmethod(joint_profile(tied=False))

    def _terms(self, theta: np.ndarray, log_x: np.ndarray) -> tuple[np.ndarray, ...]:
        e, a, b, alpha = (theta[..., i : i + 1] for i in range(4))
        beta = alpha if self.tied else theta[..., 4:5]
        model, data = a - alpha * log_x[..., 0], b - beta * log_x[..., 1]
        return model, data, np.broadcast_to(e, model.shape)

    def log_predict(self, theta: np.ndarray, log_x: np.ndarray) -> np.ndarray:
        """log L = LSE(a - alpha log N, b - beta log D, e): the form Besiroglu et al. fit, stable for any theta."""
        model, data, floor = self._terms(theta, log_x)
        return np.logaddexp(np.logaddexp(model, data), floor)

    def value_jac(self, theta: np.ndarray, log_x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """log L and its Jacobian in one pass (each term's share of L is its derivative): the fit's inner loop."""
        e, a, b, alpha = (float(v) for v in theta[:4])
        beta = alpha if self.tied else float(theta[4])
        log_n, log_d = log_x[:, 0], log_x[:, 1]
        model, data = a - alpha * log_n, b - beta * log_d
        top = np.maximum(np.maximum(model, data), e)
        model, data, floor = np.exp(model - top), np.exp(data - top), np.exp(e - top)
        total = model + data + floor
        model /= total
        data /= total
        floor /= total
        jac = np.empty((len(top), 4 if self.tied else 5))
        jac[:, 0], jac[:, 1], jac[:, 2] = floor, model, data
        if self.tied:
            jac[:, 3] = -model * log_n - data * log_d
        else:
            jac[:, 3], jac[:, 4] = -model * log_n, -data * log_d
        return top + np.log(total), jac

    def notes(self, fit: Fit) -> list[str]:
        return [exponent_line(fit)]

    def fit(self, x, y, *, delta: float = 1e-3, grid: np.ndarray = CHINCHILLA_GRID, starts: int | None = 32,
            n_bootstrap: int = 400, seed: int = 0, level: float = 0.95, fixed: Mapping[str, float] | None = None,
            checks: bool = True) -> Fit:
        """The objective is evaluated at every point of `grid` (rows of (e, a, b, alpha, beta)) and L-BFGS-B runs
        from the `starts` best of them (None: from all, as in the paper; on published data every one of the best
        few hundred starts reaches the same optimum) and from the best pair of exponents of a variable
        projection (`joint_profile`). Exponents stay in `EXPONENT_RANGE`. The bootstrap resamples runs and
        refits each from the optimum and from the resample's own profile start; `n_bootstrap=0` skips it, and
        the parameters then carry no uncertainty (NaN, printed "not estimated")."""
        x, loss = self.inputs(x, y)
        return self.fit_from(x, loss, grid, n_bootstrap=n_bootstrap, seed=seed, level=level, fixed=fixed,
                             delta=delta, starts=starts, checks=checks)


@register
class Tied(Joint):
    """L(N, D) = E + A / N^alpha + B / D^alpha: the joint law with one exponent (Muennighoff et al. 2023, Gadre et
    al. 2024), fitted like the joint law. Its compute-optimal exponents are 1/2 by construction."""

    name = "tied"
    help = "the same with alpha = beta"
    params = ("E", "A", "B", "alpha")
    log = (True, True, True, False)
    bounds = (_UNBOUNDED,) * 3 + (_EXP,)
    terms = _joint_terms((1, 3), (2, 3))
    exponents = (3,)
    richer = ("joint", 8)
    tied = True
    profile = staticmethod(joint_profile(tied=True))

    def fit(self, x, y, *, delta: float = 1e-3, starts: int | None = 32, n_bootstrap: int = 400, seed: int = 0,
            level: float = 0.95, fixed: Mapping[str, float] | None = None, checks: bool = True) -> Fit:
        x, loss = self.inputs(x, y)
        return self.fit_from(x, loss, tied_grid(), n_bootstrap=n_bootstrap, seed=seed, level=level, fixed=fixed,
                             delta=delta, starts=starts, checks=checks)


@register
class Kaplan(NonlinearLaw):
    """L(N, D) = E + ((N_c / N)^(alpha_N / alpha_D) + D_c / D)^alpha_D (Kaplan et al. 2020, eq. 1.5, plus a
    floor E): model size and data interact (more data helps a large model more than a small one). Fitted like
    the joint law (Huber on log residuals, L-BFGS-B from a grid, bootstrap)."""

    name = "kaplan"
    help = "L = E + ((N_c/N)^(alpha_N/alpha_D) + D_c/D)^alpha_D, whose N and D terms interact"
    variables = ("N", "D")
    params = ("E", "N_c", "D_c", "alpha_N", "alpha_D")
    log = (True, True, True, False, False)
    bounds = (_UNBOUNDED,) * 3 + (_EXP, _EXP)
    terms = _joint_terms((1, 3), (2,))
    criterion = "huber"
    exponents = (3, 4)
    richer = ("joint", 8)

    def log_predict(self, theta: np.ndarray, log_x: np.ndarray) -> np.ndarray:
        """log L = LSE(e, alpha_D * LSE((alpha_N / alpha_D) (log N_c - log N), log D_c - log D))."""
        e, log_nc, log_dc, alpha_n, alpha_d = (theta[..., i : i + 1] for i in range(5))
        inner = np.logaddexp(alpha_n / alpha_d * (log_nc - log_x[..., 0]), log_dc - log_x[..., 1])
        return np.logaddexp(alpha_d * inner, e)

    def fit(self, x, y, *, delta: float = 1e-3, starts: int | None = 32, n_bootstrap: int = 400, seed: int = 0,
            level: float = 0.95, fixed: Mapping[str, float] | None = None, checks: bool = True) -> Fit:
        x, loss = self.inputs(x, y)
        return self.fit_from(x, loss, kaplan_starts(x, loss), n_bootstrap=n_bootstrap, seed=seed, level=level,
                             fixed=fixed, delta=delta, starts=starts, checks=checks)


@register
class DataConstrained(NonlinearLaw):
    """Muennighoff et al.'s (2023) law L(N, D, U) of runs that repeat U unique tokens D / U times: the joint law at
    an effective data D' and size N' that saturate at R_D* epochs and R_N* excess parameter multiples
    (`log_predict`). Fitted as they did (Huber on log residuals, L-BFGS).

    They first fit the joint law (tied exponents) on Chinchilla-style runs and hold it fixed while fitting R_D*
    and R_N*: pass those values as `fixed` (E, A, B, alpha, beta) to do the same; without them all seven
    parameters are fitted, and the identification check says which the runs pin down.
    """

    name = "data-constrained"
    help = "Muennighoff et al.'s L(N, D, U) for repeated data (R_D*, R_N*; needs --u)"
    variables = ("N", "D", "U")
    params = ("E", "A", "B", "alpha", "beta", "R_D*", "R_N*")
    log = (True,) * 3 + (False, False, True, True)
    bounds = (_UNBOUNDED,) * 3 + (_EXP, _EXP, _LOG_DECAY, _LOG_DECAY)
    terms = _joint_terms((1, 3, 6), (2, 4, 5))
    criterion = "huber"
    exponents = (3, 4, 5, 6)
    decays = (5, 6)

    def log_predict(self, theta: np.ndarray, log_x: np.ndarray) -> np.ndarray:
        """The joint law at effective size N' and effective data D'.

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

    def fit(self, x, y, *, fixed: Mapping[str, float] | None = None, delta: float = 1e-3, starts: int | None = 16,
            n_bootstrap: int = 400, seed: int = 0, level: float = 0.95, checks: bool = True) -> Fit:
        x, loss = self.inputs(x, y)
        over = int(np.sum(x[:, 2] > x[:, 1] * (1 + 1e-9)))
        if over:
            raise ConfigError(f"{over} run(s) have more unique tokens U than tokens seen D", field="U")
        return self.fit_from(x, loss, data_constrained_starts(x, loss), n_bootstrap=n_bootstrap, seed=seed,
                             level=level, fixed=fixed, delta=delta, starts=starts, checks=checks)


# -------------------------------------------------------------------------------------- isoflop


@register
class Isoflop(LineLaw):
    """Hoffmann et al.'s approach 2: per compute budget, a local fit of log loss in log size around the best size
    tried (a cubic through 5 sizes, else a parabola through 3), its minimum (with its own uncertainty) as the
    optimal size (`isoflop_optima`), and N*(C) = coefficient * C^exponent by least squares in log space through
    the optima, weighted by each optimum's own uncertainty (`weighted=False`: ordinary least squares, as Hoffmann
    et al. and Porian et al.'s "basic" fit). x holds (compute, size) per run; the fit's x and y are the budgets
    and their optima. A held-out check holds out whole budgets."""

    name = "isoflop"
    help = ("the optimal size per compute budget from a local fit around each budget's best run, then "
            "N* = k C^a")
    variables = ("C", "N")
    x_columns = 1  # the fitted curve: N* against C
    params = ("coefficient", "exponent")
    points = "budgets with an optimum"

    def fit(self, x, y, *, window: int | None = 2, budget_rtol: float = 0.05, weighted: bool = True,
            loss_noise: float | None = None, level: float = 0.95) -> Fit:
        runs = check_positive("x", x, columns=2)
        optima = isoflop_optima(runs[:, 0], runs[:, 1], y, window=window, budget_rtol=budget_rtol,
                                loss_noise=loss_noise)
        skipped = tuple(f"budget {budget:.4g}: {reason}" for budget, reason in optima.skipped.items())
        if len(optima.budgets) < self.min_points():
            raise ConfigError(f"the isoflop law needs at least {self.min_points()} budgets with an optimum, got "
                              f"{len(optima.budgets)}" + (f" (skipped {'; '.join(skipped)})" if skipped else ""))
        return self.fit_line(optima.budgets, optima.optima, level=level,
                             frontier=np.ones(len(optima.budgets), dtype=bool), skipped=skipped,
                             log_sd=optima.log_sd if weighted else None)

    def described(self, fit: Fit) -> str:
        return f"{len(fit.y)} budget optima"

    def held_out(self, x: np.ndarray, y: np.ndarray, *, level: float, weighted: bool = True,
                 **options) -> tuple[np.ndarray, np.ndarray, Callable[[np.ndarray], Fit]]:
        runs = check_positive("x", x, columns=2)
        optima = isoflop_optima(runs[:, 0], runs[:, 1], y, **options)
        log_sd = optima.log_sd if weighted else None

        def refit_budgets(keep: np.ndarray) -> Fit:
            return self.fit_line(optima.budgets[keep], optima.optima[keep], level=level,
                                 frontier=np.ones(keep.sum(), dtype=bool),
                                 log_sd=None if log_sd is None else log_sd[keep])

        return optima.budgets, optima.optima, refit_budgets


def fit(law: str, x, y, **options) -> Fit:
    """Fit the law named `law` to x (compute; (N, D) columns for joint, tied and kaplan; (N, D, U) for
    data-constrained; (compute, size) columns for isoflop) and y; `options` are the law's (its `fit`)."""
    return get_law(law).fit(x, y, **options)
