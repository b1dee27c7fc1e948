"""`vitamin-nas search` on what cannot work (in process, `run_cli`; test_search_interrupt.py and
test_search_resume.py run it as a real subprocess): an address where no cluster answers fails at once (one
connection attempt of at most 10 s, never Ray's minutes of retries), a dashboard without its packages names the
extra to install, a search whose every trial fails exits 1 with the error in one line, and a second driver
started on a live search is refused without touching the live one's database."""

from __future__ import annotations

import re
import socket
import subprocess
import time

import pytest
from search_helpers import tower, write_study

from nas import heartbeat
from nas.results import ResultStore
from nas.run_dir import RunDir
from nas.study import load_study


def test_an_address_where_no_cluster_answers_fails_within_seconds(tmp_path, search_data, run_cli):
    study = write_study(tmp_path, search_data)
    with socket.socket() as probe:  # a port nothing listens on
        probe.bind(("127.0.0.1", 0))
        address = f"127.0.0.1:{probe.getsockname()[1]}"
    begin = time.time()
    run = run_cli("search", study, "--out", tmp_path / "out", "--address", address)
    print(f"unreachable address: exit {run.returncode} after {time.time() - begin:.1f} s")
    assert run.returncode == 2 and run.stderr.strip().splitlines() == [
        f"vitamin-nas search: error: --address: no Ray cluster answers at {address} (Connection refused); start its "
        "head with `ray start --head` or give the address it printed"]
    assert not (tmp_path / "out").exists() and "watch it" not in run.stdout  # no hint before the error


def test_a_dashboard_without_its_packages_names_the_extra(tmp_path, search_data, run_cli):
    try:
        import ray.dashboard.optional_deps  # noqa: F401
    except ImportError:
        pass
    else:
        pytest.skip("ray[default] is installed: the dashboard starts")
    study = write_study(tmp_path, search_data)
    run = run_cli("search", study, "--out", tmp_path / "out", "--dashboard")
    (line,) = run.stderr.strip().splitlines()
    assert run.returncode == 2 and line.endswith("pip install 'vitamin-nas[dashboard]'")
    assert line.startswith("vitamin-nas search: error: --dashboard: Ray's dashboard needs packages")


@pytest.mark.slow
def test_a_search_whose_every_trial_fails_or_stalls_exits_1_with_one_line_per_error(search_data, tmp_path, cli):
    """Real `pipe:` sources: one that fails (its file is missing: skipped as unreadable) and one that sends nothing
    (`data.timeout` 2 s). Both trials stall, and are recorded `failed` (no retries: `failures.max_retries` 0).
    A real `vitamin-nas search` exits 1 with one line per kind of error, naming a trial's error log (under the
    run directory, the whole traceback); its output holds no traceback (before: 250 lines of them, and Ray's
    "Error file:" paths into its deleted temporary directory)."""
    zeroshot = str(search_data / "eval" / "zeroshot")
    urls = [f"pipe:cat {tmp_path / 'gone'}/0.tar", "pipe:sleep 60"]
    study = write_study(tmp_path, search_data, algorithm="fixed", archs=[tower(32).to_dict(), tower(64).to_dict()],
                        data={"urls": urls, "zeroshot": zeroshot, "timeout": 2},
                        failures={"max_retries": 0, "oom_retries": 0}, resources={"cpus": 1, "concurrency": 2})
    run = subprocess.run([*cli, "search", str(study), "--out", str(tmp_path / "out")], capture_output=True,
                         text=True, timeout=600)
    lines = (run.stdout + run.stderr).splitlines()
    assert run.returncode == 1, run.stdout[-2000:] + run.stderr[-2000:]
    store = ResultStore.open(tmp_path / "out", readonly=True)
    trials = store.trials()
    assert {t["status"] for t in trials} == {"failed"} and {t["attempts"] for t in trials} == {1}
    stalled = "nas.data.stall.DataStalled: data stalled: no data from pipe:sleep 60 for 2 s (data.timeout)"
    summary, kind = run.stderr.strip().splitlines()[-2:]
    assert summary == "vitamin-nas search: no trial produced a result (2 trial(s), 2 failed)"
    logs = [RunDir(tmp_path / "out").error_log(t["trial_id"]) for t in trials]
    assert kind in [f"  2x {stalled} (log: {log})" for log in logs]
    log = next(log for log in logs if str(log) in kind)
    assert log.read_text().startswith("---- attempt 1, ") and ", in read_shard\n" in log.read_text()  # its frames
    assert "Traceback" not in run.stdout + run.stderr and "Error file" not in run.stdout + run.stderr
    assert ", in read_shard" not in run.stdout + run.stderr
    print(f"{len(lines)} lines of output; the last: {summary} / {kind}")
    assert len(lines) < 60


def test_a_refused_second_driver_leaves_the_live_drivers_database_alone(tmp_path, search_data, cli):
    """The live driver's side as `nas.search.search` holds it (its store, the heartbeat's connections, rows still
    in the WAL), and a real second `vitamin-nas search --resume` (what the first refusal's message, a resubmitted
    SLURM job or a second array task runs). Before the fix, the refused driver's exit checkpointed and deleted
    the WAL: the live driver's next write failed with "disk I/O error" and the rows it held were gone
    (test_search_interrupt.py runs the same against a real search)."""
    study = write_study(tmp_path, search_data)
    out = tmp_path / "out"
    store = ResultStore.create(out, load_study(study))
    beat = heartbeat.Heartbeat(store.path, "the live driver").start()
    try:
        for i in range(3):
            store.set_meta(f"probe{i}", i)
        refused = subprocess.run([*cli, "search", str(study), "--out", str(out), "--resume"], capture_output=True,
                                 text=True, timeout=300)
        assert refused.returncode == 2 and refused.stderr.strip().splitlines() == [
            f"vitamin-nas search: error: {out}: is being searched by a running driver (pid {beat.record.pid} on "
            f"{beat.record.host}); watch it with `vitamin-nas status {out}`, or stop that driver (Ctrl-C or "
            "SIGTERM) before starting another"]
        assert (out / "study.db-wal").exists()
        for i in range(3, 6):
            store.set_meta(f"probe{i}", i)  # "disk I/O error" before the fix
    finally:
        beat.end(heartbeat.FINISHED)
        store.close()
    reader = ResultStore.open(out, readonly=True)
    assert [reader.meta(f"probe{i}") for i in range(6)] == list(range(6))
    assert reader.meta("driver")["state"] == heartbeat.FINISHED


@pytest.mark.slow
def test_a_full_disk_ends_the_search_with_one_line_and_its_trials_resumable(local_ray, search_data, small_filesystem,
                                                                           run_cli):
    """A real 2 MB filesystem as --out: the results database and Ray Tune's state fit, a trial's first checkpoint
    does not. Before: 360 lines of tracebacks (torch's "unexpected pos" among them) and trials left `running`.
    Now the search stops at the first full write, exits 1 with one line naming the path and the free space, and
    its trials are `interrupted`, which --resume continues once space is freed (as the driver's record says)."""
    study = write_study(small_filesystem.parent, search_data, algorithm="fixed", archs=[tower(32).to_dict()])
    run = run_cli("search", study, "--out", small_filesystem)
    assert run.returncode == 1, run.stdout[-2000:] + run.stderr[-2000:]
    line = run.stderr.strip().splitlines()[-1]
    assert re.fullmatch(rf"vitamin-nas search: error: disk full: cannot write {small_filesystem}/trials/\w+/"
                        r"train-accum1/checkpoint\.pt \(\d+\.\d MB free on its filesystem\); free space, then "
                        r"continue with --resume", line), line
    assert "unexpected pos" not in run.stdout + run.stderr
    store = ResultStore.open(small_filesystem, readonly=True)
    assert {t["status"] for t in store.trials()} == {"interrupted"}
    driver = store.meta("driver")
    assert driver["state"] == "failed" and driver["reason"].startswith("disk full: cannot write")
    assert not list(small_filesystem.glob("trials/*/*/.checkpoint.pt.tmp"))  # no half-written checkpoint left
    print(line)
