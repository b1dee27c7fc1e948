"""ResultStore on a real SQLite file: Optuna's tables beside the toolkit's, idempotent writes, per-budget
Pareto fronts, leaderboard, exports, read-only readers, progress."""

from __future__ import annotations

import dataclasses
import sqlite3
import time
from pathlib import Path

import numpy as np
import optuna
import pandas as pd
import pytest

from nas.arch import Arch, Stage, Transformer
from nas.cost import cost
from nas.errors import ConfigError
from nas.pareto import crowding_distance, nondominated_ranks, pareto_mask, pareto_order
from nas.presets import TextTower
from nas.progress import progress, progress_report
from nas.results import ResultStore
from nas.study import study_from_dict
from nas.tables import format_duration

REPO = Path(__file__).resolve().parents[1]
TEXT = TextTower(width=64, layers=2, heads=2, context_length=32)
OBJECTIVES = {"zeroshot_top1": "max", "image_gmacs": "min"}
BUDGETS = (100, 300, 900)


def tower(width: int, depth: int = 2, block: str = "mbconv") -> Arch:
    return Arch(stem_width=16, image_size=64, embed_dim=64, stages=(Stage(block, 1, 16), Stage(block, 1, 32)),
                transformer=Transformer(width=width, depth=depth, heads=width // 16))


@pytest.fixture
def store(tmp_path) -> ResultStore:
    """The database of a 4-trial study of the tiny space with rungs at 100, 300 and 900 samples."""
    study = study_from_dict({"name": "demo", "space": str(REPO / "search_spaces" / "tiny.yaml"),
                             "data": {"urls": str(tmp_path / "shards"), "zeroshot": str(tmp_path / "zeroshot")},
                             "text": dataclasses.asdict(TEXT), "objectives": OBJECTIVES, "trials": 4,
                             "train": {"batch_size": 32, "warmup": 1},
                             "budget": {"min_samples": 100, "max_samples": 900, "reduction_factor": 3}})
    return ResultStore.create(tmp_path, study)


def add(store: ResultStore, trial_id: str, arch: Arch, **fields) -> None:
    store.add_trial(trial_id, arch, cost(arch, TEXT).metrics(), **fields)


def report(store: ResultStore, trial_id: str, rung: int, accuracy: float, **extra) -> None:
    store.record_rung(trial_id, {"budget": BUDGETS[rung], "samples_seen": BUDGETS[rung] + 4,
                                 "zeroshot_top1": accuracy, "loss": 4.0 - accuracy, "wall_s": 10.0 * (rung + 1),
                                 "host": "node-a", "device": "cpu", **extra}, rung=rung, session="s1")


def fill(store: ResultStore) -> dict[str, Arch]:
    """Four trials: `big` and `small` complete the budget, `mid` stops at rung 0, `odd` stops at rung 1 with
    the best low-budget accuracy of all (which must never enter the full-budget front)."""
    archs = {"big": tower(96, 4), "small": tower(64), "mid": tower(64, 3), "odd": tower(80, 2, "convnext")}
    for number, (name, arch) in enumerate(archs.items()):
        add(store, name, arch, number=number, schedule=BUDGETS[-1])
        store.start_attempt(name)
    for rung, accuracy in enumerate((0.05, 0.10, 0.20)):
        report(store, "big", rung, accuracy)
        report(store, "small", rung, accuracy / 2)
    report(store, "mid", 0, 0.01)
    report(store, "odd", 0, 0.09)
    report(store, "odd", 1, 0.50)
    store.update_trial("big", status="completed")
    store.update_trial("small", status="completed")
    store.update_trial("mid", status="stopped_early")
    store.update_trial("odd", status="stopped_early")
    return archs


def test_optuna_and_toolkit_tables_share_one_file(store):
    """Optuna (and so optuna-dashboard) reads its study from the same file the toolkit writes."""
    study = optuna.create_study(storage=store.optuna_storage(), study_name="demo", directions=["maximize", "minimize"])
    study.enqueue_trial({"x": 1})
    fill(store)
    again = optuna.load_study(study_name="demo", storage=store.url)
    assert len(again.trials) == 1
    tables = {r[0] for r in sqlite3.connect(store.path).execute("SELECT name FROM sqlite_master WHERE type='table'")}
    assert {"studies", "trials", "trial_values", "nas_trials", "nas_rungs", "nas_meta"} <= tables
    assert optuna.get_all_study_names(store.url) == ["demo"]


def test_rows_are_keyed_so_that_reporting_again_adds_nothing(store):
    archs = fill(store)
    before = len(store.rungs())
    add(store, "big", archs["big"], number=99)  # a resumed search registers the trial again
    report(store, "big", 2, 0.21)  # and reports its last rung again
    assert len(store.rungs()) == before
    assert len(store.trials()) == 4
    assert store.trial("big")["number"] == 0
    assert store.rungs("big")[2]["metrics"]["zeroshot_top1"] == 0.21
    with pytest.raises(ValueError, match="status"):
        store.update_trial("big", status="finished")


def test_trial_rows_hold_arch_cost_and_attempts(store):
    archs = fill(store)
    store.start_attempt("big")
    row = store.trial("big")
    assert Arch.from_json(row["arch"]) == archs["big"]
    assert row["arch_id"] == archs["big"].arch_id and row["arch_name"] == archs["big"].name()
    assert row["family"] == "C-C-T/geglu"
    assert row["image_gmacs"] == pytest.approx(cost(archs["big"], TEXT).image_gmacs)
    assert row["attempts"] == 2 and row["status"] == "running"
    assert row["rung"] == 2 and row["budget"] == 900 and row["samples_seen"] == 904 and row["host"] == "node-a"


def test_pareto_fronts_are_per_budget(store):
    archs = fill(store)
    assert store.budgets() == list(BUDGETS)
    fronts = store.pareto_front()
    full = fronts[fronts.budget == 900]
    # `odd` reached 0.50 at 300 samples but was stopped: it competes only at 100 and 300.
    assert set(full.trial_id) == {"big", "small"}
    assert "odd" in set(fronts[fronts.budget == 300].trial_id)
    assert "mid" not in set(fronts.trial_id)  # dominated by `small` at 100 (cheaper and better)
    assert store.pareto_front(budget=900).trial_id.tolist() == ["big", "small"]  # best accuracy first
    assert store.at_budget(900).arch_id.tolist() == [archs["big"].arch_id, archs["small"].arch_id]


def test_leaderboard_ranks_by_budget_reached_then_objective(store):
    fill(store)
    board = store.leaderboard()
    assert board.trial_id.tolist() == ["big", "small", "odd", "mid"]
    assert board.budget.tolist() == [900, 900, 300, 100]
    assert store.leaderboard(budget=100).trial_id.tolist()[0] == "odd"


def test_frame_filters_by_budget_and_family(store):
    fill(store)
    frame = store.frame()
    assert len(frame) == 9 and {"zeroshot_top1", "loss", "image_gmacs", "arch", "family"} <= set(frame.columns)
    assert set(store.frame(family="C-N-T/geglu").trial_id) == set()
    assert set(store.frame(family="N-N-T/geglu").trial_id) == {"odd"}
    assert set(store.frame(budget=900, status="completed").trial_id) == {"big", "small"}


def test_measured_returns_the_furthest_trial_of_an_arch_and_schedule(store):
    archs = fill(store)
    add(store, "again", archs["big"], number=5, schedule=BUDGETS[-1])
    report(store, "again", 0, 0.3)
    measured = store.measured(archs["big"].arch_id, BUDGETS[-1])
    assert measured.trial_id == "big" and measured.status == "completed" and measured.budget == 900
    assert [r["budget"] for r in measured.rungs] == list(BUDGETS)
    assert store.measured(tower(128).arch_id, BUDGETS[-1]) is None
    assert store.measured(archs["big"].arch_id, BUDGETS[0]) is None  # a run to another budget is another trial


def test_export_csv_and_parquet_round_trip(store, tmp_path):
    fill(store)
    csv = pd.read_csv(store.export(tmp_path / "r.csv"))
    parquet = pd.read_parquet(store.export(tmp_path / "r.parquet", budget=900))
    assert len(csv) == 9 and len(parquet) == 2
    assert parquet.zeroshot_top1.tolist() == [0.2, 0.1]
    with pytest.raises(ConfigError, match="csv or .parquet"):
        store.export(tmp_path / "r.json")


def test_a_reader_sees_the_writer_live_and_cannot_write(store):
    fill(store)
    reader = ResultStore.open(store.path.parent, readonly=True)
    report(store, "mid", 1, 0.02)
    assert len(reader.rungs("mid")) == 2
    with pytest.raises(sqlite3.OperationalError, match="readonly"):
        reader.set_meta("x", 1)
    with pytest.raises(ConfigError, match="no results database"):
        ResultStore.open(store.path.parent / "elsewhere")


def test_progress_lists_running_first_with_etas(store):
    fill(store)
    add(store, "run", tower(72), number=4)
    store.start_attempt("run")
    report(store, "run", 0, 0.04)
    records, summary = progress(store)
    assert records[0]["trial"] == 4 and records[0]["status"] == "running"
    assert records[0]["eta"] == pytest.approx(10.0 / 104 * (900 - 104))
    assert summary.startswith("demo: 4/4 trials finished (2 completed, 2 stopped early), 1 running, ETA ~")


def test_a_study_of_listed_runs_counts_the_schedules_it_has_not_started_in_its_eta(tmp_path):
    """Two candidates, each a run to 100 and one to 900 samples (schedule: per_budget): with the two short runs
    done in 10 s each, the two long ones left cost 9 times as much, not the finished runs' mean."""
    archs = {"a": tower(64).to_dict(), "b": tower(96).to_dict()}
    study = study_from_dict({"name": "listed", "space": str(REPO / "search_spaces" / "tiny.yaml"),
                             "data": {"urls": str(tmp_path / "shards"), "zeroshot": str(tmp_path / "zeroshot")},
                             "text": dataclasses.asdict(TEXT), "objectives": OBJECTIVES, "algorithm": "fixed",
                             "archs": archs, "train": {"batch_size": 32, "warmup": 1},
                             "budget": {"min_samples": 100, "max_samples": 900, "reduction_factor": 9,
                                        "early_stopping": "none", "schedule": "per_budget"}})
    store = ResultStore.create(tmp_path, study)
    for number, (name, arch) in enumerate(zip(archs, study.archs)):
        add(store, name, arch, number=number, schedule=100)
        store.start_attempt(name)
        report(store, name, 0, 0.05)
        store.update_trial(name, status="completed")
    _, summary = progress(store)
    per_sample = 20.0 / 208  # 10 s for 104 samples, twice
    assert f"2/4 trials finished (2 completed), 0 running, ETA ~{format_duration(per_sample * 1800)}" in summary


def test_progress_counts_interrupted_trials_apart_from_finished_ones(store):
    """An interrupted trial is resumed, not finished: counted as finished, the count went backwards across a
    resume (a trial interrupted, then running again)."""
    fill(store)
    store.update_trial("mid", status="interrupted", error="interrupted: the driver was stopped by SIGINT")
    _, summary = progress(store)
    assert summary.startswith("demo: 3/4 trials finished (2 completed, 1 stopped early), 1 interrupted, 0 running")
    store.start_attempt("mid")  # resumed
    _, summary = progress(store)
    assert summary.startswith("demo: 3/4 trials finished (2 completed, 1 stopped early), 1 running")


def test_progress_names_a_running_trial_without_progress(store):
    """A stalled data source, before `data.timeout` fails its trial: no row update and no file written by its
    training for a minute or more is named, with how long."""
    add(store, "stuck", tower(72), number=7, schedule=900)
    store.start_attempt("stuck")
    started = store.trial("stuck")["updated_at"]
    assert "no progress" not in progress(store, now=started + 30)[1]
    assert "2 running" not in progress(store, now=started + 90)[1]
    assert "1 running; no progress for 1m30s (trial 7)" in progress(store, now=started + 90)[1]
    training = store.path.parent / "trials" / "stuck" / "train-accum1"
    training.mkdir(parents=True)
    (training / "metrics.jsonl").write_text("{}\n")  # its training writes: progress
    assert "no progress" not in progress(store, now=time.time() + 30)[1]


@pytest.mark.subprocess
def test_the_progress_table_names_the_did_not_learn_rate_once_a_run_did_not_learn(store):
    fill(store)
    assert "did not learn" not in progress_report(store)
    store.update_trial("odd", status="did_not_learn")
    assert "did not learn: 1 of 4 runs (25 % [5, 70], 95 % Wilson; rule: nas.learning)" in progress_report(store)


def test_status_and_results_read_a_search_without_loading_torch(store):
    """Watching a search is instant: the study read back from the database, its progress and its leaderboard
    need neither torch nor open_clip (6 s of imports before; `status` now takes well under a second), and
    `status` needs no scipy (a second of imports on a busy machine: only a did-not-learn rate takes it)."""
    import subprocess
    import sys

    fill(store)
    store.close()
    check = ("import sys; from nas.cli import main; codes = [main(['status', sys.argv[1]])]; "
             "print('scipy after status:', 'scipy' in sys.modules); codes.append(main(['results', sys.argv[1]])); "
             "loaded = [m for m in ('torch', 'open_clip', 'timm', 'torchvision') "
             "if m in sys.modules]; print('loaded:', loaded); sys.exit(max(codes) or bool(loaded))")
    run = subprocess.run([sys.executable, "-c", check, str(store.path.parent)], capture_output=True, text=True,
                         timeout=120)
    assert run.returncode == 0, run.stdout[-2000:] + run.stderr[-2000:]
    assert "leaderboard" in run.stdout and "loaded: []" in run.stdout and "scipy after status: False" in run.stdout


def test_progress_of_a_run_of_its_own_to_a_smaller_budget(store):
    """schedule: per_budget: a run to 300 samples has one rung (0), at the study's second budget."""
    add(store, "short", tower(72), number=0, schedule=300)
    store.start_attempt("short")
    store.record_rung("short", {"budget": 300, "samples_seen": 150, "zeroshot_top1": 0.02, "wall_s": 15.0}, rung=1)
    records, _ = progress(store)
    assert records[0]["eta"] == pytest.approx(15.0 / 150 * (300 - 150))  # to the end of its own schedule
    row = next(line for line in progress_report(store).splitlines() if line.lstrip().startswith("0 "))
    assert " 2/3 " in row
    add(store, "next", tower(80), number=1, schedule=900)
    store.start_attempt("next")  # no rung yet: the study's wall time per sample so far, less its time running
    started = store.trial("next")["started_at"]
    records, _ = progress(store, now=started + 20)
    assert next(r for r in records if r["trial"] == 1)["eta"] == pytest.approx(15.0 / 150 * 900 - 20)


def test_pareto_helpers_against_brute_force():
    rng = np.random.default_rng(0)
    points = rng.integers(0, 6, size=(40, 2)).astype(float)
    dominated = [any((q <= p).all() and (q < p).any() for q in points) for p in points]
    assert pareto_mask(points).tolist() == [not d for d in dominated]
    ranks = nondominated_ranks(points)
    assert (ranks == 0).tolist() == pareto_mask(points).tolist()
    for front in range(1, ranks.max() + 1):  # each front is the Pareto front once better fronts are removed
        rest = points[ranks >= front]
        assert sorted(map(tuple, rest[pareto_mask(rest)])) == sorted(map(tuple, points[ranks == front]))
    line = np.array([[0.0, 3.0], [1.0, 2.0], [1.5, 1.5], [3.0, 0.0]])
    assert np.isinf(crowding_distance(line)[[0, 3]]).all() and crowding_distance(line)[1] > 0
    assert pareto_order(np.array([[2.0, 2.0], [1.0, 1.0], [0.0, 3.0]])).tolist()[0] in (1, 2)
    assert pareto_order(np.array([[2.0, 2.0], [1.0, 1.0], [0.0, 3.0]])).tolist()[-1] == 0

