"""A run's curves in TensorBoard: the event files, read back with TensorBoard's own reader, hold what
metrics.jsonl holds, against samples seen, each step once across a crash and a resume."""

from __future__ import annotations

import importlib.util
import json

import pytest
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from train_helpers import TINY_ARCH, TINY_TEXT, random_pairs

from nas.errors import ConfigError
from nas.train import ReportTo, train
from nas.train.log import scalars
from nas.train_config import TrainConfig


def read_events(directory) -> dict[str, list[tuple[int, float]]]:
    """Every scalar curve of an event directory as TensorBoard loads it: tag -> [(step, value)]."""
    events = EventAccumulator(str(directory), size_guidance={"scalars": 0})
    events.Reload()
    return {tag: [(e.step, e.value) for e in events.Scalars(tag)] for tag in events.Tags()["scalars"]}


def crashing(after: int, batch_size: int):
    """A data factory whose stream fails after `after` batches (a worker that dies mid-run)."""
    def factory(start: int):
        for index, batch in enumerate(random_pairs(start, batch_size)):
            if index == after:
                raise RuntimeError("the node went away")
            yield batch
    return factory


def test_events_hold_the_metrics_lines_by_samples_seen_once_across_a_resume(tmp_path):
    out, events = tmp_path / "run", tmp_path / "tensorboard"
    config = TrainConfig(samples=128, batch_size=16, warmup=1, rungs=(32,), checkpoint_every=0, log_every=1)
    with pytest.raises(RuntimeError, match="went away"):  # checkpoint at 32, curves written up to 80, then a crash
        train(TINY_ARCH, TINY_TEXT, crashing(5, 16), config, out=out, device="cpu",
              report_to=ReportTo(tensorboard=str(events)))
    assert max(step for step, _ in read_events(events)["train/loss"]) == 80
    train(TINY_ARCH, TINY_TEXT, lambda start: random_pairs(start, 16), config, out=out, device="cpu",
          report_to=ReportTo(tensorboard=str(events)))

    curves = read_events(events)
    lines = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    train_lines = [r for r in lines if r["event"] == "train"]
    assert [r["samples_seen"] for r in train_lines] == list(range(16, 129, 16))
    for name in ("loss", "lr", "logit_scale", "images_per_s", "data_wait_share"):
        assert curves[f"train/{name}"] == [(r["samples_seen"], pytest.approx(r[name], rel=1e-6))
                                           for r in train_lines], name
    rungs = [r for r in lines if r["event"] == "rung"]
    assert [r["samples_seen"] for r in rungs] == [32, 128]
    for name in ("loss", "images_per_s", "data_wait_share", "wall_s"):
        assert curves[f"rung/{name}"] == [(r["samples_seen"], pytest.approx(r[name], rel=1e-6)) for r in rungs]
    assert not any(tag.startswith("eval/") for tag in curves)  # no eval set, no evaluation curves
    assert all(0 <= r["data_wait_share"] <= 1 for r in rungs)


def test_rung_scalars_carry_each_evaluation_with_its_interval():
    record = {"event": "rung", "budget": 64, "samples_seen": 64, "step": 4, "loss": 2.5, "zeroshot_top1": 0.25,
              "zeroshot_top1_n": 8, "zeroshot_top1_low": 0.07, "zeroshot_top1_high": 0.59, "image_to_text_R@1": 0.5,
              "mfu": 0.41, "peak_memory_gib": 3.5, "tflops": None, "hits": {"zeroshot_top1": "AQ=="},
              "checkpoint": "/runs/x/checkpoint.pt"}
    assert scalars(record) == {"rung/loss": 2.5, "eval/zeroshot_top1": 0.25, "eval/zeroshot_top1_low": 0.07,
                               "eval/zeroshot_top1_high": 0.59, "eval/image_to_text_R@1": 0.5, "rung/mfu": 0.41,
                               "rung/peak_memory_gib": 3.5}
    assert scalars({"event": "diverged", "samples_seen": 64, "step": 4}) == {}


def test_report_to_reads_open_clip_trains_option(tmp_path):
    assert ReportTo.parse("tensorboard", tmp_path) == ReportTo(tensorboard=str(tmp_path))
    assert ReportTo.parse("", tmp_path) == ReportTo.parse("none", tmp_path) == ReportTo()
    with pytest.raises(ConfigError, match="unknown mlflow; allowed: tensorboard, wandb"):
        ReportTo.parse("tensorboard,mlflow", tmp_path)


@pytest.mark.skipif(importlib.util.find_spec("wandb") is not None, reason="wandb is installed here")
def test_wandb_without_wandb_installed_is_a_one_line_error(tmp_path):
    with pytest.raises(ConfigError, match=r"wandb is not installed: `pip install wandb`") as err:
        ReportTo.parse("tensorboard,wandb", tmp_path)
    assert "\n" not in str(err.value)


@pytest.mark.skipif(importlib.util.find_spec("wandb") is not None, reason="wandb is installed here")
def test_a_search_asking_for_wandb_without_it_stops_before_starting(tmp_path, capsys):
    from search_helpers import write_study

    from nas.cli import main

    study = write_study(tmp_path, tmp_path / "data")
    assert main(["search", str(study), "--out", str(tmp_path / "out"), "--report-to", "tensorboard,wandb"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "wandb is not installed: `pip install wandb`" in err
    assert not (tmp_path / "out").exists()
