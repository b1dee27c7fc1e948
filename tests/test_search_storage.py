"""What a search keeps on disk (`storage: {keep: K}`) and where Ray Tune's state goes (`--storage` on another
directory, as on a shared filesystem): a real search stopped by SIGTERM and resumed from that storage, whose
rung checkpoints end as the best K at every rung, with `export --best` still served."""

from __future__ import annotations

import os
import signal
import threading
from pathlib import Path

import pytest
from ray import tune
from search_helpers import tower, wait_for, write_study

from nas.export import trained
from nas.results import ResultStore
from nas.run_dir import CHECKPOINT, RunDir
from nas.search import SearchInterrupted, search
from nas.search.retention import settled
from nas.study import load_study


@pytest.fixture(scope="module")
def kept_search(local_ray, search_data, tmp_path_factory):
    """Four candidates, every one to both rungs (64 and 128 samples), keeping the best 2 at each rung; Ray
    Tune's state in a directory of its own; stopped by SIGTERM once the first trial ended, then resumed."""
    directory = tmp_path_factory.mktemp("storage")
    archs = [tower(32), tower(64), tower(32, 2), tower(64, 2)]
    study = load_study(write_study(
        directory, search_data, algorithm="fixed", archs=[a.to_dict() for a in archs], storage={"keep": 2},
        budget={"min_samples": 64, "max_samples": 128, "reduction_factor": 2, "early_stopping": "none"},
        resources={"cpus": 1, "concurrency": 1}))
    out, storage = directory / "out", directory / "shared" / "ray"
    previous = signal.signal(signal.SIGTERM, lambda *_: None)  # a late signal must not end pytest
    try:
        def stop_after_the_first_trial():
            store = wait_for(lambda: (out / "study.db").exists() and ResultStore.open(out, readonly=True), 300,
                             what="the database")
            wait_for(lambda: store.trials(status="completed"), 300, what="a trial to end")
            os.kill(os.getpid(), signal.SIGTERM)  # as `kill` would: the search stops and saves its state

        threading.Thread(target=stop_after_the_first_trial, daemon=True).start()
        with pytest.raises(SearchInterrupted):
            search(study, out, storage=str(storage))
        interrupted = ResultStore.open(out, readonly=True).trials()
        assert tune.Tuner.can_restore(str(storage / "test")) and not (out / "ray").exists()
        store = search(study, out, storage=str(storage), resume=True)
    finally:
        signal.signal(signal.SIGTERM, previous)
    return study, store, interrupted


@pytest.mark.slow
def test_a_search_resumes_from_its_storage_in_another_directory(kept_search):
    _, store, interrupted = kept_search
    assert 1 <= len([t for t in interrupted if t["status"] == "completed"]) < 4  # stopped mid-search
    trials = store.trials()
    assert len(trials) == 4 and {t["status"] for t in trials} == {"completed"}
    assert store.meta("driver")["state"] == "finished"
    for before in interrupted:  # finished before the stop: recorded once, never trained again
        if before["status"] == "completed":
            assert store.trial(before["trial_id"])["attempts"] == before["attempts"]


@pytest.mark.slow
def test_only_the_best_k_trials_keep_their_rung_checkpoints(kept_search):
    study, store, _ = kept_search
    run = RunDir(store.path.parent)
    for budget in (64, 128):
        rows = sorted((r for r in store.rungs() if r["budget"] == budget), key=lambda r: r["metrics"]["loss"])
        assert len(rows) == 4
        for place, row in enumerate(rows):  # the best 2 by loss (the first objective) keep theirs, on disk
            path = run.rung(row["trial_id"], row["rung"]) / CHECKPOINT
            if place < 2:
                assert row["checkpoint"] == run.relative(path.parent) and path.is_file()
            else:
                assert row["checkpoint"] is None and not path.exists() and not path.parent.exists()
    for trial in store.trials():  # ended trials are never resumed: their training checkpoints are gone
        assert not [p for p in run.trainings(trial["trial_id"]) if (p / CHECKPOINT).exists()]
        assert (run.training(trial["trial_id"], 1) / "metrics.jsonl").is_file()
    assert settled(store, study) == []  # nothing left to let go
    best = trained(store, best=True)  # what `export --best` reads is kept
    assert best.budget == 128 and best.checkpoint is not None and Path(best.checkpoint, CHECKPOINT).is_file()
    kept = [run.root / r["checkpoint"] / CHECKPOINT for r in store.rungs() if r["checkpoint"]]
    kept_bytes = sum(p.stat().st_size for p in kept)
    assert len(kept) == 4 and len({p.stat().st_ino for p in kept}) == 4
    # the run's trials take the 4 kept checkpoints and their logs: not the 8 (or 12, with training's) of keep-all
    assert kept_bytes <= run.size()["trials"] < kept_bytes * 5 / 4
