"""Where a run executes: its device, its place among the ranks, its precision, what the ranks share, and running
out of memory on the device.

    runtime = setup_runtime("auto")          # torchrun's process group, or the caller's (Ray Train's workers)
    with runtime.autocast():                 # bf16 on CUDA, nothing on CPU
        ...
    loss = mean_over_ranks(local_loss, runtime)
"""

from __future__ import annotations

import errno
import os
from contextlib import nullcontext
from dataclasses import dataclass
from typing import Any

import torch


@dataclass(frozen=True)
class Runtime:
    """This process's device and place among the ranks (from torchrun's environment when it is set)."""

    device: torch.device
    rank: int = 0
    world_size: int = 1
    bf16: bool = False

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def autocast(self):
        if not self.bf16:
            return nullcontext()
        return torch.autocast(device_type=self.device.type, dtype=torch.bfloat16)

    def barrier(self) -> None:
        if self.distributed:
            torch.distributed.barrier()


def setup_runtime(precision: str = "auto", device: str | None = None) -> Runtime:
    """This process's place among the ranks and its device.

    The process group is the caller's when one is set up already (Ray Train's workers: NCCL on GPUs, gloo on
    CPUs), else torchrun's, joined from its environment when WORLD_SIZE > 1. The device is `device` when it
    names one ("cuda:1": Ray Train's choice for the rank), else the GPU of the local rank, else the CPU."""
    joined = torch.distributed.is_available() and torch.distributed.is_initialized()
    world_size = torch.distributed.get_world_size() if joined else int(os.environ.get("WORLD_SIZE", "1"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    cuda = torch.cuda.is_available() and (device is None or device.startswith("cuda"))
    if cuda:
        dev = torch.device(device) if device is not None and ":" in device else torch.device("cuda", local_rank)
        torch.cuda.set_device(dev)
        # cuDNN picks each convolution's algorithm by timing it (open_clip_train does the same): the depthwise
        # convolutions of the conv stages are the step's memory-bound part, and its heuristics are no match for it.
        torch.backends.cudnn.benchmark = True
    else:
        dev = torch.device(device or "cpu")
    if world_size > 1 and not joined:
        torch.distributed.init_process_group(backend="nccl" if cuda else "gloo")
    rank = torch.distributed.get_rank() if world_size > 1 else 0
    bf16 = precision == "bf16" or (precision == "auto" and dev.type == "cuda")
    return Runtime(dev, rank, world_size, bf16)


# ----------------------------------------------------------------------------------------------------------
# What the ranks share.


def gather_objects(value: Any, runtime: Runtime) -> list[Any]:
    """Every rank's `value`, in rank order (on every rank)."""
    if not runtime.distributed:
        return [value]
    values: list[Any] = [None] * runtime.world_size
    torch.distributed.all_gather_object(values, value)
    return values


def mean_over_ranks(value: torch.Tensor, runtime: Runtime) -> float:
    """A rank's local loss averaged over the ranks: with `local_loss`, the loss of the whole global batch."""
    if runtime.distributed:
        value = value.detach().clone()
        torch.distributed.all_reduce(value)
        value /= runtime.world_size
    return value.item()


def sum_over_ranks(value: float, runtime: Runtime) -> float:
    """A per-rank amount (seconds of CPU time) summed over the ranks, on every rank."""
    if not runtime.distributed:
        return value
    total = torch.tensor(value, dtype=torch.float64, device=runtime.device)
    torch.distributed.all_reduce(total)
    return total.item()


def any_rank(flag: bool, runtime: Runtime) -> bool:
    """Whether `flag` holds on any rank (on every rank)."""
    value = torch.tensor(1.0 if flag else 0.0, device=runtime.device)
    if runtime.distributed:
        torch.distributed.all_reduce(value, op=torch.distributed.ReduceOp.MAX)
    return bool(value.item())


def main_rank_decides(flag: bool, runtime: Runtime) -> bool:
    """Rank 0's `flag`, on every rank."""
    if not runtime.distributed:
        return flag
    value = torch.tensor(float(flag), device=runtime.device)
    torch.distributed.broadcast(value, src=0)
    return bool(value.item())


# ----------------------------------------------------------------------------------------------------------
# Out of memory.


class OOMError(RuntimeError):
    """Out of memory at a batch size: a search records the trial as `oom` and does not retry it unchanged."""

    def __init__(self, batch_size: int, micro_batch_size: int, phase: str, device: str):
        self.batch_size = batch_size
        self.micro_batch_size = micro_batch_size
        self.phase = phase
        self.device = device
        super().__init__(f"out of memory on {device} during {phase} at batch size {batch_size} "
                         f"(micro-batch {micro_batch_size} per rank)")

    def __reduce__(self) -> tuple:  # pickled whole: Ray sends a rank's error to the trial that runs the ranks
        return OOMError, (self.batch_size, self.micro_batch_size, self.phase, self.device)


#: How running out of memory reads when it is not a `torch.OutOfMemoryError` or a `MemoryError`: the CPU
#: allocator (the machine's memory, or a limit on the process), a C++ allocation torch turns into a RuntimeError,
#: a thread whose stack cannot be mapped, cuBLAS/cuDNN failing to allocate their workspaces, and oneDNN (torch's
#: CPU convolutions) failing to allocate a primitive's memory: seen in a conv backward under a worker's 1 GiB
#: RLIMIT_AS (tests/test_search.py); oneDNN's message names no cause, so another failure to create a primitive
#: reads as out of memory too: retried at a smaller micro-batch, it fails the same way and is kept as the error.
OOM_MESSAGES = ("DefaultCPUAllocator: can't allocate memory", "std::bad_alloc", "can't start new thread",
                "CUBLAS_STATUS_ALLOC_FAILED", "CUDNN_STATUS_ALLOC_FAILED", "could not create a primitive")


def is_oom(err: BaseException) -> bool:
    """Out of memory: a GPU allocation, or a CPU one (including an OS call refused with ENOMEM)."""
    return isinstance(err, (torch.OutOfMemoryError, MemoryError)) or (
        isinstance(err, OSError) and err.errno == errno.ENOMEM) or (
        isinstance(err, RuntimeError) and any(message in str(err) for message in OOM_MESSAGES))
