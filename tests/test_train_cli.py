"""`vitamin-nas train` end to end on synthetic shards: progress, metrics lines, checkpoint, open_clip export."""

from __future__ import annotations

import json
from dataclasses import asdict

import pytest
import torch
from train_helpers import TINY_ARCH

from nas.cli import main
from nas.data import SynthConfig, synthesize
from nas.export import load_open_clip
from nas.presets import TextTower

TEXT = TextTower(width=32, layers=1, heads=2, context_length=16)


@pytest.fixture(scope="module")
def synthetic(tmp_path_factory):
    root = tmp_path_factory.mktemp("synth")
    synthesize(root, SynthConfig(samples=96, size=32, samples_per_shard=48, zeroshot_per_class=1,
                                 retrieval_samples=24, workers=1))
    arch = root / "arch.json"
    arch.write_text(TINY_ARCH.to_json())
    text = root / "text.json"
    text.write_text(json.dumps(asdict(TEXT)))
    return root


def _args(synthetic, out, *extra):
    return ["train", "--arch", str(synthetic / "arch.json"), "--text", str(synthetic / "text.json"),
            "--data", str(synthetic / "shards"), "--eval", str(synthetic / "eval"), "--samples", "64",
            "--batch-size", "16", "--warmup", "1", "--workers", "0", "--rungs", "32", "--log-every", "2",
            "--out", str(out), "--json", *extra]


def test_train_writes_metrics_checkpoint_and_an_open_clip_export(synthetic, tmp_path, capsys):
    out = tmp_path / "run"
    assert main(_args(synthetic, out)) == 0
    captured = capsys.readouterr()
    summary = json.loads(captured.out.strip().splitlines()[-1])
    assert summary["status"] == "completed" and summary["samples_seen"] == 64
    assert {"zeroshot_top1", "zeroshot_top5", "image_to_text_R@1", "text_to_image_R@10"} <= set(summary)
    assert "img/s" in captured.err and "100%" in captured.err and "loss=" in captured.err  # the progress bar

    lines = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    rungs = [r for r in lines if r["event"] == "rung"]
    assert [r["samples_seen"] for r in rungs] == [32, 64]
    assert all("images_per_s" in r for r in lines if r["event"] == "train")
    assert json.loads((out / "config.json").read_text())["text"] == asdict(TEXT)

    model, _, preprocess = load_open_clip(out / "open_clip")
    state = torch.load(out / "checkpoint.pt", weights_only=True)["model"]
    assert all(torch.equal(state[k], v) for k, v in model.state_dict().items())

    # Rerunning the finished run resumes at its end: nothing is trained again, the result is the same.
    assert main(_args(synthetic, out)) == 0
    again = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert again["zeroshot_top1"] == summary["zeroshot_top1"] and again["step"] == summary["step"]


def test_bad_input_exits_with_code_2_and_names_it(synthetic, tmp_path, capsys):
    assert main(_args(synthetic, tmp_path / "run", "--accum-freq", "3")) == 2
    assert "accum_freq" in capsys.readouterr().err
    args = _args(synthetic, tmp_path / "run")
    args[args.index("--arch") + 1] = "ViTamin-Q"
    assert main(args) == 2
    assert "unknown preset 'ViTamin-Q'" in capsys.readouterr().err


OPEN_CLIP_NAMES = ["--model", "ViTamin-S", "--train-data", "shards/", "--train-num-samples", "1000", "--epochs", "2",
                   "--batch-size", "64", "--lr", "1e-3", "--wd", "0.1", "--warmup", "5", "--precision", "amp_bf16",
                   "--imagenet-val", "val/", "--siglip", "--lock-text", "text.pt", "--lock-text-unlocked-layers", "2",
                   "--report-to", "tensorboard", "--accum-freq", "2", "--workers", "1", "--torchcompile",
                   "--subset", "keep.npy"]
OUR_NAMES = ["--arch", "ViTamin-S", "--data", "shards/", "--samples", "2000", "--batch-size", "64", "--lr", "1e-3",
             "--weight-decay", "0.1", "--warmup", "5", "--precision", "bf16", "--eval", "val/", "--loss", "siglip",
             "--lock-text", "text.pt", "--lock-text-unlocked-layers", "2", "--accum-freq", "2", "--workers", "1",
             "--compile", "--subset", "keep.npy"]


def test_open_clip_trains_option_names_train_the_same_run():
    from nas.cli import build_parser
    from nas.cli.train import run_settings

    parser = build_parser("train")
    theirs = parser.parse_args(["train", *OPEN_CLIP_NAMES, "--out", "runs/x"])
    ours = parser.parse_args(["train", *OUR_NAMES, "--out", "runs/x"])
    assert run_settings(theirs) == run_settings(ours)
    arch, text, config, data, report_to = run_settings(theirs)
    assert (config.samples, config.precision, config.loss, config.weight_decay, config.lock_text) == \
        (2000, "bf16", "siglip", 0.1, "text.pt")
    assert theirs.eval == "val/" and data.subset == "keep.npy"
    assert report_to.tensorboard == "runs/x/tensorboard" and report_to.wandb_project is None


def test_a_bare_lock_text_asks_for_the_checkpoint(capsys):
    assert main(["train", *OUR_NAMES[:18], "--lock-text", "--out", "runs/x"]) == 2
    assert "--lock-text CHECKPOINT" in capsys.readouterr().err


def test_train_under_open_clip_names_on_a_subset_prints_rungs_and_a_table(synthetic, tmp_path, capsys, run_cli):
    """The arch file is what `vitamin-nas arch --json` prints (its text tower comes with it); the subset is
    DataComp's uid format, written by `vitamin-nas data subset`; curves go to TensorBoard."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    arch = run_cli("arch", synthetic / "arch.json", "--json")
    data = json.loads(arch.stdout)
    data["text"] = asdict(TEXT)  # the tests' small text tower instead of open_clip's default
    (tmp_path / "c.json").write_text(json.dumps(data))
    assert main(["data", "subset", "--metadata", str(synthetic / "metadata"), "--where", "count == 1",
                 "--out", str(tmp_path / "keep.npy")]) == 0
    capsys.readouterr()
    out = tmp_path / "run"
    assert main(["train", "--model", str(tmp_path / "c.json"), "--train-data", str(synthetic / "shards"),
                 "--subset", str(tmp_path / "keep.npy"), "--train-num-samples", "64", "--batch-size", "16",
                 "--warmup", "1", "--wd", "0.1", "--imagenet-val", str(synthetic / "eval" / "zeroshot"),
                 "--workers", "0", "--rungs", "32", "--log-every", "2", "--no-progress", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    lines = printed.splitlines()
    assert lines[0].startswith("rung 1/2: 32 samples seen (step 2), loss ")
    assert "zero-shot top-1 " in lines[0] and "], top-5 " in lines[0] and "img/s" in lines[0]
    assert lines[1].startswith("rung 2/2: 64 samples seen (step 4)")
    assert f"completed: {TINY_ARCH.name()} (arch_id {TINY_ARCH.arch_id}), 64 samples seen in 4 steps" in printed
    assert "zeroshot_top1 %" in printed and "images_per_s" in printed
    assert f"tensorboard --logdir {out / 'tensorboard'}" in printed
    events = EventAccumulator(str(out / "tensorboard"))
    events.Reload()
    assert [e.step for e in events.Scalars("eval/zeroshot_top1")] == [32, 64]
