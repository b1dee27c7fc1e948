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
- a lack-of-fit check on every fit (a runs test of the residuals and, where there is one, a comparison with
  the next richer law, or a rival law, by BIC) whose warnings are on `Fit.warnings`.

Every fit returns a `Fit`. Inputs are arrays (or a DataFrame with `arrays_from_frame`), never files.
"""

from nas.scaling.allocation import Allocation, compute_optimal, compute_optimal_exponent
from nas.scaling.checks import HeldOutCheck, held_out_check
from nas.scaling.fitting import Fit, Interval
from nas.scaling.frames import arrays_from_frame, fit_frame
from nas.scaling.laws import fit
from nas.scaling.registry import LAWS, Law, register

__all__ = [
    "LAWS",
    "Allocation",
    "Fit",
    "HeldOutCheck",
    "Interval",
    "Law",
    "arrays_from_frame",
    "compute_optimal",
    "compute_optimal_exponent",
    "fit",
    "fit_frame",
    "held_out_check",
    "register",
]
