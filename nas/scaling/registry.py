"""What a scaling law declares (`Law`) and the registry of laws (`LAWS`), filled by `@register` where each law's
class is defined (nas/scaling/laws.py). `fit`, `min_points`, the checks, the frame adapters and `vitamin-nas fit
--law` all read the registry, so a new law is one registered class."""

from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import dataclass
from typing import ClassVar

import numpy as np

from nas.errors import ConfigError

#: Where a fitted power-law exponent may lie (joint, tied, kaplan, data-constrained, saturating, BNSL's first
#: segment). Published exponents lie well inside; an estimate on a bound is reported as not identified.
EXPONENT_RANGE = (0.01, 3.0)
#: Residual degrees of freedom each fitted parameter needs for a bootstrap (`Law.min_points`).
BOOTSTRAP_DOF_PER_PARAM = 3


#: A log-coefficient that removes its term (e^-60 ~ 1e-26): what `Term.drop` sets a coefficient to.
DROPPED = -60.0


@dataclass(frozen=True)
class Term:
    """An additive part of a law: `drop` sets the theta entries that remove it (a log-coefficient to `DROPPED`,
    a change of exponent to 0); `uses` are the entries that mean nothing without it (a coefficient and its
    exponent)."""

    name: str
    uses: tuple[int, ...]
    drop: tuple[tuple[int, float], ...]


class Law:
    """A scaling law in the parametrisation it is fitted in.

    `params` are the reported parameters; `log` says which theta entries are logs of them (the positive
    coefficients), `bounds` bounds theta, `terms` are the additive parts the identification check drops one at a
    time, `exponents` the bounded entries whose bootstrap draws on a bound are counted (`decays`: of those, decay
    constants, which on a bound leave their term's coefficient and exponent identified). `criterion` is what the
    fit minimises: "squares" of log residuals, or Besiroglu et al.'s "huber". `richer` is the law a lack-of-fit
    check compares this one with by BIC, and from how many starts it is refined; `variables` are the columns of
    the x that `fit` takes. Subclasses give `log_predict` and `fit` (nas/scaling/laws.py).
    """

    name: ClassVar[str]
    help: ClassVar[str]  # one line for `vitamin-nas fit --law`
    variables: ClassVar[tuple[str, ...]] = ("C",)
    params: tuple[str, ...]
    log: tuple[bool, ...]
    bounds: tuple[tuple[float, float], ...]
    terms: tuple[Term, ...] = ()
    criterion: ClassVar[str] = "squares"
    exponents: tuple[int, ...] = ()
    decays: ClassVar[tuple[int, ...]] = ()
    richer: ClassVar[tuple[str, int] | None] = None
    iterated: ClassVar[bool] = False  # fitted by iteration: may be bootstrapped, may hold parameters fixed
    allocates: ClassVar[bool] = False  # a compute-optimal allocation N*(C), D*(C) follows from a fit
    points: ClassVar[str] = "points"  # what `min_points` counts

    def __repr__(self) -> str:
        return f"<{self.name} law>"

    @property
    def x_columns(self) -> int:
        """Columns of a fit's x and of what `Fit.predict` takes: one per variable."""
        return len(self.variables)

    def log_predict(self, theta: np.ndarray, log_x: np.ndarray) -> np.ndarray:
        """log y at log x, broadcasting over rows of theta."""
        raise NotImplementedError

    def value_jac(self, theta: np.ndarray, log_x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """log y and d log y / d theta at each point, (n,) and (n, p): central differences here (one vectorised
        call: every law broadcasts over rows of theta); a law with an analytic Jacobian overrides it."""
        step = 1e-6 * np.maximum(1.0, np.abs(theta))
        shifts = np.diag(step)
        values = self.log_predict(np.concatenate([theta[None], theta + shifts, theta - shifts]), log_x)
        p = len(theta)
        return values[0], ((values[1 : p + 1] - values[p + 1 :]) / (2 * step[:, None])).T

    def fit(self, x, y, **options):
        """Fit the law to x (one column per variable) and y: a `Fit` (nas/scaling/fitting.py)."""
        raise NotImplementedError

    def min_points(self, n_params: int | None = None, *, bootstrap: bool = False) -> int:
        """The fewest points the law is fitted on.

        A nonlinear law's Wald intervals need two residual degrees of freedom (p + 2; with one, the t quantile of
        12.7 makes any interval useless), and a bootstrap `BOOTSTRAP_DOF_PER_PARAM` per fitted parameter ((1 + 3)
        p): a resample holds about 63 % distinct runs, and with fewer the refits overfit and the intervals cover
        far less than they claim (benchmarks/scaling_coverage.py measures it). Least-squares lines need one.
        """
        p = n_params if n_params is not None else len(self.params)
        return (1 + BOOTSTRAP_DOF_PER_PARAM) * p if bootstrap else p + 2

    def with_bounds(self, bounds) -> Law:
        """The same law with other bounds (a floor or a break location bounded by the data)."""
        law = copy.copy(self)
        law.bounds = tuple(bounds)
        return law

    def natural(self, theta: np.ndarray) -> np.ndarray:
        """Theta in the law's usual parametrisation."""
        with np.errstate(over="ignore"):  # an interval's end past 1e308 is infinite, which is what it means
            return np.where(self.log, np.exp(theta), theta)

    def admissible(self, index: int, y: np.ndarray) -> tuple[float, float]:
        """What a parameter the data do not identify may be: a floor anywhere below the smallest value measured,
        a coefficient anything positive, an exponent anything in its declared range."""
        name = self.params[index]
        if index == 0 and name in ("E", "E_inf"):
            return 0.0, float(y.min())
        low, high = self.bounds[index]
        if self.log[index]:
            return float(np.exp(low)), float(np.exp(high))
        return float(low), float(high)

    def flatten(self, x) -> tuple[np.ndarray, tuple[int, ...]]:
        """x as (n, columns) rows (or a flat vector for one column), and the shape to give predictions."""
        x = np.asarray(x, dtype=float)
        if self.x_columns > 1:
            return x.reshape(-1, self.x_columns), x.shape[:-1]
        return x.reshape(-1), x.shape

    def size(self, x: np.ndarray) -> np.ndarray:
        """What "larger run" means: compute, or N * D (proportional to compute) for the laws of (N, D)."""
        return x[..., 0] * x[..., 1] if self.x_columns > 1 else x

    def described(self, fit) -> str:
        """What the fit was fitted on, for its summary."""
        return f"{len(fit.y)} runs"

    def notes(self, fit) -> list[str]:
        """Lines a fit's summary adds after its table."""
        return []

    def held_out(self, x: np.ndarray, y: np.ndarray, *, level: float, **options) -> tuple[np.ndarray, np.ndarray,
                                                                                         Callable]:
        """The points a held-out check holds out from, and how to refit on a subset of them (a boolean mask)."""
        return x, y, lambda keep: self.fit(x[keep], y[keep], level=level, **options)

    def scored(self, test: np.ndarray, size: np.ndarray, y: np.ndarray) -> np.ndarray:
        """Which held-out points a held-out check scores."""
        return test


#: Every law by name, in the order they are defined.
LAWS: dict[str, Law] = {}


def register(cls: type[Law]) -> type[Law]:
    """Class decorator: the law under its `name` in `LAWS`."""
    LAWS[cls.name] = cls()
    return cls


def get_law(name: str) -> Law:
    try:
        return LAWS[name]
    except KeyError:
        raise ConfigError(f"unknown law {name!r}; choose from {', '.join(LAWS)}", field="law") from None
