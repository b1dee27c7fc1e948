"""Training steps per second of `nas.train` against open_clip_train's `train_one_epoch`; on a GPU, img/s and MFU.

    .venv/bin/python benchmarks/train_throughput.py --open-clip-python /tmp/ocenv/bin/python \\
        [--arch NAME|FILE.json] [--image-size 64] [--batch-size 64] [--workers 1] [--steps 30] [--warmup 5] \\
        [--repeats 3] [--data SHARDS]
    .venv/bin/python benchmarks/train_throughput.py --gpu [--arch ViTamin-S] [--batch-size 256] [--compile] \\
        [--modes eager,compile] [--data SHARDS --workers 14] [--json] [--device cuda]

Trainer comparison (any device). Both sides train the same model (`nas.models.build_clip` of the same arch
and text tower, the same initial weights), with the same recipe (AdamW 0.9/0.98, eps 1e-6, wd 0.2 with
open_clip_train's exclusions, cosine schedule, ClipLoss, logit-scale clamp), the same precision (fp32 on
CPU, bf16 autocast on GPU) and batch size, on the same shards through each trainer's own data pipeline
with the same number of loader workers: `nas.train.train` over `nas.data.stream`, and open_clip_train's
`train_one_epoch` over its `get_wds_dataset`, set up as its `main` sets them up. Each batch handed to the
trainer is timestamped (a pass-through wrapper around the loader, the same on both sides), and a step's
time is the time between consecutive batches: the whole training loop, data waits included. The figure
is the median step time after `--warmup` steps; repeats alternate the sides so that a busy machine slows
both alike, and the ratio printed is the median over repeats of (ours / theirs) in steps per second.
open_clip_train needs webdataset<=0.2.86, so its side runs in another interpreter (`--open-clip-python`;
see benchmarks/loader.py for how to make one that shares this venv's torch and open_clip).

GPU mode (`--gpu`): the model-only training step of ViTamin-S and ViTamin-B (or `--arch`) at 224 px, batch
256, bf16, on batches already on the device, through `nas.train.train` (eager, and compiled with `--compile`
or `--modes`), with images/s, achieved TFLOP/s and MFU from the analytic FLOPs, and peak memory, beside the
anchors measured on an H100 with open_clip_train's own step (../shared/reference/gpu_anchors.md). With
`--data`, each model and mode then goes on training end to end on those shards (`nas.data.stream` with
`--workers` loader processes) in the same `train` call, so that a compiled model is compiled once for both. `--json`
prints one JSON line per measurement (benchmarks/gpu_check.py reads them); `--device cpu` runs the same path
on a CPU at tiny sizes (for its tests). On a machine without CUDA `--gpu` says so and exits. Prints figures;
asserts nothing.
"""

from __future__ import annotations

import argparse
import itertools
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from loader import cpu_seconds  # noqa: E402  (benchmarks/loader.py: CPU time of this process and its workers)

#: ViTamin-S / -B model-only step on one H100 80GB, bf16, batch 256, open_clip_train's step (gpu_anchors.md):
#: (GFLOP/sample by FlopCounterMode, eager img/s, compiled img/s, MFU vs 800 TFLOP/s compiled, peak GiB compiled).
ANCHORS = {"ViTamin-S": (68.0, 1442, 2766, 0.235, 24.3), "ViTamin-B": (243.1, 825, 1379, 0.419, 46.4)}
ANCHOR_PEAK_TFLOPS = 800.0


class Stamped:
    """A loader that records when each batch reaches the trainer, and the CPU time of this process and its
    loader workers at the first timed batch and at the last; everything else passes through."""

    def __init__(self, loader, warmup: int, last: int):
        self.loader = loader
        self.warmup = warmup
        self.last = last
        self.times: list[float] = []
        self.cpu: list[float] = []

    def __getattr__(self, name):
        return getattr(self.loader, name)

    def __len__(self) -> int:
        return len(self.loader)

    def __iter__(self):
        for batch in self.loader:
            self.times.append(time.perf_counter())
            if len(self.times) - 1 in (self.warmup, self.last):
                self.cpu.append(cpu_seconds())
            yield batch

    def figures(self, batch_size: int) -> dict[str, float]:
        """Median step time and CPU-seconds per step between batch `warmup` and batch `last`."""
        gaps = [b - a for a, b in zip(self.times, self.times[1:], strict=False)][self.warmup : self.last]
        step = statistics.median(gaps)
        return {"steps_per_second": 1 / step, "images_per_second": batch_size / step,
                "cpu_seconds_per_step": (self.cpu[1] - self.cpu[0]) / (self.last - self.warmup)}


def candidate(spec: str | None, image_size: int):
    """The benchmarked model: a preset or arch file, or the tiny ViTamin-shaped proxy of the learning test."""
    from nas.arch import Arch, Stage, Transformer
    from nas.presets import TextTower, load_arch

    if spec:
        return load_arch(spec)
    arch = Arch(stem="conv", stem_width=32, stages=(Stage("mbconv", 2, 32), Stage("mbconv", 2, 64)),
                transformer=Transformer(width=128, depth=4, heads=4), image_size=image_size, embed_dim=128)
    return arch, TextTower(width=128, layers=4, heads=4)


def fresh_model(arch, text):
    """The same initial weights on both sides: seed 0, then `nas.models.build_clip`."""
    import torch

    from nas.models import build_clip

    torch.manual_seed(0)
    return build_clip(arch, text, drop_path=0.1)  # the recipe's drop-path, as nas.train builds it


# ---------------------------------------------------------------------------------------------------- ours


def nas_side(args: argparse.Namespace) -> dict[str, float]:
    from nas.data import StreamSettings, stream
    from nas.train import train
    from nas.train_config import TrainConfig

    arch, text = candidate(args.arch, args.image_size)
    samples = (args.steps + args.warmup + 1) * args.batch_size
    config = TrainConfig(samples=samples, batch_size=args.batch_size, warmup=1, log_every=10**9,
                         checkpoint_every=0)
    stamped = []

    def data(start_sample: int):
        settings = StreamSettings(batch_size=args.batch_size, image_size=arch.image_size, samples=samples,
                                  workers=args.workers, context_length=text.context_length, start_sample=start_sample)
        stamped.append(Stamped(stream(args.data, settings)[0], args.warmup, args.warmup + args.steps))
        return stamped[-1]

    train(arch, text, data, config)
    return stamped[0].figures(args.batch_size)


# ------------------------------------------------------------------------------------------ open_clip_train


def open_clip_side(args: argparse.Namespace) -> dict[str, float]:
    """open_clip_train's `train_one_epoch`, with data, optimizer, scheduler and loss as its `main` makes them."""
    import torch
    from open_clip import create_loss, get_tokenizer, image_transform
    from open_clip_train.data import get_data
    from open_clip_train.params import parse_args
    from open_clip_train.scheduler import cosine_lr
    from open_clip_train.train import train_one_epoch

    arch, text = candidate(args.arch, args.image_size)
    samples = (args.steps + args.warmup + 1) * args.batch_size
    precision = "amp_bf16" if torch.cuda.is_available() else "fp32"
    oc = parse_args(["--train-data", args.data, "--dataset-type", "webdataset", "--train-num-samples", str(samples),
                     "--batch-size", str(args.batch_size), "--workers", str(args.workers), "--precision", precision,
                     "--lr", "5e-4", "--beta1", "0.9", "--beta2", "0.98", "--eps", "1e-6", "--wd", "0.2",
                     "--warmup", "1", "--epochs", "1", "--log-every-n-steps", str(10**9), "--seed", "0"])
    oc.device = "cuda" if torch.cuda.is_available() else "cpu"
    oc.rank = oc.local_rank = 0
    oc.world_size = 1
    oc.distributed = False
    oc.distill = False  # as main sets these without --distill-model and --report-to
    oc.wandb = False
    model = fresh_model(arch, text).to(oc.device)
    preprocess = image_transform(arch.image_size, is_train=True)
    data = get_data(oc, (preprocess, preprocess), epoch=0,
                    tokenizer=get_tokenizer("ViT-B-32", context_length=text.context_length))
    stamped = Stamped(data["train"].dataloader, args.warmup, args.warmup + args.steps)
    data["train"].dataloader = stamped
    named = list(model.named_parameters())
    exclude = lambda n, p: p.ndim < 2 or "bn" in n or "ln" in n or "bias" in n or "logit_scale" in n  # noqa: E731
    optimizer = torch.optim.AdamW(
        [{"params": [p for n, p in named if exclude(n, p) and p.requires_grad], "weight_decay": 0.0},
         {"params": [p for n, p in named if not exclude(n, p) and p.requires_grad], "weight_decay": oc.wd}],
        lr=oc.lr, betas=(oc.beta1, oc.beta2), eps=oc.eps)
    steps = data["train"].dataloader.num_batches
    scheduler = cosine_lr(optimizer, oc.lr, oc.warmup, steps)
    train_one_epoch(model, data, create_loss(oc), 0, optimizer, None, scheduler, None, oc)
    return stamped.figures(args.batch_size)


def run_open_clip(args: argparse.Namespace) -> dict[str, float]:
    command = [args.open_clip_python, __file__, "--side", "open_clip", "--data", args.data, "--image-size",
               str(args.image_size), "--batch-size", str(args.batch_size), "--workers", str(args.workers),
               "--steps", str(args.steps), "--warmup", str(args.warmup)] + (["--arch", args.arch] if args.arch else [])
    result = subprocess.run(command, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise SystemExit(f"open_clip_train side failed:\n{result.stderr[-3000:]}")
    return json.loads(result.stdout.strip().splitlines()[-1])


def run_nas(args: argparse.Namespace) -> dict[str, float]:
    """Our side in a fresh process too, so that both pay the same start-up and neither inherits warm caches."""
    command = [sys.executable, __file__, "--side", "nas", "--data", args.data, "--image-size", str(args.image_size),
               "--batch-size", str(args.batch_size), "--workers", str(args.workers), "--steps", str(args.steps),
               "--warmup", str(args.warmup)] + (["--arch", args.arch] if args.arch else [])
    result = subprocess.run(command, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise SystemExit(f"nas side failed:\n{result.stderr[-3000:]}")
    return json.loads(result.stdout.strip().splitlines()[-1])


def compare(args: argparse.Namespace) -> None:
    arch, text = candidate(args.arch, args.image_size)
    print(f"model: {arch.name()} + text {text.width}x{text.layers}, batch {args.batch_size}, {args.workers} loader "
          f"workers, {args.steps} timed steps after {args.warmup}, {args.repeats} repeats")
    print(f"{'repeat':>6}  {'nas.train steps/s':>17}  {'open_clip_train steps/s':>23}  {'ratio':>6}  "
          f"{'nas CPU-s/step':>14}  {'open_clip CPU-s/step':>20}")
    ratios, runs = [], []
    for repeat in range(1, args.repeats + 1):
        ours = run_nas(args)
        theirs = run_open_clip(args) if args.open_clip_python else None
        ratio = ours["steps_per_second"] / theirs["steps_per_second"] if theirs else float("nan")
        ratios.append(ratio)
        runs.append((ours, theirs))
        print(f"{repeat:>6}  {ours['steps_per_second']:>17.3f}  "
              f"{theirs['steps_per_second'] if theirs else float('nan'):>23.3f}  {ratio:>6.2f}  "
              f"{ours['cpu_seconds_per_step']:>14.2f}  "
              f"{theirs['cpu_seconds_per_step'] if theirs else float('nan'):>20.2f}", flush=True)
    ours_median = statistics.median(r[0]["steps_per_second"] for r in runs)
    print(f"median: nas.train {ours_median:.3f} steps/s ({ours_median * args.batch_size:.1f} img/s)")
    if not args.open_clip_python:
        print("open_clip_train: not run (give --open-clip-python)", file=sys.stderr)
        return
    theirs_median = statistics.median(r[1]["steps_per_second"] for r in runs)
    print(f"median: open_clip_train {theirs_median:.3f} steps/s ({theirs_median * args.batch_size:.1f} img/s)")
    print(f"ratio nas.train / open_clip_train steps/s: {statistics.median(ratios):.2f} (median of paired repeats)")
    per_cpu = statistics.median(r[1]["cpu_seconds_per_step"] / r[0]["cpu_seconds_per_step"] for r in runs)
    print(f"ratio nas.train / open_clip_train steps per CPU-second: {per_cpu:.2f} (median of paired repeats; "
          "hardly moved by other work on the machine)")


# ---------------------------------------------------------------------------------------------------- GPU


def same_batch(images, tokens, start_sample: int):
    """The data of a model-only step: one batch already on the device, for ever."""
    while True:
        yield images, tokens


def shards_warmup(args: argparse.Namespace) -> int:
    """Untimed steps on shards: `--warmup`, and at least what the loader holds ready when the timing would start
    (2 batches per worker, filled while the model compiled): those come for free and would flatter the rate."""
    return max(args.warmup, 2 * args.workers + 2)


def gpu_phases(arch, text, mode: str, args: argparse.Namespace) -> list[tuple[str, int]]:
    """One `nas.train.train` call per model and mode (compiled once): `--warmup` untimed and `--steps` timed
    model-only steps on one batch already on the device, then with `--data` as many on the shards, the timed
    ones after `shards_warmup`. Returns (the phase's name, the index of its steady-state rung)."""
    import torch

    from nas.data import DataSource, StreamSettings, stream
    from nas.train import train
    from nas.train_config import TrainConfig

    device = torch.device(args.device)
    batch = args.batch_size
    images = torch.randn(batch, 3, arch.image_size, arch.image_size, device=device)
    tokens = torch.randint(1, text.vocab_size, (batch, text.context_length), device=device)
    model_steps = args.warmup + args.steps
    shard_steps = shards_warmup(args) + args.steps if args.data else 0

    def data(start_sample: int):
        yield from itertools.islice(same_batch(images, tokens, 0), model_steps)
        if shard_steps:
            settings = StreamSettings(batch_size=batch, image_size=arch.image_size, samples=shard_steps * batch,
                                      workers=args.workers, context_length=text.context_length,
                                      pin_memory=device.type == "cuda")
            yield from stream(DataSource(args.data), settings)[0]

    rungs = [args.warmup, model_steps] + ([model_steps + shards_warmup(args)] if shard_steps else [])
    config = TrainConfig(samples=(model_steps + shard_steps) * batch, batch_size=batch, warmup=1,
                         compile=mode == "compile", compile_backend=args.compile_backend,
                         rungs=tuple(r * batch for r in rungs), checkpoint_every=0, log_every=10**9)
    result = train(arch, text, data, config, device=args.device)
    phases = [("model step", 1)] + ([("on shards", 3)] if shard_steps else [])
    return [measured(result, result.rungs[index], part, mode, args) for part, index in phases]


def measured(result, steady: dict, part: str, mode: str, args: argparse.Namespace) -> dict:
    tflops = steady.get("tflops")
    return {"part": part, "model": args.arch_name, "mode": mode, "device": args.device_name,
            "batch_size": args.batch_size, "steps": args.steps,
            "images_per_s": steady["images_per_s"], "tflops": tflops, "mfu": steady.get("mfu"),
            "mfu_800": tflops / ANCHOR_PEAK_TFLOPS if tflops else None,
            "peak_memory_gib": steady.get("peak_memory_gib"), "data_wait_share": steady["data_wait_share"],
            "compiled": result.compile["compiled"], "compile_s": result.compile["compile_s"],
            "compile_error": result.compile["error"]}


def gpu_mode(args: argparse.Namespace) -> None:
    import torch

    if args.device.startswith("cuda") and not torch.cuda.is_available():
        print("GPU mode: no CUDA device on this machine; skipped (run it on a GPU: --gpu)")
        return
    from nas.presets import load_arch

    names = [args.arch] if args.arch else list(ANCHORS)
    args.device_name = torch.cuda.get_device_name() if args.device.startswith("cuda") else args.device
    if not args.json:
        print(f"device: {args.device_name}, batch {args.batch_size}, bf16 on CUDA, {args.steps} timed steps after "
              f"{args.warmup}; model step: batches on the device" + (f"; on shards: {args.data}" if args.data else ""))
        print(f"{'model':>10}  {'mode':>8}  {'part':>10}  {'img/s':>7}  {'TFLOP/s':>8}  {'MFU':>6}  {'MFU@800':>8}  "
              f"{'peak GiB':>8}  {'data wait':>9}  {'anchor img/s':>12}  {'anchor MFU@800':>14}")
    for name in names:
        arch, text = load_arch(name)
        args.arch_name = name
        for mode in args.modes:
            if args.device.startswith("cuda"):
                torch.cuda.reset_peak_memory_stats()
            for figures in gpu_phases(arch, text, mode, args):
                if args.json:
                    print(json.dumps(figures), flush=True)
                else:
                    print_row(figures)

    if not args.json:
        print("FLOPs: nas.cost train_gflops (3 x forward, attention included); the anchors' GFLOP/sample are "
              "FlopCounterMode's: " + ", ".join(f"{n} {a[0]}" for n, a in ANCHORS.items()))


def print_row(figures: dict) -> None:
    nan = float("nan")
    anchor = ANCHORS.get(figures["model"])
    compiled = figures["mode"] == "compile"
    anchor_rate = (anchor[2] if compiled else anchor[1]) if anchor and figures["part"] == "model step" else nan
    anchor_mfu = anchor[3] if anchor and compiled and figures["part"] == "model step" else nan
    print(f"{figures['model']:>10}  {figures['mode']:>8}  {figures['part']:>10}  {figures['images_per_s']:>7.0f}  "
          f"{figures['tflops'] or nan:>8.1f}  {figures['mfu'] or nan:>6.1%}  {figures['mfu_800'] or nan:>8.1%}  "
          f"{figures['peak_memory_gib'] or nan:>8.1f}  {figures['data_wait_share']:>9.1%}  {anchor_rate:>12}  "
          f"{anchor_mfu:>14.1%}", flush=True)
    if figures["compile_error"]:
        print(f"            compile failed, ran eager: {figures['compile_error'][:200]}")


# ---------------------------------------------------------------------------------------------------- main


def synthetic_shards(args: argparse.Namespace, directory: str) -> str:
    from nas.data import SynthConfig, synthesize

    samples = max(2000, 4 * (args.steps + args.warmup + 1) * args.batch_size)
    synthesize(directory, SynthConfig(samples=samples, size=args.image_size, seed=0, samples_per_shard=500,
                                      zeroshot_per_class=0, retrieval_samples=0), progress=True)
    return f"{directory}/shards"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--arch", help="preset name or arch FILE.json (default: a tiny ViTamin-shaped proxy; --gpu: "
                                       "ViTamin-S and ViTamin-B)")
    parser.add_argument("--data", help="shards; default: synthetic, written to a temp dir at --image-size")
    parser.add_argument("--image-size", type=int, default=64, help="image side of the default proxy and its data")
    parser.add_argument("--batch-size", type=int, default=None, help="default 64 (CPU) / 256 (--gpu)")
    parser.add_argument("--workers", type=int, default=1, help="loader workers on each side")
    parser.add_argument("--steps", type=int, default=30, help="timed steps per run")
    parser.add_argument("--warmup", type=int, default=5, help="untimed steps first")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--open-clip-python", help="interpreter with open_clip_train and webdataset<=0.2.86")
    parser.add_argument("--gpu", action="store_true", help="ViTamin-S/B img/s and MFU against the H100 anchors")
    parser.add_argument("--compile", action="store_true", help="GPU mode: also torch.compile (--modes eager,compile)")
    parser.add_argument("--modes", type=lambda text: [m for m in text.split(",") if m], default=None,
                        help="GPU mode: eager, compile or both, comma-separated (default: eager)")
    parser.add_argument("--compile-backend", default="inductor", help="GPU mode: torch.compile's backend")
    parser.add_argument("--device", default="cuda", help="GPU mode: the device (cpu runs the same path, slowly)")
    parser.add_argument("--json", action="store_true", help="GPU mode: one JSON line per measurement")
    parser.add_argument("--side", choices=["nas", "open_clip"], help=argparse.SUPPRESS)
    args = parser.parse_args()
    args.batch_size = args.batch_size or (256 if args.gpu else 64)
    args.modes = args.modes or (["eager", "compile"] if args.compile else ["eager"])
    if not set(args.modes) <= {"eager", "compile"}:
        parser.error(f"--modes: eager and/or compile, got {','.join(args.modes)}")
    if args.side:  # a child process of run_nas / run_open_clip
        print(json.dumps(nas_side(args) if args.side == "nas" else open_clip_side(args)))
        return
    if args.gpu:
        gpu_mode(args)
        return
    from nas.data import expand_shards

    with tempfile.TemporaryDirectory(prefix="train-bench-") as scratch:
        # open_clip_train takes patterns and '::' lists but not directories: give both sides the same list
        args.data = "::".join(expand_shards(args.data or synthetic_shards(args, scratch)))
        compare(args)


if __name__ == "__main__":
    main()
