"""Images per second of the training stream, side by side with open_clip_train's webdataset loader.

    .venv/bin/python benchmarks/loader.py [--data SHARDS] [--image-size 224] [--workers 2] [--batch-size 64]
        [--batches 40] [--warmup 5] [--repeats 5] [--open-clip-python /tmp/ocenv/bin/python]

Both sides read the same shards with the same work per sample (JPEG decode, RandomResizedCrop with
scale 0.9-1.0 and bicubic resize, CLIP normalisation, CLIP BPE tokens, shard and sample shuffling) into
batches of the same size over the same number of DataLoader workers. Without `--data`, synthetic shards
with `--source-size` px images are written to a temporary directory first. Each repeat runs both sides
(alternating, so that a busy machine slows both alike) and times `--batches` batches after `--warmup`;
the figures are the medians. Prints figures; asserts nothing.

open_clip_train needs webdataset<=0.2.86, which this project's webdataset 1.x replaces, so its side runs
in another interpreter, given by `--open-clip-python`. A full environment for it:

    python3 -m venv /tmp/ocenv
    /tmp/ocenv/bin/pip install torch==2.14.1 torchvision==0.29.1 'open_clip_torch[training]'

or, sharing this venv's torch and open_clip and overriding only webdataset:

    python3 -m venv /tmp/ocenv
    echo "$PWD/.venv/lib/python3.11/site-packages" > /tmp/ocenv/lib/python3.11/site-packages/zz_main.pth
    /tmp/ocenv/bin/pip install --no-deps 'webdataset==0.2.86'
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterable


def timed(batches: Iterable, warmup: int, count: int) -> dict[str, float]:
    """Images per second of wall time, and per CPU-second of this process and its DataLoader workers,
    over `count` batches after `warmup` (worker start-up, first shards). The second figure hardly moves when
    other work shares the machine; the first is what a trainer would get here and now."""
    iterator = iter(batches)
    for _ in range(warmup):
        next(iterator)
    start, start_cpu = time.perf_counter(), cpu_seconds()
    images = sum(len(next(iterator)[0]) for _ in range(count))
    wall, cpu = time.perf_counter() - start, cpu_seconds() - start_cpu
    return {"images_per_second": images / wall, "images_per_cpu_second": images / cpu}


def cpu_seconds() -> float:
    """User + system time of this process and every live descendant, from /proc (Linux)."""
    ticks = os.sysconf("SC_CLK_TCK")
    parents, times = {}, {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:  # exited meanwhile
            continue
        parents[int(entry)] = int(fields[1])
        times[int(entry)] = (int(fields[11]) + int(fields[12])) / ticks
    tree, frontier = {os.getpid()}, [os.getpid()]
    while frontier:
        parent = frontier.pop()
        children = [pid for pid, ppid in parents.items() if ppid == parent and pid not in tree]
        tree.update(children)
        frontier.extend(children)
    return sum(times.get(pid, 0.0) for pid in tree)


def nas_side(args: argparse.Namespace) -> dict[str, float]:
    from nas.data import stream

    total = stream_length(args)
    loader, _ = stream(args.data, batch_size=args.batch_size, image_size=args.image_size, workers=args.workers,
                       samples=total, seed=0)
    return timed(loader, args.warmup, args.batches)


def open_clip_side(args: argparse.Namespace) -> dict[str, float]:
    """open_clip_train's own `get_wds_dataset`, configured as its `main` configures it for training."""
    import open_clip
    from open_clip_train.data import get_wds_dataset

    total = stream_length(args)
    train_args = argparse.Namespace(train_data=args.data, val_data=None, train_num_samples=total,
                                    dataset_resampled=False, train_data_upsampling_factors=None, seed=0,
                                    batch_size=args.batch_size, workers=args.workers, world_size=1)
    preprocess = open_clip.image_transform(args.image_size, is_train=True)
    data = get_wds_dataset(train_args, preprocess, is_train=True, epoch=0,
                           tokenizer=open_clip.get_tokenizer("ViT-B-32"))
    return timed(data.dataloader, args.warmup, args.batches)


def stream_length(args: argparse.Namespace) -> int:
    """Samples to ask for: a few batches beyond the timed ones, so that no worker has exited (and taken its
    CPU time out of /proc) before the clock stops."""
    return (args.warmup + args.batches + 2 * max(args.workers, 1)) * args.batch_size


def run_open_clip(args: argparse.Namespace) -> dict[str, float]:
    """One open_clip_train measurement in the other interpreter, which prints the rate as JSON."""
    command = [args.open_clip_python, __file__, "--side", "open_clip", "--data", args.data, "--image-size",
               str(args.image_size), "--workers", str(args.workers), "--batch-size", str(args.batch_size),
               "--batches", str(args.batches), "--warmup", str(args.warmup)]
    result = subprocess.run(command, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise SystemExit(f"open_clip_train side failed:\n{result.stderr[-3000:]}")
    return json.loads(result.stdout.strip().splitlines()[-1])


def synthetic_shards(args: argparse.Namespace, directory: str) -> str:
    from nas.data import SynthConfig, synthesize

    per_shard = max(1, args.source_samples // max(args.workers, 4))
    synthesize(directory, SynthConfig(samples=args.source_samples, size=args.source_size, seed=0,
                                      samples_per_shard=per_shard, zeroshot_per_class=0, retrieval_samples=0),
               progress=True)
    return f"{directory}/shards"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", help="shards (directory, pattern, URL); default: synthetic, in a temp dir")
    parser.add_argument("--image-size", type=int, default=224)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--batches", type=int, default=40, help="timed batches per run")
    parser.add_argument("--warmup", type=int, default=5, help="untimed batches first")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--source-size", type=int, default=256, help="synthetic image side (without --data)")
    parser.add_argument("--source-samples", type=int, default=4000, help="synthetic samples (without --data)")
    parser.add_argument("--open-clip-python", help="interpreter with open_clip_train and webdataset<=0.2.86")
    parser.add_argument("--side", choices=["nas", "open_clip"], help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.side == "open_clip":  # the child process of run_open_clip
        print(json.dumps(open_clip_side(args)))
        return
    from nas.data import expand_shards

    with tempfile.TemporaryDirectory(prefix="loader-bench-") as scratch:
        # open_clip_train takes patterns and '::' lists but not directories: give both sides the same list
        args.data = "::".join(expand_shards(args.data or synthetic_shards(args, scratch)))
        compare(args)


def compare(args: argparse.Namespace) -> None:
    shards = args.data.split("::")
    print(f"shards: {len(shards)} ({shards[0]}, ...)")
    print(f"{args.image_size} px, batch {args.batch_size}, {args.workers} workers, {args.batches} timed batches "
          f"after {args.warmup}, {args.repeats} repeats")
    print(f"{'repeat':>6}  {'nas.data img/s':>15}  {'open_clip_train img/s':>22}  {'nas.data img/cpu-s':>19}  "
          f"{'open_clip_train img/cpu-s':>26}")
    runs: list[tuple[dict, dict]] = []
    missing = {"images_per_second": float("nan"), "images_per_cpu_second": float("nan")}
    for repeat in range(1, args.repeats + 1):
        runs.append((nas_side(args), run_open_clip(args) if args.open_clip_python else missing))
        print(_row(str(repeat), *runs[-1]), flush=True)
    medians = [{key: statistics.median(run[side][key] for run in runs) for key in missing} for side in (0, 1)]
    print(_row("median", *medians))
    if not args.open_clip_python:
        print("open_clip_train: not run (give --open-clip-python)", file=sys.stderr)
        return
    for key, what in (("images_per_second", "wall-clock img/s"), ("images_per_cpu_second", "img per CPU-second")):
        paired = statistics.median(ours[key] / theirs[key] for ours, theirs in runs)
        print(f"ratio nas.data / open_clip_train, {what}: {medians[0][key] / medians[1][key]:.2f} of medians, "
              f"{paired:.2f} median of paired repeats")


def _row(label: str, ours: dict, theirs: dict) -> str:
    return (f"{label:>6}  {ours['images_per_second']:>15.1f}  {theirs['images_per_second']:>22.1f}  "
            f"{ours['images_per_cpu_second']:>19.1f}  {theirs['images_per_cpu_second']:>26.1f}")


if __name__ == "__main__":
    main()
