"""How a trial or a training run stands: the one vocabulary of statuses, used by the trainer, the search, the
results database and every report.

A trial is `pending` until a worker starts it and `running` while one trains it; it ends in exactly one of:

- `completed`: trained to the end of its schedule and measured there;
- `stopped_early`: early stopping (ASHA) ended it at a rung before the end; its rungs are measurements;
- `oom`: out of memory even with the smallest micro-batch the failure policy allows;
- `diverged`: the loss went non-finite;
- `did_not_learn`: the run stopped learning near where it started (`nas.learning`: its loss stayed within 25 % of
  an untrained model's and fell less than 5 % over a ladder step, after 100 steps or more); a study's
  `repeats.not_learned` reruns it with the next seed;
- `failed`: an error the retries did not overcome;
- `interrupted`: the search driver was stopped or killed before the trial ended (`--resume` continues it).

A training run (`nas.train.train`) ends `completed`, `stopped_early` or `diverged`; out of memory raises.
"""

from __future__ import annotations

PENDING = "pending"
RUNNING = "running"
COMPLETED = "completed"
STOPPED_EARLY = "stopped_early"
OOM = "oom"
DIVERGED = "diverged"
DID_NOT_LEARN = "did_not_learn"
FAILED = "failed"
INTERRUPTED = "interrupted"

FINAL = (COMPLETED, STOPPED_EARLY, OOM, DIVERGED, DID_NOT_LEARN, FAILED, INTERRUPTED)
ALL = (PENDING, RUNNING, *FINAL)
#: Results that stand: an arch proposed again is told its recorded result instead of being trained.
KNOWN = (COMPLETED, STOPPED_EARLY, OOM, DIVERGED, DID_NOT_LEARN)
#: The arch cannot be trained as asked: samplers learn to avoid it as they avoid infeasible archs.
UNTRAINABLE = (OOM, DIVERGED)
#: Ends a trial reports itself (in its last report); the others the driver decides.
REPORTED_ENDS = (*UNTRAINABLE, DID_NOT_LEARN)
#: Trials whose rungs are measurements of their candidate (an oom, diverged, did-not-learn or failed trial's are not).
MEASURED = (COMPLETED, STOPPED_EARLY, RUNNING, INTERRUPTED)
