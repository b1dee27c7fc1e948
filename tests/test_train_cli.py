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
            "--out", str(out), *extra]


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
