"""What the searcher hands a trial and what a trial reports back, defined once for both sides.

The searcher gives each Ray Tune trial a config of two keys: `CANDIDATE_KEY`, the `Candidate` it measures, and
`NUMBER_KEY`, its Optuna trial number (and `TRIAL_ID_KEY` for a trial that continues one Ray Tune lost). The
trial reports to Ray Tune at every rung the trainer's metrics plus the keys below (`REPORT_KEYS`), the
candidate's analytic cost, and where it ran (`process_place`); its last report says how it ended (`STATUS_KEY`),
which `final_status` reads on the driver. `rung_metrics` takes back, from any such report, what the trainer measured.

Torch-free and Ray-free at import: the trial's worker, the searcher and the recorder on the driver all read it.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from nas import status
from nas.arch import Arch
from nas.cost import COST_METRICS
from nas.metrics import SUPERNET_SCORE, ZERO_COST

#: The Ray namespace of the search's ledger actor (`nas.search.recorder.Ledger`), which trials look up.
LEDGER_NAMESPACE = "vitamin-nas"

# ---- the trial's config (from the searcher) ------------------------------------------------------------------
CANDIDATE_KEY = "candidate"
NUMBER_KEY = "number"
#: A trial's id in the results database and the run directory, when it is not Ray Tune's own: a trial that a
#: killed driver started and Ray Tune never recorded continues under its first id (its record, its checkpoints).
TRIAL_ID_KEY = "continues"


def trial_id_of(config: Mapping[str, Any], tune_trial_id: str) -> str:
    """The id a trial is recorded and checkpointed under (`TRIAL_ID_KEY`, else Ray Tune's)."""
    return config.get(TRIAL_ID_KEY) or tune_trial_id

# ---- the keys a trial adds to the trainer's metrics in its reports ---------------------------------------------
#: How the trial stands: `nas.status.RUNNING` at every rung, its end (`nas.status.REPORTED_ENDS`) in its last report.
STATUS_KEY = "trial_status"
SCHEDULE_KEY = "schedule"  # the budget its run's schedule ends at (`Candidate.schedule`)
REPLAY_KEY = "replay"  # True: a result measured before, reported again (not written again)
ARCH_ID_KEY = "arch_id"
SESSION_KEY = "session"  # the trial process's session, one per start of the trial
ACCUM_FREQ_KEY = "accum_freq"  # gradient accumulation (doubled by out-of-memory retries)
RESUMED_FROM_KEY = "resumed_from"  # the samples seen of the checkpoint the run resumed from, or None
ERROR_KEY = "error"  # why an untrainable trial ended
RUNG_CHECKPOINT_KEY = "rung_checkpoint"  # the rung's kept checkpoint, relative to the run directory
HITS_KEY = "hits"  # the per-item eval hits, as JSON text
#: Where the rung was measured (`process_place`): host, Ray node and device.
PLACE_KEYS = ("host", "node", "device")
#: The process that measured it (Ray Tune fills a result's `pid` with its trial's process, which is not rank 0's).
WORKER_PID_KEY = "worker_pid"
REPORT_KEYS = (SCHEDULE_KEY, STATUS_KEY, REPLAY_KEY, ARCH_ID_KEY, *PLACE_KEYS, WORKER_PID_KEY, SESSION_KEY,
               ACCUM_FREQ_KEY, RESUMED_FROM_KEY, ERROR_KEY, RUNG_CHECKPOINT_KEY)


@dataclass(frozen=True)
class Candidate:
    """What one trial measures: an arch with its analytic cost, trained with a schedule that ends at `schedule`
    samples seen, with the recipe's seed or (a study's `repeats`) another. It travels to the trial in Tune's
    config."""

    arch: Arch
    schedule: int
    cost: dict[str, float]  # the cost metrics, the zero-cost scores the study optimises, its supernet score
    violations: tuple[str, ...] = ()
    seed: int | None = None  # None: the recipe's (train.seed)
    finalist: bool = False  # a finalist's confirmation run (`confirm`): trained to the full budget, never stopped

    @property
    def key(self) -> tuple[str, int, int | None]:
        return self.arch.arch_id, self.schedule, self.seed


def process_place(device: str) -> dict[str, Any]:
    """Where this process runs, as a trial reports it: host, Ray node, device (`PLACE_KEYS`) and pid."""
    import ray

    place = (socket.gethostname(), ray.get_runtime_context().get_node_id(), device)
    return {**dict(zip(PLACE_KEYS, place)), WORKER_PID_KEY: os.getpid()}


def final_status(result: Mapping[str, Any] | None, error: bool) -> str:
    """How a trial ended, from its last result: the trial's own verdict, else whether it reached the end of
    its schedule."""
    if error or not result:
        return status.FAILED
    if result.get(STATUS_KEY) in status.REPORTED_ENDS:
        return result[STATUS_KEY]
    return status.COMPLETED if result.get("samples_seen", 0) >= result[SCHEDULE_KEY] else status.STOPPED_EARLY


def rung_metrics(result: Mapping[str, Any]) -> dict[str, float]:
    """What a Tune result of a trial measured at its rung: the trainer's numbers, without what the trial adds
    (`REPORT_KEYS`), the analytic cost and Ray Tune's own keys."""
    from ray.tune.result import AUTO_RESULT_KEYS, DEBUG_METRICS

    skip = {*REPORT_KEYS, *COST_METRICS, *ZERO_COST, *SUPERNET_SCORE, *AUTO_RESULT_KEYS, *DEBUG_METRICS, "done",
            "should_checkpoint", "trial_id", "experiment_tag", HITS_KEY}
    return {k: v for k, v in result.items()
            if k not in skip and isinstance(v, (int, float)) and not isinstance(v, bool)}
