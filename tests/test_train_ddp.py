"""Data-parallel training under torchrun: 2 CPU processes on gloo take the steps one process takes.

Each rank trains on its half of every global batch, in two accumulated micro-batches, with the loss
gathered across ranks (open_clip's ClipLoss with local_loss and gather_with_grad). The contrastive loss
of the whole global batch, and so every step, must equal the single-process run's on the same batches.
"""

from __future__ import annotations

import json
import socket
import subprocess
import sys

import pytest
import torch
from train_helpers import TINY_ARCH, TINY_TEXT, factory

from nas.train import train
from nas.train.checkpoint import load_checkpoint
from nas.train_config import TrainConfig

CONFIG = {"samples": 96, "batch_size": 16, "warmup": 1, "drop_path": 0.0, "log_every": 1, "rungs": (48,)}
RANK = """
import os, sys, torch
torch.set_num_threads(1)
sys.path.insert(0, sys.argv[2])
from train_helpers import TINY_ARCH, TINY_TEXT, random_pairs
from nas.train import train
from nas.train_config import TrainConfig

rank, world = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])

def halves(start):  # this rank's half of each global batch of 16, as two micro-batches of 4
    for images, tokens in random_pairs(start, 16):
        for micro in range(2):
            rows = slice(rank * 8 + micro * 4, rank * 8 + micro * 4 + 4)
            yield images[rows], tokens[rows]

config = TrainConfig(**{**%s, "accum_freq": 2})
result = train(TINY_ARCH, TINY_TEXT, halves, config, out=sys.argv[1])
with open(f"{sys.argv[1]}-rank{rank}.txt", "w") as f:  # a file per rank: nothing depends on torchrun's pipes
    f.write(f"{rank} {result.status} {result.samples_seen} {result.step}")
"""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _losses(out) -> list[float]:
    lines = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    return [r["loss"] for r in lines if r["event"] == "train"]


@pytest.mark.subprocess
def test_two_ranks_take_the_single_process_steps(tmp_path, repo, one_thread):
    script = tmp_path / "rank.py"
    script.write_text(RANK % repr(CONFIG))
    command = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", "--master_addr=127.0.0.1",
               f"--master_port={_free_port()}", str(script), str(tmp_path / "ddp"), str(repo / "tests")]
    ranks = subprocess.run(command, capture_output=True, text=True, timeout=600)
    assert ranks.returncode == 0, ranks.stderr[-3000:]
    results = [(tmp_path / f"ddp-rank{rank}.txt").read_text().split() for rank in range(2)]
    assert results == [["0", "completed", "96", "6"], ["1", "completed", "96", "6"]]

    single = train(TINY_ARCH, TINY_TEXT, factory(16), TrainConfig(**CONFIG), out=tmp_path / "single", device="cpu")
    assert (single.samples_seen, single.step) == (96, 6)
    assert _losses(tmp_path / "ddp") == pytest.approx(_losses(tmp_path / "single"), rel=1e-4)

    ddp, one = load_checkpoint(tmp_path / "ddp" / "checkpoint.pt"), load_checkpoint(tmp_path / "single" /
                                                                                    "checkpoint.pt")
    assert ddp["world_size"] == 2 and len(ddp["rng"]) == 2  # each rank's RNG, for an exact resume
    assert not torch.equal(ddp["rng"][0]["torch"], ddp["rng"][1]["torch"])
    assert ddp["model"]["logit_scale"].item() == pytest.approx(one["model"]["logit_scale"].item(), rel=1e-5)
