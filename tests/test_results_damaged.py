"""A damaged study.db, made for real (cut short, zero bytes, garbage, garbled pages, a dropped table), is refused
before anything opens it for writing: the library raises a ConfigError saying how to recover, every command that
reads it exits 2 with one line (run in process; tests/test_cli_smoke.py runs each command as a real
subprocess), and the file keeps every byte."""

from __future__ import annotations

import hashlib
import random
import shutil
import sqlite3
from collections.abc import Callable
from pathlib import Path

import pytest
import yaml
from study_helpers import LAWS

from nas.errors import ConfigError
from nas.results import FILENAME, RECOVERY, ResultStore

pytestmark = pytest.mark.timeout(300)


def cut_in_half(path: Path) -> None:
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


def zero_bytes(path: Path) -> None:
    path.write_bytes(b"")


def garbage(path: Path) -> None:
    path.write_bytes(random.Random(0).randbytes(path.stat().st_size))


def not_sqlite(path: Path) -> None:
    path.write_text("trial,zeroshot_top1\nt00,0.41\n" * 100)


def garbled_pages(path: Path) -> None:
    """The header intact and the size right, the end of every page after the first overwritten (where SQLite
    keeps its cells)."""
    data = bytearray(path.read_bytes())
    rng = random.Random(1)
    page = int.from_bytes(data[16:18], "big")
    for start in range(page, len(data), page):
        data[start + page - 600 : start + page] = rng.randbytes(600)
    path.write_bytes(bytes(data))


def drop_table(name: str) -> Callable[[Path], None]:
    def drop(path: Path) -> None:
        connection = sqlite3.connect(path)
        connection.execute(f"DROP TABLE {name}")
        connection.commit()
        connection.close()  # the last connection: SQLite checkpoints the WAL into the file and removes it

    drop.__name__ = f"drop_{name}"
    return drop


DAMAGE = {  # how, and what the message says is wrong
    "cut_in_half": (cut_in_half, r"cut short \([\d,]+ of [\d,]+ bytes\)"),
    "zero_bytes": (zero_bytes, r"the file is empty \(0 bytes\)"),
    "garbage": (garbage, r"not an SQLite database"),
    "not_sqlite": (not_sqlite, r"not an SQLite database"),
    "garbled_pages": (garbled_pages, r"SQLite's integrity check fails|SQLite cannot read it"),
    "drop_nas_rungs": (drop_table("nas_rungs"), r"table\(s\) nas_rungs missing"),
    "drop_trials": (drop_table("trials"), r"table\(s\) trials missing"),  # Optuna's: Optuna would recreate it
}


def damaged(design_results: Path, tmp_path: Path, kind: str) -> tuple[Path, str]:
    """A copy of a real results database (the design study's), damaged; and the file's digest after the damage."""
    directory = tmp_path / kind
    directory.mkdir()
    shutil.copy(design_results / FILENAME, directory / FILENAME)
    DAMAGE[kind][0](directory / FILENAME)
    assert sorted(p.name for p in directory.iterdir()) == [FILENAME]  # no WAL beside it: the file is all there is
    return directory, digest(directory / FILENAME)


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_the_undamaged_copy_opens(design_results, tmp_path):
    directory = tmp_path / "whole"
    directory.mkdir()
    shutil.copy(design_results / FILENAME, directory / FILENAME)
    trials = len(LAWS) + 1  # every candidate, and the trial that ran out of memory
    assert len(ResultStore.open(directory, readonly=True).trials()) == trials
    assert len(ResultStore.open(directory).trials()) == trials


@pytest.mark.parametrize("kind", sorted(DAMAGE))
def test_a_damaged_database_is_refused_and_never_written(design_results, tmp_path, kind):
    directory, before = damaged(design_results, tmp_path, kind)
    for readonly in (True, False):
        with pytest.raises(ConfigError, match=f"damaged results database: {DAMAGE[kind][1]}") as info:
            ResultStore.open(directory, readonly=readonly)
        assert info.value.source == str((directory / FILENAME).resolve())
        assert str(info.value).endswith(f"It was left as it is: {RECOVERY}") and "\n" not in str(info.value)
    assert digest(directory / FILENAME) == before
    tables = set()
    if kind.startswith("drop_"):  # nothing was recreated
        with sqlite3.connect(f"file:{directory / FILENAME}?mode=ro", uri=True) as connection:
            tables = {r[0] for r in connection.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        assert kind.removeprefix("drop_") not in tables


def test_every_command_that_reads_a_damaged_database_exits_2(design_results, tmp_path, run_cli):
    directory, before = damaged(design_results, tmp_path, "cut_in_half")
    commands = [["status", str(directory)], ["results", str(directory)], ["select", str(directory)],
                ["plot", str(directory)], ["report", str(directory)], ["fit", str(directory), "--law", "power"]]
    path, size = (directory / FILENAME).resolve(), (directory / FILENAME).stat().st_size
    for command in commands:
        run = run_cli(*command)
        assert run.returncode == 2, (command, run.stderr)
        assert run.stderr.splitlines() == [f"vitamin-nas {command[0]}: error: {path}: damaged results database: cut "
                                           f"short ({size:,} of {2 * size:,} bytes). It was left as it is: {RECOVERY}"]
    assert digest(directory / FILENAME) == before
    assert sorted(p.name for p in directory.iterdir()) == [FILENAME]  # no figures, no report, no WAL


def study_file(tmp_path: Path) -> Path:
    path = tmp_path / "study.yaml"
    path.write_text(yaml.safe_dump({
        "name": "t", "space": str(Path(__file__).resolve().parents[1] / "search_spaces" / "tiny.yaml"),
        "data": {"synthetic": {"samples": 1000, "size": 64}, "dir": "data"},
        "objectives": {"zeroshot_top1": "max"}, "trials": 4,
        "budget": {"min_samples": 100, "max_samples": 900}, "train": {"batch_size": 50, "warmup": 2}}))
    return path


@pytest.mark.parametrize("kind", ["zero_bytes", "cut_in_half", "garbled_pages", "drop_nas_rungs"])
def test_resuming_a_search_on_a_damaged_database_fails_before_ray_starts(design_results, tmp_path, kind, without_ray):
    import ray

    from nas.search import search
    from nas.study import load_study

    directory, before = damaged(design_results, tmp_path, kind)
    with pytest.raises(ConfigError, match=f"damaged results database: {DAMAGE[kind][1]}"):
        search(load_study(study_file(tmp_path)), directory, resume=True)
    assert not ray.is_initialized()
    assert digest(directory / FILENAME) == before
    assert sorted(p.name for p in directory.iterdir()) == [FILENAME]  # no Ray experiment, no WAL
    assert not (tmp_path / "data").exists()  # the synthetic data was not written either


def test_search_resume_on_a_zero_byte_database_exits_2_and_leaves_it_empty(design_results, tmp_path, run_cli):
    directory, _ = damaged(design_results, tmp_path, "zero_bytes")
    run = run_cli("search", study_file(tmp_path), "--out", directory, "--resume")
    assert run.returncode == 2
    assert run.stderr.splitlines() == [f"vitamin-nas search: error: {(directory / FILENAME).resolve()}: damaged "
                                       f"results database: the file is empty (0 bytes). It was left as it is: "
                                       f"{RECOVERY}"]
    assert (directory / FILENAME).stat().st_size == 0
    assert sorted(p.name for p in directory.iterdir()) == [FILENAME]
