"""Searches with a real Ray runtime, real Optuna and a real SQLite file, on CPU-sized towers and budgets.

The searches run on the test process's one local Ray instance (`local_ray` in tests/conftest.py: 2 CPUs, no
dashboard, on 127.0.0.1); `nas.search.run` uses the caller's Ray when one is running. The first tests read the
search every test process runs once (`shared_search`).
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from collections import Counter
from contextlib import contextmanager
from pathlib import Path
from types import SimpleNamespace

import optuna
import pytest
import torch
from optuna.trial import TrialState
from ray.tune.schedulers import AsyncHyperBandScheduler
from ray.tune.search import Searcher
from search_helpers import alive, last_logged_samples, progress_of, tower, wait_for, write_study

from nas import status
from nas.cost import cost
from nas.errors import ConfigError
from nas.leaderboard import results_report
from nas.progress import progress_report
from nas.results import ResultStore
from nas.run_dir import RunDir
from nas.search import Outcome, prepare_data
from nas.search import search as run
from nas.search.protocol import (
    CANDIDATE_KEY,
    NUMBER_KEY,
    REPLAY_KEY,
    RESUMED_FROM_KEY,
    SCHEDULE_KEY,
    STATUS_KEY,
    Candidate,
    final_status,
)
from nas.search.schedulers import ASHA, ParetoASHA
from nas.search.searcher import StudySearcher
from nas.study import Study, load_study


def optuna_trials(store: ResultStore, name: str = "test") -> dict[int, optuna.trial.FrozenTrial]:
    return {t.number: t for t in optuna.load_study(study_name=name, storage=store.url).trials}


def skip_reason(trial: optuna.trial.FrozenTrial) -> str:
    """Why the searcher told Optuna a proposal at once instead of training it ('trained' when it did not)."""
    return trial.user_attrs.get("skipped", "trained").split(":")[0]


@pytest.mark.slow
def test_a_search_trains_each_feasible_arch_once_and_asha_stops_some(shared_search):
    study, store, limit = shared_search
    trials = [t for t in store.trials() if t["seed"] is None]  # the search's; then the finalist's confirmation
    assert study.budget.rungs == (64, 128, 256)
    assert len(trials) == 6 and len({t["arch_id"] for t in trials}) == 6
    statuses = Counter(t["status"] for t in trials)
    assert set(statuses) <= {"completed", "stopped_early"}, statuses
    assert statuses["completed"] >= 1 and statuses["stopped_early"] >= 1, statuses
    for trial in trials:
        assert trial["attempts"] == 1 and trial["device"] == "cpu" and trial["host"] and trial["node"]
        assert trial["image_gmacs"] <= limit


@pytest.mark.slow
def test_every_rung_is_measured_once_in_order_and_asha_stops_only_the_worse(shared_search):
    study, store, _ = shared_search
    budgets = list(study.budget.rungs)
    rungs = store.rungs()
    by_budget = {b: {r["trial_id"]: r["metrics"]["loss"] for r in rungs if r["budget"] == b} for b in budgets}
    for trial in store.trials():
        mine = store.rungs(trial["trial_id"])
        assert [r["budget"] for r in mine] == budgets[: len(mine)]  # every rung, in order, measured once
        assert [r["rung"] for r in mine] == list(range(len(mine)))  # the study's rung each budget stands for
        assert all(0 <= r["samples_seen"] - r["budget"] < 32 for r in mine)
        if trial["status"] == "completed":
            assert len(mine) == 3 and trial["samples_seen"] == 256
        else:  # ASHA stopped it at a rung where another trial did better
            assert len(mine) < 3
            stopped_at = mine[-1]["budget"]
            assert min(by_budget[stopped_at].values()) < by_budget[stopped_at][trial["trial_id"]]
    assert len(store.frame()) == len(rungs)
    assert store.leaderboard().status.iloc[0] == "completed"


@pytest.mark.slow
def test_every_rung_keeps_one_copy_of_its_checkpoint_in_the_run_directory(shared_search):
    _, store, _ = shared_search
    run = store.path.parent
    kept = set()
    for trial in store.trials():
        rungs = store.rungs(trial["trial_id"])
        for row in rungs:  # relative to the run directory, resolved by the store, loadable at that rung
            assert row["checkpoint"] == f"trials/{trial['trial_id']}/rungs/{row['rung']}"
            file = store.checkpoint_path(row["checkpoint"]) / "checkpoint.pt"
            state = torch.load(file, map_location="cpu", weights_only=True, mmap=True)
            assert state["samples_seen"] == row["samples_seen"]
            kept.add(file.stat().st_ino)
        live = run / "trials" / trial["trial_id"] / "train-accum1" / "checkpoint.pt"
        assert live.stat().st_ino == file.stat().st_ino and live.stat().st_nlink == 2  # the last rung's, linked
    assert len(kept) == len(store.rungs())
    assert not list((run / "ray").rglob("*.pt"))  # Ray Tune's storage holds no copy


@pytest.mark.slow
def test_a_search_driver_records_its_session(shared_search):
    study, store, _ = shared_search
    driver = store.meta("driver")
    assert driver["state"] == "finished" and driver["pid"] == os.getpid() and driver["ended_at"] >= driver["beat_at"]
    assert driver["command"] == f"vitamin-nas search {study.source} --out {store.path.parent} --resume"
    assert driver["ray_temp"] is None  # the caller's Ray: nothing of it is the driver's to remove


@pytest.mark.slow
def test_the_best_candidate_is_confirmed_with_one_more_seed_at_the_full_budget(shared_search):
    study, store, _ = shared_search
    searched = [t for t in store.trials() if t["seed"] is None]
    (finalist,) = [t for t in store.trials() if t["seed"] is not None]
    full = store.frame(budget=256)
    best = full[full.seed.isna()].sort_values("loss").iloc[0]  # confirm.top: 1, by the objective (loss, min)
    assert finalist["arch_id"] == best.arch_id and finalist["seed"] == 1 and finalist["status"] == "completed"
    assert finalist["created_at"] > max(t["ended_at"] for t in searched)  # after every trial of the search ended
    assert [r["budget"] for r in store.rungs(finalist["trial_id"])] == [64, 128, 256]  # never stopped early
    frozen = optuna_trials(store)[finalist["number"]]
    assert frozen.user_attrs["finalist"] is True and frozen.user_attrs["seed"] == 1
    text = results_report(store)
    assert "confirmed finalists at 256 samples seen" in text
    assert f"winner by seed mean: {best.arch_name}" in text and "over 2 seeds; the only finalist" in text
    assert "seed-to-seed spread measured in this study" in text  # and no "eval noise only": a candidate has 2


def test_optuna_is_told_each_trial_at_the_budget_it_reached(shared_search):
    _, store, _ = shared_search
    told = optuna_trials(store)
    # TPE proposed infeasible and measured archs too (8 trials asked of 6 feasible archs): passed over before
    # Optuna's ask, they are no trials of the study, which holds the six that trained, numbered 0-5, and the
    # finalist's confirmation (6)
    assert sorted(told) == list(range(7)) and {skip_reason(t) for t in told.values()} == {"trained"}
    assert sorted(t["number"] for t in store.trials()) == list(range(7))
    for trial in store.trials():
        frozen = told[trial["number"]]
        losses = {r["budget"]: r["metrics"]["loss"] for r in store.rungs(trial["trial_id"])}
        assert frozen.intermediate_values == pytest.approx(losses)
        assert frozen.constraints["image_gmacs"] <= 0 and frozen.user_attrs["arch_id"] == trial["arch_id"]
        if trial["status"] == "completed":
            assert frozen.state == TrialState.COMPLETE and frozen.value == pytest.approx(losses[256])
        else:
            assert frozen.state == TrialState.PRUNED


@pytest.fixture(scope="module")
def pareto_search(local_ray, search_data, tmp_path_factory) -> tuple[Study, ResultStore]:
    """One real NSGA-II + Pareto ASHA search of accuracy against GMACs, for the tests that read it."""
    directory = tmp_path_factory.mktemp("pareto")
    study = load_study(write_study(directory, search_data, objectives={"zeroshot_top1": "max", "image_gmacs": "min"},
                                   algorithm="nsga2", sampler={"population_size": 4}, trials=6, seed=1))
    return study, run(study, directory / "out")


@pytest.mark.slow
def test_multi_objective_fronts_hold_only_results_measured_at_their_budget(pareto_search):
    study, store = pareto_search
    trials = {t["trial_id"]: t for t in store.trials()}
    statuses = Counter(t["status"] for t in trials.values())
    assert statuses["stopped_early"] >= 1 and statuses["completed"] >= 1, statuses

    measured = {(r["trial_id"], r["budget"]) for r in store.rungs()}
    fronts = store.pareto_front()
    assert set(fronts.budget) == {64, 128, 256}
    for row in fronts.itertuples():
        assert (row.trial_id, row.budget) in measured  # each point was measured at its budget
    full = fronts[fronts.budget == 256]
    assert set(full.status) == {"completed"} and not set(full.trial_id) & {
        t for t, row in trials.items() if row["status"] == "stopped_early"}

    told = optuna_trials(store)
    for trial in trials.values():
        frozen = told[trial["number"]]
        if trial["status"] == "completed":
            final = store.rungs(trial["trial_id"])[-1]["metrics"]
            assert frozen.state == TrialState.COMPLETE
            assert frozen.values == pytest.approx([final["zeroshot_top1"], trial["image_gmacs"]])
        else:  # never COMPLETE with low-budget metrics
            assert frozen.state == TrialState.PRUNED and frozen.values is None
    best = {t.number for t in optuna.load_study(study_name="test", storage=store.url).best_trials}
    assert best <= {t["number"] for t in trials.values() if t["status"] == "completed"}


@contextmanager
def optuna_dashboard(store: ResultStore):
    """optuna-dashboard itself, a real server on 127.0.0.1 over the search's database; its JSON API's base URL."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    script = Path(sys.executable).with_name("optuna-dashboard")
    server = subprocess.Popen([str(script), store.url, "--host", "127.0.0.1", "--port", str(port)],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    base = f"http://127.0.0.1:{port}/api"
    try:
        wait_for(lambda: _get(f"{base}/meta") is not None, 60, interval=0.5, what="optuna-dashboard to answer")
        yield base
    finally:
        server.terminate()
        server.wait(timeout=30)


def _get(url: str):
    try:
        with urllib.request.urlopen(url, timeout=10) as response:
            return json.load(response)
    except OSError:
        return None


def dashboard_study(base: str) -> dict:
    (summary,) = _get(f"{base}/studies")["study_summaries"]
    return _get(f"{base}/studies/{summary['study_id']}")


@pytest.mark.slow
def test_optuna_dashboard_shows_each_trial_its_costs_status_and_metrics_at_every_budget(shared_search, pareto_search):
    """Read through optuna-dashboard's own API: the objectives by name, every trained trial's arch, costs,
    schedule, Tune trial id, status and metrics per budget as user attributes (and, with one objective, as
    intermediate values), and each arch once among the best trials."""
    for study, store in ((shared_search[0], shared_search[1]), pareto_search):
        with optuna_dashboard(store) as base:
            shown = dashboard_study(base)
        assert shown["objective_names"] == list(study.objectives)
        trials = {t["number"]: t for t in shown["trials"]}
        for row in store.trials():
            trial = trials[row["number"]]
            attrs = {a["key"]: a["value"] for a in trial["user_attrs"]}
            assert attrs["trial_id"] == row["trial_id"] and attrs["arch_id"] == row["arch_id"]
            assert attrs["arch_name"] == row["arch_name"] and attrs["status"] == row["status"]
            assert float(attrs["schedule"]) == row["schedule"] and float(attrs["image_gmacs"]) == row["image_gmacs"]
            rungs = store.rungs(row["trial_id"])
            for rung in rungs:
                shown_rung = json.loads(attrs[f"budget_{rung['budget']}"])
                assert shown_rung["samples_seen"] == rung["samples_seen"]
                assert shown_rung["loss"] == pytest.approx(rung["metrics"]["loss"], rel=1e-5)
            values = {v["step"]: float(v["value"]) for v in trial["intermediate_values"]}
            if study.multi_objective:  # Optuna takes intermediate values for one objective only
                assert values == {}
            else:
                assert values == pytest.approx({r["budget"]: r["metrics"]["loss"] for r in rungs})
        best = [next(a["value"] for a in t["user_attrs"] if a["key"] == "arch_id") for t in shown["best_trials"]]
        assert best and len(best) == len(set(best))  # no arch twice
        complete = Counter(next(a["value"] for a in t["user_attrs"] if a["key"] == "arch_id")
                           for t in shown["trials"] if t["state"] == "Complete"
                           and not any(a["key"] == "finalist" for a in t["user_attrs"]))
        assert set(complete.values()) == {1}  # and a finalist's confirmation, another seed of one of them


@pytest.mark.slow
def test_per_budget_schedules_train_each_candidate_and_budget_in_a_run_of_its_own(local_ray, search_data, tmp_path):
    archs = [tower(32), tower(64)]
    study = load_study(write_study(
        tmp_path, search_data, algorithm="fixed", archs=[a.to_dict() for a in archs],
        objectives={"zeroshot_top1": "max"},
        budget={"min_samples": 64, "max_samples": 128, "reduction_factor": 2, "early_stopping": "none",
                "schedule": "per_budget"}))
    assert study.trials == 4 and study.budget.schedules == (64, 128)
    store = run(study, tmp_path / "out")
    trials = store.trials()
    assert sorted((t["arch_id"], t["schedule"]) for t in trials) == sorted(
        (a.arch_id, b) for a in archs for b in (64, 128))
    assert [t["schedule"] for t in trials] == [64, 64, 128, 128]  # every candidate at the small budget first
    for trial in trials:
        (rung,) = store.rungs(trial["trial_id"])  # measured once, at the end of its own schedule
        assert trial["status"] == "completed" and rung["budget"] == trial["schedule"] == rung["samples_seen"]
        checkpoint = store.checkpoint_path(rung["checkpoint"]) / "checkpoint.pt"
        state = torch.load(checkpoint, map_location="cpu", weights_only=True)
        assert state["config"]["samples"] == trial["schedule"] and state["config"]["rungs"] == []
        steps = trial["schedule"] // study.train.batch_size  # its cosine schedule ran to its end, and no further
        lr = state["scheduler"]["_last_lr"][0]
        assert state["scheduler"]["last_epoch"] == steps and lr < 1e-6 * study.train.lr
    assert len(store.frame(budget=64)) == 2 and len(store.frame(budget=128)) == 2
    told = optuna_trials(store)
    assert all(told[t["number"]].state == TrialState.COMPLETE for t in trials)


@pytest.mark.slow
def test_a_worker_killed_between_rungs_resumes_from_its_newest_checkpoint(local_ray, search_data, tmp_path):
    every = 96  # three steps of 32: the most training a kill may cost
    study = load_study(write_study(
        tmp_path, search_data, algorithm="fixed", archs=[tower(64, 2).to_dict()],
        train={"batch_size": 32, "warmup": 1, "lr": 0.002, "checkpoint_every": every, "log_every": 1},
        budget={"min_samples": 64, "max_samples": 512, "reduction_factor": 8}))
    assert study.budget.rungs == (64, 512)
    out = tmp_path / "out"
    killed = {}

    def kill_between_rungs():
        store = wait_for(lambda: (out / "study.db").exists() and ResultStore.open(out, readonly=True), 120,
                         what="the database")  # created whole: a reader never sees it half made
        trial = wait_for(lambda: next((t for t in store.trials() if t["rung"] == 0 and t["pid"]), None), 120,
                         what="the first rung")
        training = RunDir(out).training(trial["trial_id"], 1)
        wait_for(lambda: (progress_of(training) or 0) >= 2 * every, 120, what="two checkpoints past the rung")
        os.kill(trial["pid"], signal.SIGKILL)  # the worker process dies mid-run, as on a lost node
        wait_for(lambda: not alive(trial["pid"]), 10)
        killed.update(pid=trial["pid"], logged=last_logged_samples(training), checkpointed=progress_of(training))

    killer = threading.Thread(target=kill_between_rungs, daemon=True)
    killer.start()
    store = run(study, out)
    killer.join(timeout=5)
    (trial,) = store.trials()
    assert killed["pid"] != trial["pid"]
    assert trial["status"] == "completed" and trial["attempts"] == 2 and trial["samples_seen"] == 512
    assert trial["resumed_from"] == killed["checkpointed"] > 64  # its newest checkpoint, not the rung's
    assert 0 <= killed["logged"] - trial["resumed_from"] <= every
    print(f"worker kill: at {killed['logged']} samples, resumed from {trial['resumed_from']} (rung at 64, "
          f"checkpoint every {every})")
    sessions = [r["session"] for r in store.rungs(trial["trial_id"])]
    assert len(sessions) == 2 and sessions[0] != sessions[-1]
    assert optuna_trials(store)[trial["number"]].state == TrialState.COMPLETE


@pytest.mark.slow
def test_out_of_memory_is_retried_with_smaller_micro_batches_then_recorded(local_ray, search_data, tmp_path):
    # Working memory in a Ray worker at batch 512 (measured): ~0.36 GiB; ~1.2 GiB, ~0.81 GiB in 2 micro-batches;
    # ~1.7 GiB in 2. Under a 1 GiB limit the first fits, the second fits after one retry, the third runs out
    # of memory twice and is recorded as `oom`. The allocations fail for real (RLIMIT_AS on the worker).
    small, medium, huge = tower(32, 1, 32), tower(64, 2, 64), tower(128, 4, 64)
    study = load_study(write_study(
        tmp_path, search_data, algorithm="fixed", archs=[a.to_dict() for a in (small, medium, huge)],
        train={"batch_size": 512, "warmup": 1}, budget={"min_samples": 1024, "max_samples": 1024},
        resources={"cpus": 1, "memory_gib": 1.0}, failures={"max_retries": 0, "oom_retries": 1}))
    store = run(study, tmp_path / "out")
    rows = {t["arch_id"]: t for t in store.trials()}
    assert rows[small.arch_id]["status"] == "completed" and rows[small.arch_id]["accum_freq"] == 1
    assert rows[medium.arch_id]["status"] == "completed" and rows[medium.arch_id]["accum_freq"] == 2
    assert rows[huge.arch_id]["status"] == "oom", rows[huge.arch_id]["error"]
    assert "out of memory" in rows[huge.arch_id]["error"]
    assert store.rungs(rows[huge.arch_id]["trial_id"]) == []
    frozen = optuna_trials(store)[rows[huge.arch_id]["number"]]
    assert frozen.state == TrialState.PRUNED and frozen.user_attrs["status"] == "oom"
    assert frozen.constraints["trainable"] > 0


@pytest.mark.slow
def test_a_diverging_trial_is_recorded_and_stopped(local_ray, search_data, tmp_path):
    study = load_study(write_study(
        tmp_path, search_data, algorithm="fixed", archs=[tower(32).to_dict()],
        train={"batch_size": 32, "warmup": 1, "lr": 1e30},
        budget={"min_samples": 64, "max_samples": 256, "reduction_factor": 2}, failures={"max_retries": 1}))
    store = run(study, tmp_path / "out")
    (trial,) = store.trials()
    assert trial["status"] == "diverged" and trial["attempts"] == 1  # stopped, not retried
    assert "non-finite loss" in trial["error"] and (trial["samples_seen"] or 0) < 256
    frozen = optuna_trials(store)[trial["number"]]
    assert frozen.state == TrialState.PRUNED and frozen.user_attrs["status"] == "diverged"
    assert frozen.constraints["trainable"] > 0


@pytest.mark.slow
def test_a_run_that_does_not_learn_is_caught_and_stopped(local_ray, search_data, tmp_path):
    # lr 1e-9: the loss stays where it starts (above ln 4, batch 4). The rule (nas.learning) judges from 100 steps
    # on: at 800 samples (200 steps) against 400 (a ladder step before), so the run stops there, before 1,600.
    study = load_study(write_study(
        tmp_path, search_data, algorithm="fixed", archs=[tower(32).to_dict()],
        train={"batch_size": 4, "warmup": 1, "lr": 1e-9, "checkpoint_every": 800},
        budget={"min_samples": 400, "max_samples": 1600, "reduction_factor": 2}))
    store = run(study, tmp_path / "out")
    (trial,) = store.trials()
    assert trial["status"] == "did_not_learn" and trial["attempts"] == 1, trial["error"]
    assert trial["error"].startswith("did not learn: loss") and "at 800 samples" in trial["error"]
    assert [r["budget"] for r in store.rungs(trial["trial_id"])] == [400, 800]  # stopped, not trained on
    frozen = optuna_trials(store)[trial["number"]]
    assert frozen.state == TrialState.PRUNED and frozen.user_attrs["status"] == "did_not_learn"
    assert store.frame(status=status.MEASURED).empty and store.leaderboard().empty  # never a measurement
    assert "did not learn: 1 of 1 runs (100 % [21, 100]" in results_report(store)
    assert "1 did not learn" in progress_report(store) and "did not learn: 1 of 1 runs" in progress_report(store)


def test_a_run_that_did_not_learn_is_rerun_with_the_next_seed(search_data, tmp_path):
    """No Ray needed: the searcher on a real Optuna study in a real results database, told what the trials did.
    With `repeats.not_learned: 1`, a run that did not learn is proposed again with the next seed, once."""
    study = load_study(write_study(tmp_path, search_data, algorithm="fixed", archs=[tower(32).to_dict()],
                                   repeats={"not_learned": 1}))
    store = ResultStore.create(tmp_path / "out", study)
    searcher = StudySearcher(study, store)
    seeds = []
    for trial_id in ("first", "rerun"):
        config = searcher.suggest(trial_id)
        candidate = config[CANDIDATE_KEY]
        seeds.append(candidate.seed)
        store.add_trial(trial_id, candidate.arch, candidate.cost, number=config[NUMBER_KEY],
                        schedule=candidate.schedule, seed=candidate.seed)
        assert searcher.suggest("waiting") is None  # nothing else now, but the trial in flight may ask for a rerun
        searcher.on_trial_complete(trial_id, {STATUS_KEY: status.DID_NOT_LEARN, SCHEDULE_KEY: 256})
    assert seeds == [None, 1] and searcher.suggest("third") == Searcher.FINISHED


def test_a_measured_arch_proposed_again_is_told_once(search_data, tmp_path):
    """No Ray needed: the searcher on a real Optuna study in a real results database. An arch whose trial told
    Optuna its result is a FAIL pointing to that trial (so `best_trials` never lists it twice); one whose result
    Optuna was never told (recorded by no trial of this study) is told it."""
    objectives = {"zeroshot_top1": "max", "image_gmacs": "min"}
    study = load_study(write_study(tmp_path, search_data, objectives=objectives))
    store = ResultStore.create(tmp_path / "out", study)
    searcher = StudySearcher(study, store)
    done, stopped, unknown = list(study.space.enumerate(feasible=True))[:3]

    def record(trial_id, arch, budgets, number):
        store.add_trial(trial_id, arch, cost(arch, study.text).metrics(), number=number, schedule=256)
        for rung, budget in enumerate(budgets):
            store.record_rung(trial_id, {"budget": budget, "samples_seen": budget, "zeroshot_top1": 0.1 * (rung + 1)},
                              rung=rung)
        store.update_trial(trial_id, status="completed" if len(budgets) == 3 else "stopped_early")

    def ask(arch):  # an Optuna trial of `arch`, named as the searcher's proposer names it
        trial = searcher.ot_study.ask()
        trial.set_user_attr("arch_id", arch.arch_id)
        return trial

    for trial_id, arch, budgets in (("done", done, (64, 128, 256)), ("stopped", stopped, (64,))):
        original = ask(arch)
        record(trial_id, arch, budgets, original.number)
        row = store.trial(trial_id)
        searcher._tell(original.number, row["status"], {**store.rungs(trial_id)[-1]["metrics"],
                                                 "image_gmacs": row["image_gmacs"]})
    record("elsewhere", unknown, (64, 128, 256), None)

    def candidate(arch, schedule):
        return Candidate(arch, schedule, cost(arch, study.text).metrics())

    for arch, trial_id in ((done, "done"), (stopped, "stopped")):
        ot_trial = ask(arch)
        assert searcher._skipped(ot_trial.number, candidate(arch, 256))
        frozen = searcher.ot_study.trials[-1]
        assert frozen.state == TrialState.FAIL and frozen.user_attrs["skipped"] == f"measured: by trial {trial_id}"
        assert frozen.user_attrs["measured_by"] == store.trial(trial_id)["number"]
    ot_trial = ask(unknown)
    assert searcher._skipped(ot_trial.number, candidate(unknown, 256))
    frozen = searcher.ot_study.trials[-1]
    assert frozen.state == TrialState.COMPLETE and frozen.values == [pytest.approx(0.3),
                                                                      store.trial("elsewhere")["image_gmacs"]]
    assert frozen.user_attrs["budget_256"]["zeroshot_top1"] == pytest.approx(0.3, rel=1e-5)
    best = [t.user_attrs["arch_id"] for t in searcher.ot_study.best_trials]
    assert best and len(best) == len(set(best))  # each arch at most once (done's second proposal is a FAIL)
    assert not searcher._skipped(searcher.ot_study.ask().number, candidate(study.space.sample(2), 256))  # to be trained
    # a run of its own to another budget
    assert not searcher._skipped(searcher.ot_study.ask().number, candidate(done, 128))
    assert searcher.ot_study.metric_names == ["zeroshot_top1", "image_gmacs"]  # named for optuna-dashboard


def test_a_sampled_proposal_becomes_an_optuna_trial_only_when_it_is_trained(search_data, tmp_path):
    """No Ray needed: TPE's proposals of infeasible and measured archs are drawn and passed over in a copy of the
    study; the study gains one trial, the arch left to train, with the proposal's parameters."""
    space = load_study(write_study(tmp_path, search_data)).space
    gmacs = sorted(space.measures(a)["image_gmacs"] for a in space.enumerate())
    study = load_study(write_study(tmp_path, search_data, algorithm="tpe", trials=8,
                                   constraints={"image_gmacs": {"max": (gmacs[5] + gmacs[6]) / 2}}))
    store = ResultStore.create(tmp_path / "out", study)
    searcher = StudySearcher(study, store)
    *measured, left = list(study.space.enumerate(feasible=True))
    for number, arch in enumerate(measured):
        store.add_trial(f"t{number}", arch, cost(arch, study.text).metrics(), number=number, schedule=256)
        store.record_rung(f"t{number}", {"budget": 256, "samples_seen": 256, "loss": 4.0 + number}, rung=2)
        store.update_trial(f"t{number}", status="completed")
        trial = searcher.ot_study.ask()
        searcher.propose(trial, searcher.propose.candidate(arch, 256, None))
        searcher.ot_study.tell(trial, 4.0 + number)
    config = searcher.suggest("tune-trial")
    assert config["candidate"].arch == left and config["number"] == len(measured)
    told = searcher.ot_study.get_trials()
    assert len(told) == len(measured) + 1 and told[-1].state == TrialState.RUNNING
    assert told[-1].user_attrs["arch_id"] == left.arch_id and told[-1].params
    assert searcher.suggest("another") == StudySearcher.FINISHED  # every feasible arch is known: nothing asked
    assert len(searcher.ot_study.get_trials()) == len(measured) + 1


def test_a_trial_ray_tune_never_recorded_continues_under_its_own_id_and_number(search_data, tmp_path):
    """No Ray needed: a killed driver had started trial `lost` (its row and Optuna trial exist) before Ray Tune
    saved it; the searcher of the resumed search hands it out again first, as itself, and counts it once."""
    study = load_study(write_study(tmp_path, search_data, algorithm="tpe", trials=2))
    store = ResultStore.create(tmp_path / "out", study)
    searcher = StudySearcher(study, store)
    config = searcher.suggest("tune-1")
    arch = config["candidate"].arch
    store.add_trial("lost", arch, config["candidate"].cost, number=config["number"], schedule=256)
    store.update_trial("lost", status="pending")  # as the resumed driver finds it
    resumed = StudySearcher(study, store)  # Ray Tune's saved state knew nothing of it
    again = resumed.suggest("tune-2")
    assert again["continues"] == "lost" and again["number"] == config["number"] and again["candidate"].arch == arch
    assert len(resumed.ot_study.get_trials()) == 1  # no new Optuna trial for it
    assert resumed.suggest("tune-3")["number"] == 1 and resumed.suggest("tune-4") == StudySearcher.FINISHED


def test_resources_no_node_has_fail_before_anything_is_written(local_ray, search_data, tmp_path):
    study = load_study(write_study(tmp_path, search_data, resources={"cpus": 8}))
    begin = time.time()
    asked = r"a trial asks for 8 CPU\(s\), 0 GPU\(s\).*1 node\(s\), the largest with 2 CPU"
    with pytest.raises(ConfigError, match=asked):
        run(study, tmp_path / "out")
    assert time.time() - begin < 30 and not (tmp_path / "out" / "study.db").exists()
    gpu = load_study(write_study(tmp_path, search_data, resources={"cpus": 1, "gpus": 1}))
    with pytest.raises(ConfigError, match=r"asks for 1 CPU\(s\), 1 GPU\(s\)") as info:
        run(gpu, tmp_path / "out")
    assert info.value.field == "resources"
    # each rank fits, not all 4
    ranks = load_study(write_study(tmp_path, search_data, resources={"cpus": 1, "workers": 4}))
    with pytest.raises(ConfigError, match=r"a trial's 4 workers ask for 1 CPU\(s\).* each, but .* 1 node\(s\) hold "
                                          r"only 2 of them at once") as info:
        run(ranks, tmp_path / "out")
    assert info.value.field == "resources.workers" and not (tmp_path / "out" / "study.db").exists()
    wide = load_study(write_study(tmp_path, search_data, resources={"cpus": 3, "workers": 2}))
    with pytest.raises(ConfigError, match=r"each of a trial's 2 workers asks for 3 CPU\(s\)"):
        run(wide, tmp_path / "out")


def test_the_outcome_of_a_search_names_each_error_with_a_log(search_data, tmp_path):
    study = load_study(write_study(tmp_path, search_data))
    store = ResultStore.create(tmp_path / "out", study)
    assert Outcome.of(store).summary() == "no trial produced a result: no candidate was trained (every proposal " \
                                          "was infeasible?)"
    traceback = ("ray::ImplicitFunc.train() (pid=1, ip=127.0.0.1)\n  File \"trial.py\", line 3, in run\n"
                 "    raise RuntimeError(\"the data ran out\")\n    ^^^^^^^^^^^^\n"
                 "RuntimeError: the data ran out after 0 of 256 samples\n")
    for i, arch in enumerate(study.space.sample(s) for s in range(3)):
        store.add_trial(f"t{i}", arch, cost(arch, study.text).metrics(), number=i, schedule=256)
        store.update_trial(f"t{i}", status="failed" if i < 2 else "oom",
                           error=traceback if i < 2 else "OOMError: out of memory at batch 32")
    log = RunDir(tmp_path / "out").log_error("t1", 1, traceback)  # as the Recorder logs a failed attempt
    outcome = Outcome.of(store)
    assert not outcome.produced_results
    assert outcome.summary() == ("no trial produced a result (3 trial(s), 2 failed)\n"
                                 f"  2x RuntimeError: the data ran out after 0 of 256 samples (log: {log})\n"
                                 "  1x OOMError: out of memory at batch 32")
    store.record_rung("t2", {"budget": 64, "samples_seen": 64, "loss": 4.0}, rung=0)
    assert Outcome.of(store).summary().splitlines()[:2] == [
        "2 of 3 trials failed", f"  2x RuntimeError: the data ran out after 0 of 256 samples (log: {log})"]


def test_a_caption_template_over_missing_columns_fails_before_any_trial(search_data, tmp_path):
    stream = {"urls": str(search_data / "shards"), "zeroshot": str(search_data / "eval" / "zeroshot"),
              "metadata": str(search_data / "metadata")}
    prepare_data(load_study(write_study(tmp_path, search_data, data={**stream, "captions": "{color} {shape}"})))
    with pytest.raises(ConfigError, match="no column.s. colour; it has uid") as info:
        prepare_data(load_study(write_study(tmp_path, search_data, data={**stream, "captions": "{colour} {shape}"})))
    assert info.value.field == "data.captions"


def test_final_status_reads_the_budget_reached():
    assert final_status({"samples_seen": 256, "schedule": 256}, False) == "completed"
    assert final_status({"samples_seen": 128, "schedule": 256}, False) == "stopped_early"
    assert final_status({"samples_seen": 128, "schedule": 128}, False) == "completed"  # its own budget's run
    assert final_status({"samples_seen": 64, "schedule": 256, STATUS_KEY: "diverged"}, False) == "diverged"
    assert final_status({STATUS_KEY: "oom", "schedule": 256}, False) == "oom"
    assert final_status({"samples_seen": 256, "schedule": 256}, True) == "failed"
    assert final_status(None, False) == "failed"


def test_pareto_asha_promotes_by_pareto_rank_not_one_metric():
    points = [(0.5, 2.0), (0.4, 3.0), (0.3, 2.5), (0.2, 2.8), (0.1, 0.5), (0.6, 1.0)]  # (accuracy, gmacs)
    trials = [SimpleNamespace(trial_id=str(i)) for i in range(len(points))]
    common = {"time_attr": "samples_seen", "max_t": 900, "grace_period": 100, "reduction_factor": 3}
    pareto = ParetoASHA({"zeroshot_top1": "max", "image_gmacs": "min"}, **common)
    accuracy_only = AsyncHyperBandScheduler(metric="zeroshot_top1", mode="max", brackets=1, **common)
    decisions = [pareto.on_trial_result(None, t, {"samples_seen": 100, "zeroshot_top1": a, "image_gmacs": g})
                 for t, (a, g) in zip(trials, points)]
    # 0 is first at the rung; 1-3 are dominated by 0; 4 is the cheapest, on the front despite the lowest accuracy
    # (ASHA on accuracy alone stops it); 5 dominates 0, and the front's two ends go on.
    assert decisions == ["CONTINUE", "STOP", "STOP", "STOP", "CONTINUE", "CONTINUE"]
    for trial in trials:
        accuracy_only.on_trial_add(None, trial)
    assert [accuracy_only.on_trial_result(None, t, {"samples_seen": 100, "zeroshot_top1": a})
            for t, (a, _) in zip(trials, points)][4] == "STOP"
    again = {"samples_seen": 150, "zeroshot_top1": 0.5, "image_gmacs": 2.0}
    assert pareto.on_trial_result(None, trials[0], again) == "CONTINUE"  # recorded once per rung
    assert pareto.on_trial_result(None, trials[0], {**again, "samples_seen": 900}) == "STOP"  # the end of the budget
    assert pareto.reward({"samples_seen": 100, "zeroshot_top1": 0.5, "image_gmacs": 2.0}).tolist() == [-0.5, 2.0]
    assert pareto.reward({"samples_seen": 100, STATUS_KEY: "oom"}) is None
    assert "ParetoASHA" in pareto.debug_string()


@pytest.mark.parametrize("kind", ["asha", "pareto"])
def test_a_trial_promoted_before_a_driver_kill_is_not_stopped_at_that_rung_when_it_resumes(kind):
    """The case seen once (a trial promoted at 800 samples, stopped at 800 after a driver kill, its 2,400 never
    measured), reproduced: Ray Tune restores a search's trials and searcher but not its scheduler, so the
    resumed trial's replay of the rung is decided again by an empty scheduler, against whatever this session
    recorded there first. A better trial's result there first, and the promoted trial (resumed from its
    checkpoint at 1,200 samples) is stopped at the rung it passed. A replayed rung behind the checkpoint is now
    recorded but never stops its trial; a replay at the very checkpoint (the kill came before the decision) and
    a live result are decided as ever."""
    common = {"time_attr": "samples_seen", "max_t": 2400, "grace_period": 800, "reduction_factor": 3}

    def scheduler():
        return ASHA(metric="loss", mode="min", brackets=1, **common) if kind == "asha" else \
            ParetoASHA({"loss": "min"}, **common)

    promoted, better = SimpleNamespace(trial_id="promoted"), SimpleNamespace(trial_id="better")
    first = scheduler()  # the session before the kill: alone at the rung, promoted
    first.on_trial_add(None, promoted)
    assert first.on_trial_result(None, promoted, {"samples_seen": 800, "loss": 4.0}) == "CONTINUE"
    for resumed_from, replay, decided in ((1200, True, "CONTINUE"), (800, True, "STOP"), (None, False, "STOP")):
        resumed = scheduler()  # the resumed session's scheduler, empty
        for trial in (better, promoted):
            resumed.on_trial_add(None, trial)
        assert resumed.on_trial_result(None, better, {"samples_seen": 800, "loss": 3.0}) == "CONTINUE"
        again = {"samples_seen": 800, "loss": 4.0, REPLAY_KEY: replay, RESUMED_FROM_KEY: resumed_from}
        assert resumed.on_trial_result(None, promoted, again) == decided, (resumed_from, replay)
