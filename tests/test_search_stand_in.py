"""The stand-in trainable (`stand_in: {seconds_per_rung: S}`, `nas.search.stand_in`) goes through the real
driver like a trained trial: ASHA stops some trials early, every rung is recorded with its checkpoint, the
curves are the law's, and a driver killed mid-search resumes without losing or repeating a trial; its trial
processes never import torch."""

from __future__ import annotations

import signal
import subprocess
import sys

import pytest
from search_helpers import SPACE, alive, children, synthetic_data, wait_for, write_study

from nas.errors import ConfigError
from nas.results import ResultStore
from nas.status import FINAL as FINAL_STATUSES
from nas.study import StandIn, load_study

#: 48 towers (SPACE widened), so that 12 trials never run out of new candidates.
WIDE = {**SPACE, "transformer": {**SPACE["transformer"], "width": [32, 64, 96, 128], "depth": [1, 2, 3]}}
STAND_IN = {"resources": {"cpus": 0.01, "concurrency": 4}, "trials": 12, "space": WIDE,
            "budget": {"min_samples": 64, "max_samples": 256, "reduction_factor": 2}}


def test_the_stand_in_section_is_checked():
    assert not StandIn().active and StandIn(seconds_per_rung=0).active
    with pytest.raises(ConfigError, match="seconds_per_rung"):
        StandIn(seconds_per_rung=-1)


def test_stand_in_trials_import_no_torch():
    code = ("import sys, nas.search.trainable, nas.search.stand_in; "
            "sys.exit('torch' in sys.modules)")
    assert subprocess.run([sys.executable, "-c", code]).returncode == 0


@pytest.mark.ray
def test_a_stand_in_search_goes_through_asha(local_ray, search_data, tmp_path):
    from nas.search import search
    from nas.search.stand_in import StandInCurve, read_record

    study = load_study(write_study(tmp_path, search_data, **STAND_IN, stand_in={"seconds_per_rung": 0.05}))
    store = search(study, tmp_path / "out")
    trials = store.trials()
    assert len(trials) == 12 and all(t["status"] in FINAL_STATUSES for t in trials)
    statuses = {t["status"] for t in trials}
    assert statuses == {"completed", "stopped_early"}  # ASHA stopped some at a lower rung
    for row in store.rungs():
        trial = store.trial(row["trial_id"])
        expected = StandInCurve.of(trial["arch_id"], study.train.seed).loss(row["budget"])
        assert row["metrics"]["loss"] == pytest.approx(expected)
        record = read_record(store.checkpoint_path(row["checkpoint"]))  # each rung's own checkpoint, kept
        assert record["samples_seen"] == row["budget"]


@pytest.mark.slow
def test_a_killed_stand_in_driver_resumes(tmp_path, tmp_path_factory, cli):
    data = synthetic_data(tmp_path_factory.getbasetemp())
    study = write_study(tmp_path, data, **STAND_IN, stand_in={"seconds_per_rung": 1.0})
    out = tmp_path / "out"
    with open(tmp_path / "first.log", "w") as log:
        driver = subprocess.Popen([*cli, "search", str(study), "--out", str(out)], stdout=log,
                                  stderr=subprocess.STDOUT)
    try:
        store = wait_for(lambda: (out / "study.db").exists() and ResultStore.open(out, readonly=True), 120,
                         what="the results database")
        wait_for(lambda: store.trials(status=FINAL_STATUSES) and
                 [t for t in store.trials(status="running") if t["rung"] is not None], 120,
                 what="a finished trial and one past a rung")
        ray_processes = children(driver.pid)
        driver.send_signal(signal.SIGKILL)
        driver.wait(timeout=30)
    finally:
        if driver.poll() is None:
            driver.kill()
    before = {t["trial_id"]: (t["status"], t["ended_at"], [r["reported_at"] for r in store.rungs(t["trial_id"])])
              for t in store.trials(status=FINAL_STATUSES)}
    cut = {t["trial_id"]: t["budget"] for t in store.trials(status="running") if t["rung"] is not None}
    wait_for(lambda: not any(alive(p) for p in ray_processes), 20, what="the killed driver's Ray processes to end")

    resumed = subprocess.run([*cli, "search", str(study), "--out", str(out), "--resume"], capture_output=True,
                             text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stdout[-3000:] + resumed.stderr[-3000:]
    store = ResultStore.open(out, readonly=True)
    trials = store.trials()
    assert len(trials) == 12 and len({t["number"] for t in trials}) == 12
    assert all(t["status"] in FINAL_STATUSES for t in trials)
    for trial_id, record in before.items():  # nothing finished was lost or measured again
        now = store.trial(trial_id)
        assert (now["status"], now["ended_at"], [r["reported_at"] for r in store.rungs(trial_id)]) == record
    for trial_id, budget in cut.items():  # a trial cut off went on from its newest checkpoint
        assert store.trial(trial_id)["resumed_from"] >= budget
    pairs = [(r["trial_id"], r["rung"]) for r in store.rungs()]
    assert len(pairs) == len(set(pairs))
