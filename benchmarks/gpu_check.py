"""The GPU check: one table of what this toolkit's trainer does on a GPU, beside open_clip_train and the H100 anchors.

    benchmarks/gpu_check.sh [--report DIR] [--scratch DIR] [--limit-s 600] [--budget-s 560] [--parts PATTERNS]
                            [--workers N] [--gpus N] [--dry-run] [--cpu] [--no-install]

Examples (README.md, "The GPU check", gives the device tool's call):

    make gpu-wheels                                          # once, with network: the wheels that travel
    benchmarks/gpu_check.sh --limit-s 600 --budget-s 560 --report $OUT         # a lent machine's 10-minute call
    benchmarks/gpu_check.sh --limit-s 180 --budget-s 140 --report $OUT --parts 'nas:ViTamin-B:compile,packing'
    benchmarks/gpu_check.sh --gpus 1 --dry-run               # the facts, the plan and its commands; runs nothing
    benchmarks/gpu_check.sh --cpu --no-install               # the rehearsal on a CPU at tiny sizes (the tests')

(gpu_check.sh installs the wheels first, then runs this file with the same arguments.) The parts, in the order
they run: by value, so that a call cut short loses what matters least.

1. The anchor comparisons, ViTamin-S and then ViTamin-B, eager and then compiled, ours and then open_clip's:
   - `nas:<model>:<mode>`: `nas.train.train` at batch 256 in bf16, the model-only step (batches already on the
     GPU: images/s, TFLOP/s, MFU, peak memory) and then end to end on the check's shards
     (benchmarks/train_throughput.py --gpu --data, one process per model and mode);
   - `open_clip:<model>:<mode>`: `python -m open_clip_train.main --model <model>` on the same shards, with the
     same batch, precision and loader workers (webdataset 0.2.86 from its own folder, as its `training` extra pins).
2. `packing`: four tiny-proxy `vitamin-nas train` runs on one GPU, one after another and then all at once (the gain
   of packing several small trials onto a GPU, measured without Ray).
3. `torchrun`: ViTamin-S on two GPUs with `torchrun --nproc_per_node 2` (when two exist).

`--parts` picks some (patterns: `nas`, `open_clip:*:compile`, `nas:ViTamin-B:*`, `packing`, ...), in that order.

Time. The call has `--limit-s` seconds (the device tool's timeout_s) and the check `--budget-s` of them, from the
moment gpu_check.sh started (GPU_CHECK_STARTED), the install included; it refuses to start when the margin
between them is under 30 s. A part starts only when its estimate fits in what is left, and runs in a process
group of its own that is stopped whole (SIGTERM, then SIGKILL) early enough to be gone by the end of the budget;
a part's main process also dies with the check (its loader workers follow it), and stays in the command's session,
which a device call ends when it returns. The table says which parts did not run, and the `--parts` that runs them
in a later call.

Output. `--report DIR` (on a lent machine: $OUT) gets three files, one level down, rewritten as each part ends:
gpu_check.txt (the environment facts, then the table so far), gpu_check.json (the same as data) and logs.tar.gz
(the parts' logs, clipped to 8 MiB in all): what a result folder carries back (at most 8 files of 16 MiB, 2 levels
deep). The environment facts come first, before anything runs: the GPUs, the memory, /dev/shm, the CPU affinity,
and the torch, timm and open_clip versions. Shards, run folders, checkpoints, open_clip's work folders and the
whole logs go to `--scratch DIR`. timm and open_clip_torch must be the versions the tests use (the Makefile's
pins, among the wheels that travel), or the check refuses to start. Loader workers default from the CPU affinity
and the free /dev/shm (`--workers` sets them). `--cpu` runs the same parts on a CPU at tiny sizes (a tiny proxy
instead of ViTamin-S/B, eager only, two packed runs, torchrun with two gloo processes): what the tests run.
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import dataclasses
import fnmatch
import functools
import importlib.metadata
import importlib.util
import io
import json
import os
import platform
import re
import shlex
import shutil
import signal
import subprocess
import sys
import tarfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
THROUGHPUT = HERE / "train_throughput.py"
MAKEFILE = HERE.parent / "Makefile"
PINNED = ("timm", "open_clip_torch")  # what the models import the internals of

#: open_clip_train end to end on one H100 (../shared/reference/gpu_anchors.md): batch 256, amp_bf16, 14 workers.
OPEN_CLIP_TRAIN_ANCHORS = {("ViTamin-S", "eager"): "1,228-1,285", ("ViTamin-S", "compile"): "1,772-1,987"}
#: The model-only step of open_clip_train on the same H100 (img/s), the anchors of the trainer's model step.
MODEL_STEP_ANCHORS = {("ViTamin-S", "eager"): "1,442", ("ViTamin-S", "compile"): "2,766",
                      ("ViTamin-B", "eager"): "825", ("ViTamin-B", "compile"): "1,379"}
#: Seconds each part is expected to take on one H100/H200 with 16 cores, compilation included (a guess until the
#: first run: the table's `took s` column gives the real figures, to put here).
ESTIMATE_S = {"nas:*:eager": 45, "nas:*:compile": 130, "open_clip:*:eager": 40, "open_clip:*:compile": 110,
              "packing": 70, "torchrun": 80}
#: Seconds to stop a part's process group: SIGTERM, 10 s for it to end, SIGKILL, 5 s more.
STOP_S = 15
#: The least --limit-s minus --budget-s: what runs outside the budget (the shell before gpu_check.sh, a CUDA process
#: slow to die after SIGKILL, the interpreter's exit) with room to spare.
MIN_MARGIN_S = 30
#: What the parts' logs may take in logs.tar.gz, uncompressed: half a result file's 16 MiB.
LOGS_BYTES = 8 * 2**20
REPORT_FILES = ("gpu_check.txt", "gpu_check.json", "logs.tar.gz")
PART_LABELS = {"nas": "nas.train", "open_clip": "open_clip_train on shards", "packing": "packing",
               "torchrun": "torchrun: 2 processes on shards"}


# ----------------------------------------------------------------------------------------- the environment


def environment() -> dict[str, Any]:
    """What decides the figures, read before anything runs, without touching the GPU: the report's first lines."""
    shm = os.statvfs("/dev/shm") if os.path.isdir("/dev/shm") else None
    timm = importlib.util.find_spec("timm")
    return {"gpus": gpus_seen(), "memory_bytes": os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"),
            "shm_bytes": shm.f_blocks * shm.f_frsize if shm else 0,
            "shm_free_bytes": shm.f_bavail * shm.f_frsize if shm else 0,
            "cpus": os.cpu_count(), "cpu_affinity": sorted(os.sched_getaffinity(0)),
            "python": platform.python_version(),
            "versions": {name: package_version(name) for name in ("torch", "timm", "open_clip_torch")},
            "timm_path": str(Path(timm.origin).parent) if timm and timm.origin else None}


def gpus_seen() -> list[str]:
    """nvidia-smi's name, memory and driver of each GPU; none where it is missing or fails."""
    try:
        query = subprocess.run(["nvidia-smi", "--query-gpu=name,memory.total,driver_version",
                                "--format=csv,noheader"], capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return []
    return [line.strip() for line in query.stdout.splitlines() if line.strip()] if query.returncode == 0 else []


def package_version(name: str) -> str:
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return "missing"


def cpu_list(cpus: list[int]) -> str:
    """0-15 for 0, 1, ..., 15; 0-3,8 for 0, 1, 2, 3, 8."""
    ranges: list[list[int]] = []
    for cpu in cpus:
        if ranges and cpu == ranges[-1][-1] + 1:
            ranges[-1][-1] = cpu
        else:
            ranges.append([cpu, cpu])
    return ",".join(f"{a}" if a == b else f"{a}-{b}" for a, b in ranges)


def loader_workers(cpus: int, shm_free_bytes: int, batch_bytes: int, runs: int = 1) -> int:
    """Loader workers for each of `runs` runs at once: the anchors' 14 with 16 CPUs in the affinity (two left to the
    training processes), and no more than half the free /dev/shm holds with two float32 batches in flight per
    worker (DataLoader's prefetch: 4.3 GB for 14 workers at 224 px and batch 256). 0 loads in the training process."""
    by_cpus = max(1, (cpus - 2) // runs)
    by_shm = shm_free_bytes // 2 // (2 * batch_bytes * runs)
    return min(14, by_cpus, by_shm)


def batch_bytes(batch_size: int, image_size: int) -> int:
    return batch_size * 3 * image_size * image_size * 4


# --------------------------------------------------------------------------------------------------- sizes


@dataclass(frozen=True)
class Sizes:
    """How big each part is: a GPU's sizes, or the tiny ones of `--cpu`."""

    models: tuple[str, ...]
    modes: tuple[str, ...]
    batch_size: int
    steps: int
    warmup: int
    workers: int
    data: dict[str, int]  # SynthConfig fields of the shards the throughput parts read
    pack: int
    pack_data: dict[str, int]
    pack_batch_size: int
    pack_steps: int
    pack_workers: int


def gpu_sizes(cpus: int, shm_free_bytes: int, workers: int | None) -> Sizes:
    """ViTamin-S/B at 224 px and batch 256; the workers from the affinity and /dev/shm unless `--workers` is given."""
    if workers is None:
        workers = loader_workers(cpus, shm_free_bytes, batch_bytes(256, 224))
    return Sizes(models=("ViTamin-S", "ViTamin-B"), modes=("eager", "compile"), batch_size=256, steps=20,
                 warmup=3, workers=workers, data={"samples": 4096, "size": 256, "samples_per_shard": 256},
                 pack=4, pack_data={"samples": 4096, "size": 64, "samples_per_shard": 256}, pack_batch_size=256,
                 pack_steps=60, pack_workers=loader_workers(cpus, shm_free_bytes, batch_bytes(256, 64), runs=4))


CPU_SIZES = Sizes(models=("tiny",), modes=("eager",), batch_size=16, steps=3, warmup=1, workers=1,
                  data={"samples": 128, "size": 32, "samples_per_shard": 64}, pack=2,
                  pack_data={"samples": 128, "size": 32, "samples_per_shard": 64}, pack_batch_size=16, pack_steps=3,
                  pack_workers=1)


def proxy(cpu: bool) -> dict:
    """The tiny proxy of the packing runs (and of `--cpu`'s model): the anchors' tiny ViTamin tower (widths
    32/64/192, 6 attention blocks, 2.5 M parameters) at 64 px on a GPU; a still smaller one at 32 px on a CPU."""
    from nas.arch import Arch, Stage, Transformer
    from nas.presets import TextTower, vitamin

    if cpu:
        arch = Arch(stem="conv", stem_width=16, stages=(Stage("mbconv", 1, 16), Stage("mbconv", 1, 32)),
                    transformer=Transformer(width=64, depth=2, heads=2), image_size=32, embed_dim=64)
        text = TextTower(width=64, layers=2, heads=2, context_length=16)
    else:
        arch = vitamin(32, 64, 192, 6, 3, image_size=64, embed_dim=192)
        text = TextTower(width=192, layers=4, heads=3, context_length=32)
    return {"arch": json.loads(arch.to_json()), "text": dataclasses.asdict(text)}


# ------------------------------------------------------------------------------------------------- results


@dataclass
class Row:
    """One line of the table."""

    part: str
    model: str = ""
    mode: str = ""
    images_per_s: float | None = None
    tflops: float | None = None
    mfu: float | None = None
    peak_memory_gib: float | None = None
    data_wait_share: float | None = None
    compile_s: float | None = None
    took_s: float | None = None
    anchor: str = ""
    note: str = ""
    failed: bool = False  # the part ran and broke (not: skipped, or stopped at the deadline)
    device: str = ""  # the device's name, as the trainer's process saw it


#: The table's columns: (header, Row field, how its figures read).
COLUMNS = (("part", "part", "text"), ("model", "model", "text"), ("mode", "mode", "text"),
           ("img/s", "images_per_s", "int"), ("TFLOP/s", "tflops", "float"), ("MFU", "mfu", "share"),
           ("peak GiB", "peak_memory_gib", "float"), ("data wait", "data_wait_share", "share"),
           ("compile s", "compile_s", "int"), ("took s", "took_s", "int"), ("anchor img/s (H100)", "anchor", "text"),
           ("note", "note", "text"))


def _cell(value: Any, kind: str) -> str:
    if kind == "text":
        return str(value)
    if value is None:
        return "-"
    return {"share": f"{100 * value:.1f} %", "int": f"{value:,.0f}", "float": f"{value:,.1f}"}[kind]


def format_rows(rows: list[Row]) -> str:
    """The table: text columns left-aligned, figures right-aligned, '-' where a part has no such figure."""
    cells = [[_cell(getattr(row, name), kind) for _, name, kind in COLUMNS] for row in rows]
    widths = [max([len(header)] + [len(r[i]) for r in cells]) for i, (header, _, _) in enumerate(COLUMNS)]
    right = [kind != "text" for _, _, kind in COLUMNS]

    def line(values: list[str]) -> str:
        return "  ".join(v.rjust(w) if r else v.ljust(w) for v, w, r in zip(values, widths, right)).rstrip()

    return "\n".join([line([h for h, _, _ in COLUMNS]), line(["-" * w for w in widths]), *(line(r) for r in cells)])


def rows_from_throughput(lines: list[dict], model: str, took_s: float) -> list[Row]:
    """Rows of train_throughput.py --json's measurements (the model step, then on shards)."""
    rows = []
    for figures in lines:
        key = (model, figures["mode"])
        on_shards = figures["part"] == "on shards"
        note = f"compile failed, ran eager: {figures['compile_error'][:120]}" if figures["compile_error"] else ""
        rows.append(Row(f"nas.train {figures['part']}", model, figures["mode"], figures["images_per_s"],
                        figures["tflops"], figures["mfu"], figures["peak_memory_gib"], figures["data_wait_share"],
                        figures["compile_s"] if figures["mode"] == "compile" else None, took_s,
                        (OPEN_CLIP_TRAIN_ANCHORS if on_shards else MODEL_STEP_ANCHORS).get(key, ""), note,
                        device=figures["device"]))
    return rows


#: open_clip_train's log line every --log-every-n-steps steps (open_clip_train/train.py): samples so far, and the
#: mean data and step times since the previous line.
OPEN_CLIP_LINE = re.compile(r"Train Epoch: \d+ \[\s*(?P<samples>\d+)/\d+ \(\s*\d+%\)\] Data \(t\): (?P<data>[\d.]+) "
                            r"Batch \(t\): (?P<batch>[\d.]+),")


def open_clip_steady_state(log: str, batch_size: int, warmup: int) -> dict[str, float] | None:
    """Images/s and the data-wait share of open_clip_train's steps after the first `warmup`, from its log.

    Each log line holds the mean step time since the previous one (the meters are reset at every line), and
    the `.item()` calls at a line wait for the GPU, so the means are true step times."""
    done, total_s, data_s, samples = 0, 0.0, 0.0, 0
    for match in OPEN_CLIP_LINE.finditer(log):
        steps_so_far = int(match["samples"]) // batch_size
        window = steps_so_far - done
        if done >= warmup and window > 0:
            total_s += window * float(match["batch"])
            data_s += window * float(match["data"])
            samples += window * batch_size
        done = steps_so_far
    if not samples or total_s <= 0:
        return None
    return {"images_per_s": samples / total_s, "data_wait_share": data_s / total_s}


def write_atomically(path: Path, data: bytes) -> None:
    """A reader (or a kill at the command's limit) sees the old file or the new one, never half of one."""
    temporary = path.with_name(path.name + ".tmp")
    temporary.write_bytes(data)
    os.replace(temporary, path)


def logs_archive(logs: list[Path]) -> bytes:
    """logs.tar.gz of `logs`, each clipped to its last LOGS_BYTES / len(logs) bytes: under LOGS_BYTES (and the tar
    headers) uncompressed whatever the logs hold, so under a result file's 16 MiB."""
    keep = LOGS_BYTES // max(1, len(logs))
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as archive:
        for log in logs:
            data = log.read_bytes()
            if len(data) > keep:
                marker = f"[the first {len(data) - keep:,} bytes are left out]\n".encode()
                data = marker + data[len(data) - keep + len(marker):]
            info = tarfile.TarInfo(f"logs/{log.name}")
            info.size, info.mtime = len(data), int(log.stat().st_mtime)
            archive.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


# ------------------------------------------------------------------------------------------------ the parts


@dataclass
class Part:
    name: str  # kind[:model:mode]
    kind: str
    model: str = ""
    mode: str = ""
    commands: list[list[str]] = field(default_factory=list)
    skip: str = ""  # why it cannot run here at all

    @property
    def estimate_s(self) -> int:
        """What the part is expected to take on one H100/H200 (ESTIMATE_S)."""
        return next(seconds for pattern, seconds in ESTIMATE_S.items() if fnmatch.fnmatch(self.name, pattern))


def part_order(models: tuple[str, ...], modes: tuple[str, ...]) -> list[str]:
    """By value: each model's anchor comparisons (ours, then open_clip_train's; eager, then compiled), the models
    in order (ViTamin-S has the end-to-end anchors), then packing, then torchrun."""
    return [f"{side}:{model}:{mode}" for model in models for mode in modes for side in ("nas", "open_clip")] + [
        "packing", "torchrun"]


class Check:
    """The plan, the runs and the report of one call."""

    def __init__(self, args: argparse.Namespace, facts: dict[str, Any]):
        self.args = args
        self.facts = facts
        self.scratch = Path(args.scratch).resolve()
        self.report = Path(args.report).resolve()
        self.logs = self.scratch / "logs"
        self.cpu = args.cpu
        cpus = len(facts["cpu_affinity"])
        if self.cpu:
            self.sizes = CPU_SIZES if args.workers is None else dataclasses.replace(CPU_SIZES, workers=args.workers)
        else:
            self.sizes = gpu_sizes(cpus, facts["shm_free_bytes"], args.workers)
        self.python = sys.executable
        self.started = float(os.environ.get("GPU_CHECK_STARTED") or time.time())
        self.deadline = self.started + args.budget_s
        self.data_dir = self.scratch / "data" / f"shards-{self.sizes.data['size']}"
        self.pack_dir = self.scratch / "data" / f"shards-{self.sizes.pack_data['size']}"
        self.proxy_file = self.scratch / "proxy.json"
        self.rows: list[Row] = []  # what ran so far
        self.logs_written: list[Path] = []  # this call's logs, for logs.tar.gz
        self.left_over: list[str] = []  # parts the budget did not reach
        self.env = dict(os.environ, HF_HUB_OFFLINE="1")  # nothing here downloads; GPU machines have no network
        if self.cpu:  # one thread per process: several of them share the cores, and oversubscribed threads crawl
            self.env.update(OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")

    @property
    def shards_warmup(self) -> int:
        """Untimed steps on shards: what the loader holds ready (2 batches per worker) drained first, as
        train_throughput.py's `shards_warmup` does for the trainer."""
        return max(self.sizes.warmup, 2 * self.sizes.workers + 2)

    # -- the plan ----------------------------------------------------------------------------------------

    def plan(self) -> list[Part]:
        sizes, gpus = self.sizes, self.args.gpus
        comparisons = [self._nas(model, mode) for model in sizes.models for mode in sizes.modes]
        comparisons += [self._open_clip(model, mode) for model in sizes.models for mode in sizes.modes]
        parts = {p.name: p for p in comparisons + [self._packing(), self._torchrun(gpus)]}
        chosen = [parts[name] for name in part_order(sizes.models, sizes.modes)]
        patterns = [p.strip() for p in self.args.parts.split(",") if p.strip()] if self.args.parts else None
        if patterns:
            chosen = [p for p in chosen if any(fnmatch.fnmatch(p.name, pat) or p.name.startswith(pat + ":")
                                               for pat in patterns)]
        return chosen

    def _nas(self, model: str, mode: str) -> Part:
        sizes = self.sizes
        arch = str(self.proxy_file) if model == "tiny" else model
        command = [self.python, str(THROUGHPUT), "--gpu", "--json", "--arch", arch, "--modes", mode,
                   "--batch-size", str(sizes.batch_size), "--steps", str(sizes.steps), "--warmup", str(sizes.warmup),
                   "--data", str(self.data_dir / "shards"), "--workers", str(sizes.workers)]
        if self.cpu:
            command += ["--device", "cpu"]
        return Part(f"nas:{model}:{mode}", "nas", model, mode, [command])

    def _open_clip(self, model: str, mode: str) -> Part:
        sizes = self.sizes
        part = Part(f"open_clip:{model}:{mode}", "open_clip", model, mode)
        if self.cpu:
            part.skip = "open_clip_train runs open_clip's own ViTamin-S/B only: not at --cpu's sizes"
            return part
        samples = (self.shards_warmup + sizes.steps) * sizes.batch_size
        command = [self.python, "-m", "open_clip_train.main", "--model", model, "--train-data", "@SHARDS@",
                   "--dataset-type", "webdataset", "--dataset-resampled", "--train-num-samples", str(samples),
                   "--batch-size", str(sizes.batch_size), "--precision", "amp_bf16", "--workers", str(sizes.workers),
                   "--epochs", "1", "--warmup", "1", "--lr", "5e-4", "--wd", "0.2", "--log-every-n-steps", "5",
                   "--logs", "none", "--name", part.name.replace(":", "-"), "--seed", "0", "--report-to", ""]
        if mode == "compile":
            command.append("--torchcompile")
        part.commands = [command]
        return part

    def _train_command(self, out: Path, arch: str, data: Path, batch: int, steps: int, warmup: int, workers: int,
                       seed: int = 0) -> list[str]:
        """`vitamin-nas train` for `warmup + steps` steps with a rung after `warmup`: its last rung, which
        `--json` prints, is the steady state."""
        return ["-m", "nas.cli", "train", "--arch", arch, "--data", str(data / "shards"),
                "--samples", str((warmup + steps) * batch), "--batch-size", str(batch),
                "--rungs", str(warmup * batch), "--warmup", "1", "--workers", str(workers), "--seed", str(seed),
                "--checkpoint-every", "0", "--report-to", "none", "--no-progress", "--json", "--out", str(out)]

    def _packing(self) -> Part:
        """`pack` runs one after another, then the same `pack` runs (in other directories) all at once."""
        sizes = self.sizes
        commands = [[self.python, *self._train_command(self.scratch / "packing" / f"{how}-{i}", str(self.proxy_file),
                                                       self.pack_dir, sizes.pack_batch_size, sizes.pack_steps,
                                                       max(2, sizes.pack_steps // 10), sizes.pack_workers, seed=i)]
                    for how in ("alone", "together") for i in range(sizes.pack)]
        return Part("packing", "packing", "proxy", "eager", commands)

    def _torchrun(self, gpus: int) -> Part:
        sizes = self.sizes
        model = "tiny" if self.cpu else "ViTamin-S"
        part = Part("torchrun", "torchrun", model, "eager")
        if not self.cpu and gpus < 2:
            part.skip = f"needs two GPUs, this machine has {gpus}"
            return part
        arch = str(self.proxy_file) if self.cpu else model
        part.commands = [[self.python, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                          *self._train_command(self.scratch / "torchrun", arch, self.data_dir, 2 * sizes.batch_size,
                                               sizes.steps, sizes.warmup, max(1, sizes.workers // 2))]]
        return part

    # -- the report --------------------------------------------------------------------------------------

    def facts_lines(self) -> list[str]:
        facts, s = self.facts, self.sizes
        gib = 2**30
        versions = facts["versions"]
        workers = ("--workers" if self.args.workers is not None else "--cpu's" if self.cpu else
                   "from the CPU affinity and the free /dev/shm")
        return [
            f"vitamin-nas GPU check: {'the tiny proxy on the CPU' if self.cpu else 'ViTamin-S/B'}, batch "
            f"{s.batch_size}, {'fp32' if self.cpu else 'bf16'}, {s.steps} timed steps after {s.warmup} (on shards "
            f"after {self.shards_warmup}), {s.workers} loader workers ({workers}; packing: {s.pack} runs of "
            f"{s.pack_workers}); --budget-s {self.args.budget_s:g} of --limit-s {self.args.limit_s:g}",
            f"GPUs: {'; '.join(facts['gpus']) or 'none seen by nvidia-smi'} ({self.args.gpus} planned for)",
            f"CPUs: {len(facts['cpu_affinity'])} in the affinity ({cpu_list(facts['cpu_affinity'])}) of "
            f"{facts['cpus']}; memory {facts['memory_bytes'] / gib:.1f} GiB; /dev/shm {facts['shm_bytes'] / gib:.1f} "
            f"GiB, {facts['shm_free_bytes'] / gib:.1f} GiB free",
            f"Python {facts['python']}, torch {versions['torch']}, timm {versions['timm']} ({facts['timm_path']}), "
            f"open_clip_torch {versions['open_clip_torch']}"]

    def text(self, planned: list[Part], done: int) -> str:
        """The report's text: the facts, the table so far, and what is left."""
        took = f"{time.time() - self.started:.0f} s"
        progress = (f"Took {took} in all." if done == len(planned) else
                    f"{done} of {len(planned)} parts done after {took}; still to run: "
                    + ", ".join(p.name for p in planned[done:]) + ".")
        if self.left_over:
            progress += f" Not run for lack of time: --parts {','.join(self.left_over)}"
        mfu = ("MFU: nas.cost's analytic FLOPs (3 x forward) over the device's dense bf16 peak; the anchors' MFU use "
               "FlopCounterMode's larger count.")
        return "\n".join([*self.facts_lines(), format_rows(self.rows), f"{mfu} {progress}"])

    def write_report(self, planned: list[Part], done: int) -> str:
        """Everything so far into --report: called before the first part (the facts) and after each one."""
        text = self.text(planned, done)
        self.report.mkdir(parents=True, exist_ok=True)
        write_atomically(self.report / "gpu_check.txt", (text + "\n").encode())
        document = {"environment": self.facts, "args": vars(self.args), "done": [p.name for p in planned[:done]],
                    "to_run": [p.name for p in planned[done:]], "left_over": self.left_over,
                    "rows": [dataclasses.asdict(r) for r in self.rows]}
        write_atomically(self.report / "gpu_check.json", (json.dumps(document, indent=1) + "\n").encode())
        write_atomically(self.report / "logs.tar.gz", logs_archive(self.logs_written))
        return text

    def log(self, name: str) -> Path:
        """A log of this call (under --scratch; clipped into the report's logs.tar.gz)."""
        path = self.logs / f"{name.replace(':', '-')}.log"
        self.logs_written.append(path)
        return path

    # -- running -----------------------------------------------------------------------------------------

    def left_s(self) -> float:
        """Seconds a part may still run: its process group is stopped (STOP_S) by the end of the budget."""
        return self.deadline - STOP_S - time.time()

    def prepare_data(self, parts: list[Part]) -> None:
        """The shards the chosen parts read, written once (a later call with the same --scratch reuses them)."""
        from nas.data import SynthConfig, expand_shards, synthesize

        kinds = {part.kind for part in parts if not part.skip}
        needed = [(self.data_dir, self.sizes.data)] if kinds - {"packing"} else []
        needed += [(self.pack_dir, self.sizes.pack_data)] if "packing" in kinds else []
        for directory, fields in needed:
            synthesize(directory, SynthConfig(**fields, seed=0, zeroshot_per_class=0, retrieval_samples=0))
        self.proxy_file.parent.mkdir(parents=True, exist_ok=True)
        self.proxy_file.write_text(json.dumps(proxy(self.cpu), indent=2) + "\n")
        if kinds - {"packing"}:  # open_clip_train takes no directories: the list of the shards
            self.shard_list = "::".join(expand_shards(str(self.data_dir / "shards")))

    def run(self, part: Part) -> list[Row]:
        label = Row(PART_LABELS[part.kind], part.model, part.mode)
        if part.skip:
            return [dataclasses.replace(label, note=f"not run: {part.skip}")]
        left = self.left_s()
        if left <= (0 if self.cpu else part.estimate_s):  # --cpu's tiny parts have no estimate: only the deadline
            self.left_over.append(part.name)
            takes = "" if self.cpu else f", it takes about {part.estimate_s} s"
            return [dataclasses.replace(label, note=f"not run: {max(left, 0):.0f} s of --budget-s left{takes} (run "
                                                    f"it with --parts {part.name})")]
        begin = time.time()
        shutil.rmtree(self.scratch / part.kind, ignore_errors=True)  # run directories of an earlier call
        rows = getattr(self, f"_run_{part.kind}")(part, label)
        for row in rows:
            row.took_s = row.took_s if row.took_s is not None else time.time() - begin
        return rows

    def _run_nas(self, part: Part, label: Row) -> list[Row]:
        result = run_logged(part.commands[0], self.log(part.name), self.left_s(), self.env, self.scratch)
        rows = rows_from_throughput([json.loads(line) for line in result.stdout.splitlines()
                                     if line.startswith("{")], part.model, result.seconds)
        if result.returncode != 0 or len(rows) < 2:
            rows.append(dataclasses.replace(label, took_s=result.seconds, note=result.failure(),
                                            failed=result.broke))
        return rows

    def _run_open_clip(self, part: Part, label: Row) -> list[Row]:
        oc_path, reason = self.open_clip_path
        if reason:
            return [dataclasses.replace(label, note=f"not run: {reason}")]
        env = dict(self.env, PYTHONPATH=os.pathsep.join(p for p in (oc_path, self.env.get("PYTHONPATH")) if p))
        workdir = self.scratch / "open_clip" / part.name.replace(":", "-")  # emptied by `run`: it refuses old logs
        workdir.mkdir(parents=True, exist_ok=True)
        command = [self.shard_list if arg == "@SHARDS@" else arg for arg in part.commands[0]]
        log = self.log(part.name)
        result = run_logged(command, log, self.left_s(), env, cwd=workdir)
        steady = open_clip_steady_state(log.read_text(errors="replace"), self.sizes.batch_size, self.shards_warmup)
        if steady is None:
            return [dataclasses.replace(label, took_s=result.seconds, note=result.failure() or "no steady-state steps",
                                        failed=not result.timed_out)]
        tflops = steady["images_per_s"] * train_gflops(part.model) / 1e3
        peak = self.peak_tflops()
        return [dataclasses.replace(label, images_per_s=steady["images_per_s"], tflops=tflops,
                                    mfu=tflops / peak if peak else None,
                                    data_wait_share=steady["data_wait_share"], took_s=result.seconds,
                                    anchor=OPEN_CLIP_TRAIN_ANCHORS.get((part.model, part.mode), ""),
                                    note=result.failure() if result.returncode else "", failed=result.broke)]

    def _run_packing(self, part: Part, label: Row) -> list[Row]:
        """The same runs one after another, then all at once: the gain is in what the GPU does per second."""
        n = len(part.commands) // 2
        alone = [run_logged(c, self.log(f"packing-alone-{i}"), self.left_s(), self.env, self.scratch)
                 for i, c in enumerate(part.commands[:n])]
        together = run_together(part.commands[n:], [self.log(f"packing-together-{i}") for i in range(n)],
                                self.left_s(), self.env, self.scratch)
        rows = []
        for name, results, wall in ((f"packing: {n} one after another", alone, sum(r.seconds for r in alone)),
                                    (f"packing: {n} at once", together, max(r.seconds for r in together))):
            finals = [r.final() for r in results]
            if not all(finals):
                failed = next(r for r, f in zip(results, finals) if not f)
                rows.append(dataclasses.replace(label, part=name, took_s=wall, note=failed.failure(),
                                                failed=failed.broke))
                continue
            rates = [f["images_per_s"] for f in finals]
            rows.append(dataclasses.replace(
                label, part=name, images_per_s=sum(rates) if results is together else sum(rates) / n,
                data_wait_share=sum(f["data_wait_share"] for f in finals) / n, took_s=wall,
                peak_memory_gib=max((f.get("peak_memory_gib") or 0 for f in finals), default=None) or None,
                note=f"{'sum' if results is together else 'mean'} of the runs' steady img/s; "
                     f"per run {min(rates):,.0f}-{max(rates):,.0f} img/s"))
        if len(rows) == 2 and rows[0].images_per_s and rows[1].images_per_s:
            rows[1].note += (f"; gain x{rows[1].images_per_s / rows[0].images_per_s:.2f} in img/s, "
                             f"x{rows[0].took_s / rows[1].took_s:.2f} in wall time")
        return rows

    def _run_torchrun(self, part: Part, label: Row) -> list[Row]:
        result = run_logged(part.commands[0], self.log("torchrun"), self.left_s(), self.env, self.scratch)
        final = result.final()
        if not final:
            return [dataclasses.replace(label, took_s=result.seconds, note=result.failure(), failed=result.broke)]
        return [dataclasses.replace(label, images_per_s=final["images_per_s"],
                                    tflops=final.get("tflops"), mfu=final.get("mfu"),
                                    peak_memory_gib=final.get("peak_memory_gib"),
                                    data_wait_share=final["data_wait_share"], took_s=result.seconds,
                                    note=f"global batch {2 * self.sizes.batch_size}")]

    @functools.cached_property
    def open_clip_path(self) -> tuple[str | None, str]:
        """The folder with webdataset<=0.2.86 for open_clip_train (put first on its path), or why it cannot run;
        probed once a call."""
        path = self.args.open_clip_path
        env = dict(self.env, PYTHONPATH=os.pathsep.join(p for p in (path, self.env.get("PYTHONPATH")) if p))
        probe = subprocess.run([self.python, "-c", "import importlib.metadata as m, open_clip_train; "
                                "print(m.version('webdataset'))"], capture_output=True, text=True, env=env)
        if probe.returncode != 0:
            return None, f"open_clip_train cannot be imported: {probe.stderr.strip().splitlines()[-1:]}"
        version = probe.stdout.strip()
        if tuple(int(x) for x in re.findall(r"\d+", version)[:3]) > (0, 2, 86):
            return None, (f"webdataset {version} on its path, open_clip_train needs <=0.2.86 "
                          "(--open-clip-path DIR with webdataset 0.2.86)")
        return path, ""

    def peak_tflops(self) -> float | None:
        """The device's peak as the trainer's rows measured it (TFLOP/s over MFU): this process stays off the GPU."""
        return next((row.tflops / row.mfu for row in self.rows if row.tflops and row.mfu), None)


def train_gflops(model: str) -> float:
    from nas.cost import cost
    from nas.presets import preset_with_text

    return cost(*preset_with_text(model)).train_gflops


def untested_versions(versions: dict[str, str]) -> list[str]:
    """The packages here at another version than the tests use: the Makefile's GPU_BINARY_WHEELS pins them, and
    `make gpu-wheels` carries them. nas/models/tower.py imports timm's internals (`_manipulate`, `vitamin`,
    `HybridEmbed`, `maxxvit`) and open_clip's configs, which move between versions: better refused at once than
    failed in every part, or measured on code the tests never ran."""
    wheels = re.search(r"^GPU_BINARY_WHEELS :=((?:.*\\\n)*.*)", MAKEFILE.read_text(), re.MULTILINE)
    pins = dict(re.findall(r"\b(timm|open_clip_torch)==(\S+)", wheels[1] if wheels else ""))
    return [f"{name} {versions[name]} (the tests use {pins.get(name, 'a version the Makefile does not pin')})"
            for name in PINNED if versions[name] != pins.get(name)]


# ------------------------------------------------------------------------------------------------ processes


@dataclass
class Result:
    command: list[str]
    returncode: int
    stdout: str
    seconds: float
    timed_out: bool
    log: Path

    def final(self) -> dict | None:
        """The JSON line `vitamin-nas train --json` prints last, when it printed one."""
        lines = [line for line in self.stdout.splitlines() if line.startswith("{")]
        return json.loads(lines[-1]) if lines and self.returncode == 0 else None

    @property
    def broke(self) -> bool:
        return self.returncode != 0 and not self.timed_out

    def failure(self) -> str:
        where = f"logs.tar.gz: logs/{self.log.name}"
        if self.timed_out:
            return f"stopped at the deadline after {self.seconds:.0f} s ({where})"
        if self.returncode == 0:
            return ""
        tail = [line for line in self.log.read_text(errors="replace").splitlines() if line.strip()][-1:]
        return f"failed (exit {self.returncode}): {tail[0][:160] if tail else ''} ({where})"


_LIBC = ctypes.CDLL(None, use_errno=True)
PR_SET_PDEATHSIG = 1  # linux/prctl.h


def _in_own_group_dying_with(parent: int) -> None:
    """Run in the part's process before its program: a process group of its own, stopped whole at the deadline (the
    run, its loader workers, torchrun's agent), in the command's session (what a device call ends when it returns);
    and SIGKILL when the check dies, killed at the command's limit say, so that no part holds the GPU after it."""
    os.setpgid(0, 0)
    _LIBC.prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
    if os.getppid() != parent:  # the check died before prctl
        os._exit(1)


def start(command: list[str], log: Path, env: dict, cwd: Path) -> tuple[subprocess.Popen, Any]:
    """Start `command` in `cwd` (outside the checkout: `python -m nas.cli` runs the installed project, not the
    directory it was started from), its stderr to `log`, its stdout kept for the figures."""
    log.parent.mkdir(parents=True, exist_ok=True)
    handle = open(log, "w")
    handle.write("$ " + shlex.join(command) + "\n")
    handle.flush()
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=handle, text=True, env=env, cwd=cwd,
                               preexec_fn=functools.partial(_in_own_group_dying_with, os.getpid()))
    return process, handle


def finish(process: subprocess.Popen, handle: Any, command: list[str], log: Path, begin: float,
           timeout: float) -> Result:
    timed_out = False
    try:
        stdout, _ = process.communicate(timeout=max(timeout, 1))
    except subprocess.TimeoutExpired:
        timed_out = True
        stop_group(process)
        stdout, _ = process.communicate()
    seconds = time.time() - begin
    with contextlib.suppress(ProcessLookupError):  # whatever of its group outlived the run: gone before the next part
        os.killpg(process.pid, signal.SIGKILL)
    handle.write(stdout)
    handle.close()
    return Result(command, process.returncode, stdout, seconds, timed_out, log)


def stop_group(process: subprocess.Popen) -> None:
    """SIGTERM the run's process group, SIGKILL it 10 s later if anything is left (STOP_S in all)."""
    for sig, grace in ((signal.SIGTERM, 10), (signal.SIGKILL, STOP_S - 10)):
        try:
            os.killpg(process.pid, sig)
        except ProcessLookupError:
            return
        try:
            process.wait(timeout=grace)
            return
        except subprocess.TimeoutExpired:
            continue


def run_logged(command: list[str], log: Path, timeout: float, env: dict, cwd: Path) -> Result:
    begin = time.time()
    process, handle = start(command, log, env, cwd)
    return finish(process, handle, command, log, begin, timeout)


def run_together(commands: list[list[str]], logs: list[Path], timeout: float, env: dict, cwd: Path) -> list[Result]:
    """Start every command at once; each one's time runs from the common start to its own exit."""
    begin = time.time()
    started = [start(c, log, env, cwd) for c, log in zip(commands, logs)]
    return [finish(p, h, c, log, begin, begin + timeout - time.time())
            for (p, h), c, log in zip(started, commands, logs)]


# ------------------------------------------------------------------------------------------------ main


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="gpu_check", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--report", default="gpu-check/report",
                        help="where the facts, the table and the clipped logs go: three files, rewritten as each "
                             "part ends ($OUT on a lent machine; default: %(default)s)")
    parser.add_argument("--scratch", default="gpu-check",
                        help="where shards, runs, checkpoints and whole logs go (default: %(default)s)")
    parser.add_argument("--limit-s", type=float, default=600,
                        help="the command's own limit: the device tool's timeout_s (default: %(default)s)")
    parser.add_argument("--budget-s", type=float, default=560,
                        help=f"seconds for the whole check from gpu_check.sh's start, at least {MIN_MARGIN_S} below "
                             "--limit-s (default: %(default)s)")
    parser.add_argument("--parts", help="comma-separated patterns of the parts to run (default: all, in order)")
    parser.add_argument("--workers", type=int,
                        help="loader workers of the nas and open_clip parts (default: from the CPU affinity and the "
                             "free /dev/shm; --cpu: 1)")
    parser.add_argument("--gpus", type=int, help="GPUs to plan for (default: the ones torch sees)")
    parser.add_argument("--cpu", action="store_true", help="the same parts on a CPU, at tiny sizes (the tests)")
    parser.add_argument("--dry-run", action="store_true", help="print the facts, the plan and its commands only")
    parser.add_argument("--open-clip-path", help="folder with webdataset 0.2.86, put first on open_clip_train's path")
    args = parser.parse_args(argv)
    if args.budget_s <= 0:
        parser.error(f"--budget-s must be positive, got {args.budget_s:g}")
    if args.limit_s - args.budget_s < MIN_MARGIN_S:
        parser.error(f"--budget-s {args.budget_s:g} leaves {args.limit_s - args.budget_s:g} s of --limit-s "
                     f"{args.limit_s:g}: at least {MIN_MARGIN_S} s must stay for what runs outside the budget (the "
                     f"shell's start, a part's processes dying, the interpreter's exit); give --budget-s "
                     f"{args.limit_s - MIN_MARGIN_S:g} or less")
    if args.gpus is not None and args.gpus < 0:
        parser.error(f"--gpus must be >= 0, got {args.gpus}")
    if args.workers is not None and args.workers < 0:
        parser.error(f"--workers must be >= 0, got {args.workers}")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    facts = environment()
    if args.gpus is None:
        if args.cpu:
            args.gpus = 0
        else:
            import torch

            args.gpus = torch.cuda.device_count()
    if not args.cpu and not args.dry_run and args.gpus == 0:
        print("gpu_check: no CUDA device here: run it on a GPU machine, or with --cpu for the tiny CPU version "
              "(--dry-run shows the plan)", file=sys.stderr)
        return 2
    check = Check(args, facts)
    parts = check.plan()
    if not parts:
        print(f"gpu_check: --parts {args.parts!r} matches none of the parts (--dry-run lists them)", file=sys.stderr)
        return 2
    if args.dry_run:
        print("\n".join(check.facts_lines()))
        for part in parts:
            status = f"not run: {part.skip}" if part.skip else f"about {part.estimate_s} s"
            print(f"{part.name}  ({status})")
            for command in part.commands:
                print("    " + shlex.join(command))
        return 0
    for name in REPORT_FILES:  # an earlier call's report: gone before anything of this one is written
        (check.report / name).unlink(missing_ok=True)
    check.write_report(parts, 0)
    untested = untested_versions(facts["versions"])
    if untested:
        print(f"gpu_check: {', '.join(untested)} here (timm from {facts['timm_path']}): nas/models/tower.py imports "
              "their internals; run gpu_check.sh with the wheels `make gpu-wheels` makes (carried on a lent machine), "
              "or --no-install where the tests' versions are installed", file=sys.stderr)
        return 2
    check.prepare_data(parts)
    for done, part in enumerate(parts):
        print(f"[{time.time() - check.started:5.0f} s] {part.name}", file=sys.stderr, flush=True)
        check.rows.extend(check.run(part))
        text = check.write_report(parts, done + 1)
    print(text)
    return 1 if any(row.failed for row in check.rows) else 0


if __name__ == "__main__":
    sys.exit(main())
