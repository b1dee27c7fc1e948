"""The study fields of the search-efficiency work: `extends`, evaluations off the ladder (`budget.between`,
`budget.below`), `repeats` (a candidate trained again with other seeds, each a trial of its own), `image_size`
(listed candidates at another resolution), grids in a stratified order, and what the searcher and the results
database make of repeats."""

from __future__ import annotations

import collections
import sqlite3
from pathlib import Path

import pytest
import yaml
from optuna.trial import TrialState

from nas.cost import cost
from nas.errors import ConfigError
from nas.results import ResultStore
from nas.search.schedulers import ParetoASHA
from nas.search.searcher import StudySearcher
from nas.stratified import strata
from nas.study import Budget, load_study, study_from_dict

REPO = Path(__file__).resolve().parents[1]
#: The tiny space at 64 px only (inline): another resolution is then the same candidates with fewer pixels.
TINY = {**yaml.safe_load((REPO / "search_spaces" / "tiny.yaml").read_text()), "image_size": 64}


def write(path: Path, **fields) -> Path:
    """A study file: a grid over the tiny space on shards that need not exist; `fields` replace or remove (None)."""
    study = {"name": path.stem, "space": TINY, "data": {"urls": "shards", "zeroshot": "eval"},
             "objectives": {"zeroshot_top1": "max"}, "algorithm": "grid", "trials": 8,
             "budget": {"min_samples": 100, "max_samples": 900, "reduction_factor": 3, "early_stopping": "none"},
             "train": {"batch_size": 20, "warmup": 2, "lr": 0.002}}
    for key, value in fields.items():
        if value is None:
            study.pop(key)
        else:
            study[key] = value
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(study, sort_keys=False))
    return path


@pytest.mark.parametrize("between, below, rungs", [
    (0, 0, (100, 300, 900)), (1, 0, (100, 173, 300, 520, 900)), (0, 1, (33, 100, 300, 900)),
    (1, 2, (33, 58, 100, 173, 300, 520, 900)),
])
def test_evaluations_between_and_below_the_ladder_are_rungs_spaced_geometrically(between, below, rungs):
    budget = Budget(100, 900, 3, early_stopping="none", between=between, below=below)
    assert budget.rungs == rungs and budget.ladder == (100, 300, 900)
    assert Budget(100, 1000, 3, between=1).rungs == (100, 173, 300, 520, 900, 949, 1000)  # the short last step too


def test_asha_still_decides_only_at_the_ladder(tmp_path):
    study = load_study(write(tmp_path / "s.yaml", budget={"min_samples": 100, "max_samples": 900, "between": 2}))
    assert study.run_config().rungs == study.budget.rungs[:-1] and len(study.budget.rungs) == 7
    assert sorted(ParetoASHA({"zeroshot_top1": "max"}, time_attr="samples_seen", max_t=900, grace_period=100,
                             reduction_factor=3).rungs) == [100, 300]


def test_a_study_extends_another_and_follows_its_recipe(tmp_path):
    base = write(tmp_path / "base" / "base.yaml", algorithm="tpe", trials=12, sampler={"n_startup_trials": 3},
                 data={"urls": "shards", "zeroshot": "eval"}, constraints={"image_gmacs": {"max": 0.05}},
                 budget={"min_samples": 100, "max_samples": 900, "reduction_factor": 3})
    child = tmp_path / "child.yaml"
    child.write_text(yaml.safe_dump({"extends": "base/base.yaml", "algorithm": "grid", "trials": 5,
                                     "budget": {"early_stopping": "none", "between": 1}, "train": {"lr": 0.004}}))
    parent, study = load_study(base), load_study(child)
    assert study.name == "child" and study.algorithm == "grid" and len(study.archs) == 5
    assert study.sampler == {} and parent.sampler == {"n_startup_trials": 3}  # the base's algorithm's own
    assert study.budget == Budget(100, 900, 3, early_stopping="none", between=1)  # merged field by field
    assert study.train.lr == 0.004 and study.train.batch_size == parent.train.batch_size == 20
    assert study.data.source.urls == str(tmp_path / "base" / "shards")  # the base's paths, from the base's file
    assert study.space.constraints["image_gmacs"].high == 0.05
    assert all(study.space.is_feasible(a) for a in study.archs)
    # what a database stores reads back without the base
    again = study_from_dict(study.resolved(), source=str(child))
    assert again.resolved() == study.resolved() and again.archs == study.archs
    # a study naming its own data replaces the base's
    child.write_text(yaml.safe_dump({"extends": "base/base.yaml", "data": {"urls": "other", "zeroshot": "z"}}))
    assert load_study(child).data.source.urls == str(tmp_path / "other")


def test_a_study_listing_its_own_candidates_takes_neither_the_base_count_nor_its_groups(tmp_path):
    archs = {f"a{i}": arch.to_dict() for i, arch in enumerate(load_study(write(tmp_path / "grid.yaml")).archs)}
    base = write(tmp_path / "base.yaml", algorithm="fixed", trials=None, archs=dict(list(archs.items())[:2]),
                 groups={"pair": ["a0", "a1"]})
    child = tmp_path / "child.yaml"
    child.write_text(yaml.safe_dump({"extends": "base.yaml", "archs": dict(list(archs.items())[2:5])}))
    assert load_study(base).trials == 2
    study = load_study(child)
    assert study.labels == ("a2", "a3", "a4") and study.trials == 3 and study.groups == {}


def test_extends_errors_name_the_file_and_the_cycle(tmp_path):
    (tmp_path / "a.yaml").write_text(yaml.safe_dump({"extends": "b.yaml"}))
    (tmp_path / "b.yaml").write_text(yaml.safe_dump({"extends": "a.yaml"}))
    with pytest.raises(ConfigError, match="extends itself") as info:
        load_study(tmp_path / "a.yaml")
    assert info.value.field == "extends"
    (tmp_path / "c.yaml").write_text(yaml.safe_dump({"extends": "missing.yaml"}))
    with pytest.raises(ConfigError, match="no such study file"):
        load_study(tmp_path / "c.yaml")


def test_a_study_extends_a_shipped_study_by_name(tmp_path):
    (tmp_path / "mine.yaml").write_text(yaml.safe_dump({"extends": "quickstart", "trials": 3}))
    study, quickstart = load_study(tmp_path / "mine.yaml"), load_study(REPO / "studies" / "quickstart.yaml")
    assert study.name == "mine" and study.trials == 3 and study.train == quickstart.train
    assert study.data == quickstart.data and study.sampler == quickstart.sampler


def test_repeats_train_the_first_candidates_again_with_other_seeds(tmp_path):
    study = load_study(write(tmp_path / "s.yaml", repeats={"seeds": [7, 8], "fraction": 0.25}))
    assert study.trials == 8 + 2 * 2 and len(study.runs) == study.trials
    assert study.runs[:6] == ((0, 0, None), (0, 0, 7), (0, 0, 8), (1, 0, None), (1, 0, 7), (1, 0, 8))
    assert study.runs[6:] == tuple((i, 0, None) for i in range(2, 8))  # a prefix: its candidates with every seed
    assert study.run_config().seed == 0 and study.run_config(seed=7).seed == 7
    assert study_from_dict(study.resolved(), source=study.source).repeats == study.repeats
    per_budget = load_study(write(tmp_path / "p.yaml", repeats={"seeds": [1], "fraction": 0.1},
                                  budget={"min_samples": 100, "max_samples": 900, "early_stopping": "none",
                                          "schedule": "per_budget"}))
    assert per_budget.trials == (8 + 1) * 3  # every schedule, for the repeated candidate too


def test_confirm_and_reruns_read_back_and_bound_the_trials(tmp_path):
    study = load_study(write(tmp_path / "c.yaml", algorithm="random", trials=6, confirm={"top": 2, "seeds": 3},
                             repeats={"not_learned": 1}))
    assert (study.confirm.top, study.confirm.runs, study.repeats.not_learned) == (2, 6, 1)
    assert study.max_trials == 6 * 2 + 6 * 2  # each search trial and each finalist's run may be rerun once
    again = study_from_dict(study.resolved(), source=study.source)
    assert (again.confirm, again.repeats) == (study.confirm, study.repeats)
    plain = load_study(write(tmp_path / "p.yaml", algorithm="random", trials=6))
    assert "confirm" not in plain.resolved() and "repeats" not in plain.resolved()  # stored searches still resume


@pytest.mark.parametrize("fields, field, message", [
    ({"repeats": {"seeds": [1, 1]}}, "repeats.seeds", "twice"),
    ({"repeats": {"seeds": [-1]}}, "repeats.seeds", "integers >= 0"),
    ({"repeats": {"seeds": [1], "fraction": 0}}, "repeats.fraction", r"in \(0, 1\]"),
    ({"repeats": {"seeds": [0]}}, "repeats.seeds", "train.seed"),
    ({"repeats": {"seeds": [1]}, "algorithm": "tpe"}, "repeats", "candidates listed"),
    ({"image_size": 32, "algorithm": "random"}, "image_size", "candidates listed"),
    ({"repeats": {"not_learned": -1}}, "repeats.not_learned", "integer >= 0"),
    ({"confirm": {"top": 2, "seeds": 0}}, "confirm.seeds", "integer >= 1"),
    ({"confirm": {"top": "two"}}, "confirm.top", "integer >= 0"),
    ({"confirm": {"best": 2}}, "confirm", "unknown field"),
    ({"image_size": 40}, "image_size", "not divisible"),
    ({"budget": {"min_samples": 100, "max_samples": 900, "between": -1}}, "budget.between", ">= 0"),
    ({"budget": {"min_samples": 100, "max_samples": 900, "early_stopping": "curves"}}, "budget.early_stopping",
     "asha, curve, none"),
])
def test_bad_fields_name_the_field(tmp_path, fields, field, message):
    with pytest.raises(ConfigError, match=message) as info:
        load_study(write(tmp_path / "s.yaml", **fields))
    assert info.value.field == field and str(tmp_path / "s.yaml") in str(info.value)


def test_image_size_measures_the_same_candidates_at_another_resolution(tmp_path):
    full = load_study(write(tmp_path / "full.yaml"))
    low = load_study(write(tmp_path / "low.yaml", image_size=32))
    assert low.archs == tuple(a.replace(image_size=32) for a in full.archs)  # the same candidates, fewer pixels
    assert all(cost(a).image_gmacs < cost(b).image_gmacs for a, b in zip(low.archs, full.archs))
    again = study_from_dict(low.resolved(), source=low.source)
    assert again.archs == low.archs and again.image_size == 32


def test_a_grid_takes_the_space_in_a_stratified_order_and_reads_back(tmp_path):
    study = load_study(write(tmp_path / "s.yaml", trials=12))
    keys = strata(list(study.space.enumerate()))
    by_arch = dict(zip([a.arch_id for a in study.space.enumerate()], keys))
    counts = collections.Counter((k, v) for a in study.archs for k, v in by_arch[a.arch_id].items())
    assert counts[("stages.0.block", "'mbconv'")] == counts[("stages.0.block", "'convnext'")] == 6
    assert {counts[("transformer.depth", d)] for d in ("2", "3", "4")} == {4}
    assert study_from_dict(study.resolved(), source=study.source).archs == study.archs


def test_new_fields_at_their_defaults_leave_the_resolved_form_as_it_was(tmp_path):
    resolved = load_study(write(tmp_path / "s.yaml")).resolved()
    assert "between" not in resolved["budget"] and "mask_ratio" not in resolved["train"]
    assert "repeats" not in resolved and "image_size" not in resolved


def test_the_searcher_enqueues_each_repeat_as_a_trial_and_the_database_keeps_its_seed(tmp_path):
    study = load_study(write(tmp_path / "s.yaml", trials=3, repeats={"seeds": [5], "fraction": 0.3}))
    store = ResultStore.create(tmp_path / "out", study)
    searcher = StudySearcher(study, store)
    proposed = [searcher.suggest(f"t{i}")["candidate"] for i in range(4)]
    assert [(c.arch, c.seed) for c in proposed] == [(study.archs[0], None), (study.archs[0], 5),
                                                    *((a, None) for a in study.archs[1:])]
    assert proposed[0].key != proposed[1].key and searcher.suggest("t4") == "FINISHED"
    first, repeat = proposed[0], proposed[1]
    for trial_id, candidate in (("t0", first), ("t1", repeat)):
        store.add_trial(trial_id, candidate.arch, candidate.cost, number=0, schedule=900, seed=candidate.seed)
        store.record_rung(trial_id, {"budget": 900, "samples_seen": 900, "zeroshot_top1": 0.5}, rung=2)
        store.update_trial(trial_id, status="completed")
    assert store.measured(first.arch.arch_id, 900).trial_id == "t0"
    assert store.measured(first.arch.arch_id, 900, 5).trial_id == "t1"
    assert store.measured(first.arch.arch_id, 900, 6) is None
    assert store.trial("t0")["seed"] is None and store.trial("t1")["seed"] == 5
    assert store.frame().seed.isna().tolist() == [True, False]
    assert searcher.ot_study.trials[1].params["seed"] == 1 and searcher.ot_study.trials[1].state == TrialState.RUNNING


def test_a_database_from_before_repeats_gains_the_seed_column(tmp_path):
    study = load_study(write(tmp_path / "s.yaml", trials=2))
    store = ResultStore.create(tmp_path / "out", study)
    store.close()
    with sqlite3.connect(store.path) as db:  # as a database from before repeats: without the column and its index
        db.execute("DROP INDEX nas_trials_status")
        db.execute("ALTER TABLE nas_trials DROP COLUMN seed")
    reopened = ResultStore(store.path)
    reopened.add_trial("t0", study.archs[0], cost(study.archs[0]).metrics(), schedule=900)
    assert reopened.trial("t0")["seed"] is None
