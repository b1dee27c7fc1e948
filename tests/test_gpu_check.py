"""The GPU check (benchmarks/gpu_check.sh) and the trainer's GPU path, as far as a CPU can run them.

The trainer's GPU-only code (bf16 autocast, fused AdamW, torch.compile, peak memory, MFU) is checked here through
what it shares with the CPU: the compiled step traced by dynamo, the throughput interval, the MFU arithmetic.
The check itself runs as a real subprocess in its `--cpu` mode, at tiny sizes; `vitamin-nas train` runs with Ray
made unimportable, as on the GPU machines (Ray's wheel does not fit their 64 MiB). What is checked is what a
lent machine's short window needs: the rows written as each part ends (a check killed midway leaves them), a
report folder that comes back (few files, under 16 MiB, shallow), the parts in order of value, the margin below
the command's limit, the loader workers from the CPU affinity, and the timm the tests use."""

from __future__ import annotations

import dataclasses
import importlib.metadata
import json
import os
import re
import signal
import subprocess
import sys
import tarfile
import time
from pathlib import Path

import pytest
import torch
from train_helpers import TINY_ARCH, TINY_TEXT, factory

from nas.train import train
from nas.train.meter import model_flops_utilization
from nas.train_config import TrainConfig

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
from gpu_check import (  # noqa: E402  (benchmarks/ is no package)
    LOGS_BYTES,
    PINNED,
    REPORT_FILES,
    STOP_S,
    gpu_sizes,
    loader_workers,
    logs_archive,
    open_clip_steady_state,
    run_logged,
    untested_versions,
)

GIB = 2**30

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
    """--dry-run's plan (after the facts): part -> its status line and commands."""
    parts: dict[str, list[str]] = {}
    for line in stdout.splitlines():
        if line.startswith("    "):
            parts[list(parts)[-1]].append(line.strip())
        elif re.match(r"(nas|open_clip|packing|torchrun)\b", line):
            parts[line.split()[0]] = [line]
    return parts


def test_the_plan_runs_the_anchor_comparisons_first_then_vitamin_b_then_packing(repo, tmp_path):
    run = check(repo, "--dry-run", "--gpus", "2", "--scratch", str(tmp_path / "scratch"),
                "--report", str(tmp_path / "report"))
    assert run.returncode == 0, run.stderr
    parts = planned(run.stdout)
    assert list(parts) == ["nas:ViTamin-S:eager", "open_clip:ViTamin-S:eager", "nas:ViTamin-S:compile",
                           "open_clip:ViTamin-S:compile", "nas:ViTamin-B:eager", "open_clip:ViTamin-B:eager",
                           "nas:ViTamin-B:compile", "open_clip:ViTamin-B:compile", "packing", "torchrun"]
    assert not list(tmp_path.iterdir())  # a dry run writes nothing
    nas_b = parts["nas:ViTamin-B:compile"][1]
    assert "--arch ViTamin-B --modes compile --batch-size 256" in nas_b and "--data " in nas_b
    clip = parts["open_clip:ViTamin-S:compile"][1]
    assert clip.startswith(f"{sys.executable} -m open_clip_train.main --model ViTamin-S")
    assert "--precision amp_bf16" in clip and "--batch-size 256" in clip and clip.endswith("--torchcompile")
    assert "--torchcompile" not in parts["open_clip:ViTamin-S:eager"][1]
    assert len(parts["packing"]) == 1 + 8  # four runs one after another, then four at once
    assert all(str(tmp_path / "scratch") in command for command in parts["packing"][1:])  # big artefacts: scratch
    assert "--nproc_per_node 2 -m nas.cli train --arch ViTamin-S" in parts["torchrun"][1]
    assert "--batch-size 512" in parts["torchrun"][1]  # 256 per GPU


def test_parts_are_chosen_by_pattern_in_the_plans_order_and_what_cannot_run_says_why(repo):
    one_gpu = check(repo, "--dry-run", "--gpus", "1", "--parts", "torchrun,packing,open_clip:*:compile")
    assert one_gpu.returncode == 0, one_gpu.stderr
    parts = planned(one_gpu.stdout)
    assert list(parts) == ["open_clip:ViTamin-S:compile", "open_clip:ViTamin-B:compile", "packing", "torchrun"]
    assert parts["torchrun"] == ["torchrun  (not run: needs two GPUs, this machine has 1)"]
    assert list(planned(check(repo, "--dry-run", "--gpus", "1", "--parts", "nas").stdout)) == [
        "nas:ViTamin-S:eager", "nas:ViTamin-S:compile", "nas:ViTamin-B:eager", "nas:ViTamin-B:compile"]
    assert list(planned(check(repo, "--dry-run", "--cpu").stdout)) == [  # the rehearsal keeps the order
        "nas:tiny:eager", "open_clip:tiny:eager", "packing", "torchrun"]


@pytest.mark.parametrize(("args", "message"), [
    (["--dry-run", "--gpus", "1", "--parts", "nothing"], "--parts 'nothing' matches none of the parts"),
    (["--dry-run", "--budget-s", "0"], "--budget-s must be positive"),
    (["--dry-run", "--gpus", "-1"], "--gpus must be >= 0"),
    (["--dry-run", "--workers", "-1"], "--workers must be >= 0"),
    (["--no-install", "--gpus", "0"], "no CUDA device here"),
    ([], "run 'make gpu-wheels' first"),
    # refused before the install is paid for: the wheels are missing here too
    (["--limit-s", "300", "--budget-s", "280"], "--budget-s 280 leaves 20 s of --limit-s 300: at least 30 s"),
    (["--budget-s", "590"], "give --budget-s 570 or less"),
])
def test_bad_arguments_a_small_margin_and_missing_wheels_exit_2_saying_what_to_do(repo, tmp_path, args, message):
    run = check(repo, *args, "--report", str(tmp_path / "report"), "--scratch", str(tmp_path / "scratch"),
                env={"GPU_CHECK_WHEELS": str(tmp_path / "no-wheels")})
    assert run.returncode == 2 and message in run.stderr, run.stderr
    assert not (tmp_path / "report").exists()


def test_loader_workers_follow_the_cpu_affinity_and_the_free_shared_memory():
    big = 64 * GIB
    assert [gpu_sizes(cpus, big, None).workers for cpus in (16, 8, 4, 2, 1)] == [14, 6, 2, 1, 1]
    assert gpu_sizes(32, big, None).workers == 14  # the anchors' 14 at most
    assert gpu_sizes(16, big, None).pack_workers == 3  # four packed runs share the affinity
    # 2 batches of 256 x 3 x 224 x 224 float32 (154 MB) per worker, in half the free /dev/shm
    assert gpu_sizes(16, 4 * GIB, None).workers == 6
    assert gpu_sizes(16, 64 * 2**20, None).workers == 0  # a container's 64 MiB: load in the training process
    assert gpu_sizes(16, 64 * 2**20, 5).workers == 5  # --workers decides
    assert loader_workers(16, big, 10**6, runs=4) == 3


def test_the_facts_show_the_affinity_and_workers_set_the_commands(repo):
    def on_cpu_0():
        os.sched_setaffinity(0, {0})

    environment = {**os.environ, "PYTHON": sys.executable}
    run = subprocess.run(["bash", str(repo / "benchmarks" / "gpu_check.sh"), "--dry-run", "--gpus", "1"],
                         capture_output=True, text=True, timeout=60, env=environment, preexec_fn=on_cpu_0)
    assert run.returncode == 0, run.stderr
    assert f"CPUs: 1 in the affinity (0) of {os.cpu_count()}" in run.stdout
    assert "1 loader workers (from the CPU affinity and the free /dev/shm" in run.stdout
    three = check(repo, "--dry-run", "--gpus", "1", "--workers", "3", "--parts", "*:ViTamin-S:eager")
    assert "3 loader workers (--workers" in three.stdout
    assert all(command.count("--workers 3") == 1 for part in planned(three.stdout).values() for command in part[1:])


def test_the_timm_the_tests_use_is_the_one_that_travels_and_no_other_is_accepted():
    """nas/models/tower.py imports timm's internals: the Makefile pins this environment's timm and open_clip_torch
    among the wheels `make gpu-wheels` carries, and the check refuses other versions."""
    here = {name: importlib.metadata.version(name) for name in PINNED}
    assert untested_versions(here) == []
    assert untested_versions({**here, "timm": "0.9.16"}) == [f"timm 0.9.16 (the tests use {here['timm']})"]


def test_another_timm_is_refused_after_the_facts_are_written(repo, tmp_path):
    fake = tmp_path / "fake"
    (fake / "timm").mkdir(parents=True)
    (fake / "timm" / "__init__.py").write_text("__version__ = '0.1'\n")
    (fake / "timm-0.1.dist-info").mkdir()
    (fake / "timm-0.1.dist-info" / "METADATA").write_text("Metadata-Version: 2.1\nName: timm\nVersion: 0.1\n")
    path = os.pathsep.join([str(fake), str(repo), os.environ.get("PYTHONPATH", "")])
    report = tmp_path / "report"
    run = check(repo, "--cpu", "--no-install", "--report", str(report), "--scratch", str(tmp_path / "scratch"),
                env={"PYTHONPATH": path})
    assert run.returncode == 2, run.stderr
    timm = importlib.metadata.version("timm")
    assert f"timm 0.1 (the tests use {timm}) here (timm from {fake / 'timm'})" in run.stderr, run.stderr
    assert "make gpu-wheels" in run.stderr
    written = json.loads((report / "gpu_check.json").read_text())
    assert written["environment"]["versions"]["timm"] == "0.1" and written["rows"] == []
    assert (report / "gpu_check.txt").read_text().startswith("vitamin-nas GPU check")
    assert not (tmp_path / "scratch").exists()  # refused before any shard is written


def test_a_part_past_its_deadline_is_stopped_with_its_whole_process_group(tmp_path):
    result = run_logged(["bash", "-c", "sleep 300 & echo $!; sleep 300"], tmp_path / "sleeps.log", 1,
                        dict(os.environ), tmp_path)
    assert result.timed_out and not result.broke and "stopped at the deadline" in result.failure()
    background = int(result.stdout.split()[0])  # the shell's child, not the process `start` started

    def gone() -> bool:  # no such process, or a zombie left for init to reap
        try:
            return (Path("/proc") / str(background) / "stat").read_text().rsplit(")", 1)[1].split()[0] == "Z"
        except OSError:
            return True

    wait_for(gone, 10, "end of the background sleep")


def test_what_the_budget_cannot_reach_is_not_started_and_is_named_for_a_second_call(repo, tmp_path):
    """A part starts only while its process group can still be stopped (STOP_S) before the budget's end: with a
    budget of STOP_S no part can, whatever the machine's speed."""
    report = tmp_path / "report"
    run = check(repo, "--cpu", "--no-install", "--parts", "nas,packing", "--limit-s", str(STOP_S + 30), "--budget-s",
                str(STOP_S), "--report", str(report), "--scratch", str(tmp_path / "scratch"))
    assert run.returncode == 0, run.stderr
    written = json.loads((report / "gpu_check.json").read_text())
    assert [row["note"] for row in written["rows"]] == [
        "not run: 0 s of --budget-s left (run it with --parts nas:tiny:eager)",
        "not run: 0 s of --budget-s left (run it with --parts packing)"]
    assert written["left_over"] == ["nas:tiny:eager", "packing"]
    assert run.stdout.rstrip().endswith("Not run for lack of time: --parts nas:tiny:eager,packing")
    assert not processes_under(tmp_path / "scratch")


def test_the_logs_archive_stays_under_its_share_of_a_result_file_however_big_the_logs(tmp_path):
    logs = []
    for i in range(3):
        logs.append(tmp_path / f"part-{i}.log")
        logs[-1].write_bytes(os.urandom(6 * 2**20) + f"\nlast line of {i}\n".encode())  # incompressible
    archive = logs_archive(logs)
    assert LOGS_BYTES < len(archive) < 16 * 2**20 - 2**20
    path = tmp_path / "logs.tar.gz"
    path.write_bytes(archive)
    with tarfile.open(path) as members:
        for i, member in enumerate(members.getmembers()):
            data = members.extractfile(member).read()
            assert member.name == f"logs/part-{i}.log" and len(data) == LOGS_BYTES // 3
            assert data.startswith(b"[the first ") and data.endswith(f"last line of {i}\n".encode())


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


# -- the CPU rehearsal -------------------------------------------------------------------------------------


@pytest.fixture
def without_ray(repo, tmp_path) -> dict:
    """PYTHONPATH with a `ray` package that raises first: Ray is not on the GPU machines."""
    blocker = tmp_path / "no-ray" / "ray"
    blocker.mkdir(parents=True)
    (blocker / "__init__.py").write_text("raise ImportError('no Ray on the GPU machines')\n")
    return {"PYTHONPATH": os.pathsep.join([str(blocker.parent), str(repo), os.environ.get("PYTHONPATH", "")])}


def assert_comes_back(report: Path) -> None:
    """What a device call's result folder carries back: at most 8 files of 16 MiB, 2 folders down; here 3, 1 down."""
    files = [path for path in report.rglob("*") if path.is_file()]
    assert sorted(path.name for path in files) == sorted(REPORT_FILES)
    assert all(path.parent == report and path.stat().st_size < 16 * 2**20 for path in files)


def processes_under(directory: Path) -> list[int]:
    """Processes whose command line names `directory` (the parts, their loader workers)."""
    found = []
    for entry in Path("/proc").iterdir():
        try:
            if entry.name.isdigit() and str(directory) in (entry / "cmdline").read_bytes().decode(errors="replace"):
                found.append(int(entry.name))
        except OSError:
            continue
    return found


def wait_for(condition, timeout: float, what: str) -> None:
    end = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < end, f"no {what} after {timeout:.0f} s"
        time.sleep(0.05)


@pytest.mark.slow
def test_a_check_killed_midway_leaves_the_facts_and_the_rows_of_the_parts_that_ended(repo, tmp_path, without_ray):
    """As at a command's limit: the check is SIGKILLed while packing runs, after the trainer's part. The report
    holds the facts and that part's rows and log, and the part in progress dies with the check."""
    scratch, report = tmp_path / "scratch", tmp_path / "report"
    environment = {**os.environ, "PYTHON": sys.executable, **without_ray}
    process = subprocess.Popen(["bash", str(repo / "benchmarks" / "gpu_check.sh"), "--cpu", "--no-install",
                                "--parts", "nas,packing", "--scratch", str(scratch), "--report", str(report)],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=environment)
    try:
        wait_for(lambda: processes_under(scratch / "packing" / "alone-0"), 300, "packing run")
    finally:
        process.kill()
        process.communicate()
    assert process.returncode == -signal.SIGKILL
    wait_for(lambda: not processes_under(scratch), 60, "end of the killed check's processes")
    assert_comes_back(report)
    text = (report / "gpu_check.txt").read_text().splitlines()
    assert text[0].startswith("vitamin-nas GPU check: the tiny proxy on the CPU") and text[2].startswith("CPUs: ")
    assert "1 of 2 parts done" in text[-1] and text[-1].endswith("still to run: packing.")
    written = json.loads((report / "gpu_check.json").read_text())
    assert list(written)[0] == "environment" and written["environment"]["cpu_affinity"] == sorted(
        os.sched_getaffinity(0))
    assert written["done"] == ["nas:tiny:eager"] and written["to_run"] == ["packing"]
    assert [row["part"] for row in written["rows"]] == ["nas.train model step", "nas.train on shards"]
    assert all(row["images_per_s"] > 0 and not row["failed"] for row in written["rows"])
    with tarfile.open(report / "logs.tar.gz") as logs:
        assert logs.getnames() == ["logs/nas-tiny-eager.log"]
        assert logs.extractfile("logs/nas-tiny-eager.log").read().startswith(b"$ ")


@pytest.mark.slow
def test_the_cpu_rehearsal_measures_packing_into_a_report_that_comes_back(repo, tmp_path, without_ray):
    """Two `vitamin-nas train` runs one after another and at once, with Ray unimportable, as on the GPU machines;
    the shards and the runs stay in the scratch folder, the report holds three small files."""
    scratch, report = tmp_path / "scratch", tmp_path / "report"
    run = check(repo, "--cpu", "--no-install", "--parts", "packing", "--scratch", str(scratch), "--report",
                str(report), env=without_ray, timeout=600)
    assert run.returncode == 0, run.stdout + run.stderr
    assert (report / "gpu_check.txt").read_text().strip() == run.stdout.strip()
    *facts, columns, rule, alone_line, together_line, footer = run.stdout.strip().splitlines()
    assert len(facts) == 4 and columns.split()[:4] == ["part", "model", "mode", "img/s"]
    assert footer.endswith("s in all.")
    assert_comes_back(report)
    assert json.loads((scratch / "data" / "shards-32" / "synth.json").read_text())["complete"]
    written = json.loads((report / "gpu_check.json").read_text())
    assert written["done"] == ["packing"] and written["to_run"] == []
    rows = {row["part"]: row for row in written["rows"]}
    assert list(rows) == ["packing: 2 one after another", "packing: 2 at once"]
    assert not any(row["failed"] for row in rows.values())
    with tarfile.open(report / "logs.tar.gz") as logs:
        assert logs.getnames() == [f"logs/packing-{how}-{i}.log" for how in ("alone", "together") for i in range(2)]

    def final(run_dir: str) -> dict:
        lines = (scratch / "packing" / run_dir / "metrics.jsonl").read_text().splitlines()
        rung = [r for r in map(json.loads, lines) if r["event"] == "rung"][-1]
        assert rung["samples_seen"] == 5 * 16  # 2 warm-up steps and 3 timed ones at batch 16, each run its own
        return rung

    alone = [final(f"alone-{i}")["images_per_s"] for i in range(2)]
    together = [final(f"together-{i}")["images_per_s"] for i in range(2)]
    assert rows["packing: 2 one after another"]["images_per_s"] == pytest.approx(sum(alone) / 2)
    assert rows["packing: 2 at once"]["images_per_s"] == pytest.approx(sum(together))
    gain = sum(together) / (sum(alone) / 2)
    assert f"gain x{gain:.2f} in img/s" in rows["packing: 2 at once"]["note"]
