"""The search driver killed with SIGKILL mid-search (a real `vitamin-nas search` process and its own Ray), its
run directory copied elsewhere, and the copy resumed with `--resume`: no finished trial is lost or trained
again, the database has no duplicate rows, the Optuna study agrees with it, and each trial cut off resumes from
the newest checkpoint it wrote (at most `train.checkpoint_every` samples before the kill). The killed driver's
Ray processes end with it; `vitamin-nas status` reads the search while it runs and reports it dead afterwards."""

from __future__ import annotations

import hashlib
import shutil
import signal
import subprocess
import time
from pathlib import Path

import optuna
import pandas as pd
import pytest
from optuna.trial import TrialState
from search_helpers import alive, children, last_logged_samples, progress_of, synthetic_data, wait_for, write_study

from nas.results import ResultStore
from nas.run_dir import RunDir
from nas.status import FINAL as FINAL_STATUSES

OPTUNA_STATE = {"completed": TrialState.COMPLETE, "stopped_early": TrialState.PRUNED, "failed": TrialState.FAIL}
CHECKPOINT_EVERY = 96  # three steps of 32


def finished(store: ResultStore) -> dict[str, tuple]:
    """Each finished trial's row and its rung rows, as they stand."""
    rows = {t["trial_id"]: t for t in store.trials(status=FINAL_STATUSES)}
    rungs = {t: [(r["rung"], r["session"], r["reported_at"], r["metrics"], r["checkpoint"]) for r in store.rungs(t)]
             for t in rows}
    return {t: (rows[t]["status"], rows[t]["ended_at"], rows[t]["attempts"], rungs[t]) for t in rows}


@pytest.mark.slow
def test_a_killed_driver_resumes_a_copied_run_from_the_newest_checkpoints(tmp_path, tmp_path_factory, cli, run_cli):
    data = synthetic_data(tmp_path_factory.getbasetemp())
    study = write_study(tmp_path, data, algorithm="tpe", sampler={"n_startup_trials": 3}, trials=8,
                        budget={"min_samples": 64, "max_samples": 512, "reduction_factor": 2},
                        train={"batch_size": 32, "warmup": 1, "lr": 0.002, "checkpoint_every": CHECKPOINT_EVERY,
                               "log_every": 1})
    out = tmp_path / "out"
    run_dir = RunDir(out)
    with open(tmp_path / "first.log", "w") as log:
        driver = subprocess.Popen([*cli, "search", str(study), "--out", str(out), "--progress-every", "5"],
                                  stdout=log, stderr=subprocess.STDOUT)
    ray_processes: list[int] = []
    try:
        store = wait_for(lambda: (out / "study.db").exists() and ResultStore.open(out, readonly=True), 180,
                         what="the results database")

        def between_rungs() -> list[dict]:  # running trials whose newest checkpoint is past their last rung
            running = [t for t in store.trials(status="running") if t["rung"] is not None]
            return [t for t in running if (progress_of(run_dir.training(t["trial_id"], 1)) or 0) > t["budget"]]

        wait_for(lambda: store.trials(status="running"), 400, what="a running trial")
        status = subprocess.run([*cli, "status", str(out)], capture_output=True, text=True, timeout=180)
        assert status.returncode == 0 and "running" in status.stdout and "driver running" in status.stdout
        assert "run directory" in status.stdout and "MB on disk" in status.stdout
        # the kill follows the sight of a trial between rungs at once (a status call in between, seconds on a
        # loaded machine, let that trial finish first)
        wait_for(lambda: len(store.trials(status=FINAL_STATUSES)) >= 2 and between_rungs(), 400,
                 what="two finished trials and one between rungs")
        ray_processes = children(driver.pid)  # the local Ray the driver started (GCS, raylet, agents, workers)
        driver.send_signal(signal.SIGKILL)
        driver.wait(timeout=30)
    finally:
        if driver.poll() is None:
            driver.kill()
    before = finished(store)  # the database as the driver left it (only the driver writes it)
    interrupted = {t["trial_id"]: t for t in store.trials(status="running")}
    measured_before = {t: {r["rung"]: r for r in store.rungs(t)} for t in interrupted}
    assert interrupted
    ray_temp = Path(store.meta("driver")["ray_temp"])
    # Ray's processes end with their driver (the agents too, which alone would linger a minute or more)
    wait_for(lambda: not any(alive(p) for p in ray_processes), 20, what="the killed driver's Ray processes to end")
    killed_at = {t: (last_logged_samples(run_dir.training(t, 1)), progress_of(run_dir.training(t, 1)))
                 for t in interrupted}  # where each worker stood when it died, and its newest checkpoint

    status = subprocess.run([*cli, "status", str(out)], capture_output=True, text=True, timeout=180)
    assert status.returncode == 0 and "driver gone" in status.stdout and "--resume" in status.stdout
    table = status.stdout.split("eta\n", 1)[1]
    assert " running " not in table and "interrupted" in table  # never "running" for a dead driver

    copy = tmp_path / "elsewhere" / "copy"  # the run moves: every path it stores is relative to it
    shutil.copytree(out, copy, symlinks=True)
    original = hashlib.sha256((out / "study.db").read_bytes()).hexdigest()
    begin = time.time()
    resumed = subprocess.run([*cli, "search", str(study), "--out", str(copy), "--resume"], capture_output=True,
                             text=True, timeout=900)
    assert resumed.returncode == 0, resumed.stdout[-3000:] + resumed.stderr[-3000:]
    store = ResultStore.open(copy, readonly=True)
    furthest = max(r["budget"] for r in store.rungs())
    # the front at the furthest budget reached (ASHA need not let any trial of a resumed search reach the last)
    assert "leaderboard" in resumed.stdout and f"Pareto front at {furthest:,} samples seen" in resumed.stdout
    assert hashlib.sha256((out / "study.db").read_bytes()).hexdigest() == original  # the original is untouched
    assert not ray_temp.exists()  # the killed driver's Ray directory, removed by the next driver

    assert store.meta("driver")["state"] == "finished"
    after = finished(store)
    for trial_id, record in before.items():  # nothing finished was lost, reported again or retrained
        assert after[trial_id] == record
    trials = store.trials()
    assert all(t["status"] in FINAL_STATUSES for t in trials)
    for trial_id in interrupted:  # a trial running at the kill went on from its newest checkpoint, under its own
        now = store.trial(trial_id)  # number, even when Ray Tune had not recorded it yet
        logged, checkpointed = killed_at[trial_id]
        assert now["attempts"] == 2 and now["resumed_from"] == checkpointed, (now, killed_at[trial_id])
        if checkpointed is None:  # killed before its first checkpoint: it starts again, nothing was lost
            continue
        assert 0 <= logged - now["resumed_from"] <= CHECKPOINT_EVERY
        print(f"driver kill: trial {trial_id} at {logged} samples, resumed from {now['resumed_from']} "
              f"(rung before the kill: {interrupted[trial_id]['budget']}); resume took {time.time() - begin:.0f} s")
        earlier = measured_before[trial_id]  # rungs recorded before the kill stand; the rest are the new session's
        for row in store.rungs(trial_id):
            if row["rung"] in earlier:
                assert row == earlier[row["rung"]]
            else:
                assert row["session"] not in {r["session"] for r in earlier.values()}
    assert len(trials) == 8 and len({t["number"] for t in trials}) == 8  # the study's number of trials, each once
    pairs = [(r["trial_id"], r["rung"]) for r in store.rungs()]
    assert len(pairs) == len(set(pairs))
    for row in store.rungs():  # every rung's checkpoint, found from the copy
        assert not row["checkpoint"].startswith("/")
        assert (store.checkpoint_path(row["checkpoint"]) / "checkpoint.pt").is_file()
        assert str(store.checkpoint_path(row["checkpoint"])).startswith(str(copy))

    told = {t.number: t for t in optuna.load_study(study_name="test", storage=store.url).trials}
    assert not [t for t in told.values() if t.state == TrialState.RUNNING]
    for trial in trials:
        assert told[trial["number"]].state == OPTUNA_STATE[trial["status"]]

    exported = run_cli("results", copy, "--csv", tmp_path / "r.csv")  # after every driver session: in process
    assert exported.returncode == 0 and "leaderboard" in exported.stdout
    assert len(pd.read_csv(tmp_path / "r.csv")) == len(pairs)
