"""The GPU check (benchmarks/gpu_check.sh) and the trainer's GPU path, as far as a CPU can run them.

The trainer's GPU-only code (bf16 autocast, fused AdamW, torch.compile, peak memory, MFU) is checked here through
what it shares with the CPU: the compiled step traced by dynamo, the throughput interval, the MFU arithmetic.
The check itself runs as a real subprocess in its `--cpu` mode, at tiny sizes; `vitamin-nas train` runs with Ray
made unimportable, as on the GPU machines (Ray's wheel does not fit their 64 MiB)."""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from train_helpers import TINY_ARCH, TINY_TEXT, factory

from nas.train import model_flops_utilization, train
from nas.train_config import TrainConfig

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
from gpu_check import open_clip_steady_state  # noqa: E402  (benchmarks/ is no package)

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


# -- the check, run as a real subprocess -----------------------------------------------------------------


def check(repo: Path, *args: str, env: dict | None = None, timeout: float = 60) -> subprocess.CompletedProcess:
    """benchmarks/gpu_check.sh with this interpreter (PYTHON), as a user runs it."""
    environment = {**os.environ, "PYTHON": sys.executable, **(env or {})}
    return subprocess.run(["bash", str(repo / "benchmarks" / "gpu_check.sh"), *args], capture_output=True,
                          text=True, timeout=timeout, env=environment)


def planned(stdout: str) -> dict[str, list[str]]:
    """--dry-run's plan: part -> its status line and commands."""
    parts: dict[str, list[str]] = {}
    for line in stdout.splitlines():
        if line.startswith("    "):
            parts[list(parts)[-1]].append(line.strip())
        else:
            parts[line.split()[0]] = [line]
    return parts


def test_the_plan_of_a_two_gpu_machine_runs_every_part_in_budget_order(repo, tmp_path):
    run = check(repo, "--dry-run", "--gpus", "2", "--out", str(tmp_path))
    assert run.returncode == 0, run.stderr
    parts = planned(run.stdout)
    assert list(parts) == ["nas:ViTamin-S:eager", "open_clip:ViTamin-S:eager", "nas:ViTamin-B:eager", "packing",
                           "nas:ViTamin-S:compile", "open_clip:ViTamin-S:compile", "nas:ViTamin-B:compile",
                           "torchrun", "open_clip:ViTamin-B:eager", "open_clip:ViTamin-B:compile"]
    assert not (tmp_path / "data").exists()  # a dry run writes nothing
    nas_b = parts["nas:ViTamin-B:compile"][1]
    assert "--arch ViTamin-B --modes compile --batch-size 256" in nas_b and "--data " in nas_b
    clip = parts["open_clip:ViTamin-S:compile"][1]
    assert clip.startswith(f"{sys.executable} -m open_clip_train.main --model ViTamin-S")
    assert "--precision amp_bf16" in clip and "--batch-size 256" in clip and clip.endswith("--torchcompile")
    assert "--torchcompile" not in parts["open_clip:ViTamin-S:eager"][1]
    assert len(parts["packing"]) == 1 + 8  # four runs one after another, then four at once
    assert "--nproc_per_node 2 -m nas.cli train --arch ViTamin-S" in parts["torchrun"][1]
    assert "--batch-size 512" in parts["torchrun"][1]  # 256 per GPU


def test_parts_are_chosen_by_pattern_and_what_cannot_run_says_why(repo, tmp_path):
    one_gpu = check(repo, "--dry-run", "--gpus", "1", "--out", str(tmp_path), "--parts", "open_clip:*:compile,torchrun")
    assert one_gpu.returncode == 0, one_gpu.stderr
    parts = planned(one_gpu.stdout)
    assert list(parts) == ["open_clip:ViTamin-S:compile", "torchrun", "open_clip:ViTamin-B:compile"]
    assert parts["torchrun"] == ["torchrun  (not run: needs two GPUs, this machine has 1)"]
    assert list(planned(check(repo, "--dry-run", "--gpus", "1", "--parts", "nas").stdout)) == [
        "nas:ViTamin-S:eager", "nas:ViTamin-B:eager", "nas:ViTamin-S:compile", "nas:ViTamin-B:compile"]


@pytest.mark.parametrize(("args", "message"), [
    (["--dry-run", "--gpus", "1", "--parts", "nothing"], "--parts 'nothing' matches none of the parts"),
    (["--dry-run", "--budget-s", "0"], "--budget-s must be positive"),
    (["--dry-run", "--gpus", "-1"], "--gpus must be >= 0"),
    (["--no-install", "--gpus", "0"], "no CUDA device here"),
    ([], "run 'make gpu-wheels' first"),
])
def test_bad_arguments_and_missing_wheels_exit_2_saying_what_to_do(repo, tmp_path, args, message):
    run = check(repo, *args, "--out", str(tmp_path), env={"GPU_CHECK_WHEELS": str(tmp_path / "no-wheels")})
    assert run.returncode == 2 and message in run.stderr, run.stderr


def test_open_clip_train_steady_state_is_read_from_its_log_windows():
    """The format is open_clip_train/train.py's; each line holds the means since the previous line."""
    batch, lines = 256, []
    for count, data_t, batch_t in ((1, 1.5, 88.0), (6, 0.1, 0.2), (11, 0.12, 0.25), (16, 0.08, 0.2)):
        lines.append(f"2026-11-22,10:00:00 | INFO | Train Epoch: 0 [{count * batch:>5}/25600 ({count:.0f}%)] "
                     f"Data (t): {data_t:.3f} Batch (t): {batch_t:.3f}, {batch / batch_t:#g}/s, "
                     f"{batch / batch_t:#g}/s/gpu LR: 0.000500 Logit Scale: 14.286 Contrastive_loss: 5.5 (5.5) "
                     "Loss: 5.5 (5.5)")
    steady = open_clip_steady_state("\n".join(lines), batch, warmup=5)
    # windows after step 5: steps 7-11 at 0.25 s and 12-16 at 0.2 s, 1 s waiting for data in 2.25 s
    assert steady["images_per_s"] == pytest.approx(10 * batch / 2.25)
    assert steady["data_wait_share"] == pytest.approx((5 * 0.12 + 5 * 0.08) / 2.25)
    assert open_clip_steady_state(lines[0], batch, warmup=5) is None


@pytest.mark.slow
def test_the_cpu_check_prepares_data_measures_packing_and_prints_one_table_without_ray(repo, tmp_path):
    """The check's CPU-possible parts at tiny sizes: data preparation, the trainer's model step and shards
    measurement, and two `vitamin-nas train` runs one after another and at once, with Ray unimportable (a `ray`
    package that raises, first on the path), as on the GPU machines."""
    blocker = tmp_path / "no-ray" / "ray"
    blocker.mkdir(parents=True)
    (blocker / "__init__.py").write_text("raise ImportError('no Ray on the GPU machines')\n")
    path = os.pathsep.join([str(blocker.parent), str(repo), os.environ.get("PYTHONPATH", "")])
    out = tmp_path / "check"
    run = check(repo, "--cpu", "--no-install", "--parts", "nas,packing", "--out", str(out),
                env={"PYTHONPATH": path}, timeout=600)
    assert run.returncode == 0, run.stdout + run.stderr
    header, columns, rule, *lines, footer = run.stdout.strip().splitlines()
    assert header.startswith("vitamin-nas GPU check on CPU") and columns.split()[:4] == ["part", "model", "mode",
                                                                                          "img/s"]
    assert [line[:len(rule.split()[0])].strip() for line in lines] == [
        "nas.train model step", "nas.train on shards", "packing: 2 one after another", "packing: 2 at once"]
    assert json.loads((out / "data" / "shards-32" / "synth.json").read_text())["complete"]
    rows = {row["part"]: row for row in json.loads((out / "gpu_check.json").read_text())}
    assert not any(row["failed"] for row in rows.values())
    assert (out / "gpu_check.txt").read_text().strip() == run.stdout.strip()

    def final(run_dir: str) -> dict:
        records = [json.loads(line) for line in (out / "packing" / run_dir / "metrics.jsonl").read_text().splitlines()]
        rung = [r for r in records if r["event"] == "rung"][-1]
        assert rung["samples_seen"] == 5 * 16  # 2 warm-up steps and 3 timed ones at batch 16, each run its own
        return rung

    alone = [final(f"alone-{i}")["images_per_s"] for i in range(2)]
    together = [final(f"together-{i}")["images_per_s"] for i in range(2)]
    assert rows["packing: 2 one after another"]["images_per_s"] == pytest.approx(sum(alone) / 2)
    assert rows["packing: 2 at once"]["images_per_s"] == pytest.approx(sum(together))
    gain = sum(together) / (sum(alone) / 2)
    assert f"gain x{gain:.2f} in img/s" in rows["packing: 2 at once"]["note"]
    for part in ("nas.train model step", "nas.train on shards"):
        assert rows[part]["model"] == "tiny" and rows[part]["images_per_s"] > 0
