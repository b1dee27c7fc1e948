"""The GPU check: one table of what this toolkit's trainer does on a GPU, beside open_clip_train and the H100 anchors.

    benchmarks/gpu_check.sh [--out DIR] [--budget-s 470] [--parts PATTERNS] [--gpus N] [--dry-run] [--cpu]

(gpu_check.sh installs the wheels first, then runs this file with the same arguments.) Parts, in the order they
run, each in its own processes:

- `nas:<model>:<mode>`: `nas.train.train` for ViTamin-S and ViTamin-B, eager and compiled, batch 256, bf16:
  the model-only step (batches already on the GPU: images/s, TFLOP/s, MFU, peak memory) and then end to end on
  the check's shards (benchmarks/train_throughput.py --gpu --data, one process per model and mode);
- `open_clip:<model>:<mode>`: `python -m open_clip_train.main --model <model>` on the same shards, with the
  same batch, precision and loader workers (webdataset 0.2.86 from its own folder, as its `training` extra pins);
- `packing`: four tiny-proxy `vitamin-nas train` runs on one GPU, one after another and then all at once (the
  gain of packing several small trials onto a GPU, measured without Ray);
- `torchrun`: ViTamin-S on two GPUs with `torchrun --nproc_per_node 2` (when two exist).

The whole check keeps to `--budget-s` seconds from the moment gpu_check.sh started (GPU_CHECK_STARTED): a part
starts only when its estimate fits in what is left, and is stopped at the deadline; the table says which parts
did not run and why, and `--parts` runs them in a later call (patterns: `nas`, `open_clip:*:compile`,
`nas:ViTamin-B:*`, `packing`, ...). `--cpu` runs the same parts on a CPU at tiny sizes (a tiny proxy instead
of ViTamin-S/B, eager only, two packed runs, torchrun with two gloo processes): what the tests run.
`--dry-run` prints the plan and the commands without running anything. The table is also written to
OUT/gpu_check.txt, and every row to OUT/gpu_check.json; each part's output goes to OUT/logs/<part>.log.
"""

from __future__ import annotations

import argparse
import dataclasses
import fnmatch
import json
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
THROUGHPUT = HERE / "train_throughput.py"

#: open_clip_train end to end on one H100 (../shared/reference/gpu_anchors.md): batch 256, amp_bf16, 14 workers.
OPEN_CLIP_TRAIN_ANCHORS = {("ViTamin-S", "eager"): "1,228-1,285", ("ViTamin-S", "compile"): "1,772-1,987"}
#: The model-only step of open_clip_train on the same H100 (img/s), the anchors of the trainer's model step.
MODEL_STEP_ANCHORS = {("ViTamin-S", "eager"): "1,442", ("ViTamin-S", "compile"): "2,766",
                      ("ViTamin-B", "eager"): "825", ("ViTamin-B", "compile"): "1,379"}
#: Seconds each part is expected to take on one H100/H200 with 16 cores, compilation included (a guess until the
#: first run: the table's `took s` column gives the real figures, to put here).
ESTIMATE_S = {"nas:*:eager": 45, "nas:*:compile": 130, "open_clip:*:eager": 40, "open_clip:*:compile": 110,
              "packing": 70, "torchrun": 80}
RESERVE_S = 5  # for the table, after the last part
PART_LABELS = {"nas": "nas.train", "open_clip": "open_clip_train on shards", "packing": "packing",
               "torchrun": "torchrun: 2 processes on shards"}


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


def gpu_sizes(cpus: int) -> Sizes:
    workers = max(1, min(14, cpus - 2))  # the anchors' 14 loader workers on 16 cores
    return Sizes(models=("ViTamin-S", "ViTamin-B"), modes=("eager", "compile"), batch_size=256, steps=20,
                 warmup=3, workers=workers, data={"samples": 4096, "size": 256, "samples_per_shard": 256},
                 pack=4, pack_data={"samples": 4096, "size": 64, "samples_per_shard": 256}, pack_batch_size=256,
                 pack_steps=60, pack_workers=max(1, (cpus - 4) // 4))


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


class Check:
    """The plan and the runs of one call."""

    def __init__(self, args: argparse.Namespace):
        self.args = args
        self.out = Path(args.out).resolve()
        self.logs = self.out / "logs"
        self.cpu = args.cpu
        self.sizes = CPU_SIZES if self.cpu else gpu_sizes(os.cpu_count() or 1)
        self.python = sys.executable
        self.started = float(os.environ.get("GPU_CHECK_STARTED") or time.time())
        self.deadline = self.started + args.budget_s
        self.data_dir = self.out / "data" / f"shards-{self.sizes.data['size']}"
        self.pack_dir = self.out / "data" / f"shards-{self.sizes.pack_data['size']}"
        self.proxy_file = self.out / "proxy.json"
        self.rows: list[Row] = []  # what ran so far
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
        models = [(model, mode) for model in sizes.models for mode in sizes.modes]
        nas = [self._nas(model, mode) for model, mode in models]
        clip = [self._open_clip(model, mode) for model, mode in models]
        by_name = {p.name: p for p in nas + clip}
        # Cheap and anchored first; what the budget may not reach last (--parts runs it in another call).
        order = ["nas:ViTamin-S:eager", "open_clip:ViTamin-S:eager", "nas:ViTamin-B:eager", "packing",
                 "nas:ViTamin-S:compile", "open_clip:ViTamin-S:compile", "nas:ViTamin-B:compile", "torchrun",
                 "open_clip:ViTamin-B:eager", "open_clip:ViTamin-B:compile"]
        if self.cpu:
            order = ["nas:tiny:eager", "packing", "open_clip:tiny:eager", "torchrun"]
        parts = {**by_name, "packing": self._packing(), "torchrun": self._torchrun(gpus)}
        chosen = [parts[name] for name in order if name in parts]
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
        commands = [[self.python, *self._train_command(self.out / "packing" / f"{how}-{i}", str(self.proxy_file),
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
                          *self._train_command(self.out / "torchrun", arch, self.data_dir, 2 * sizes.batch_size,
                                               sizes.steps, sizes.warmup, max(1, sizes.workers // 2))]]
        return part

    # -- running -----------------------------------------------------------------------------------------

    def left_s(self) -> float:
        return self.deadline - RESERVE_S - time.time()

    def prepare_data(self) -> None:
        """The shards every part reads, written once (a rerun of the check reuses them)."""
        from nas.data import SynthConfig, expand_shards, synthesize

        for directory, fields in ((self.data_dir, self.sizes.data), (self.pack_dir, self.sizes.pack_data)):
            synthesize(directory, SynthConfig(**fields, seed=0, zeroshot_per_class=0, retrieval_samples=0))
        self.proxy_file.write_text(json.dumps(proxy(self.cpu), indent=2) + "\n")
        self.shard_list = "::".join(expand_shards(str(self.data_dir / "shards")))  # open_clip_train takes no dirs

    def run(self, part: Part) -> list[Row]:
        label = Row(PART_LABELS[part.kind], part.model, part.mode)
        if part.skip:
            return [dataclasses.replace(label, note=f"not run: {part.skip}")]
        left = self.left_s()
        if left < part.estimate_s and not self.cpu:
            return [dataclasses.replace(label, note=f"not run: {left:.0f} s of --budget-s left, it takes about "
                                                    f"{part.estimate_s} s (run it with --parts {part.name})")]
        begin = time.time()
        shutil.rmtree(self.out / part.kind, ignore_errors=True)  # run directories of an earlier call: not resumed
        rows = getattr(self, f"_run_{part.kind}")(part, label)
        for row in rows:
            row.took_s = row.took_s if row.took_s is not None else time.time() - begin
        return rows

    def _run_nas(self, part: Part, label: Row) -> list[Row]:
        result = run_logged(part.commands[0], self.logs / f"{part.name.replace(':', '-')}.log", self.left_s(),
                            self.env, self.out)
        rows = rows_from_throughput([json.loads(line) for line in result.stdout.splitlines()
                                     if line.startswith("{")], part.model, result.seconds)
        if result.returncode != 0 or len(rows) < 2:
            rows.append(dataclasses.replace(label, took_s=result.seconds, note=result.failure(),
                                            failed=result.broke))
        return rows

    def _run_open_clip(self, part: Part, label: Row) -> list[Row]:
        oc_path, reason = self.open_clip_path()
        if reason:
            return [dataclasses.replace(label, note=f"not run: {reason}")]
        env = dict(self.env, PYTHONPATH=os.pathsep.join(p for p in (oc_path, self.env.get("PYTHONPATH")) if p))
        workdir = self.out / "open_clip" / part.name.replace(":", "-")  # emptied by `run`: it refuses old logs
        workdir.mkdir(parents=True, exist_ok=True)
        command = [self.shard_list if arg == "@SHARDS@" else arg for arg in part.commands[0]]
        log = self.logs / f"{part.name.replace(':', '-')}.log"
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
        alone = [run_logged(c, self.logs / f"packing-alone-{i}.log", self.left_s(), self.env, self.out)
                 for i, c in enumerate(part.commands[:n])]
        together = run_together(part.commands[n:], [self.logs / f"packing-together-{i}.log" for i in range(n)],
                                self.left_s(), self.env, self.out)
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
        result = run_logged(part.commands[0], self.logs / "torchrun.log", self.left_s(), self.env, self.out)
        final = result.final()
        if not final:
            return [dataclasses.replace(label, took_s=result.seconds, note=result.failure(), failed=result.broke)]
        return [dataclasses.replace(label, images_per_s=final["images_per_s"],
                                    tflops=final.get("tflops"), mfu=final.get("mfu"),
                                    peak_memory_gib=final.get("peak_memory_gib"),
                                    data_wait_share=final["data_wait_share"], took_s=result.seconds,
                                    note=f"global batch {2 * self.sizes.batch_size}")]

    def open_clip_path(self) -> tuple[str | None, str]:
        """The folder with webdataset<=0.2.86 for open_clip_train (put first on its path), or why it cannot run."""
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

    def header(self) -> str:
        import torch

        device = "CPU" if self.cpu else next((row.device for row in self.rows if row.device), "a GPU")
        s = self.sizes
        return (f"vitamin-nas GPU check on {device} ({self.args.gpus} GPU(s), {os.cpu_count()} CPUs), torch "
                f"{torch.__version__}: batch {s.batch_size}, {'fp32' if self.cpu else 'bf16'}, {s.steps} timed steps "
                f"after {s.warmup} (on shards after {self.shards_warmup}), {s.workers} loader workers; "
                f"--budget-s {self.args.budget_s:g}")


def train_gflops(model: str) -> float:
    from nas.cost import cost
    from nas.presets import preset_with_text

    return cost(*preset_with_text(model)).train_gflops


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
        if self.timed_out:
            return f"stopped at the deadline after {self.seconds:.0f} s (log: {self.log})"
        if self.returncode == 0:
            return ""
        tail = [line for line in self.log.read_text(errors="replace").splitlines() if line.strip()][-1:]
        return f"failed (exit {self.returncode}): {tail[0][:160] if tail else ''} (log: {self.log})"


def start(command: list[str], log: Path, env: dict, cwd: Path) -> tuple[subprocess.Popen, Any]:
    """Start `command` in `cwd` (outside the checkout: `python -m nas.cli` runs the installed project, not the
    directory it was started from), its stderr to `log`, its stdout kept for the figures."""
    log.parent.mkdir(parents=True, exist_ok=True)
    handle = open(log, "w")
    handle.write("$ " + shlex.join(command) + "\n")
    handle.flush()
    # Its own process group: at the deadline the run, its loader workers and torchrun's ranks are stopped together.
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=handle, text=True, env=env, cwd=cwd,
                               start_new_session=True)
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
    handle.write(stdout)
    handle.close()
    return Result(command, process.returncode, stdout, seconds, timed_out, log)


def stop_group(process: subprocess.Popen) -> None:
    """SIGTERM the run's process group, SIGKILL it 10 s later if anything is left."""
    for sig, grace in ((signal.SIGTERM, 10), (signal.SIGKILL, 5)):
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
    parser.add_argument("--out", default="gpu-check", help="where data, logs and the table go (default: %(default)s)")
    parser.add_argument("--budget-s", type=float, default=470,
                        help="seconds for the whole check, from gpu_check.sh's start (default: %(default)s)")
    parser.add_argument("--parts", help="comma-separated patterns of the parts to run (default: all, in order)")
    parser.add_argument("--gpus", type=int, help="GPUs to plan for (default: the ones torch sees)")
    parser.add_argument("--cpu", action="store_true", help="the same parts on a CPU, at tiny sizes (the tests)")
    parser.add_argument("--dry-run", action="store_true", help="print the plan and its commands, run nothing")
    parser.add_argument("--open-clip-path", help="folder with webdataset 0.2.86, put first on open_clip_train's path")
    args = parser.parse_args(argv)
    if args.budget_s <= 0:
        parser.error(f"--budget-s must be positive, got {args.budget_s:g}")
    if args.gpus is not None and args.gpus < 0:
        parser.error(f"--gpus must be >= 0, got {args.gpus}")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.gpus is None:
        import torch

        args.gpus = torch.cuda.device_count()
    if not args.cpu and not args.dry_run and args.gpus == 0:
        print("gpu_check: no CUDA device here: run it on a GPU machine, or with --cpu for the tiny CPU version "
              "(--dry-run shows the plan)", file=sys.stderr)
        return 2
    check = Check(args)
    parts = check.plan()
    if not parts:
        print(f"gpu_check: --parts {args.parts!r} matches none of the parts (--dry-run lists them)", file=sys.stderr)
        return 2
    if args.dry_run:
        for part in parts:
            status = f"not run: {part.skip}" if part.skip else f"about {part.estimate_s} s"
            print(f"{part.name}  ({status})")
            for command in part.commands:
                print("    " + shlex.join(command))
        return 0
    check.prepare_data()
    rows = check.rows
    for part in parts:
        print(f"[{time.time() - check.started:5.0f} s] {part.name}", file=sys.stderr, flush=True)
        rows.extend(check.run(part))
    table = "\n".join([check.header(), format_rows(rows),
                       "MFU: nas.cost's analytic FLOPs (3 x forward) over the device's dense bf16 peak; the anchors' "
                       f"MFU use FlopCounterMode's larger count. Took {time.time() - check.started:.0f} s in all."])
    print(table)
    check.out.mkdir(parents=True, exist_ok=True)
    (check.out / "gpu_check.txt").write_text(table + "\n")
    (check.out / "gpu_check.json").write_text(json.dumps([dataclasses.asdict(r) for r in rows], indent=1) + "\n")
    return 1 if any(row.failed for row in rows) else 0


if __name__ == "__main__":
    sys.exit(main())
