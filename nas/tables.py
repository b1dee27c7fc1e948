"""Plain-text tables for the command line (aligned columns, numbers right-aligned), and records as their rows:
accuracies in percent, seconds as durations."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np

from nas.metrics import EVALUATED

PERCENT_METRICS = frozenset(EVALUATED)


def _cell(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:,.2f}" if abs(value) < 1e6 else f"{value:,.0f}"
    if isinstance(value, int) and not isinstance(value, bool):
        return f"{value:,}"
    return str(value)


def format_table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """Rows under headers, columns padded; numeric columns right-aligned."""
    cells = [[_cell(v) for v in row] for row in rows]
    numeric = [all(isinstance(row[i], (int, float)) for row in rows) if rows else False for i in range(len(headers))]
    widths = [max([len(h)] + [len(r[i]) for r in cells]) for i, h in enumerate(headers)]

    def line(values: Sequence[str]) -> str:
        return "  ".join(v.rjust(w) if num else v.ljust(w) for v, w, num in zip(values, widths, numeric)).rstrip()

    return "\n".join([line(headers), line(["-" * w for w in widths]), *(line(r) for r in cells)])


def rows(records: Iterable[Mapping[str, Any]], columns: Sequence[str]) -> list[list[Any]]:
    """Records as table rows: accuracies and recalls in percent, seconds as durations, small numbers to three
    significant digits, missing values as '-'."""
    return [[_display(c, r.get(c)) for c in columns] for r in records]


def headers(columns: Sequence[str]) -> list[str]:
    """Column names for `rows`: percentages say so."""
    return [f"{c} %" if c in PERCENT_METRICS else c for c in columns]


def _display(column: str, value: Any) -> Any:
    if value is None or (isinstance(value, float) and np.isnan(value)):
        return "-"
    if column in ("wall", "eta", "wall_s"):
        return format_duration(value)
    if column in PERCENT_METRICS:
        return 100.0 * value
    if isinstance(value, float) and abs(value) < 10:
        return f"{value:.3g}"
    return value


def format_duration(seconds: float | None) -> str:
    if seconds is None or (isinstance(seconds, float) and np.isnan(seconds)):
        return "-"
    seconds = int(round(seconds))
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"
