"""Scaling laws: fit how error or loss falls with compute, model size and data, and never claim more than the
data hold.

Each law is one class registered in `LAWS` (nas/scaling/laws.py; docs/scaling_laws.md says what each assumes
and which published fits they reproduce). What keeps a fit honest:

- a minimum number of points per law (`Law.min_points`), refused below it with a ConfigError;
- exponents bounded to a declared range (`EXPONENT_RANGE`), bootstrap refits ending on a bound counted;
- every additive term tested by dropping it: a term the data cannot tell from zero (a floor far below every
  loss, a data term on runs that all share one data size) leaves its parameters "not identified", with their
  admissible range as interval (never a zero-width one), and `compute_optimal` refuses to build on them;
- bootstrap refits restart from fresh starts (a profile over the exponents for the joint, tied and saturating
  laws), not only from the full-data optimum, so a resample can leave its basin;
- a lack-of-fit check on every fit (a runs test of the residuals, where there is one a comparison with the next
  richer law, or a rival law, by BIC, and for a line in log space a test of curvature) whose warnings are on
  `Fit.warnings`; `fit_gate` says whether a fitted exponent may stand beside a published one;
- prediction intervals over every value of an unidentified parameter the data allow (`Fit.allowed`), and a
  `backtest` of every extrapolation (the law refitted without the largest runs and scored on them).

Every fit returns a `Fit`. Inputs are arrays (or a DataFrame with `arrays_from_frame`), never files.
"""

from nas.scaling.allocation import Allocation, compute_optimal, compute_optimal_exponent
from nas.scaling.checks import Backtest, FitGate, HeldOutCheck, backtest, fit_gate, held_out_check
from nas.scaling.fitting import Fit, Interval
from nas.scaling.frames import arrays_from_frame, fit_frame
from nas.scaling.laws import fit
from nas.scaling.registry import LAWS, Law, register

__all__ = [
    "LAWS",
    "Allocation",
    "Backtest",
    "Fit",
    "FitGate",
    "HeldOutCheck",
    "Interval",
    "Law",
    "arrays_from_frame",
    "backtest",
    "compute_optimal",
    "compute_optimal_exponent",
    "fit",
    "fit_frame",
    "fit_gate",
    "held_out_check",
    "register",
]
