"""Proxy CLIP training of one candidate for a budget of samples seen: one trial of a search.

    result = train(arch, text, DataSource("shards/"), TrainConfig(samples=2_000_000, batch_size=1024),
                   zeroshot=zeroshot_set("eval/zeroshot", 64), out="runs/a1b2c3", on_rung=report)

Like open_clip_train, one module per part: `runtime` (device, ranks, precision, out of memory), `recipe` (the
model, parameter groups, schedule and loss of the OpenCLIP recipe), `trainer` (one optimizer step), `checkpoint`
(`RunState`, atomic checkpoints, RNG states), `log` (metrics.jsonl, TensorBoard, W&B), `meter` (throughput, MFU)
and `loop` (`train`). bf16 autocast on CUDA, fp32 on CPU.

What a search needs from a trial, beyond the loop:

- Rungs: at chosen samples-seen thresholds, the budgets (and at the end of the budget), the model is
  evaluated, a checkpoint is written and `on_rung(metrics)` is called with the rung's budget among the
  metrics; it returns True to stop the run there. Metrics are one flat dict (`loop.RUNG_METRICS` names the keys)
  so that Ray Tune and Optuna take it as is.
- Kill and resume: a run's `RunState` (where it stands) is exactly what its checkpoint stores beside the
  model, optimizer, scheduler and every rank's RNG states; checkpoints are written atomically; `train`
  resumes from `out/checkpoint.pt` when it exists, and ends where the uninterrupted run ends.
  `run_progress(out)` reads how far a run got without loading its tensors.
- Failures are results: a non-finite loss ends the run with status `diverged` (`nas.status`); out-of-memory
  raises `OOMError`, which carries the batch size so that a search can record `oom` and never retry it as is.
- Several GPUs: run under `torchrun` (the process group is set up from its environment) or in ranks whose
  process group is set up already (Ray Train's workers: `nas.search.data_parallel`).
"""

import importlib
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from nas.train.checkpoint import RunState, run_progress
    from nas.train.log import ReportTo
    from nas.train.loop import TrainResult, train
    from nas.train.runtime import OOMError

#: Where each name of the package lives. They are imported on first use (PEP 562), so that a process that needs
#: one light part (the search driver: `ReportTo`, `run_progress`) does not import torch, timm and open_clip with
#: the loop (5 s of CPU and most of a driver's 1.1 GB).
_PARTS = {"OOMError": "runtime", "ReportTo": "log", "RunState": "checkpoint", "TrainResult": "loop",
          "run_progress": "checkpoint", "train": "loop"}

__all__ = ["OOMError", "ReportTo", "RunState", "TrainResult", "run_progress", "train"]


def __getattr__(name: str):
    if name not in _PARTS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{_PARTS[name]}"), name)
    globals()[name] = value
    return value
