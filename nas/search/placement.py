"""What a trial asks of the cluster: the resource arithmetic of one-process, fractional-GPU and data-parallel trials.

A study's `resources` (`nas.study.Resources`) read in one place:

- A one-process trial (`workers: 1`) is one Ray Tune trial holding `cpus`, `gpus` and `memory_gib` itself.
  `gpus: 0.25` packs four trials on one device; each is capped to a quarter of the device's memory
  (`device_memory_fraction`), so that one trial's growth fails as its own `oom` instead of taking the memory
  its neighbours were promised.
- A data-parallel trial (`workers: N`) is a Ray Tune trial whose function only drives a Ray Train job of N
  ranks (`nas.search.data_parallel`): the ranks hold `cpus`, `gpus` and `memory_gib` each, in Ray Train's own
  placement group, and the Tune trial holds no CPU or GPU, so that it never takes what its own ranks wait for.
  It reserves the memory its driving process uses (`TRIAL_DRIVER_MEMORY`): a Ray bundle cannot be empty.
- Concurrency: as many trials as the cluster's CPUs and GPUs hold all the ranks of (or the study's
  `concurrency`), so that trial drivers waiting for ranks that cannot be placed never pile up (Ray's "Tune +
  Train" guide: `max_concurrent_trials`).
"""

from __future__ import annotations

import math
from collections.abc import Mapping

from nas.study import Resources

#: Bytes of memory a data-parallel trial's driving process reserves. Measured: 0.94 GB resident in a Ray worker
#: that imports what it imports (Ray Tune and Train, torch, open_clip; torch's libraries partly shared).
TRIAL_DRIVER_MEMORY = 2**30
#: Device memory a CUDA context takes outside the caching allocator (cuBLAS and cuDNN handles, kernels), which a
#: trial sharing a device leaves to its neighbours: `set_per_process_memory_fraction` does not count it. An
#: estimate (a few hundred MB with CUDA's lazy module loading), not measured: no GPU where this was written.
CUDA_CONTEXT_BYTES = 2**29


def worker_request(resources: Resources) -> dict[str, float]:
    """One process's resources in Ray's names (a one-process trial's, or each rank's of a data-parallel one)."""
    request = {"CPU": float(resources.cpus), "GPU": float(resources.gpus)}
    if resources.memory_gib:
        request["memory"] = float(resources.memory_gib * 2**30)
    return {k: v for k, v in request.items() if v}


def trial_request(resources: Resources) -> dict[str, float]:
    """What Ray Tune reserves for a trial (`tune.with_resources`): the process's own resources, or for a
    data-parallel trial only its driving process's memory (its ranks are placed by Ray Train)."""
    if resources.data_parallel:
        return {"cpu": 0, "gpu": 0, "memory": float(TRIAL_DRIVER_MEMORY)}
    request = worker_request(resources)
    return {"cpu": request.get("CPU", 0.0), "gpu": request.get("GPU", 0.0),
            **({"memory": request["memory"]} if "memory" in request else {})}


def trial_total(resources: Resources) -> dict[str, float]:
    """Everything one running trial holds, all its ranks together."""
    return {kind: amount * resources.workers for kind, amount in worker_request(resources).items()}


def concurrency(resources: Resources, cluster: Mapping[str, float]) -> int:
    """How many trials run at once: the study's `concurrency`, else as many as `cluster` (Ray's
    `cluster_resources()`) holds by CPUs and GPUs, all ranks of each (at least one)."""
    if resources.concurrency:
        return resources.concurrency
    total = trial_total(resources)
    fits = [cluster.get(kind, 0.0) / total[kind] for kind in ("CPU", "GPU") if total.get(kind)]
    return max(1, math.floor(min(fits) + 1e-9)) if fits else 1


def places(resources: Resources, nodes: list[Mapping[str, float]]) -> int:
    """How many of a trial's processes (ranks) these nodes (each one's resources) hold, several per node where
    they fit: a trial can run when it is at least `resources.workers`."""
    need = worker_request(resources)
    return sum(min(math.floor(node.get(kind, 0.0) / amount + 1e-9) for kind, amount in need.items())
               for node in nodes)


def device_memory_fraction(resources: Resources, device_bytes: int) -> float | None:
    """The share of a GPU's memory one process may allocate: its fraction of the device (`gpus` below 1) less a
    CUDA context's worth, and at most `memory_gib`; None when the process has the device to itself."""
    caps = []
    if 0 < resources.gpus < 1:
        caps.append(max(resources.gpus - CUDA_CONTEXT_BYTES / device_bytes, 0.0))
    if resources.memory_gib:
        caps.append(resources.memory_gib * 2**30 / device_bytes)
    return min(1.0, *caps) if caps else None
