"""A real `vitamin-nas search` process (under a long TMPDIR), against which a second driver is started and
refused, stopped with SIGINT, then (resumed) with SIGHUP while its output goes through a `tee` that the same stop
ended (a broken stdout), then resumed to the end:
each stop exits 130 and prints the exact command that continues it, the database records the stop (the
driver's record, the running trials `interrupted`), `vitamin-nas status` never shows the stopped search as
running, the driver's Ray processes and temporary directory are gone, and the last resume finishes every
trial from its newest checkpoint. While it runs, every socket the driver and its Ray processes listen on is on
127.0.0.1 (read from /proc/net/tcp, as `ss -ltnp` does)."""

from __future__ import annotations

import contextlib
import os
import shlex
import signal
import subprocess
from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState
from search_helpers import alive, children, listening_sockets, progress_of, synthetic_data, tower, wait_for, write_study

from nas.results import ResultStore
from nas.run_dir import RunDir

CHECKPOINT_EVERY = 96


def stop(cli: list[str], study: Path, out: Path, sig: signal.Signals, log: Path, extra: tuple[str, ...] = (),
         tee: bool = False, second: bool = False, env: dict[str, str] | None = None):
    """Start a driver, let every trial pass a checkpoint beyond its last rung, (with `second`, start a second
    driver with --resume, which is refused,) send `sig`; the driver's exit code, output, the pids of its Ray
    processes and the sockets they listened on. With `tee`, its output goes through `tee`, killed just before the
    signal (as Ctrl-C ends both): the driver's stdout and stderr are broken pipes."""
    run_dir = RunDir(out)
    with open(log, "w") as output:
        driver = subprocess.Popen([*cli, "search", str(study), "--out", str(out), *extra],
                                  stdout=subprocess.PIPE if tee else output, stderr=subprocess.STDOUT, env=env)
    reader = subprocess.Popen(["tee", str(log)], stdin=driver.stdout, stdout=subprocess.DEVNULL) if tee else None
    if tee:
        driver.stdout.close()  # tee's alone: its end breaks the pipe
    try:
        # Each look opens the database afresh and closes it (see `told_trials`).
        def trials(**where) -> list[dict]:
            with contextlib.closing(ResultStore.open(out, readonly=True)) as store:
                return store.trials(**where)

        wait_for(lambda: (out / "study.db").exists(), 180, what="the results database")
        started = {t["trial_id"]: t["attempts"] for t in trials()}

        def past_a_rung() -> bool:  # the trials this session runs train beyond a rung they reported
            running = [t for t in trials(status="running") if t["attempts"] > started.get(t["trial_id"], 0)]
            return len(trials()) == 2 and bool(running) and all(
                t["rung"] is not None and (progress_of(run_dir.training(t["trial_id"], 1)) or 0) > t["budget"]
                for t in running)

        wait_for(past_a_rung, 400, what="running trials past a rung")
        if second:  # what a resubmitted job runs; the live driver goes on writing (and stops cleanly) after it
            refused = subprocess.run([*cli, "search", str(study), "--out", str(out), "--resume"],
                                     capture_output=True, text=True, timeout=300)
            assert refused.returncode == 2, refused.stderr
            assert f"is being searched by a running driver (pid {driver.pid} " in refused.stderr
            assert f"watch it with `vitamin-nas status {out}`" in refused.stderr and "--resume" not in refused.stderr
        processes = children(driver.pid)
        sockets = listening_sockets([driver.pid, *processes])
        if reader is not None:
            reader.kill()
            reader.wait()
        driver.send_signal(sig)
        code = driver.wait(timeout=180)
    finally:
        if driver.poll() is None:
            driver.kill()
        if reader is not None and reader.poll() is None:
            reader.kill()
    return code, log.read_text(), processes, sockets


@pytest.mark.slow
def test_sigint_and_sighup_into_a_dead_tee_stop_a_search_cleanly_and_resume_continues_it(tmp_path, tmp_path_factory,
                                                                                        cli):
    data = synthetic_data(tmp_path_factory.getbasetemp())
    study = write_study(tmp_path, data, algorithm="fixed", archs=[tower(64, 2).to_dict(), tower(32, 2).to_dict()],
                        # rungs at 64, 256 and 1,024: a stop past a rung leaves the next session hundreds of
                        # samples to train, time enough to stop it too
                        budget={"min_samples": 64, "max_samples": 1024, "reduction_factor": 4,
                                "early_stopping": "none"},
                        train={"batch_size": 32, "warmup": 1, "lr": 0.002, "checkpoint_every": CHECKPOINT_EVERY},
                        resources={"cpus": 1, "concurrency": 2})
    out = tmp_path / "out"
    resume = shlex.join(["vitamin-nas", "search", str(study), "--out", str(out), "--resume"])

    # a cluster job's long per-job TMPDIR: Ray's sockets would not fit under it (107 bytes), the driver's Ray goes
    # to /tmp
    tmpdir = tmp_path / "a-per-job-temporary-directory-of-a-cluster-job"
    tmpdir.mkdir()
    code, output, processes, sockets = stop(cli, study, out, signal.SIGINT, tmp_path / "first.log", second=True,
                                            env={**os.environ, "TMPDIR": str(tmpdir)})
    assert code == 130, output[-3000:]
    assert output.rstrip().endswith(f"continue it with:\n  {resume}")
    assert "Tuner.restore" not in output and "Traceback" not in output
    assert f"vitamin-nas status {out}" in output and f"tensorboard --logdir {out / 'tensorboard'}" in output
    assert "To visualize your results with TensorBoard" not in output  # Ray's hint, at a directory now empty
    names = {"driver" if pid not in processes else name for _, _, pid, name in sockets}
    assert {"gcs_server", "raylet", "driver"} <= names, sockets  # the GCS, the raylet, the driver's gRPC server
    assert {address for address, *_ in sockets} == {"127.0.0.1"}, sockets  # ... and every other one: loopback
    print("listening while the search ran:", sorted((name, address, port) for address, port, _, name in sockets))
    assert not any(alive(p) for p in processes)  # its Ray ended with it

    store = ResultStore.open(out, readonly=True)
    driver = store.meta("driver")
    assert driver["state"] == "interrupted" and driver["reason"] == "SIGINT" and driver["command"] == resume
    assert not Path(driver["ray_temp"]).exists() and Path(driver["ray_temp"]).parent == Path("/tmp")
    trials = store.trials()
    assert {t["status"] for t in trials} == {"interrupted"} and len(trials) == 2
    assert all(t["error"] == "interrupted: the driver was stopped by SIGINT" for t in trials)
    told = {t.number: t for t in told_trials(store)}
    assert {t.state for t in told.values()} == {TrialState.RUNNING}  # told when a resume finishes them
    status = subprocess.run([*cli, "status", str(out)], capture_output=True, text=True, timeout=180)
    assert status.returncode == 0 and "driver stopped by SIGINT" in status.stdout and resume in status.stdout
    assert " running " not in status.stdout.split("eta\n", 1)[1]

    store.close()  # no reader spans a driver session (see `stop`)
    # Ctrl-C (here SIGHUP, a closed terminal) while piping into tee: tee ends too, and the driver's output with it
    code, output, processes, _ = stop(cli, study, out, signal.SIGHUP, tmp_path / "second.log", ("--resume",),
                                      tee=True)
    assert code == 130, output[-3000:]
    assert not any(alive(p) for p in processes)
    store = ResultStore.open(out, readonly=True)  # afresh, as above
    assert store.meta("driver")["reason"] == "SIGHUP" and store.meta("driver")["command"] == resume
    assert {t["status"] for t in store.trials()} == {"interrupted"} and len(store.trials()) == 2
    cut_off = {t["trial_id"]: progress_of(RunDir(out).training(t["trial_id"], 1)) for t in store.trials()}
    store.close()

    final = subprocess.run([*cli, "search", str(study), "--out", str(out), "--resume"], capture_output=True,
                           text=True, timeout=900)
    assert final.returncode == 0, final.stdout[-3000:] + final.stderr[-3000:]
    # the toolkit's own output: nothing error-shaped from Ray, Tune or Optuna when nothing failed
    noise = [line for line in (final.stdout + final.stderr).splitlines()
             if any(word in line for word in ("Error", "Traceback", "WARNING"))]
    assert not noise, noise
    assert "Configuration for experiment" not in final.stdout and "View detailed results" not in final.stdout
    store = ResultStore.open(out, readonly=True)  # afresh, as above
    assert store.meta("driver")["state"] == "finished", (store.meta("driver"), final.stdout[-3000:])
    for trial in store.trials():
        assert trial["status"] == "completed" and trial["samples_seen"] == 1024 and trial["attempts"] >= 2
        assert trial["resumed_from"] == cut_off[trial["trial_id"]] > 64  # its newest checkpoint, past the rung
        assert [r["rung"] for r in store.rungs(trial["trial_id"])] == [0, 1, 2]
    told = told_trials(store)
    assert [t.state for t in told] == [TrialState.COMPLETE] * 2


def told_trials(store: ResultStore) -> list[optuna.trial.FrozenTrial]:
    """What Optuna was told, read through a connection closed at once: a connection left open in this process
    across a driver session keeps SQLite's shared-memory index of a -shm file the session deleted, and every
    later connection of this process to the file reads through it (stale, or "malformed")."""
    storage = store.optuna_storage()
    try:
        return optuna.load_study(study_name="test", storage=storage).trials
    finally:
        storage.engine.dispose()
