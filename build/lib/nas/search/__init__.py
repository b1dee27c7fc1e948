"""Architecture search on Ray Tune and Optuna.

    store = nas.search.search(Study.load("studies/quickstart.yaml"), "runs/quickstart")

`driver` runs a study (`search`), `searcher` proposes candidates with Optuna, `schedulers` stops them early,
`trial` trains one on a Ray worker, `recorder` writes what Tune sees into the results database.
"""

from nas.search.driver import prepare_data, search

__all__ = ["prepare_data", "search"]
