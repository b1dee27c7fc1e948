"""The search driver's cost per result does not grow with the trial count, and its caches change no search.

No Ray needed: the searcher on a real Optuna study in a real results database, driven through a search by a
deterministic stand-in of Ray Tune (`simulate`): trials start while fewer than `concurrency` run, each reports
its rungs in turn (the stand-in's curve), the recorder's rows are written as the `Recorder` writes them, and a
trial worse than the median of its rung so far is stopped there (as ASHA would; the scheduler is not under
test). The same seeded simulation gives the same proposals every time, so the searcher's proposals and what it
told Optuna are compared with those the searcher made before its caches (`tests/data/driver_scale_search.json`,
recorded at the commit before them). NSGA-II's generations, which the drafts study once lost, are tested on a
search that completes several.
"""

from __future__ import annotations

import cProfile
import hashlib
import itertools
import json
import pstats
import statistics
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from optuna.trial import TrialState
from search_helpers import SPACE, write_study

from nas import status
from nas.results import ResultStore
from nas.search.protocol import CANDIDATE_KEY, NUMBER_KEY, SCHEDULE_KEY, STATUS_KEY
from nas.search.searcher import StudySearcher
from nas.search.stand_in import StandInCurve
from nas.study import Study, load_study

#: 48 towers (SPACE widened), so that a model-based sampler proposes measured and infeasible archs again.
WIDE = {**SPACE, "transformer": {**SPACE["transformer"], "width": [32, 64, 96, 128], "depth": [1, 2, 3]}}
RECORDED = Path(__file__).parent / "data" / "driver_scale_search.json"


def scale_study(directory: Path, data: Path, algorithm: str, trials: int, **fields: Any) -> Study:
    """A study of WIDE with half of it infeasible (by image GMACs), or of the space in `fields`."""
    if "space" not in fields:
        space = load_study(write_study(directory, data, space=WIDE)).space
        gmacs = statistics.median(space.measures(a)["image_gmacs"] for a in space.enumerate())
        fields = {"space": WIDE, "constraints": {"image_gmacs": {"max": gmacs}}, **fields}
    objectives = {"loss": "min", "image_gmacs": "min"} if algorithm == "nsga2" else {"loss": "min"}
    return load_study(write_study(directory, data, algorithm=algorithm, trials=trials, objectives=objectives,
                                  **fields))


def searcher_of(study: Study, directory: Path) -> tuple[StudySearcher, ResultStore]:
    """A searcher of `study` and its results database (in `directory`, made if it is not there)."""
    store = ResultStore.open(directory) if (directory / "study.db").exists() else ResultStore.create(directory, study)
    return StudySearcher(study, store), store


def simulate(searcher: StudySearcher, store: ResultStore, concurrency: int,
             profile: cProfile.Profile | None = None, warm: int = 0) -> list[Any]:
    """Drive `searcher` through its search; the proposals, in order (the trial's id, number and key). With
    `profile`, profile all that follows the first `warm` proposals."""
    study, ids = searcher.study, (f"t{i:05d}" for i in itertools.count(len(store.trials())))  # unique, as Tune's
    proposals, running, measured, finished = [], {}, {}, False
    while True:
        while len(running) < concurrency and not finished:
            trial_id = next(ids)
            config = searcher.suggest(trial_id)
            if not isinstance(config, dict):  # None: nothing now (Ray Tune asks again later); else finished
                finished = config is not None
                break
            candidate = config[CANDIDATE_KEY]
            proposals.append([trial_id, config[NUMBER_KEY], *candidate.key])
            if profile is not None and len(proposals) == warm:
                profile.enable()
            store.add_trial(trial_id, candidate.arch, candidate.cost, number=config[NUMBER_KEY],
                            schedule=candidate.schedule, seed=candidate.seed)
            store.start_attempt(trial_id)
            running[trial_id] = (candidate, 0)
        if not running:
            if profile is not None:
                profile.disable()
            return proposals
        trial_id, (candidate, rung) = next(iter(running.items()))
        del running[trial_id]
        budget = study.budget.rungs[rung]
        loss = StandInCurve.of(candidate.arch.arch_id, study.train.seed).loss(budget)
        result = {"budget": budget, "samples_seen": budget, "loss": loss, "wall_s": 1.0 + rung,
                  SCHEDULE_KEY: candidate.schedule, STATUS_KEY: status.RUNNING, **candidate.cost}
        store.record_rung(trial_id, result, rung=rung)
        measured.setdefault(budget, []).append(loss)
        if budget < candidate.schedule and loss <= statistics.median(measured[budget]):
            searcher.on_trial_result(trial_id, result)
            running[trial_id] = (candidate, rung + 1)
            continue
        end = status.COMPLETED if budget >= candidate.schedule else status.STOPPED_EARLY
        store.update_trial(trial_id, status=end, ended_at=float(len(proposals)))
        searcher.on_trial_complete(trial_id, result)


def told(searcher: StudySearcher) -> list[list[Any]]:
    """What the searcher told Optuna: each trial's number, state, values, parameters and attributes."""
    return [[t.number, t.state.name, t.values, t.params, t.user_attrs, t.system_attrs, t.intermediate_values]
            for t in searcher.ot_study.get_trials(deepcopy=False)]


def search_record(searcher: StudySearcher, proposals: list[Any]) -> dict[str, Any]:
    """The proposals, and a digest of what the searcher told Optuna and of the proposals it passed over."""
    passed = [[t.state.name, t.params, t.user_attrs] for t in searcher.passed]
    told_text = json.dumps({"told": told(searcher), "passed": passed}, sort_keys=True)
    return json.loads(json.dumps({"proposals": proposals, "passed": len(passed),
                                  "told_sha256": hashlib.sha256(told_text.encode()).hexdigest()}))


@pytest.mark.parametrize("algorithm, trials", [("tpe", 20), ("nsga2", 12)])
def test_the_searchers_caches_change_no_search(search_data, tmp_path, algorithm, trials):
    """The same seeded search proposes what it proposed, and tells Optuna what it told, before the drafts study
    was kept between proposals and the trial counts were read from an index (TPE passes over 305 proposals of
    measured or infeasible archs, drawing the later ones at random; NSGA-II's are of several objectives).
    What was told was recorded again when the study's trials began to carry the system attributes the drafts'
    sampler set (TPE's constant-liar parameters on 4 trials, NSGA-II's generation on 12): the same proposals, and
    without those attributes the same digest. NSGA-II at its default population of 50 completes no generation in
    12 trials: its generations are tested below."""
    searcher, store = searcher_of(scale_study(tmp_path, search_data, algorithm, trials), tmp_path / "out")
    recorded = json.loads(RECORDED.read_text())[algorithm]
    assert search_record(searcher, simulate(searcher, store, concurrency=6)) == recorded


#: A study of the shipped vitamin space (16,000 towers: random proposals do not meet) at one rung, so that a
#: trial's work does not depend on the trials before it through early stopping.
ONE_RUNG = {"space": "vitamin", "budget": {"min_samples": 256, "max_samples": 256, "reduction_factor": 2}}


def work(searcher: StudySearcher, store: ResultStore) -> tuple[int, list[str]]:
    """The Python calls (cProfile's count, deterministic) of `simulate` driving `searcher` to its end after its
    first `CONCURRENCY` proposals (what a driver session does once: the drafts study built, Optuna's trials
    read), and the archs it proposed."""
    profile = cProfile.Profile()
    proposals = simulate(searcher, store, CONCURRENCY, profile, warm=CONCURRENCY)
    return pstats.Stats(profile).total_calls, [proposal[2] for proposal in proposals]


CONCURRENCY = 4


def test_the_work_per_trial_does_not_grow_with_the_trials_before_it(search_data, tmp_path):
    """The same ten trials (the same seeded random proposals, after four) cost the searcher and its databases
    the same work after 60 trials of another driver session as in an empty study. Each proposal used to copy
    every trial of the search into the drafts study and read Optuna's trials again: those ten trials took
    1,311,000 calls alone and 2,595,000 after 60 (1.98x: an O(n) cost per result); now 969,000 and 968,000."""
    alone, proposed = work(*searcher_of(scale_study(tmp_path / "alone", search_data, "random", 14, **ONE_RUNG),
                                        tmp_path / "alone" / "out"))
    study = scale_study(tmp_path / "later", search_data, "random", 60, **ONE_RUNG, seed=2)
    simulate(*searcher_of(study, tmp_path / "later" / "out"), CONCURRENCY)  # other proposals: another seed
    later, proposed_later = work(*searcher_of(replace(study, seed=0, trials=74), tmp_path / "later" / "out"))
    assert proposed_later == proposed and len(proposed) == 14
    assert later < 1.15 * alone, (later, alone)


#: Where NSGA-II keeps a trial's generation (`optuna.samplers.NSGAIISampler`: a system attribute of the trial).
GENERATION = "NSGAIISampler:generation"


def test_nsga2_proposes_children_of_earlier_generations_and_resumes_them(search_data, tmp_path):
    """A seeded NSGA-II search (population 4, of the vitamin space at one rung: every trial ends COMPLETE) goes
    through its generations as in a plain Optuna study: each trial the sampler proposed carries its generation in
    the study, generation 2 is reached, and with no mutation every parameter NSGA-II crosses over is, in a later
    generation's trial, one of its parents' (the generation before's elite); a driver session started again on
    the same study continues from the last generation instead of starting at 0. The drafts study once copied the
    study's trials without their generations: NSGA-II saw every trial in generation 0, and its search was the
    random sampler's, arch for arch."""
    def search(algorithm: str, trials: int, directory: Path) -> tuple[StudySearcher, list[str]]:
        study = scale_study(tmp_path, search_data, algorithm, trials, **ONE_RUNG,
                            sampler={"population_size": 4, "mutation_prob": 0.0} if algorithm == "nsga2" else {})
        searcher, store = searcher_of(study, directory)
        return searcher, [proposal[2] for proposal in simulate(searcher, store, concurrency=2)]

    searcher, proposed = search("nsga2", 12, tmp_path / "nsga2")
    assert proposed != search("random", 12, tmp_path / "random")[1]
    sampler, drafts = searcher.sampler.sampler, searcher.drafts.study
    generations = [t.system_attrs.get(GENERATION) for t in searcher.ot_study.trials]
    reached = max(g for g in generations if g is not None)
    assert reached >= 2, generations
    for draft in drafts.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)):
        generation = draft.system_attrs.get(GENERATION)
        if generation:
            parents = sampler.get_parent_population(drafts, generation)
            crossed = sampler.infer_relative_search_space(drafts, draft)  # the others are drawn independently
            assert parents and crossed and all(draft.params[name] in {parent.params[name] for parent in parents}
                                               for name in crossed), (draft.number, draft.params)

    resumed, _ = search("nsga2", 14, tmp_path / "nsga2")
    later = [t.system_attrs.get(GENERATION) for t in resumed.ot_study.trials[len(generations):]]
    assert len(later) == 2 and None not in later and min(later) >= reached, (generations, later)
