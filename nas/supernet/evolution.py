"""An evolutionary search over a supernet's subnets under cost limits: Optuna's NSGA-II mutates and crosses over
the space's choices (`SearchSpace.suggest`), and every subnet it proposes is scored with the weights it inherits.

    scorer = SubnetScorer(supernet, zeroshot_set("eval/zeroshot", supernet.image_size))
    archs = within_limits(supernet, max_gmacs=0.5, max_params_m=4)
    search = evolve(supernet, scorer, archs, population=20, generations=10, seed=0)
    write_ranking(search.records, "runs/sn/evolution")   # ranking.csv and pareto.csv, as `rank` writes them

The objectives are the Pareto front's: zero-shot top-1 up, image GMACs down. A proposal that is no feasible subnet
within the limits (another resolution, a constraint of the space, a limit) is told failed, so that NSGA-II's
populations hold feasible subnets only; a subnet proposed again is told its first scores. The search asks for
`population * generations` feasible proposals, or stops sooner once every feasible subnet is scored, or after
`MAX_PROPOSALS` times as many proposals; with one seed it proposes the same subnets.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import optuna

from nas.arch import Arch
from nas.errors import ConfigError, require, require_int
from nas.supernet.rank import FRONT, ranked
from nas.supernet.supernet import Supernet

#: At most this many proposals per feasible one asked for, so that tight limits end the search.
MAX_PROPOSALS = 20


@dataclass(frozen=True)
class Evolution:
    """What a search did: its ranked records (`rank.ranked`), the proposals it made, how many of them were
    infeasible, and how many subnets it could keep."""

    records: list[dict[str, Any]]
    proposals: int
    infeasible: int
    feasible: int


def within_limits(supernet: Supernet, max_gmacs: float | None = None,
                  max_params_m: float | None = None) -> list[Arch]:
    """The supernet's subnets whose image GMACs and image parameters (millions) are within the limits."""
    for value, field in ((max_gmacs, "max_gmacs"), (max_params_m, "max_params_m")):
        require(value is None or (isinstance(value, (int, float)) and value > 0), field,
                f"must be a positive number, got {value!r}")
    archs = []
    for arch in supernet.candidates:
        measured = supernet.space.measures(arch, supernet.cost(arch))
        if ((max_gmacs is None or measured["image_gmacs"] <= max_gmacs)
                and (max_params_m is None or measured["image_params_m"] <= max_params_m)):
            archs.append(arch)
    if not archs:
        raise ConfigError(f"no subnet of the supernet of {supernet.space.source} has image GMACs <= {max_gmacs} "
                          f"and image params <= {max_params_m} M", field="max_gmacs")
    return archs


def evolve(supernet: Supernet, scorer: Callable[[Arch], dict[str, Any]], archs: list[Arch], *,
           population: int = 20, generations: int = 10, seed: int = 0) -> Evolution:
    """NSGA-II over the space's choices, keeping the proposals among `archs` (`within_limits`), each scored once
    by `scorer` (a `SubnetScorer`)."""
    require_int(population, "population", low=2)
    require_int(generations, "generations", low=1)
    allowed = frozenset(archs)
    wanted = population * generations
    verbosity = optuna.logging.get_verbosity()
    optuna.logging.set_verbosity(max(verbosity, optuna.logging.WARNING))  # no "study created" line
    try:
        study = optuna.create_study(directions=["maximize", "minimize"],
                                    sampler=optuna.samplers.NSGAIISampler(population_size=population, seed=seed))
    finally:
        optuna.logging.set_verbosity(verbosity)
    scores: dict[Arch, dict[str, Any]] = {}
    told = proposals = infeasible = 0
    while told < wanted and len(scores) < len(allowed) and proposals < MAX_PROPOSALS * wanted:
        trial, proposals = study.ask(), proposals + 1
        try:
            arch = supernet.space.suggest(trial)
        except ConfigError:
            arch = None
        if arch not in allowed:
            study.tell(trial, state=optuna.trial.TrialState.FAIL)
            infeasible += 1
            continue
        if arch not in scores:
            scores[arch] = scorer(arch)
        study.tell(trial, [scores[arch][objective] for objective in FRONT])
        told += 1
    return Evolution(ranked(list(scores.values())), proposals, infeasible, len(allowed))
