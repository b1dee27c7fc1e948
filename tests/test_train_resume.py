"""Kill and resume: a run killed with SIGKILL mid-run and resumed ends where the uninterrupted run ends.

The runs read the real data stream (synthetic shards, one loader worker), use drop-path (so the RNG state
matters) and checkpoint every four steps; the kill lands at an arbitrary moment after a checkpoint. The
killed run is a separate process; the uninterrupted run and the resumed one run here, on one thread as
the killed one does.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time

import pytest
import torch
from train_helpers import stream_run

from nas.data import SynthConfig, synthesize
from nas.train.checkpoint import load_checkpoint

BUDGET = 160
KILLED_RUN = """
import sys, torch
torch.set_num_threads(1)
sys.path.insert(0, sys.argv[3])
from train_helpers import stream_run
stream_run(sys.argv[1], sys.argv[2])
"""


@pytest.fixture(scope="module")
def shards(tmp_path_factory):
    root = tmp_path_factory.mktemp("synth")
    synthesize(root, SynthConfig(samples=192, size=32, samples_per_shard=48, zeroshot_per_class=0,
                                 retrieval_samples=0, workers=1))
    return str(root / "shards")


def _kill_after_a_checkpoint(process: subprocess.Popen, checkpoint, samples: int) -> int:
    deadline = time.time() + 240
    while time.time() < deadline and process.poll() is None:
        if checkpoint.exists() and load_checkpoint(checkpoint)["samples_seen"] >= samples:
            break
        time.sleep(0.05)
    time.sleep(0.2)  # somewhere inside a step, a log line or the next checkpoint
    process.send_signal(signal.SIGKILL)
    _, stderr = process.communicate()
    assert process.returncode == -signal.SIGKILL, f"the run ended before it could be killed: {stderr[-2000:]}"
    return load_checkpoint(checkpoint)["samples_seen"]


def _lines(out) -> list[dict]:
    return [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]


@pytest.mark.subprocess
def test_killed_run_resumes_to_the_uninterrupted_result(shards, tmp_path, repo, one_thread):
    killed = subprocess.Popen([sys.executable, "-c", KILLED_RUN, shards, str(tmp_path / "b"), str(repo / "tests")],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    position = _kill_after_a_checkpoint(killed, tmp_path / "b" / "checkpoint.pt", 32)
    assert 32 <= position < BUDGET

    resumed = stream_run(shards, str(tmp_path / "b"))
    assert (resumed.status, resumed.samples_seen, resumed.step, resumed.resumed_from) == (
        "completed", BUDGET, 20, position)
    reference = stream_run(shards, str(tmp_path / "a"))
    assert (reference.status, reference.samples_seen, reference.step) == ("completed", BUDGET, 20)

    a, b = load_checkpoint(tmp_path / "a" / "checkpoint.pt"), load_checkpoint(tmp_path / "b" / "checkpoint.pt")
    for name, tensor in a["model"].items():
        assert torch.allclose(tensor, b["model"][name], atol=1e-5), name
    assert resumed.final["loss"] == pytest.approx(reference.final["loss"], rel=1e-4)
    lines_a, lines_b = _lines(tmp_path / "a"), _lines(tmp_path / "b")
    assert [(r["event"], r["samples_seen"]) for r in lines_a] == [(r["event"], r["samples_seen"]) for r in lines_b]
    for ra, rb in zip(lines_a, lines_b, strict=True):
        assert ra["loss"] == pytest.approx(rb["loss"], rel=1e-4, abs=1e-5)
