"""Whether a training run learned: the rule that gives a run the status `did_not_learn` (`nas.status`), and how
often a study's runs end so.

A run that did not learn is no measurement of its candidate: a seed whose loss stays where it started says
nothing about the arch (the project's own tabular table held one, 3.5 % at 18k samples where its other seed
reached 36 %, and it carried most of a scheduler's measured advantage). The rule, judged at every rung of a
run from its own training losses (the mean loss since the previous rung, `nas.train.loop`):

    did not learn at budget b  <=>  loss(b) > (1 - LEARNED_FRACTION) * ln(B)               (still near the start)
                                and loss(b) > (1 - PLATEAU_FRACTION) * loss(b')           (and no longer falling)

with B the global batch (ln B is the contrastive loss of a model that cannot tell a batch's captions apart,
where an untrained CLIP starts) and b' the furthest earlier rung at most b / reduction_factor (one step of the
study's ladder before): the loss has fallen less than 25 % below an untrained model's and less than 5 % over
the last ladder step. Both are needed, and the run must have taken MIN_STEPS = 100 optimizer steps by b: in
fewer, no run has learned much (a test's 8-step search is near its start throughout, and still learning). A
slow learner is still near the start at the first rungs, but falling (in the tabular table, the slowest of 40
runs was 19 % below ln 32 at 8.7k samples, 19 % lower than a ladder step before, and ended 46 % below); a run
that has converged stops falling, far below the start. The stuck run of that table is caught at 12.5k samples
(14 % below ln 32, its loss higher than at 4.2k); none of the other 39 runs, nor any of the 32 of the two other
tables, is caught at any rung (100 steps of batch 32 is 3,200 samples; the quickstart's runs are judged at
18k, against 6k). A run measured at one rung only, or at none a ladder step apart, is never judged. The rule
reads the contrastive loss (`train.loss: clip`); a sigmoid (SigLIP) loss starts elsewhere and is not judged.

    did_not_learn({6000: 2.88, 18000: 2.84}, batch_size=32, reduction_factor=3)   # -> the reason, or None
    study_failure_rate(store)                                                    # counted, with its interval
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from nas import status
from nas.uncertainty import wilson_interval

if TYPE_CHECKING:
    from nas.results import ResultStore

#: A run has learned once its loss is this fraction below an untrained model's (ln B).
LEARNED_FRACTION = 0.25
#: A run is still learning while its loss falls by this fraction over one ladder step.
PLATEAU_FRACTION = 0.05
#: Optimizer steps a run must have taken at a rung before the rule judges it there.
MIN_STEPS = 100


def did_not_learn(losses: Mapping[int, float], *, batch_size: int, reduction_factor: float,
                  loss: str = "clip") -> str | None:
    """Why a run with these training losses (budget -> the rung's loss) did not learn, at the first rung where
    the rule holds, or None: it learned, or cannot be judged yet."""
    if loss != "clip" or batch_size < 2:
        return None
    start = math.log(batch_size)
    budgets = sorted(b for b, value in losses.items() if value is not None and math.isfinite(value))
    for budget in budgets:
        earlier = [b for b in budgets if b * reduction_factor <= budget * (1 + 1e-9)]
        if not earlier or budget < MIN_STEPS * batch_size:
            continue
        before, now = losses[earlier[-1]], losses[budget]
        if now > (1 - LEARNED_FRACTION) * start and now > (1 - PLATEAU_FRACTION) * before:
            return (f"did not learn: loss {now:.3f} at {budget:,} samples, {100 * (1 - now / start):.0f} % below an "
                    f"untrained model's ln {batch_size} = {start:.3f} (learning needs {100 * LEARNED_FRACTION:.0f} %), "
                    f"and {100 * (1 - now / before):.0f} % below its {before:.3f} at {earlier[-1]:,} (still learning: "
                    f"{100 * PLATEAU_FRACTION:.0f} %)")
    return None


@dataclass(frozen=True)
class FailureRate:
    """How many of a study's ended runs did not learn, of how many, with the Wilson interval of the rate."""

    failed: int
    runs: int
    low: float
    high: float

    def line(self) -> str:
        """`did not learn: 1 of 12 runs (8 % [1, 35], 95 % Wilson)`."""
        rate = self.failed / self.runs if self.runs else 0.0
        return (f"did not learn: {self.failed} of {self.runs} runs ({100 * rate:.0f} % [{100 * self.low:.0f}, "
                f"{100 * self.high:.0f}], 95 % Wilson; rule: nas.learning)")


def failure_rate(statuses: Sequence[str]) -> FailureRate:
    """The did-not-learn rate among runs that trained to an end the rule could judge (completed, stopped early
    or did not learn: not the oom, diverged, failed, interrupted or still running ones)."""
    judged = [s for s in statuses if s in (status.COMPLETED, status.STOPPED_EARLY, status.DID_NOT_LEARN)]
    failed = sum(s == status.DID_NOT_LEARN for s in judged)
    low, high = wilson_interval(failed, len(judged))
    return FailureRate(failed, len(judged), low, high)


def study_failure_rate(store: ResultStore) -> FailureRate:
    """`failure_rate` over a study's trials."""
    return failure_rate([t["status"] for t in store.trials()])


def losses_of(rungs: Sequence[Mapping[str, Any]]) -> dict[int, float]:
    """budget -> training loss, from rung metrics (the trainer's, or a replay's)."""
    return {int(r["budget"]): float(r["loss"]) for r in rungs if r.get("loss") is not None and "budget" in r}
