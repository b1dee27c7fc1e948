"""Data-parallel trials in a real search: each trial a Ray Train job of 2 gloo ranks (real Ray Train V2 inside a
real Ray Tune trial, real gloo, 1 CPU each) on the tests' 32 px synthetic shards.

One search measures one candidate; its rank 0 is killed with SIGKILL between checkpoints. The trial's losses,
step by step, equal those of a single process trained on the same global batches (each step's batch is rank 0's
micro-batch followed by rank 1's, read from the same stream), before the kill and after the resume: the
restarted trial continued from its newest checkpoint with the same samples."""

from __future__ import annotations

import json
import os
import pickle
import signal
import threading
from dataclasses import replace
from pathlib import Path

import pytest
import ray
import torch
from search_helpers import alive, last_logged_samples, progress_of, tower, wait_for, write_study

from nas.data import StreamSettings, stream
from nas.results import ResultStore
from nas.run_dir import RunDir
from nas.search import search
from nas.search.data_parallel import rank_oom
from nas.study import Study, load_study
from nas.train import OOMError, train

EVERY = 96  # three steps of 32: the most training a kill may cost
SAMPLES = 512  # the run: 16 global steps, a rung at 64 and one at the end
#: Measured: |loss(2 gloo ranks) - loss(1 process)| <= 9.5e-7 over a run of 32 steps (float32, CPU), losses ~3.5.
LOSS_TOLERANCE = 1e-5


@pytest.fixture(scope="module")
def killed_search(local_ray, search_data, tmp_path_factory):
    """The study, its database, and where rank 0 stood when it was killed (its metrics.jsonl at that moment)."""
    directory = tmp_path_factory.mktemp("data_parallel")
    study = load_study(write_study(
        directory, search_data, algorithm="fixed", archs=[tower(32, 1, block="convnext").to_dict()],
        data={"urls": str(search_data / "shards")},  # no evaluation: the objective is the training loss
        train={"batch_size": 32, "warmup": 1, "lr": 0.002, "checkpoint_every": EVERY, "log_every": 1,
               "drop_path": 0.0},
        budget={"min_samples": 64, "max_samples": SAMPLES, "reduction_factor": 8},
        resources={"cpus": 1, "workers": 2}))
    out = directory / "out"
    killed: dict = {}

    def kill_rank_zero_between_checkpoints():
        store = wait_for(lambda: (out / "study.db").exists() and ResultStore.open(out, readonly=True), 300,
                         what="the database")
        trial = wait_for(lambda: next((t for t in store.trials() if t["rung"] == 0 and t["pid"]), None), 300,
                         what="the first rung")
        training = RunDir(out).training(trial["trial_id"], 1)
        wait_for(lambda: (progress_of(training) or 0) > 64 + EVERY, 300, what="a checkpoint past the rung's")
        os.kill(trial["pid"], signal.SIGKILL)  # rank 0's process dies mid-run, as on a lost node
        wait_for(lambda: not alive(trial["pid"]), 10)
        killed.update(pid=trial["pid"], logged=last_logged_samples(training), checkpointed=progress_of(training),
                      losses=step_losses(training / "metrics.jsonl"))

    killer = threading.Thread(target=kill_rank_zero_between_checkpoints, daemon=True)
    killer.start()
    store = search(study, out)
    killer.join(timeout=5)
    held = [g for g in ray.util.placement_group_table().values() if g["state"] != "REMOVED"]
    assert not held, held  # every job's ranks' reservation went with it, however its trial's process ended
    return study, store, killed


def step_losses(metrics: Path) -> dict[int, float]:
    """The loss of every logged step by samples seen (metrics.jsonl; log_every 1)."""
    lines = [json.loads(line) for line in metrics.read_text().splitlines() if line.strip()]
    return {r["samples_seen"]: r["loss"] for r in lines if r["event"] == "train"}


def single_process_losses(study: Study, out: Path) -> dict[int, float]:
    """The same run in this process, one rank: each step's batch is rank 0's micro-batch then rank 1's."""
    config = study.run_config()
    arch = study.archs[0]
    settings = StreamSettings(batch_size=config.batch_size // 2, image_size=arch.image_size, samples=config.samples,
                              seed=config.seed, workers=config.workers, context_length=study.text.context_length)

    def global_batches(start_sample: int):
        assert start_sample == 0
        ranks = [stream(study.data.source, settings, rank=r, world_size=2)[0] for r in (0, 1)]
        for first, second in zip(*ranks, strict=True):
            yield torch.cat([first[0], second[0]]), torch.cat([first[1], second[1]])

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        train(arch, study.text, global_batches, replace(config, checkpoint_every=0), out=out, device="cpu")
    finally:
        torch.set_num_threads(threads)
    return step_losses(out / "metrics.jsonl")


@pytest.mark.slow
def test_a_data_parallel_trial_trains_as_one_process_on_the_same_global_batches(killed_search, tmp_path):
    study, store, killed = killed_search
    (trial,) = store.trials()
    reference = single_process_losses(study, tmp_path / "single")
    assert sorted(reference) == list(range(32, SAMPLES + 1, 32))
    run = RunDir(store.path.parent).training(trial["trial_id"], 1)
    losses = step_losses(run / "metrics.jsonl")
    before = killed["losses"]  # what the first attempt logged, up to the kill
    assert sorted(losses) == sorted(reference) and len(before) >= (64 + EVERY) // 32
    worst = max(abs(losses[s] - reference[s]) for s in reference)
    worst_before = max(abs(before[s] - reference[s]) for s in before)
    print(f"2 gloo ranks vs 1 process: max |loss difference| {worst:.2e} over {len(reference)} steps "
          f"({worst_before:.2e} before the kill)")
    assert worst <= LOSS_TOLERANCE and worst_before <= LOSS_TOLERANCE
    first, last = reference[32], reference[SAMPLES]
    assert last < first - 0.1  # it learned: equal losses are not equal constants
    rungs = store.rungs(trial["trial_id"])
    assert [r["budget"] for r in rungs] == [64, SAMPLES]  # each rung recorded once, from rank 0
    assert rungs[0]["metrics"]["loss"] == pytest.approx((reference[32] + reference[64]) / 2, abs=LOSS_TOLERANCE)


@pytest.mark.slow
def test_a_killed_rank_resumes_its_trial_from_the_newest_checkpoint(killed_search):
    study, store, killed = killed_search
    (trial,) = store.trials()
    assert trial["status"] == "completed" and trial["samples_seen"] == SAMPLES and trial["device"] == "cpu"
    assert trial["attempts"] == 2 and killed["pid"] != trial["pid"]  # Ray Tune retried it; a new rank 0
    assert trial["resumed_from"] == killed["checkpointed"] > 64 + EVERY
    assert 0 <= killed["logged"] - trial["resumed_from"] <= EVERY
    print(f"rank 0 killed at {killed['logged']} samples, resumed from {trial['resumed_from']} (rung at 64, "
          f"checkpoint every {EVERY})")
    rungs = store.rungs(trial["trial_id"])
    assert rungs[0]["session"] != rungs[1]["session"]  # the first rung measured before the kill, the last after
    run = RunDir(store.path.parent)
    for row in rungs:  # rank 0 kept each rung's checkpoint, in the run directory
        state = torch.load(store.checkpoint_path(row["checkpoint"]) / "checkpoint.pt", weights_only=True, mmap=True)
        assert state["samples_seen"] == row["samples_seen"] and state["world_size"] == 2
        assert len(state["rng"]) == 2  # every rank's RNG state
    assert (run.trial(trial["trial_id"]) / "ray-train").is_dir()
    assert not list((run.root / "ray").rglob("*.pt"))


def test_a_rank_out_of_memory_reaches_its_trial_as_out_of_memory():
    """Ray Train reports the ranks' errors in a `WorkerGroupError` that crosses processes pickled (from a rank
    to the controller, then to the trial): a rank's `OOMError` arrives whole, next to the gloo error the other
    rank then raised, and the trial retries it with smaller micro-batches; a dead rank is no such thing."""
    from ray.exceptions import ActorDiedError
    from ray.train import WorkerGroupError

    oom = OOMError(512, 256, "train", "cuda:1")
    gloo = RuntimeError("[gloo/transport/tcp/pair.cc:545] Read error [127.0.0.1]:12160: Connection reset by peer")
    error = pickle.loads(pickle.dumps(WorkerGroupError("rank 1 ran out of memory", {0: gloo, 1: oom})))
    found = rank_oom(error)
    assert isinstance(found, OOMError) and (found.batch_size, found.micro_batch_size, found.device) == (512, 256,
                                                                                                          "cuda:1")
    cpu = RuntimeError("[enforce fail at alloc_cpu.cpp:118] DefaultCPUAllocator: can't allocate memory: you tried "
                       "to allocate 1073741824 bytes")
    assert rank_oom(pickle.loads(pickle.dumps(WorkerGroupError("", {1: cpu})))) is not None
    assert rank_oom(WorkerGroupError("rank 0 died", {0: ActorDiedError(), 1: gloo})) is None
    assert rank_oom(RuntimeError("not Ray Train's")) is None
