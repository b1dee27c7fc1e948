"""The search driver killed with SIGKILL mid-search (a real `vitamin-nas search` process and its own Ray),
then `--resume`: no finished trial is lost or trained again, the database has no duplicate rows, and the
Optuna study agrees with it. `vitamin-nas status` reads the search from another process while it runs."""

from __future__ import annotations

import signal
import subprocess

import optuna
import pandas as pd
import pytest
from optuna.trial import TrialState
from search_helpers import alive, children, synthetic_data, terminate, wait_for, write_study

from nas.results import ResultStore
from nas.status import FINAL as FINAL_STATUSES

OPTUNA_STATE = {"completed": TrialState.COMPLETE, "stopped_early": TrialState.PRUNED, "failed": TrialState.FAIL}


def finished(store: ResultStore) -> dict[str, tuple]:
    """Each finished trial's row and its rung rows, as they stand."""
    rows = {t["trial_id"]: t for t in store.trials(status=FINAL_STATUSES)}
    rungs = {t: [(r["rung"], r["session"], r["reported_at"], r["metrics"]) for r in store.rungs(t)] for t in rows}
    return {t: (rows[t]["status"], rows[t]["ended_at"], rows[t]["attempts"], rungs[t]) for t in rows}


@pytest.mark.slow
def test_a_killed_driver_resumes_without_losing_or_retraining(tmp_path, tmp_path_factory, cli):
    data = synthetic_data(tmp_path_factory.getbasetemp())
    study = write_study(tmp_path, data, algorithm="tpe", sampler={"n_startup_trials": 3}, trials=8,
                        budget={"min_samples": 64, "max_samples": 1024, "reduction_factor": 2})
    out = tmp_path / "out"
    with open(tmp_path / "first.log", "w") as log:
        driver = subprocess.Popen([*cli, "search", str(study), "--out", str(out), "--progress-every", "5"],
                                  stdout=log, stderr=subprocess.STDOUT)
    ray_processes: list[int] = []
    try:
        store = wait_for(lambda: (out / "study.db").exists() and ResultStore.open(out, readonly=True), 180,
                         what="the results database")
        wait_for(lambda: len(store.trials(status=FINAL_STATUSES)) >= 2 and any(
            t["rung"] is not None for t in store.trials(status="running")), 300, what="two finished trials")
        status = subprocess.run([*cli, "status", str(out)], capture_output=True, text=True, timeout=60)
        assert status.returncode == 0 and "running" in status.stdout and "trials finished" in status.stdout
        ray_processes = children(driver.pid)  # the local Ray the driver started (GCS, raylet, workers)
        before = finished(store)
        interrupted = {t["trial_id"]: t for t in store.trials(status="running")}
        driver.send_signal(signal.SIGKILL)
        driver.wait(timeout=30)
    finally:
        if driver.poll() is None:
            driver.kill()
    try:  # Ray's processes notice that their driver is gone; its agents can linger a minute: end what is left
        wait_for(lambda: not any(alive(p) for p in ray_processes), 5, what="the killed driver's Ray to exit")
    except TimeoutError:
        terminate(ray_processes)

    resumed = subprocess.run([*cli, "search", str(study), "--out", str(out), "--resume"], capture_output=True,
                             text=True, timeout=900)
    assert resumed.returncode == 0, resumed.stdout[-3000:] + resumed.stderr[-3000:]
    assert "leaderboard" in resumed.stdout and "Pareto front at 1,024 samples seen" in resumed.stdout

    store = ResultStore.open(out, readonly=True)
    after = finished(store)
    for trial_id, record in before.items():  # nothing finished was lost, reported again or retrained
        assert after[trial_id] == record
    trials = store.trials()
    assert all(t["status"] in FINAL_STATUSES for t in trials)
    for trial_id, row in interrupted.items():  # a trial running at the kill went on from its checkpoint
        now = store.trial(trial_id)
        if now["status"] == "failed":  # unless Ray Tune had not recorded it yet: then it is closed, not hidden
            assert now["error"].startswith("interrupted")
        else:
            assert now["attempts"] == 2 and now["resumed_from"] >= store.rungs(trial_id)[row["rung"]]["budget"]
            assert len({r["session"] for r in store.rungs(trial_id)}) == 2
    measured = [t for t in trials if not (t["error"] or "").startswith("interrupted")]
    assert len(measured) == 8  # the study's number of trials, each once
    pairs = [(r["trial_id"], r["rung"]) for r in store.rungs()]
    assert len(pairs) == len(set(pairs))

    told = {t.number: t for t in optuna.load_study(study_name="test", storage=store.url).trials}
    assert not [t for t in told.values() if t.state == TrialState.RUNNING]
    for trial in trials:
        assert told[trial["number"]].state == OPTUNA_STATE[trial["status"]]

    exported = subprocess.run([*cli, "results", str(out), "--csv", str(tmp_path / "r.csv")], capture_output=True,
                              text=True, timeout=120)
    assert exported.returncode == 0 and "leaderboard" in exported.stdout
    assert len(pd.read_csv(tmp_path / "r.csv")) == len(pairs)
