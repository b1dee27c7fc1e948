"""Architecture search on Ray Tune and Optuna.

    store = nas.search.search(Study.load("studies/quickstart.yaml"), "runs/quickstart")

`driver` runs a study (`search`), `searcher` proposes candidates with Optuna, `schedulers` stops them early,
`trial` trains one on a Ray worker, `recorder` writes what Tune sees into the results database, `session` is
the driver's (signals, what it writes to), `outcome` sums up a finished search.
"""

from nas.search.driver import prepare_data, search
from nas.search.outcome import Outcome
from nas.search.session import SearchInterrupted

__all__ = ["Outcome", "SearchInterrupted", "prepare_data", "search"]
