"""The GPU check (benchmarks/gpu_check.sh) and the trainer's GPU path, as far as a CPU can run them.

The trainer's GPU-only code (bf16 autocast, fused AdamW, torch.compile, peak memory, MFU) is checked here through
what it shares with the CPU: the compiled step traced by dynamo, the throughput interval, the MFU arithmetic.
The check itself runs as a real subprocess in its `--cpu` mode, at tiny sizes; `vitamin-nas train` runs with Ray
made unimportable, as on the GPU machines (Ray's wheel does not fit their 64 MiB)."""

from __future__ import annotations

import dataclasses
import time

import pytest
import torch
from train_helpers import TINY_ARCH, TINY_TEXT, factory

from nas.train import TrainConfig, model_flops_utilization, train

# -- the trainer's GPU path, on CPU --------------------------------------------------------------------------


def test_mfu_divides_the_throughput_of_all_ranks_by_the_peak_of_all_their_devices():
    # 400 TFLOP/s achieved by two H100s (989.4 dense bf16 each): 400 / 1978.8
    assert model_flops_utilization(400.0, 989.4, 2) == pytest.approx(0.20214, abs=1e-5)
    assert model_flops_utilization(400.0, 989.4, 1) == pytest.approx(0.40428, abs=1e-5)
    assert model_flops_utilization(None, 989.4, 1) is None and model_flops_utilization(400.0, None, 1) is None


def test_the_rung_report_and_checkpoint_are_not_counted_as_the_next_intervals_training_time(tmp_path):
    """Images/s (and MFU) come from the training time between rungs: a slow `on_rung` (Ray Tune's report and
    checkpoint upload) must not lower the next rung's figure."""
    calls = []

    def on_rung(metrics):
        calls.append((time.perf_counter(), metrics["train_s"]))
        time.sleep(1.0)
        calls[-1] += (time.perf_counter(),)

    config = TrainConfig(samples=96, batch_size=16, warmup=1, drop_path=0.0, rungs=(32,), checkpoint_every=0)
    train(TINY_ARCH, TINY_TEXT, factory(16), config, out=tmp_path / "run", on_rung=on_rung, device="cpu")
    (_, _, first_returned), (second_called, second_train_s, _) = calls
    assert second_train_s <= second_called - first_returned  # the 1 s sleep and the checkpoint are outside it


def recording_backend(shapes: list):
    """A dynamo backend that runs the traced graph as it is and records the shape of each graph's image batch."""
    side = TINY_ARCH.image_size

    def backend(graph_module, example_inputs):
        shapes.extend(tuple(t.shape) for t in example_inputs
                      if isinstance(t, torch.Tensor) and tuple(t.shape[1:]) == (3, side, side))
        return graph_module.forward

    return backend


def test_the_compiled_clip_step_is_traced_once_and_trains_as_the_eager_one():
    """torch.compile traces the whole CLIP model (dynamo, then the graph run as traced): the losses equal the
    eager run's, and the budget's smaller last batch (40 = 16 + 16 + 8) runs eagerly instead of recompiling."""
    from torch._dynamo import register_backend

    shapes: list = []
    register_backend(recording_backend(shapes), name="nas_test_recording")
    torch._dynamo.reset()
    config = TrainConfig(samples=40, batch_size=16, warmup=1, drop_path=0.1, log_every=1, rungs=(32,))
    eager = train(TINY_ARCH, TINY_TEXT, factory(16), config, device="cpu")
    compiled = train(TINY_ARCH, TINY_TEXT, factory(16),
                     dataclasses.replace(config, compile=True, compile_backend="nas_test_recording"), device="cpu")
    assert compiled.compile["compiled"] and compiled.compile["error"] is None, compiled.compile
    assert shapes == [(16, 3, 32, 32)]  # one graph, traced once: never again for the last 8
    for ours, reference in zip(compiled.rungs, eager.rungs):
        assert ours["samples_seen"] == reference["samples_seen"]
        assert ours["loss"] == pytest.approx(reference["loss"], rel=1e-5)
