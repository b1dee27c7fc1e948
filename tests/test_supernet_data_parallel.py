"""A supernet trained data-parallel: Ray Train jobs of 2 gloo ranks (real Ray, real gloo, 1 CPU each) on the
search tests' 32 px synthetic shards, 6 sandwich steps of 16 samples (8 per rank).

One run, `train_supernet(..., workers=2)`, has a rank killed with SIGKILL between checkpoints and is resumed on 2
ranks from its newest checkpoint. It ends with the same shared weights on both ranks, and with the losses, step by
step, and the weights of one process trained uninterrupted on the same global batches (each step's batch is rank
0's micro-batch followed by rank 1's): the ranks drew the same subnets, their averaged gradients are the whole
batch's, and the resumed ranks continued where the killed ones stood."""

from __future__ import annotations

import json
import os
import signal
import sys
import threading
from dataclasses import replace
from pathlib import Path

import pytest
import ray.cloudpickle
import ray.train
import torch
from search_helpers import alive, children, progress_of, wait_for, write_study

from nas.data import StreamSettings, stream
from nas.search.data_parallel import RAY_TRAIN, rank_trainer
from nas.study import load_study
from nas.supernet import SupernetConfig, load_supernet, train_supernet
from nas.supernet.data_parallel import SupernetJob
from nas.supernet.sandwich import step_seeds
from nas.supernet.training import SupernetLoop
from nas.train.checkpoint import load_checkpoint

SAMPLES = 96  # 6 global steps of 16
#: Measured on CPU (float32): |loss(2 gloo ranks) - loss(1 process)| <= 4.8e-7 over the 6 steps (losses ~3.3), and
#: |weight difference| <= 6.7e-6 after them, but for the text tower's key biases (`KEY_BIAS`).
TOLERANCE = 1e-5
SUPERNET = SupernetConfig(random_subnets=1)  # distillation on (distill_weight 1): the gathered logits are tested

ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])  # `_each_rank` goes to ranks without tests/


def _study(directory: Path, search_data: Path) -> Path:
    return write_study(directory, search_data, data={"urls": str(search_data / "shards"), "workers": 0},
                       train={"batch_size": 16, "warmup": 1, "lr": 0.002, "checkpoint_every": 16, "log_every": 1,
                              "drop_path": 0.0},
                       budget={"min_samples": SAMPLES, "max_samples": SAMPLES, "early_stopping": "none"})


def _each_rank(config: dict):
    """`nas.supernet.training.supernet_rank`, then this rank's weights saved beside the run."""
    job = config["job"]
    torch.set_num_threads(1)
    loop = SupernetLoop(job.space, job.supernet, job.data, job.config, job.out, device="cpu")
    result = loop.execute()
    torch.save(loop.supernet.state_dict(), Path(job.out) / f"rank{loop.runtime.rank}.pt")
    return result


def _kill_a_rank_past(out: Path, samples: int) -> dict:
    """Once the run's checkpoint is past `samples`, SIGKILL one of this process's Ray Train ranks (a rank lost)."""
    killed: dict = {}

    def kill() -> None:
        wait_for(lambda: (progress_of(out) or 0) >= samples, 600, interval=0.02, what="a checkpoint")
        ranks = [pid for pid in children(os.getpid())
                 if Path(f"/proc/{pid}/cmdline").read_bytes().startswith(b"ray::RayTrainWorker")]
        os.kill(ranks[0], signal.SIGKILL)
        wait_for(lambda: not alive(ranks[0]), 30, what="the killed rank to end")
        killed["pid"] = ranks[0]

    thread = threading.Thread(target=kill, daemon=True)
    thread.start()
    killed["thread"] = thread
    return killed


@pytest.fixture(scope="module")
def resumed(local_ray, search_data, tmp_path_factory):
    """The study, the run directory (each rank's final weights in it: rank0.pt, rank1.pt), the samples seen the
    run was resumed from and the result of its resumed session."""
    directory = tmp_path_factory.mktemp("supernet_data_parallel")
    study = load_study(_study(directory, search_data))
    out = directory / "run"
    killed = _kill_a_rank_past(out, 16)
    with pytest.raises(ray.train.TrainingFailedError):  # a rank lost: the job ends
        train_supernet(study, SUPERNET, out, workers=2, report_to=None)
    killed["thread"].join(timeout=30)
    assert "pid" in killed, "no rank was killed"
    newest = progress_of(out)
    assert 16 <= newest < SAMPLES, newest

    ranks = replace(study.resources, workers=2)
    job = SupernetJob(study.space, SUPERNET, study.data.source, study.run_config(), str(out), ranks, None)
    result = rank_trainer(_each_rank, {"job": job}, ranks, out / RAY_TRAIN, "resumed").fit().return_value
    return study, out, newest, result


def _losses(run: Path) -> dict[int, float]:
    lines = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines() if line.strip()]
    return {r["samples_seen"]: r["loss"] for r in lines if r["event"] == "train"}


def test_every_rank_draws_the_steps_subnets_and_its_own_drop_path_masks():
    subnets, masks = zip(*(step_seeds(0, 7, rank) for rank in range(4)), strict=True)
    assert len(set(subnets)) == 1 and len(set(masks)) == 4
    assert step_seeds(0, 7, 0) == (7, 7) and step_seeds(0, 8, 1)[0] != subnets[0]  # rank 0: one process's seeds


@pytest.mark.slow
def test_a_killed_two_rank_run_resumes_and_takes_the_steps_of_one_process(resumed, tmp_path, one_thread):
    study, out, newest, result = resumed
    assert (result.status, result.samples_seen, result.step, result.resumed_from) == ("completed", SAMPLES, 6,
                                                                                        newest)
    rank0, rank1 = (torch.load(out / f"rank{r}.pt", weights_only=True) for r in (0, 1))
    for name, tensor in rank0.items():
        assert torch.equal(tensor, rank1[name]), name  # the same all-reduced gradients, the same AdamW steps
    checkpoint = load_checkpoint(out / "checkpoint.pt")
    assert (checkpoint["samples_seen"], checkpoint["step"], checkpoint["world_size"]) == (SAMPLES, 6, 2)
    for name, tensor in load_supernet(out).state_dict().items():
        assert torch.equal(tensor, rank0[name]), name

    config = study.run_config()
    settings = StreamSettings(batch_size=8, image_size=32, samples=SAMPLES, seed=config.seed, workers=0,
                              context_length=study.text.context_length)

    def whole_batches(start_sample: int):
        assert start_sample == 0
        ranks = [stream(study.data.source, settings, rank=r, world_size=2)[0] for r in (0, 1)]
        for first, second in zip(*ranks, strict=True):
            yield torch.cat([first[0], second[0]]), torch.cat([first[1], second[1]])

    SupernetLoop(study.space, SUPERNET, whole_batches, replace(config, checkpoint_every=0), tmp_path / "one",
                 device="cpu").execute()
    reference, losses = _losses(tmp_path / "one"), _losses(out)
    assert sorted(losses) == sorted(reference) == list(range(16, SAMPLES + 1, 16))
    worst_loss = max(abs(losses[s] - reference[s]) for s in reference)
    assert reference[SAMPLES] < reference[16]  # it learned: equal losses are not equal constants

    # The gradient of an attention's key bias is zero in exact arithmetic (the softmax ignores what it adds to
    # every key), so each run's is rounding noise, which AdamW divides by its own size: steps of up to `lr` in
    # either direction. Every other weight agrees within float32 rounding.
    one = load_checkpoint(tmp_path / "one" / "checkpoint.pt")["model"]
    width = study.text.width
    worst_weight = 0.0
    for name, tensor in rank0.items():
        difference = (one[name] - tensor).abs()
        if name.endswith("attn.in_proj_bias"):
            keys = difference[width:2 * width]
            assert keys.max() <= 6 * config.lr, name
            difference = torch.cat([difference[:width], difference[2 * width:]])
        worst_weight = max(worst_weight, difference.max().item())
    print(f"2 gloo ranks (killed at {newest} samples, resumed) vs 1 process: max |loss difference| "
          f"{worst_loss:.2e}, max |weight difference| {worst_weight:.2e} after {len(reference)} steps")
    assert worst_loss <= TOLERANCE and worst_weight <= TOLERANCE


@pytest.mark.slow
def test_the_run_records_its_cpu_seconds_across_the_resume(resumed):
    _, out, newest, result = resumed
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    cpu = [r["cpu_s"] for r in records if r["event"] == "train"]
    assert len(cpu) == 6 and all(0 < a < b for a, b in zip(cpu, cpu[1:], strict=False)), cpu
    # both ranks', both sessions' (the killed one's up to its checkpoint, as wall_s), to the last line and beyond
    assert cpu[-1] <= load_checkpoint(out / "checkpoint.pt")["cpu_s"] <= result.cpu_s


def test_train_takes_workers_and_the_devices_ray_places_in_one_line(tmp_path, search_data, run_cli):
    study = _study(tmp_path, search_data)
    for flags, field in ((["--workers", "0"], "--workers"), (["--workers", "2", "--device", "cuda:1"], "--device")):
        run = run_cli("supernet", "train", study, "--out", tmp_path / "run", *flags)
        assert run.returncode == 2 and len(run.stderr.strip().splitlines()) == 1, run.stderr
        assert field in run.stderr and not (tmp_path / "run").exists()
    assert "--workers 2" in run_cli("supernet", "train", "--help").stdout
