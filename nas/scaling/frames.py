"""From a table of runs to what a law is fitted on: named columns (or expressions of columns) of a DataFrame, a
CSV's or a study's results frame (`nas.select.measurements`), become the (x, y) that `fit` takes, so a study's
results database and a published CSV go through the same code.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from nas.errors import ConfigError
from nas.scaling.fitting import Fit
from nas.scaling.laws import fit
from nas.scaling.registry import get_law


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


#: The option naming each variable's column: compute, model size, data, unique data.
_OPTIONS = {"C": "x", "N": "n", "D": "d", "U": "u"}


def arrays_from_frame(frame: pd.DataFrame, law: str, *, y: str, x: str | None = None, n: str | None = None,
                      d: str | None = None, u: str | None = None, flops_per_param_token: float = 6.0,
                      source: str | None = None) -> tuple[np.ndarray, np.ndarray]:
    """The (x, y) that `fit(law, x, y)` takes, from named columns; rows with a missing value are dropped.

    x has a column per variable of the law (`Law.variables`): compute C from `x`, model size N from `n`, data D
    from `d` (without it, D = C / (k N) from `x` and `n`), unique data U from `u`.
    """
    variables = get_law(law).variables
    specs = {"x": x, "y": y, "n": n, "d": d, "u": u}
    needed = (*("x" if v == "D" and d is None else _OPTIONS[v] for v in variables), "y")
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
    columns = [get["x"] / (flops_per_param_token * get["n"]) if v == "D" and d is None else get[_OPTIONS[v]]
               for v in variables]
    return (np.column_stack(columns) if len(columns) > 1 else columns[0]), get["y"]


def fit_frame(frame: pd.DataFrame, law: str, *, y: str, x: str | None = None, n: str | None = None,
              d: str | None = None, u: str | None = None, flops_per_param_token: float = 6.0,
              source: str | None = None, **options) -> Fit:
    """`fit` on named columns of a DataFrame (a CSV, or a study's results)."""
    xs, ys = arrays_from_frame(frame, law, y=y, x=x, n=n, d=d, u=u, flops_per_param_token=flops_per_param_token,
                               source=source)
    return fit(law, xs, ys, **options)

