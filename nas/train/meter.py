"""Measuring a run: throughput between rungs and between log lines, achieved FLOP/s, MFU, peak memory."""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any

import torch

from nas.train.runtime import Runtime, mean_over_ranks

#: Dense bf16 peak TFLOP/s by device-name fragment, most specific first (vendor datasheets).
PEAK_BF16_TFLOPS = (("H100 PCIe", 756.0), ("H100", 989.4), ("H200", 989.4), ("GH200", 989.4), ("B200", 2250.0),
                    ("A100", 312.0), ("L40S", 362.0), ("L4", 121.0), ("A10G", 70.0), ("A10", 125.0))


class Meter:
    """Samples, loss and time since the last rung: the training loop's wall time, data waits included, minus
    what is not training (checkpoint writes, the compiling step); `data_s` is the part spent waiting for data.
    `window()` gives the throughput since the previous log line."""

    def __init__(self, train_gflops: float):
        self.train_gflops = train_gflops
        self.reset()

    def reset(self) -> None:
        self.samples = 0
        self.data_s = 0.0
        self.loss_sum: torch.Tensor | float = 0.0
        self.steps = 0
        self.carried_s = 0.0
        self.last_window = (0, 0.0, 0.0)
        self.start()

    def start(self) -> None:
        """Start the clock (set-up before the first step is not training time)."""
        self.started = time.perf_counter()
        self.excluded_s = 0.0

    def add(self, samples: int, loss: torch.Tensor, data_s: float) -> None:
        self.samples += samples
        self.data_s += data_s
        self.loss_sum = self.loss_sum + loss.float()
        self.steps += 1

    def add_untimed(self, loss: torch.Tensor, seconds: float) -> None:
        """A step whose time is not training throughput (compilation): its loss counts, its time does not."""
        self.loss_sum = self.loss_sum + loss.float()
        self.steps += 1
        self.exclude(seconds)

    def exclude(self, seconds: float) -> None:
        self.excluded_s += seconds

    @property
    def train_s(self) -> float:
        return self.carried_s + time.perf_counter() - self.started - self.excluded_s

    def window(self) -> tuple[float | None, float | None]:
        """Images/s since the previous call (training time only) and the share of it spent waiting for data."""
        samples, seconds, data_s = self.samples, self.train_s, self.data_s
        prev_samples, prev_seconds, prev_data_s = self.last_window
        self.last_window = (samples, seconds, data_s)
        if seconds - prev_seconds <= 0:
            return None, None
        return (samples - prev_samples) / (seconds - prev_seconds), (data_s - prev_data_s) / (seconds - prev_seconds)

    def state(self) -> dict[str, float]:
        return {"samples": self.samples, "data_s": self.data_s, "train_s": self.train_s,
                "loss_sum": float(self.loss_sum), "steps": self.steps}

    def load(self, state: Mapping[str, float]) -> None:
        """Continue a checkpoint's interval."""
        self.samples, self.data_s, self.steps = state["samples"], state["data_s"], state["steps"]
        self.loss_sum = state["loss_sum"]
        self.carried_s = state["train_s"]
        self.start()

    def summary(self, runtime: Runtime, peak_tflops: float | None) -> dict[str, Any]:
        if runtime.device.type == "cuda":
            torch.cuda.synchronize(runtime.device)
        train_s = self.train_s
        images_per_s = self.samples / train_s if self.samples and train_s > 0 else None
        loss = mean_over_ranks(torch.as_tensor(self.loss_sum, dtype=torch.float32, device=runtime.device), runtime)
        metrics: dict[str, Any] = {"loss": loss / max(self.steps, 1), "train_s": train_s, "data_s": self.data_s,
                                   "images_per_s": images_per_s,
                                   "data_wait_share": self.data_s / train_s if train_s > 0 else None}
        if runtime.device.type == "cuda":
            tflops = images_per_s * self.train_gflops / 1e3 if images_per_s else None
            peak = peak_tflops or (device_peak_tflops(runtime.device) if runtime.bf16 else None)
            metrics.update(tflops=tflops, mfu=model_flops_utilization(tflops, peak, runtime.world_size),
                           peak_memory_gib=torch.cuda.max_memory_allocated(runtime.device) / 2**30)
        return metrics


def model_flops_utilization(tflops: float | None, peak_tflops: float | None, devices: int) -> float | None:
    """MFU: the TFLOP/s of all ranks together over the peak of as many devices (one GPU per rank)."""
    return tflops / (peak_tflops * devices) if tflops and peak_tflops else None


def device_peak_tflops(device: torch.device) -> float | None:
    """The dense bf16 peak of a known GPU (`PEAK_BF16_TFLOPS`), None for anything else."""
    name = torch.cuda.get_device_name(device)
    return next((peak for fragment, peak in PEAK_BF16_TFLOPS if fragment in name), None)
