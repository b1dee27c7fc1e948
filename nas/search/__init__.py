"""Architecture search on Ray Tune and Optuna.

    store = nas.search.search(load_study("studies/quickstart.yaml"), "runs/quickstart")

`driver` runs a study (`search`), `searcher` proposes candidates with Optuna, `schedulers` stops them early,
`trainable` is Ray Tune's entry into a trial, which `trial` (or `data_parallel`) trains on Ray workers,
`protocol` is what the searcher hands a trial and what the trial reports, `recorder` writes what Tune sees into
the results database, `session` is the driver's (signals, what it writes to), `outcome` sums up a finished
search.

Attributes load on first use: a trial's Ray worker imports `nas.search.trainable` (and `trial`, or
`data_parallel`) without the driver's Tuner, Optuna and the results database's readers, about 2 s of imports in
every trial process.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

_EXPORTS = {"search": "driver", "prepare_data": "driver", "Outcome": "outcome", "SearchInterrupted": "session"}

__all__ = ["Outcome", "SearchInterrupted", "prepare_data", "search"]

if TYPE_CHECKING:
    from nas.search.driver import prepare_data, search
    from nas.search.outcome import Outcome
    from nas.search.session import SearchInterrupted


def __getattr__(name: str):
    if name not in _EXPORTS:
        raise AttributeError(f"module 'nas.search' has no attribute {name!r}")
    return getattr(importlib.import_module(f"nas.search.{_EXPORTS[name]}"), name)
