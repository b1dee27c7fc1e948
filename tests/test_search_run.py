"""What a search keeps of its run, without Ray: the run directory (relative paths, one copy of each checkpoint,
its size), the driver's heartbeat record (live, stopped, killed), and the reaper that ends a killed driver's
processes (real processes, a real SIGKILL)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
from search_helpers import alive, synthetic_data, wait_for, write_study

from nas import heartbeat
from nas.progress import progress_report
from nas.results import ResultStore
from nas.run_dir import RunDir, link_or_copy
from nas.search import reaper
from nas.study import load_study


def test_a_rung_keeps_its_checkpoint_as_a_link_that_outlives_the_next_write(tmp_path):
    run = RunDir(tmp_path / "run")
    training = run.training("t1", 1)
    training.mkdir(parents=True)
    (training / "checkpoint.pt").write_bytes(b"rung 0" * 1000)
    kept = run.keep_rung("t1", 0, training / "checkpoint.pt")
    assert run.relative(kept) == "trials/t1/rungs/0" and run.resolve("trials/t1/rungs/0") == kept
    assert (kept / "checkpoint.pt").stat().st_ino == (training / "checkpoint.pt").stat().st_ino
    total = run.size()["total"]
    assert run.size()["trials"] == total and total >= 6000  # the link costs nothing
    replacement = training / ".checkpoint.pt.tmp"  # as the trainer writes its next checkpoint: aside, then renamed
    replacement.write_bytes(b"step 5" * 1000)
    os.replace(replacement, training / "checkpoint.pt")
    assert (kept / "checkpoint.pt").read_bytes() == b"rung 0" * 1000  # the rung's checkpoint stands
    assert run.size()["total"] > total
    link_or_copy(training / "checkpoint.pt", kept / "checkpoint.pt")  # replaced whole, never half written
    assert (kept / "checkpoint.pt").read_bytes() == b"step 5" * 1000
    moved = RunDir(tmp_path / "moved")
    os.rename(run.root, moved.root)
    assert (moved.resolve("trials/t1/rungs/0") / "checkpoint.pt").is_file()


def test_status_tells_a_live_driver_from_a_stopped_and_a_killed_one(tmp_path, tmp_path_factory):
    study = load_study(write_study(tmp_path, synthetic_data(tmp_path_factory.getbasetemp())))
    store = ResultStore.create(tmp_path / "out", study)
    arch = study.space.sample(0)
    store.add_trial("t0", arch, study.space.cost(arch).metrics(), number=0, schedule=256)
    store.start_attempt("t0")
    beat = heartbeat.Heartbeat(store.path, command="vitamin-nas search s.yaml --out out --resume").start()
    record = heartbeat.read(store)
    assert record.alive() and record.pid == os.getpid()
    assert "driver running" in progress_report(store) and " running " in progress_report(store)
    assert not record.alive(now=record.beat_at + heartbeat.STALE_S + 1)  # silent for too long: dead
    beat.end(heartbeat.INTERRUPTED, "SIGTERM")
    report = progress_report(store)
    assert "driver stopped by SIGTERM" in report
    assert "resume with: vitamin-nas search s.yaml --out out --resume" in report
    assert " interrupted " in report and " running " not in report.split("eta\n", 1)[1]

    killed = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    store.set_meta(heartbeat.KEY, {**store.meta(heartbeat.KEY), "state": "running", "pid": killed.pid,
                                   "beat_at": time.time()})
    assert heartbeat.read(store).alive()
    killed.kill()
    killed.wait()
    assert not heartbeat.read(store).alive()  # gone from this host at once, whatever its last beat
    assert "driver gone (pid" in progress_report(store)


@pytest.mark.subprocess
def test_the_reaper_ends_a_killed_drivers_processes(tmp_path):
    """A stand-in driver (a real process) starts the reaper and a child that ignores SIGTERM; SIGKILL the
    driver: the reaper ends the child (SIGKILL after its grace), and itself."""
    script = tmp_path / "driver.py"
    script.write_text(f"""
import os, subprocess, sys, time
sys.path.insert(0, {str(Path(reaper.__file__).parent)!r})
import reaper
ender = reaper.start(os.getpid())
child = subprocess.Popen([sys.executable, "-c",
                          "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); time.sleep(120)"])
print(ender.pid, child.pid, flush=True)
time.sleep(120)
""")
    driver = subprocess.Popen([sys.executable, str(script)], stdout=subprocess.PIPE, text=True)
    ender, child = map(int, driver.stdout.readline().split())
    time.sleep(2 * reaper.SNAPSHOT_INTERVAL_S + 0.5)  # the reaper has noted the child
    driver.send_signal(signal.SIGKILL)
    driver.wait()
    wait_for(lambda: not alive(child) and not alive(ender), reaper.GRACE_S + 30, what="the reaper to end the child")


def test_rays_temporary_directory_fits_its_socket_paths_however_long_tmpdir_is(tmp_path, monkeypatch):
    """A cluster job's per-job TMPDIR (tens of characters) would put Ray's sockets past the 107-byte AF_UNIX limit
    (a 35-line OSError from every local search): the driver's directory for Ray goes to /tmp then; a short TMPDIR
    is used as it is. test_search_interrupt.py runs a real search under a long TMPDIR."""
    from nas.search.loopback import RAY_SOCKET_TAIL, RAY_TEMP_PREFIX, SOCKET_PATH_MAX, ray_temp_dir

    short_tmpdir = Path(tempfile.mkdtemp(prefix="t", dir="/tmp"))  # /tmp/tXXXXXXXX
    made = []
    for tmpdir in (tmp_path / "a-per-job-temporary-directory-of-a-cluster-job", short_tmpdir):
        tmpdir.mkdir(exist_ok=True)
        monkeypatch.setenv("TMPDIR", str(tmpdir))
        monkeypatch.setattr("tempfile.tempdir", None)  # read TMPDIR again
        made.append(Path(ray_temp_dir()))
    try:
        long, short = made
        assert long.parent == Path("/tmp") and short.parent == short_tmpdir
        assert all(p.name.startswith(RAY_TEMP_PREFIX) and len(str(p)) + RAY_SOCKET_TAIL <= SOCKET_PATH_MAX
                   for p in made)
    finally:
        for path in made:
            path.rmdir()
        short_tmpdir.rmdir()
