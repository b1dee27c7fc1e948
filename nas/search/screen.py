"""A study's `proxy`: candidates screened by a trained supernet's score before they train.

    screen = SupernetScreen.prepare(study)      # in the driver, before Ray starts: the run loaded and checked,
                                                # a list's candidates scored (with a progress bar)
    screen.score(arch)                          # {"supernet_top1": ..., "_low", "_high", "_n"}, scored once
    screen.order(study.runs)                    # a list's runs, the kept best first, the screened out last

The score is `nas.supernet.rank`'s: zero-shot top-1 with inherited weights on the study's zero-shot set, with
its Wilson interval (`nas.metrics.SUPERNET_SCORE`). Every trial carries its candidate's score
(`Candidate.cost`), which the results database stores with the trial.

- A fixed or grid study trains its best-scored `proxy.kept(n)` candidates, best first (each schedule and seed
  block of `Study.runs` in that order); the others are asked last and told to Optuna at once, PRUNED, with
  their score and `skipped` as user attributes (`StudySearcher._known`).
- A sampled study draws `proxy.pool` proposals that it would train for each trial (fewer once a finite space
  has no more) and trains the best-scored; the others are told, PRUNED with their score and `screened_by` (the
  Optuna number of the trial that trained), in the searcher's copy of the study only (`StudySearcher._drafts`),
  as every proposal passed over is: the study's trials are those that trained, and the sampler learns from
  both. A screened-out arch proposed again is told FAIL, as a measured one is. The passed-over proposals are
  saved with the searcher, so a resumed search knows them. Scoring runs in the driver as proposals are drawn,
  with one line on stderr per trial.

The supernet must hold every candidate the study may train (its space and resolution): a listed candidate it
does not hold, or any feasible arch of a sampled study's space, is a `ConfigError` naming it and the supernet's
run, before any trial starts. torch is imported on first use only, so a driver without a proxy never loads it.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Sequence
from typing import Any

from nas.arch import Arch
from nas.errors import ConfigError
from nas.metrics import SUPERNET
from nas.study import Study

#: The user attribute of a proposal screened out in a sampled study: the Optuna number of the trial that trained.
SCREENED_BY_ATTR = "screened_by"


class SupernetScreen:
    """The supernet scores of a study's candidates, each scored once; the scorer is loaded on first use (and
    again after unpickling: Ray Tune saves the searcher, which holds the scores only)."""

    def __init__(self, study: Study):
        if study.proxy is None:
            raise ConfigError("has no proxy section: nothing screens its candidates", source=study.source,
                              field="proxy")
        self.study = study
        self.proxy = study.proxy
        self.scores: dict[str, dict[str, float]] = {}
        self._scorer: Any = None

    @classmethod
    def prepare(cls, study: Study, progress: bool = True) -> SupernetScreen:
        """The screen with its supernet loaded and checked against the study, and a list's candidates scored."""
        screen = cls(study)
        screen.scorer()
        if study.archs:
            from tqdm import tqdm

            for arch in tqdm(study.archs, desc=f"{SUPERNET} of the candidates", unit="arch", file=sys.stderr,
                             disable=not progress):
                screen.score(arch)
        return screen

    def __getstate__(self) -> dict[str, Any]:
        return {k: v for k, v in self.__dict__.items() if k != "_scorer"} | {"_scorer": None}

    def scorer(self) -> Any:
        """The `SubnetScorer` of the proxy's supernet on the study's zero-shot set, checked to hold every candidate
        the study may train."""
        if self._scorer is None:
            from nas.supernet.rank import study_scorer

            scorer = study_scorer(self.study, self.proxy.supernet)
            self._check(scorer.supernet)
            self._scorer = scorer
        return self._scorer

    def _check(self, supernet: Any) -> None:
        study, run = self.study, self.proxy.supernet
        if study.archs:
            named = study.labels or [f"archs[{i}]" for i in range(len(study.archs))]
            listed = list(zip(study.archs, named))
        elif study.space.finite:
            listed = [(arch, "a feasible arch of the space") for arch in study.space.enumerate(feasible=True)]
        else:
            raise ConfigError(f"a supernet screens the candidates of a finite space (every range with a step); the "
                              f"supernet in {run} holds {len(supernet.candidates)}", source=study.source,
                              field="proxy.supernet")
        outside = [(arch, where) for arch, where in listed if not supernet.holds(arch)]
        if outside:
            (arch, where), more = outside[0], len(outside) - 1
            try:
                supernet.check(arch)
                why = ""
            except ConfigError as err:
                why = f" ({err.message})"
            raise ConfigError(f"{arch.name()} ({where}){f' and {more} more' if more else ''} is no subnet of the "
                              f"supernet in {run}{why}: it must hold every candidate it screens", source=study.source,
                              field="proxy.supernet")

    def score(self, arch: Arch) -> dict[str, float]:
        """The supernet's score of `arch` with its interval and n (`nas.metrics.SUPERNET_SCORE`)."""
        if arch.arch_id not in self.scores:
            from nas.supernet.rank import proxy_score

            self.scores[arch.arch_id] = proxy_score(self.scorer()(arch))
        return self.scores[arch.arch_id]

    # ---- listed candidates -----------------------------------------------------------------------------------
    def ranked(self) -> list[int]:
        """The indices of a list's candidates, best score first (ties in the list's order)."""
        archs = self.study.archs
        return sorted(range(len(archs)), key=lambda i: -self.score(archs[i])[SUPERNET])

    def keeps(self, arch: Arch) -> bool:
        """Whether a listed candidate is among the best `proxy.kept(n)`, which train."""
        archs = self.study.archs
        return arch in [archs[i] for i in self.ranked()[:self.proxy.kept(len(archs))]]

    def order(self, runs: Sequence[tuple[int, int, int | None]]) -> list[tuple[int, int, int | None]]:
        """`Study.runs` (candidate index, schedule index, seed) in the order they are asked: the kept candidates'
        first, then the screened-out ones'; within those, block by block (a schedule and seed), best score first."""
        rank = {index: position for position, index in enumerate(self.ranked())}
        blocks = list(dict.fromkeys((schedule, seed) for _, schedule, seed in runs))
        kept = self.proxy.kept(len(self.study.archs))
        return sorted(runs, key=lambda run: (rank[run[0]] >= kept, blocks.index(run[1:]), rank[run[0]]))

    def screened_out(self, arch: Arch) -> dict[str, Any]:
        """The user attributes of a listed candidate the screen does not train."""
        score = self.score(arch)
        kept = self.proxy.kept(len(self.study.archs))
        return {**score, "skipped": f"screened out: {SUPERNET} {score[SUPERNET]:.4f}, not among the best {kept} of "
                                    f"{len(self.study.archs)} by the supernet in {self.proxy.supernet}"}

    # ---- sampled proposals ----------------------------------------------------------------------------------
    def best(self, scores: Sequence[dict[str, float]]) -> int:
        """The index of the best of a pool's scores (the first of equals)."""
        return max(range(len(scores)), key=lambda i: (scores[i][SUPERNET], -i))

    def passed_over(self, score: dict[str, float], best: dict[str, float], number: int) -> dict[str, Any]:
        """The user attributes of a proposal the screen passed over for trial `number`'s."""
        return {**score, SCREENED_BY_ATTR: number,
                "skipped": f"screened out: {SUPERNET} {score[SUPERNET]:.4f} below {best[SUPERNET]:.4f} of trial "
                           f"{number}, the best of {self.proxy.pool} proposals"}

    def report(self, chosen: Arch, score: dict[str, float], proposals: int, number: int, started: float) -> None:
        """One line on stderr per screening: which proposal trains (as trial `number`), of how many, and how long
        drawing and scoring them took."""
        print(f"supernet screen: trial {number} trains {chosen.name()} ({SUPERNET} {score[SUPERNET]:.4f}), the best "
              f"of {proposals} proposal(s) scored in {time.time() - started:.1f} s", file=sys.stderr)

