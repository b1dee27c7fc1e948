"""Searches with a real Ray runtime, real Optuna and a real SQLite file, on CPU-sized towers and budgets.

The module shares one local Ray instance (2 CPUs, no dashboard, on 127.0.0.1); `nas.search.run` uses the
caller's Ray when one is running.
"""

from __future__ import annotations

import os
import shutil
import signal
import tempfile
import threading
from collections import Counter
from pathlib import Path
from types import SimpleNamespace

import optuna
import pytest
import ray
import torch
from optuna.trial import TrialState
from ray.tune.schedulers import AsyncHyperBandScheduler
from search_helpers import synthetic_data, tower, wait_for, write_study

from nas.cost import cost
from nas.errors import ConfigError
from nas.results import ResultStore
from nas.search import prepare_data
from nas.search import search as run
from nas.search.schedulers import ParetoASHA
from nas.search.searcher import Candidate, StudySearcher, final_status
from nas.study import Study


@pytest.fixture(scope="module")
def local_ray():
    temp = tempfile.mkdtemp(prefix="rt", dir="/tmp")  # short: Ray's socket paths must fit in 107 bytes
    ray.init(address="local", num_cpus=2, include_dashboard=False, _node_ip_address="127.0.0.1", _temp_dir=temp,
             log_to_driver=False)
    yield
    ray.shutdown()
    shutil.rmtree(temp, ignore_errors=True)


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    return synthetic_data(tmp_path_factory.getbasetemp())


def optuna_trials(store: ResultStore, name: str = "test") -> dict[int, optuna.trial.FrozenTrial]:
    return {t.number: t for t in optuna.load_study(study_name=name, storage=store.url).trials}


def skip_reason(trial: optuna.trial.FrozenTrial) -> str:
    """Why the searcher told Optuna a proposal at once instead of training it ('trained' when it did not)."""
    return trial.user_attrs.get("skipped", "trained").split(":")[0]


@pytest.fixture(scope="module")
def asha_search(local_ray, data, tmp_path_factory) -> tuple[Study, ResultStore, float]:
    """One real TPE + ASHA search, run once for the tests that read it: six of the space's eight archs are
    feasible, and the study asks for eight trials (the search ends when the space holds nothing new)."""
    directory = tmp_path_factory.mktemp("asha")
    space = Study.load(write_study(directory, data)).space
    gmacs = sorted(space.measures(a)["image_gmacs"] for a in space.enumerate())
    limit = (gmacs[5] + gmacs[6]) / 2
    study = Study.load(write_study(directory, data, algorithm="tpe", sampler={"n_startup_trials": 3}, trials=8,
                                   constraints={"image_gmacs": {"max": limit}}))
    return study, run(study, directory / "out"), limit


@pytest.mark.slow
def test_a_search_trains_each_feasible_arch_once_and_asha_stops_some(asha_search):
    study, store, limit = asha_search
    trials = store.trials()
    assert study.budget.rungs == (64, 128, 256)
    assert len(trials) == 6 and len({t["arch_id"] for t in trials}) == 6
    statuses = Counter(t["status"] for t in trials)
    assert set(statuses) <= {"completed", "stopped_early"}, statuses
    assert statuses["completed"] >= 1 and statuses["stopped_early"] >= 1, statuses
    for trial in trials:
        assert trial["attempts"] == 1 and trial["device"] == "cpu" and trial["host"] and trial["node"]
        assert trial["image_gmacs"] <= limit


@pytest.mark.slow
def test_every_rung_is_measured_once_in_order_and_asha_stops_only_the_worse(asha_search):
    study, store, _ = asha_search
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
def test_only_the_last_rungs_checkpoint_is_kept_in_the_experiment_storage(asha_search):
    _, store, _ = asha_search
    for trial in store.trials():
        checkpoints = [r["checkpoint"] for r in store.rungs(trial["trial_id"]) if r["checkpoint"]]
        assert len(checkpoints) == 1 and (Path(checkpoints[0]) / "checkpoint.pt").is_file()


@pytest.mark.slow
def test_optuna_is_told_each_trial_at_the_budget_it_reached(asha_search):
    _, store, _ = asha_search
    told = optuna_trials(store)
    reasons = Counter(skip_reason(t) for t in told.values())
    assert reasons["trained"] == 6 and set(reasons) <= {"trained", "infeasible", "duplicate", "measured"}
    for frozen in told.values():
        if skip_reason(frozen) == "infeasible":  # told at once, with the violated constraint, never trained
            assert frozen.state == TrialState.PRUNED and frozen.constraints["image_gmacs"] > 0
    for trial in store.trials():
        frozen = told[trial["number"]]
        losses = {r["budget"]: r["metrics"]["loss"] for r in store.rungs(trial["trial_id"])}
        assert frozen.intermediate_values == pytest.approx(losses)
        assert frozen.constraints["image_gmacs"] <= 0 and frozen.user_attrs["arch_id"] == trial["arch_id"]
        if trial["status"] == "completed":
            assert frozen.state == TrialState.COMPLETE and frozen.value == pytest.approx(losses[256])
        else:
            assert frozen.state == TrialState.PRUNED


@pytest.mark.slow
def test_multi_objective_fronts_hold_only_results_measured_at_their_budget(local_ray, data, tmp_path):
    objectives = {"zeroshot_top1": "max", "image_gmacs": "min"}
    study = Study.load(write_study(tmp_path, data, objectives=objectives, algorithm="nsga2",
                                   sampler={"population_size": 4}, trials=6, seed=1))
    store = run(study, tmp_path / "out")
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


@pytest.mark.slow
def test_per_budget_schedules_train_each_candidate_and_budget_in_a_run_of_its_own(local_ray, data, tmp_path):
    archs = [tower(32), tower(64)]
    study = Study.load(write_study(
        tmp_path, data, algorithm="fixed", archs=[a.to_dict() for a in archs], objectives={"zeroshot_top1": "max"},
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
        checkpoint = Path(rung["checkpoint"]) / "checkpoint.pt"
        state = torch.load(checkpoint, map_location="cpu", weights_only=True)
        assert state["config"]["samples"] == trial["schedule"] and state["config"]["rungs"] == []
        steps = trial["schedule"] // study.train.batch_size  # its cosine schedule ran to its end, and no further
        lr = state["scheduler"]["_last_lr"][0]
        assert state["scheduler"]["last_epoch"] == steps and lr < 1e-6 * study.train.lr
    assert len(store.frame(budget=64)) == 2 and len(store.frame(budget=128)) == 2
    told = optuna_trials(store)
    assert all(told[t["number"]].state == TrialState.COMPLETE for t in trials)


@pytest.mark.slow
def test_a_trial_killed_mid_run_resumes_from_its_checkpoint(local_ray, data, tmp_path):
    study = Study.load(write_study(
        tmp_path, data, algorithm="fixed", archs=[tower(64, 2).to_dict()],
        budget={"min_samples": 64, "max_samples": 1024, "reduction_factor": 4}))
    out = tmp_path / "out"
    killed = {}

    def kill_after_first_rung():
        store = wait_for(lambda: (out / "study.db").exists() and ResultStore.open(out, readonly=True), 120,
                         what="the database")  # created whole: a reader never sees it half made
        trial = wait_for(lambda: next((t for t in store.trials() if t["rung"] == 0 and t["pid"]), None), 120,
                         what="the first rung")
        killed.update(pid=trial["pid"], samples_seen=trial["samples_seen"])
        wait_for(lambda: store.trial(trial["trial_id"])["samples_seen"] is not None, 5)
        os.kill(trial["pid"], signal.SIGKILL)  # the worker process dies mid-run, as on a lost node

    killer = threading.Thread(target=kill_after_first_rung, daemon=True)
    killer.start()
    store = run(study, out)
    killer.join(timeout=5)
    (trial,) = store.trials()
    assert killed["pid"] != trial["pid"]
    assert trial["status"] == "completed" and trial["attempts"] == 2 and trial["samples_seen"] == 1024
    assert trial["resumed_from"] >= killed["samples_seen"]  # from a checkpoint, not from scratch
    sessions = [r["session"] for r in store.rungs(trial["trial_id"])]
    assert len(sessions) == 3 and sessions[0] != sessions[-1]
    assert optuna_trials(store)[trial["number"]].state == TrialState.COMPLETE


@pytest.mark.slow
def test_out_of_memory_is_retried_with_smaller_micro_batches_then_recorded(local_ray, data, tmp_path):
    # Working memory in a Ray worker at batch 512 (measured): ~0.36 GiB; ~1.2 GiB, ~0.81 GiB in 2 micro-batches;
    # ~1.7 GiB in 2. Under a 1 GiB limit the first fits, the second fits after one retry, the third runs out
    # of memory twice and is recorded as `oom`. The allocations fail for real (RLIMIT_AS on the worker).
    small, medium, huge = tower(32, 1, 32), tower(64, 2, 64), tower(128, 4, 64)
    study = Study.load(write_study(
        tmp_path, data, algorithm="fixed", archs=[a.to_dict() for a in (small, medium, huge)],
        train={"batch_size": 512, "warmup": 1}, budget={"min_samples": 1024, "max_samples": 1024},
        resources={"cpus": 1, "memory_gib": 1.0}, failures={"max_retries": 0, "oom_retries": 1}))
    store = run(study, tmp_path / "out")
    rows = {t["arch_id"]: t for t in store.trials()}
    assert rows[small.arch_id]["status"] == "completed" and rows[small.arch_id]["accum_freq"] == 1
    assert rows[medium.arch_id]["status"] == "completed" and rows[medium.arch_id]["accum_freq"] == 2
    assert rows[huge.arch_id]["status"] == "oom" and "out of memory" in rows[huge.arch_id]["error"]
    assert store.rungs(rows[huge.arch_id]["trial_id"]) == []
    frozen = optuna_trials(store)[rows[huge.arch_id]["number"]]
    assert frozen.state == TrialState.PRUNED and frozen.user_attrs["status"] == "oom"
    assert frozen.constraints["trainable"] > 0


@pytest.mark.slow
def test_a_diverging_trial_is_recorded_and_stopped(local_ray, data, tmp_path):
    study = Study.load(write_study(
        tmp_path, data, algorithm="fixed", archs=[tower(32).to_dict()],
        train={"batch_size": 32, "warmup": 1, "lr": 1e30},
        budget={"min_samples": 64, "max_samples": 256, "reduction_factor": 2}, failures={"max_retries": 1}))
    store = run(study, tmp_path / "out")
    (trial,) = store.trials()
    assert trial["status"] == "diverged" and trial["attempts"] == 1  # stopped, not retried
    assert "non-finite loss" in trial["error"] and (trial["samples_seen"] or 0) < 256
    frozen = optuna_trials(store)[trial["number"]]
    assert frozen.state == TrialState.PRUNED and frozen.user_attrs["status"] == "diverged"
    assert frozen.constraints["trainable"] > 0


def test_a_measured_arch_proposed_again_is_told_its_recorded_result(data, tmp_path):
    """No Ray needed: the searcher on a real Optuna study in a real results database."""
    study = Study.load(write_study(tmp_path, data, objectives={"zeroshot_top1": "max", "image_gmacs": "min"}))
    store = ResultStore.create(tmp_path / "out", study)
    searcher = StudySearcher(study, store)
    done, stopped = study.space.sample(0), study.space.sample(1)
    for trial_id, arch, budgets in (("done", done, (64, 128, 256)), ("stopped", stopped, (64,))):
        store.add_trial(trial_id, arch, cost(arch, study.text).metrics(), number=-1, schedule=256)
        for rung, budget in enumerate(budgets):
            store.record_rung(trial_id, {"budget": budget, "samples_seen": budget, "zeroshot_top1": 0.1 * (rung + 1)},
                              rung=rung)
        store.update_trial(trial_id, status="completed" if len(budgets) == 3 else "stopped_early")

    def candidate(arch, schedule):
        return Candidate(arch, schedule, cost(arch, study.text).metrics())

    for arch, state, values in ((done, TrialState.COMPLETE, [pytest.approx(0.3), store.trial("done")["image_gmacs"]]),
                                (stopped, TrialState.PRUNED, None)):
        ot_trial = searcher.ot_study.ask()
        assert searcher._skipped(ot_trial, candidate(arch, 256))
        frozen = searcher.ot_study.trials[-1]
        assert frozen.state == state and frozen.values == values
        assert frozen.user_attrs["skipped"].startswith("measured: by trial")
    assert not searcher._skipped(searcher.ot_study.ask(), candidate(study.space.sample(2), 256))  # to be trained
    assert not searcher._skipped(searcher.ot_study.ask(), candidate(done, 128))  # a run of its own to another budget
    assert searcher.ot_study.metric_names == ["zeroshot_top1", "image_gmacs"]  # named for optuna-dashboard


def test_a_caption_template_over_missing_columns_fails_before_any_trial(data, tmp_path):
    stream = {"urls": str(data / "shards"), "zeroshot": str(data / "eval" / "zeroshot"),
              "metadata": str(data / "metadata")}
    prepare_data(Study.load(write_study(tmp_path, data, data={**stream, "captions": "{color} {shape}"})))
    with pytest.raises(ConfigError, match="no column.s. colour; it has uid") as info:
        prepare_data(Study.load(write_study(tmp_path, data, data={**stream, "captions": "{colour} {shape}"})))
    assert info.value.field == "data.captions"


def test_final_status_reads_the_budget_reached():
    assert final_status({"samples_seen": 256, "schedule": 256}, False) == "completed"
    assert final_status({"samples_seen": 128, "schedule": 256}, False) == "stopped_early"
    assert final_status({"samples_seen": 128, "schedule": 128}, False) == "completed"  # its own budget's run
    assert final_status({"samples_seen": 64, "schedule": 256, "trial_status": "diverged"}, False) == "diverged"
    assert final_status({"trial_status": "oom", "schedule": 256}, False) == "oom"
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
    assert pareto.reward({"samples_seen": 100, "trial_status": "oom"}) is None
    assert "ParetoASHA" in pareto.debug_string()
