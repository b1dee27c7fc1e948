"""Shared pieces of the search tests: a tiny space, synthetic data, study files, and finding the processes a
test started (by the unique paths on their command lines, never by a program's name)."""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

import yaml

from nas.arch import Arch, Stage, Transformer
from nas.data.synth import SynthConfig, synthesize
from nas.search import reaper

#: Eight towers at 32 px (4 x 4 tokens): one conv stage, a 32- or 64-wide Transformer of depth 1 or 2.
SPACE = {
    "name": "test", "image_size": 32, "embed_dim": 32,
    "stages": [{"block": ["mbconv", "convnext"], "depth": 1, "width": 16,
                "kernel": {"by": "block", "values": {"mbconv": 3, "convnext": 3}}}],
    "transformer": {"width": [32, 64], "depth": [1, 2], "head_dim": 16, "mlp": ["geglu", "mlp"]},
    "text": {"width": 32, "layers": 1, "heads": 2, "context_length": 16},
}
SYNTH = {"samples": 1200, "size": 32, "samples_per_shard": 300, "zeroshot_per_class": 2, "retrieval_samples": 40}


def tower(width: int = 32, depth: int = 1, image_size: int = 32, block: str = "mbconv") -> Arch:
    """A tower of SPACE's shape (any resolution: the stream resizes the 32 px images)."""
    return Arch(stem_width=16, image_size=image_size, embed_dim=32, stages=(Stage(block, 1, 16, kernel=3),),
                transformer=Transformer(width=width, depth=depth, heads=width // 16, mlp="geglu"))


def synthetic_data(base: Path) -> Path:
    """The tests' dataset, written once per test session (a complete one is reused)."""
    root = base / "search-data"
    if not (root / "synth.json").exists() or '"complete": true' not in (root / "synth.json").read_text():
        synthesize(root, SynthConfig(**SYNTH))
    return root


def write_study(directory: Path, data_dir: Path, **fields: Any) -> Path:
    """A study over SPACE on the tests' data: 1 CPU per trial, rungs at 64/128/256 samples; `fields` override."""
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "space.yaml").write_text(yaml.safe_dump(SPACE))
    study = {"name": "test", "space": "space.yaml",
             "data": {"urls": str(data_dir / "shards"), "zeroshot": str(data_dir / "eval" / "zeroshot"),
                      "retrieval": str(data_dir / "eval" / "retrieval")},
             "train": {"batch_size": 32, "warmup": 1, "lr": 0.002, "checkpoint_every": 32},
             "objectives": {"loss": "min"}, "algorithm": "random", "trials": 4, "seed": 0,
             "budget": {"min_samples": 64, "max_samples": 256, "reduction_factor": 2},
             "resources": {"cpus": 1}, "failures": {"max_retries": 2, "oom_retries": 1}}
    study.update(fields)
    path = directory / "study.yaml"
    path.write_text(yaml.safe_dump(study, sort_keys=False))
    return path


def processes_mentioning(text: str) -> list[int]:
    """Pids of this machine's processes whose command line contains `text` (a path unique to one test)."""
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if text in cmdline:
            pids.append(int(entry.name))
    return pids


def children(pid: int) -> list[int]:
    """Every descendant of `pid`, recursively (from /proc)."""
    return list(reaper.descendants(pid))


def terminate(pids: list[int]) -> None:
    """SIGTERM the given processes, then SIGKILL those still alive after a grace period (as the driver's reaper
    ends the Ray processes of a killed driver)."""
    reaper.end({pid: started for pid in pids if (started := reaper.start_time(pid))})


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def wait_for(condition, timeout: float, interval: float = 0.2, what: str = "condition") -> Any:
    deadline = time.time() + timeout
    while time.time() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(interval)
    raise TimeoutError(f"{what} not reached in {timeout} s")


def listening_sockets(pids: list[int]) -> list[tuple[str, int, int, str]]:
    """(address, port, pid, process name) of every TCP socket in LISTEN state that one of `pids` holds, from
    /proc/net/tcp{,6} (what `ss -ltnp` reads): which interfaces a process accepts connections on."""
    inodes = {}
    for pid in pids:
        try:
            for fd in Path(f"/proc/{pid}/fd").iterdir():
                target = os.readlink(fd)
                if target.startswith("socket:["):
                    inodes[target[8:-1]] = pid
        except OSError:
            continue
    found = []
    for table, width in (("/proc/net/tcp", 4), ("/proc/net/tcp6", 16)):
        for line in Path(table).read_text().splitlines()[1:]:
            fields = line.split()
            local, state, inode = fields[1], fields[3], fields[9]
            if state != "0A" or inode not in inodes:  # 0A: LISTEN
                continue
            address, port = local.split(":")
            pid = inodes[inode]
            try:
                name = Path(f"/proc/{pid}/comm").read_text().strip()
            except OSError:
                name = "?"
            found.append((_address(bytes.fromhex(address), width), int(port, 16), pid, name))
    return found


def _address(raw: bytes, width: int) -> str:
    """/proc/net/tcp's address: 32-bit words in host (little-endian) order."""
    import ipaddress

    words = b"".join(raw[i:i + 4][::-1] for i in range(0, width, 4))
    address = ipaddress.ip_address(words)
    mapped = getattr(address, "ipv4_mapped", None)
    return str(mapped or address)


def progress_of(directory: Path) -> int | None:
    """Samples seen in the checkpoint in `directory` (None without one)."""
    from nas.train import run_progress

    progress = run_progress(directory)
    return None if progress is None else progress[0].samples_seen


def last_logged_samples(directory: Path) -> int | None:
    """Samples seen at the last step a training run logged (its metrics.jsonl; every step with log_every 1)."""
    import json

    path = directory / "metrics.jsonl"
    if not path.exists():
        return None
    seen = []
    for line in path.read_text().splitlines():
        try:
            seen.append(json.loads(line)["samples_seen"])
        except (ValueError, KeyError):  # a line being written as we read
            continue
    return max(seen, default=None)
