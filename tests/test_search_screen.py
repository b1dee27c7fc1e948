"""A study's `proxy` (nas.search.screen): a trained supernet's score orders and filters a list's candidates and
pre-screens a sampled study's proposals; every trained trial stores its score, which `results` exports and
`fidelity` ranks; a bad section, or a candidate the supernet does not hold, exits 2 naming the field."""

from __future__ import annotations

import csv
import pickle
import sqlite3
import subprocess
import sys

import optuna
import pytest
import yaml
from optuna.trial import TrialState
from search_helpers import SPACE, write_study
from test_supernet import trained  # noqa: F401  (a supernet of SPACE, trained for two sandwich steps)

from nas.errors import ConfigError
from nas.metrics import SUPERNET, SUPERNET_SCORE
from nas.results import ResultStore
from nas.search.protocol import CANDIDATE_KEY, NUMBER_KEY
from nas.search.screen import SCREENED_BY_ATTR, SupernetScreen
from nas.search.searcher import StudySearcher
from nas.study import Proxy, load_study, study_from_dict
from nas.supernet import load_supernet

#: The eval images of the search tests' zero-shot set: the n of every score's interval.
EVAL_IMAGES = 160


def _proxy_study(tmp_path, search_data, run, keep, **fields):
    return write_study(tmp_path, search_data, proxy={"supernet": str(run), "keep": keep},
                       budget={"min_samples": 64, "max_samples": 64, "early_stopping": "none"}, **fields)


def _check_score(values) -> None:
    score, low, high, n = (values[name] for name in SUPERNET_SCORE)
    assert 0 <= low <= score <= high <= 1 and n == EVAL_IMAGES


@pytest.mark.parametrize(("proxy", "field", "message"), [
    ({"supernet": "sn", "keep": 0}, "proxy.keep", r"a fraction in \(0, 1\]"),
    ({"supernet": "sn", "keep": 1.5}, "proxy.keep", r"a fraction in \(0, 1\]"),
    ({"supernet": "sn", "keep": True}, "proxy.keep", r"a fraction in \(0, 1\]"),
    ({"supernet": "", "keep": 0.5}, "proxy.supernet", "the path of a supernet run"),
    ({"keep": 0.5}, "proxy", "supernet"),
    ({"supernet": "sn", "top": 3}, "proxy", "unknown field"),
    ("sn", "proxy", "expected a mapping"),
])
def test_a_bad_proxy_exits_with_code_2_naming_the_field(tmp_path, search_data, run_cli, proxy, field, message):
    path = write_study(tmp_path, search_data, proxy=proxy)
    with pytest.raises(ConfigError, match=message) as info:
        load_study(path)
    assert info.value.field == field
    run = run_cli("search", path, "--out", tmp_path / "out")
    assert run.returncode == 2 and f"{path}: {field}: " in run.stderr and not (tmp_path / "out").exists()


def test_the_proxy_needs_a_zero_shot_set_and_reads_back_resolved(tmp_path, search_data):
    path = write_study(tmp_path, search_data, proxy={"supernet": "../sn", "keep": 0.3})
    study = load_study(path)
    assert study.proxy == Proxy(str((tmp_path.parent / "sn").resolve()), 0.3)
    assert (study.proxy.kept(6), study.proxy.kept(1), study.proxy.pool, Proxy("x").pool) == (2, 1, 4, 1)
    assert study_from_dict(study.resolved(), source="db").proxy == study.proxy
    raw = yaml.safe_load(path.read_text())
    raw["data"].pop("zeroshot")
    path.write_text(yaml.safe_dump(raw))
    with pytest.raises(ConfigError, match="zero-shot set") as info:
        load_study(path)
    assert info.value.field == "data.zeroshot"


def test_a_candidate_the_supernet_does_not_hold_is_refused_before_anything_is_written(
        trained, tmp_path, search_data, run_cli):  # noqa: F811
    held = load_supernet(trained).candidates[0]
    outside = held.replace(image_size=64)  # the supernet is at 32 px
    path = _proxy_study(tmp_path, search_data, trained, 1, algorithm="fixed",
                        archs={"in": held.to_dict(), "out": outside.to_dict()})
    run = run_cli("search", path, "--out", tmp_path / "out")
    assert run.returncode == 2 and len(run.stderr.strip().splitlines()) == 1, run.stderr
    assert f"proxy.supernet: {outside.name()} (out) is no subnet of the supernet in {trained}" in run.stderr
    assert "64 px" in run.stderr and not (tmp_path / "out").exists()
    wider = {**SPACE, "transformer": {**SPACE["transformer"], "width": [32, 64, 96]}}
    sampled = load_study(_proxy_study(tmp_path / "sampled", search_data, trained, 0.5, space=wider))
    with pytest.raises(ConfigError, match=r"a feasible arch of the space\) and 7 more is no subnet") as info:
        SupernetScreen.prepare(sampled, progress=False)
    assert info.value.field == "proxy.supernet"


@pytest.mark.ray
def test_a_listed_study_trains_only_its_best_scored_candidates_best_first(
        trained, local_ray, tmp_path, search_data, run_cli):  # noqa: F811
    """Six subnets, keep 0.5: the three the supernet scores best train, best first (their Optuna numbers); the
    others are Optuna trials told PRUNED at once with their score. Every trained trial stores its score, the
    results CSV has it, and `fidelity` ranks it without --supernet."""
    from nas.search import search

    archs = load_supernet(trained).candidates[::3]
    study = load_study(_proxy_study(tmp_path, search_data, trained, 0.5, algorithm="fixed", trials=6,
                                    archs=[a.to_dict() for a in archs]))
    screen = SupernetScreen.prepare(study, progress=False)
    ranked = sorted(archs, key=lambda a: -screen.score(a)[SUPERNET])
    store = search(study, tmp_path / "out")
    trials = sorted(store.trials(), key=lambda t: t["number"])
    assert [t["arch_id"] for t in trials] == [a.arch_id for a in ranked[:3]]
    assert all(t["status"] == "completed" for t in trials)
    for trial in trials:
        _check_score(trial)
        assert trial[SUPERNET] == screen.score(next(a for a in archs if a.arch_id == trial["arch_id"]))[SUPERNET]
    told = optuna.load_study(study_name="test", storage=store.url).trials
    assert len(told) == 6 and [t.state for t in told] == [TrialState.COMPLETE] * 3 + [TrialState.PRUNED] * 3
    assert [t.user_attrs["arch_id"] for t in told] == [a.arch_id for a in ranked]
    for trial in told:
        _check_score(trial.user_attrs)
    assert all(t.user_attrs["skipped"].startswith("screened out: supernet_top1") for t in told[3:])

    run = run_cli("results", tmp_path / "out", "--csv", tmp_path / "results.csv")
    assert run.returncode == 0, run.stderr
    with open(tmp_path / "results.csv") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 3 and all(float(r[f"{SUPERNET}_low"]) <= float(r[SUPERNET]) for r in rows)
    run = run_cli("fidelity", tmp_path / "out", "--no-proxies")
    assert run.returncode == 0, run.stderr
    scored = [line.split() for line in run.stdout.splitlines() if line.startswith(SUPERNET)]
    assert scored and scored[0][1:3] == ["64", "3"]  # the budget, and the three trained candidates


def test_a_sampled_study_trains_the_best_of_each_pool_of_proposals(trained, tmp_path, search_data):  # noqa: F811
    """No Ray needed: the searcher on a real Optuna study in a real results database. keep 0.34: each trial is
    the best-scored of three proposals; the other two are passed over in the drafts, PRUNED with their score and
    the trial's number, and the study's trials are those that train."""
    study = load_study(_proxy_study(tmp_path, search_data, trained, 0.34, trials=2))
    store = ResultStore.create(tmp_path / "out", study)
    searcher = StudySearcher(study, store)  # its screen scores on first use
    for number, trial_id in enumerate(("t0", "t1")):
        config = searcher.suggest(trial_id)
        candidate = config[CANDIDATE_KEY]
        assert config[NUMBER_KEY] == number
        _check_score(candidate.cost)
        store.add_trial(trial_id, candidate.arch, candidate.cost, number=number, schedule=64)
        _check_score(store.trial(trial_id))
        _check_score(searcher.ot_study.trials[number].user_attrs)
        passed = [t for t in searcher.passed if t.user_attrs.get(SCREENED_BY_ATTR) == number]
        assert len(passed) == 2 and all(t.state == TrialState.PRUNED for t in passed)
        for trial in passed:
            _check_score(trial.user_attrs)
            assert trial.user_attrs[SUPERNET] <= candidate.cost[SUPERNET]
            assert trial.user_attrs["arch_id"] != candidate.arch.arch_id
    assert len(searcher.ot_study.trials) == 2  # the passed-over proposals are no trials of the study
    # an arch screened out is told at once when proposed again, never trained
    out = next(t for t in searcher.passed if SCREENED_BY_ATTR in t.user_attrs)
    again = next(a for a in study.space.enumerate() if a.arch_id == out.user_attrs["arch_id"])
    state, attrs = searcher._known(searcher.propose.candidate(again, 64, None))
    assert state == TrialState.FAIL
    assert attrs["skipped"] == f"screened out: for trial {out.user_attrs[SCREENED_BY_ATTR]}"
    # Ray Tune saves the searcher with its screen: the scores, not the supernet
    saved = pickle.loads(pickle.dumps(searcher.screen))
    assert saved.scores == searcher.screen.scores and saved._scorer is None


def test_a_database_from_before_proxies_gains_the_score_columns(tmp_path, search_data):
    study = load_study(write_study(tmp_path, search_data))
    store = ResultStore.create(tmp_path / "out", study)
    store.close()
    with sqlite3.connect(store.path) as db:
        for name in SUPERNET_SCORE:
            db.execute(f"ALTER TABLE nas_trials DROP COLUMN {name}")
    assert ResultStore(store.path, readonly=True).frame()[SUPERNET].empty  # read as it is
    reopened = ResultStore(store.path)
    arch = study.space.sample(0)
    reopened.add_trial("t0", arch, {**study.space.cost(arch).metrics(), SUPERNET: 0.5}, schedule=256)
    assert reopened.trial("t0")[SUPERNET] == 0.5 and reopened.trial("t0")[f"{SUPERNET}_n"] is None


def test_the_driver_imports_torch_only_for_a_proxy():
    """The screen is imported with the driver; its scorer, and torch with it, only when a study has a proxy."""
    code = "import sys, nas.search.driver, nas.search.screen; sys.exit('torch' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code]).returncode == 0
