"""`StudySearcher`: Ray Tune's `Searcher` that asks an Optuna study for candidates and tells it what they measured.

It owns an `optuna.Study` in the results database and drives it with Optuna's public ask/tell interface:

- A proposal is the space's define-by-run `suggest` (or the index of a listed candidate, and with
  `schedule: per_budget` the index of the budget its run ends at), sampled by a seeded TPE, NSGA-II or random
  sampler; grid and fixed studies enqueue their candidates. Constraints are checked on the analytic cost
  (computed once, and passed to the trial in its config) and set on the Optuna trial.
- Sampled proposals are drawn in an in-memory copy of the study (`nas.search.drafts`): one that is infeasible, measured
  already or in training is told there (infeasible: PRUNED with a violated constraint, so that TPE learns to
  avoid it; measured: FAIL, which no sampler learns from, with `measured_by` naming the Optuna trial that holds
  its result) and never becomes a trial of the study; only a proposal to train does. The study's trials, and
  optuna-dashboard, are the trials that trained. A trial that ran out of memory or diverged is PRUNED with a
  violated `trainable` constraint.
  A finalist's confirmation (another seed of a measured arch, `confirm`) and a rerun of a run that did not
  learn (`repeats.not_learned`) are enqueued in the study itself, with their seed as a user attribute; a
  finalist is told COMPLETE too, marked with the user attribute `finalist`.
- Optuna is told a trial's result only at the budget it reached: a trial that ASHA stopped early is PRUNED
  (with its intermediate values when there is one objective), never COMPLETE with low-budget metrics.
- optuna-dashboard shows the search: the objectives are named, and each trial carries as user attributes its
  arch (`arch`, `arch_id`, `arch_name`), analytic cost (`image_gmacs`, ...), `schedule`, Ray Tune `trial_id`,
  `status` (`nas.status`), and the metrics it measured at each budget (`budget_<samples>`); with one
  objective, its value at each budget is also an intermediate value (Optuna takes none for several).

- Runs the study adds to its own: a run that did not learn is trained again with the next seed
  (`repeats.not_learned`), and once every other trial has ended, the best `confirm.top` candidates at the full
  budget are trained again with `confirm.seeds` more seeds (finalists, which no early stopping stops). Both are
  enqueued Optuna trials with the run's seed (`SEED_ATTR`) as a user attribute.
- A model-based sampler that has converged proposes measured archs again and again: `ProposalSampler` (an
  Optuna sampler around the study's) then draws the next proposals at random, so that the rest of a small
  space is still reached.
- A study with a `proxy` screens its candidates by a trained supernet's score (`nas.search.screen`): a list's
  runs are asked best-scored first and only the kept ones train; a sampled study trains the best of
  `proxy.pool` proposals, the others passed over in the drafts, PRUNED with their score.

Every Optuna trial is addressed by its number (`OptunaStudy`): Tune saves the searcher with its experiment,
and `restore` finds the Optuna trials still running by their numbers.
The results database is the driver session's (`nas.search.session`), never a path saved with the searcher.
"""

from __future__ import annotations

import logging
import pickle
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import optuna
from optuna.distributions import BaseDistribution
from optuna.trial import FrozenTrial, TrialState
from ray.tune.search import Searcher

from nas import status
from nas.arch import Arch
from nas.errors import ConfigError
from nas.metrics import SUPERNET_SCORE, TRAINED, ZERO_COST
from nas.results import Measured, ResultStore
from nas.search.drafts import Drafts
from nas.search.optuna_study import OptunaStudy
from nas.search.protocol import (
    CANDIDATE_KEY,
    NUMBER_KEY,
    SCHEDULE_KEY,
    STATUS_KEY,
    TRIAL_ID_KEY,
    Candidate,
    final_status,
    rung_metrics,
)
from nas.search.screen import SCREENED_BY_ATTR, SupernetScreen
from nas.study import Study

logger = logging.getLogger(__name__)

#: Consecutive proposals that may be infeasible or already measured before the searcher stops proposing.
MAX_PROPOSALS = 1000
#: Consecutive known proposals after which the next ones are drawn at random (a model-based sampler that has
#: converged on measured archs proposes them again and again: the rest of a small space must still be reached).
RANDOM_AFTER = 20
#: Finite spaces up to this size are enumerated once, so that the search ends when every feasible arch is known.
ENUMERATE_LIMIT = 100_000
#: The user attribute naming the Ray Tune trial that trains an Optuna trial; a proposal told at once has none.
TRIAL_ID_ATTR = "trial_id"
#: User attributes of an enqueued rerun or finalist: the seed it trains with, and whether it is a finalist.
SEED_ATTR, FINALIST_ATTR = "seed", "finalist"


@dataclass(frozen=True)
class Proposer:
    """The define-by-run space given to Optuna, and the supernet that scores its candidates (a `proxy`)."""

    study: Study
    screen: SupernetScreen | None = None

    def __call__(self, trial: optuna.Trial, candidate: Candidate | None = None) -> Candidate:
        """The candidate of the trial's parameters (`candidate`, when it is known already), with the space's
        constraints on its analytic cost set on the trial (<= 0: feasible), which TPE and NSGA-II take into
        account."""
        space, schedules = self.study.space, self.study.budget.schedules
        if self.study.archs:
            arch = self.study.archs[trial.suggest_int("candidate", 0, len(self.study.archs) - 1)]
        else:
            arch = space.suggest(trial)
        schedule = schedules[trial.suggest_int("schedule", 0, len(schedules) - 1)] if self.study.budget.per_budget \
            else schedules[0]
        seeds = (None, *self.study.repeats.seeds)
        seed = seeds[trial.suggest_int("seed", 0, len(seeds) - 1)] if self.study.repeats.seeds else None
        seed = trial.user_attrs.get(SEED_ATTR, seed)  # a rerun's or a finalist's
        candidate = candidate or self.candidate(arch, schedule, seed, bool(trial.user_attrs.get(FINALIST_ATTR)))
        trial.set_user_attr("arch", arch.to_json())
        trial.set_user_attr("arch_id", arch.arch_id)
        trial.set_user_attr("arch_name", arch.name())
        trial.set_user_attr("schedule", schedule)
        cost = space.cost(arch)
        for name, value in cost.metrics().items():
            trial.set_user_attr(name, value)
        for name in SUPERNET_SCORE:
            if name in candidate.cost:
                trial.set_user_attr(name, candidate.cost[name])
        for name, value in zip(space.constraints, space.constraint_values(arch, cost)):
            trial.set_constraint(name, value)
        return candidate

    def candidate(self, arch: Arch, schedule: int, seed: int | None, finalist: bool = False) -> Candidate:
        """What a trial of `arch` measures: its analytic cost, its zero-cost scores when the study optimises
        them (scored here, once), and a feasible arch's supernet score when the study has a `proxy`."""
        space = self.study.space
        cost = space.cost(arch)
        known = cost.metrics()
        violations = tuple(space.violations(arch, cost))
        zero_cost = [name for name in self.study.objectives if name in ZERO_COST]
        if zero_cost:
            from nas.proxies import zero_cost_scores

            known.update(zero_cost_scores(arch, names=tuple(zero_cost)))
        if self.screen is not None and not violations:
            known.update(self.screen.score(arch))
        return Candidate(arch, schedule, known, violations, seed, finalist)


def feasible_archs(study: Study) -> frozenset[str] | None:
    """The ids of every feasible arch of a finite, enumerable space (None for other spaces)."""
    space = study.space
    if study.archs or not space.finite or space.size() > ENUMERATE_LIMIT:
        return None
    return frozenset(arch.arch_id for arch in space.enumerate(feasible=True))


def make_sampler(study: Study) -> optuna.samplers.BaseSampler:
    """The study's sampler, seeded; grid and fixed studies enqueue every parameter, so theirs is never asked."""
    kind = {"tpe": optuna.samplers.TPESampler, "nsga2": optuna.samplers.NSGAIISampler}.get(
        study.algorithm, optuna.samplers.RandomSampler)
    try:
        return kind(seed=study.seed, **study.sampler)
    except TypeError as err:
        raise ConfigError(f"not an option of {kind.__name__}: {err}", source=study.source, field="sampler") from None


def enqueued_only(study: Study) -> optuna.samplers.BaseSampler:
    """The sampler of the study in the results database, whose every trial is asked with enqueued parameters
    (the drafts' proposal, a grid's or a list's candidate), so that it samples nothing. The proposals' sampler
    is another: a sampler serves one study (TPE and NSGA-II cache its search space), and it serves the drafts."""
    return optuna.samplers.RandomSampler(seed=study.seed)


class ProposalSampler(optuna.samplers.BaseSampler):
    """The study's sampler, until it keeps proposing what is known: after `random_after` proposals in a row that
    were told at once (infeasible, measured or in training: Optuna trials no Tune trial trains), the next are
    drawn at random, until one is trained. A model-based sampler that has converged on measured archs proposes
    them again and again; the rest of a small space must still be reached.

    Which sampler a trial gets is decided once, when Optuna starts it (`before_trial`), from the trials before
    it; every trial's end is told to the study's sampler (`after_trial`), which learns from them all."""

    def __init__(self, sampler: optuna.samplers.BaseSampler, random: optuna.samplers.RandomSampler,
                 random_after: int = RANDOM_AFTER):
        self.sampler = sampler
        self.random = random
        self.random_after = random_after
        self._chosen: tuple[tuple[str, int], optuna.samplers.BaseSampler] | None = None  # ((study, number), sampler)

    def _for(self, study: optuna.Study, trial: FrozenTrial) -> optuna.samplers.BaseSampler:
        if self._chosen is None or self._chosen[0] != (study.study_name, trial.number):
            known = 0
            for before in reversed(study.get_trials(deepcopy=False)[:trial.number]):
                new = TRIAL_ID_ATTR in before.user_attrs or SCREENED_BY_ATTR in before.user_attrs  # trained, screened
                if known >= self.random_after or not before.state.is_finished() or new:
                    break
                known += 1
            self._chosen = (study.study_name, trial.number), self.random if known >= self.random_after else self.sampler
        return self._chosen[1]

    def before_trial(self, study: optuna.Study, trial: FrozenTrial) -> None:
        self._for(study, trial).before_trial(study, trial)

    def infer_relative_search_space(self, study: optuna.Study, trial: FrozenTrial) -> dict[str, BaseDistribution]:
        return self._for(study, trial).infer_relative_search_space(study, trial)

    def sample_relative(self, study: optuna.Study, trial: FrozenTrial,
                        search_space: dict[str, BaseDistribution]) -> dict[str, Any]:
        return self._for(study, trial).sample_relative(study, trial, search_space)

    def sample_independent(self, study: optuna.Study, trial: FrozenTrial, param_name: str,
                           param_distribution: BaseDistribution) -> Any:
        return self._for(study, trial).sample_independent(study, trial, param_name, param_distribution)

    def after_trial(self, study: optuna.Study, trial: FrozenTrial, state: TrialState,
                    values: Sequence[float] | None) -> None:
        self.sampler.after_trial(study, trial, state, values)

    def reseed_rng(self) -> None:
        self.sampler.reseed_rng()
        self.random.reseed_rng()


class StudySearcher(Searcher):
    """Proposes only feasible, unmeasured candidates and tells Optuna the budget each reached. `screen`: the study's
    `proxy`, prepared (`SupernetScreen.prepare`); one that scores on first use when none is given."""

    def __init__(self, study: Study, store: ResultStore, screen: SupernetScreen | None = None):
        names, modes = list(study.objectives), list(study.objectives.values())
        super().__init__(metric=names if len(names) > 1 else names[0], mode=modes if len(modes) > 1 else modes[0])
        self.study = study
        self.store = store
        self.screen = screen if screen is not None or study.proxy is None else SupernetScreen(study)
        self.propose = Proposer(study, self.screen)
        self.feasible = feasible_archs(study)
        self.sampler = ProposalSampler(make_sampler(study), optuna.samplers.RandomSampler(seed=study.seed))
        self.asked: dict[str, int] = {}  # Tune trial id -> its Optuna trial's number
        self.in_flight: dict[str, tuple[str, int, int | None]] = {}  # Tune trial id -> Candidate.key in training
        self.reported: dict[str, set[int]] = {}  # Tune trial id -> budgets told to Optuna
        self.told: set[str] = set()
        self.finalists: set[str] = set()  # Tune ids of finalists' runs
        self.ended: dict[str, tuple[tuple[str, int, int | None], str, bool]] = {}  # Tune id -> key, end, finalist
        self.queued: dict[tuple[str, int, int | None], bool] = {}  # reruns and finalists enqueued -> finalist
        self.confirmed = False  # the finalists chosen (once)
        self.passed: list[FrozenTrial] = []  # proposals passed over in the drafts study (`_drafts`), oldest first
        self.drafts: Drafts | None = None  # built on the first proposal drawn in this driver session
        self.optuna = OptunaStudy(study, store, enqueued_only(study))
        self.ot_study = self.optuna.study
        per_budget = study.budget.per_budget  # every candidate at the smallest budget first, then the next
        seeds = (None, *study.repeats.seeds)
        for index, budget, seed in study.runs if self.screen is None else self.screen.order(study.runs):
            self.ot_study.enqueue_trial({"candidate": index, **({"schedule": budget} if per_budget else {}),
                                         **({"seed": seeds.index(seed)} if study.repeats.seeds else {})},
                                        skip_if_exists=True)

    # ---- Tune's interface ------------------------------------------------------------------------------------
    def suggest(self, trial_id: str) -> dict[str, Any] | str | None:
        lost = self._lost()
        if lost is not None:  # one of the study's trials already: handed out before any count
            return self._hand(trial_id, *lost)
        extra = self._queue_extras()
        if not extra and self._trials_spent():  # what a proposal tells Optuna adds no trial to the database
            return self._finished()
        drafts, pool, started = None, [], time.time()  # pool: proposals to train, screened by a proxy's supernet
        for _ in range(MAX_PROPOSALS):
            if not extra and self._exhausted(pool):
                return self._hand(trial_id, *self._screened(drafts, pool, started)) if pool else self._finished()
            if extra or self.study.archs:  # the study's queue: reruns and finalists first, a grid's or a list's
                proposal = self._proposal()
            else:
                drafts = self._drafts() if drafts is None else drafts
                proposal = self._draft(drafts, pool, started)
            extra = extra and self._waiting_extras()
            if proposal is not None:
                return self._hand(trial_id, *proposal)
        if pool:
            return self._hand(trial_id, *self._screened(drafts, pool, started))
        logger.warning("the last %d proposals were all infeasible or measured already: the search stops proposing",
                       MAX_PROPOSALS)
        return Searcher.FINISHED

    def _hand(self, trial_id: str, number: int, candidate: Candidate, continues: str | None = None) -> dict[str, Any]:
        """The config of Tune trial `trial_id`, which trains Optuna trial `number` (recorded under `continues`,
        a trial Ray Tune lost, when given)."""
        self.asked[trial_id] = number
        self.in_flight[trial_id] = candidate.key
        self.optuna.set_user_attr(number, TRIAL_ID_ATTR, continues or trial_id)
        self.optuna.set_user_attr(number, "status", status.RUNNING)
        if candidate.finalist:
            self.finalists.add(trial_id)
        return {CANDIDATE_KEY: candidate, NUMBER_KEY: number, **({TRIAL_ID_KEY: continues} if continues else {})}

    def on_trial_result(self, trial_id: str, result: dict[str, Any]) -> None:
        """What the trial measured at a budget, unless Optuna was told its end already (a trial that ended before
        the driver was killed and replays its results)."""
        number = self.asked.get(trial_id)
        if "budget" in result and number is not None and not self.optuna.state(number).is_finished():
            self._report(number, trial_id, result["budget"], result)

    def on_trial_complete(self, trial_id: str, result: dict[str, Any] | None = None, error: bool = False) -> None:
        number = self.asked.get(trial_id)
        key = self.in_flight.pop(trial_id, None)
        if number is None or trial_id in self.told:
            return
        if key is not None:
            self.ended[trial_id] = (key, final_status(result, error), trial_id in self.finalists)
        self.told.add(trial_id)
        if self.optuna.state(number).is_finished():
            return  # told before the driver was killed; Tune's experiment state did not know yet
        if result and "budget" in result:  # the rung where the scheduler stopped it reaches no on_trial_result
            self._report(number, trial_id, result["budget"], result)
        self._tell(number, final_status(result, error), result)

    def save(self, checkpoint_path: str) -> None:
        state = {"asked": self.asked, "in_flight": self.in_flight, "reported": self.reported, "told": self.told,
                 "ended": self.ended, "queued": self.queued, "confirmed": self.confirmed, "finalists": self.finalists,
                 "passed": self.passed}
        with open(checkpoint_path, "wb") as f:
            pickle.dump(state, f)

    def restore(self, checkpoint_path: str) -> None:
        with open(checkpoint_path, "rb") as f:
            state = pickle.load(f)
        self.asked, self.in_flight = state["asked"], state["in_flight"]
        self.reported, self.told = state["reported"], state["told"]
        self.ended, self.queued = state.get("ended", {}), state.get("queued", {})
        self.confirmed, self.finalists = state.get("confirmed", False), state.get("finalists", set())
        self.passed = state.get("passed", [])
        self.drafts = None

    def __getstate__(self) -> dict[str, Any]:
        """Without the results database and the Optuna study in it: `__setstate__` opens the driver session's. The
        study's sampler is made again (NSGA-II's does not pickle); the random one keeps its state."""
        return {k: v for k, v in self.__dict__.items()
                if k not in ("store", "optuna", "ot_study", "sampler", "drafts")} | {"random": self.sampler.random}

    def __setstate__(self, state: dict[str, Any]) -> None:
        from nas.search import session

        random = state.pop("random")
        self.__dict__.update(state)
        self.store = session.current().store
        self.sampler = ProposalSampler(make_sampler(self.study), random)
        self.optuna = OptunaStudy(self.study, self.store, enqueued_only(self.study))
        self.ot_study = self.optuna.study
        self.drafts = None

    # ---- runs the study adds: reruns of runs that did not learn, finalists -------------------------------------
    def _finished(self) -> str | None:
        """Nothing left to propose: wait (None) while a trial in flight may yet ask for a rerun or the finalists,
        else the search is over."""
        adds = self.study.repeats.not_learned or (self.study.confirm.top and not self.confirmed)
        return None if self.in_flight and adds else Searcher.FINISHED

    def _queue_extras(self) -> bool:
        """Enqueue the reruns and (once every other trial ended) the finalists due now; whether any waits."""
        if not (self.study.repeats.not_learned or self.study.confirm.top):
            return False  # a study that adds no runs has none to enqueue or waiting: no read of the queue
        for key, seed in self._reruns():
            self._enqueue(key, seed, finalist=False)
        searching = any(t not in self.finalists for t in self.in_flight)
        if self.study.confirm.top and not self.confirmed and not searching and \
                (self._trials_spent() or self._exhausted()):
            self.confirmed = True
            for key, seed in self._finalist_runs():
                self._enqueue(key, seed, finalist=True)
        return self._waiting_extras()

    def _waiting_extras(self) -> bool:
        """Whether a rerun or a finalist waits in the study's queue."""
        return any(SEED_ATTR in t.user_attrs for t in self.ot_study.get_trials(
            deepcopy=False, states=(TrialState.WAITING,)))

    def _seeds_used(self, arch_id: str, schedule: int) -> set[int]:
        own = {self.study.train.seed if t["seed"] is None else t["seed"] for t in self.store.trials()
               if t["arch_id"] == arch_id and t["schedule"] == schedule}
        return own | {self.study.train.seed if k[2] is None else k[2] for k in (*self.in_flight.values(), *self.queued)
                      if k[:2] == (arch_id, schedule)}

    def _reruns(self) -> list[tuple[tuple[str, int, int | None], int]]:
        """(key, seed) of each run that did not learn and may be rerun: `repeats.not_learned` per candidate and
        schedule, each with the next seed no run of it used."""
        limit = self.study.repeats.not_learned
        if not limit:
            return []
        due = []
        for key, end, _ in list(self.ended.values()):
            if end != status.DID_NOT_LEARN:
                continue
            failed = sum(k[:2] == key[:2] and e == status.DID_NOT_LEARN for k, e, _ in self.ended.values())
            reruns = sum(k[:2] == key[:2] and not finalist for k, finalist in self.queued.items())
            if reruns < min(failed, limit):
                due.append((key, max(self._seeds_used(*key[:2])) + 1))
        return due

    def _finalist_runs(self) -> list[tuple[tuple[str, int, int | None], int]]:
        """(key, seed) of the finalists' runs: the best `confirm.top` candidates measured at the full budget (mean
        over the seeds that learned), each with `confirm.seeds` seeds beyond every seed the study uses."""
        metric, way = next(iter(self.study.objectives.items()))
        schedule = self.study.budget.schedules[-1]
        failed = {t for t, (_, end, _) in self.ended.items() if end != status.COMPLETED}
        frame = self.store.frame(budget=self.study.budget.max_samples, status=status.MEASURED)
        if frame.empty or metric not in frame:
            return []
        frame = frame[~frame.trial_id.isin(failed) & (frame.schedule == schedule)].dropna(subset=[metric])
        means = frame.groupby("arch_id")[metric].mean().sort_values(ascending=way == "min", kind="stable")
        runs = []
        for arch_id in means.index[:self.study.confirm.top]:
            used, seed = self._seeds_used(arch_id, schedule), max(self.study.used_seeds)
            for _ in range(self.study.confirm.seeds):
                seed = next(s for s in range(seed + 1, seed + 2 + len(used)) if s not in used)
                runs.append(((arch_id, schedule, None), seed))
        return runs

    def _enqueue(self, key: tuple[str, int, int | None], seed: int, finalist: bool) -> None:
        """An Optuna trial with the parameters of the run `key` and `seed` (as a user attribute)."""
        row = next(t for t in self.store.trials()
                   if (t["arch_id"], t["schedule"]) == key[:2] and t["number"] is not None)
        params = dict(self.ot_study.trials[row["number"]].params)
        if "seed" in params:
            params["seed"] = 0
        self.ot_study.enqueue_trial(params, user_attrs={SEED_ATTR: seed, **({FINALIST_ATTR: True} if finalist else {})})
        self.queued[(*key[:2], seed)] = finalist

    # ---- deciding what to train ------------------------------------------------------------------------------
    def _proposal(self) -> tuple[int, Candidate] | None:
        """The next enqueued candidate of a grid or fixed study (each is an Optuna trial already), unless it is
        known: then told to Optuna at once, and None. A trial of the study that no draft stands for: the drafts
        are built again when next drawn in."""
        self.drafts = None
        ot_trial = self.ot_study.ask()
        number, candidate = ot_trial.number, self.propose(ot_trial)
        return None if self._skipped(number, candidate) else (number, candidate)

    def _drafts(self) -> optuna.Study:
        """The in-memory copy of the study in which sampled proposals are drawn (`_draft`, `nas.search.drafts`):
        only a proposal that must be trained becomes a trial of the study, so that its trials (and
        optuna-dashboard) are the trials that trained."""
        if self.drafts is None:
            self.drafts = Drafts(self.optuna, self.sampler, self.passed)
        return self.drafts.current()

    def _draft(self, drafts: optuna.Study, pool: list[tuple[optuna.Trial, Candidate]],
               started: float) -> tuple[int, Candidate] | None:
        """A proposal drawn in `drafts`: a new trial of the study (with the proposal's parameters) when it must
        be trained; else passed over, told as it would have been in the study, there only, and None (unless it
        carries a result Optuna was never told: then the study is told, on a trial of its own). With a proxy, a
        proposal to train joins the `pool`, and the best of a full pool becomes the trial (`_screened`)."""
        draft = drafts.ask()
        candidate = self.propose(draft)
        known = self._known(candidate)
        if known is None and any(other.key == candidate.key for _, other in pool):
            known = TrialState.FAIL, {"skipped": "duplicate: proposed twice in one screening"}
        if known is None and self.screen is not None:
            pool.append((draft, candidate))
            return self._screened(drafts, pool, started) if len(pool) >= self.screen.proxy.pool else None
        if known is None or isinstance(known, Measured):
            number = self._enter(draft)
            if known is None:
                return number, candidate
            self._tell_measured(number, candidate, known)
            return None
        state, attrs = known
        for key, value in attrs.items():
            draft.set_user_attr(key, value)
        self.passed.append(drafts.tell(draft, state=state))
        return None

    def _enter(self, draft: optuna.Trial) -> int:
        """The number of a new trial of the study made from `draft` (its parameters and attributes, in one
        transaction), which the draft stands for from then on."""
        number = self.optuna.add(self.drafts.trial(draft))
        self.drafts.adopt(draft, number)
        return number

    def _screened(self, drafts: optuna.Study, pool: list[tuple[optuna.Trial, Candidate]],
                  started: float) -> tuple[int, Candidate]:
        """The best-scored proposal of the `pool` as a new trial of the study; the others told in `drafts`, PRUNED
        with their score and the trial's number (`nas.search.screen`). The pool is emptied."""
        best = self.screen.best([candidate.cost for _, candidate in pool])
        draft, candidate = pool[best]
        number = self._enter(draft)
        for other, passed in (entry for i, entry in enumerate(pool) if i != best):
            for key, value in self.screen.passed_over(passed.cost, candidate.cost, number).items():
                other.set_user_attr(key, value)
            self.passed.append(drafts.tell(other, state=TrialState.PRUNED))
        self.screen.report(candidate.arch, candidate.cost, len(pool), number, started)
        pool.clear()
        return number, candidate

    def _screened_out(self) -> dict[str, int]:
        """arch id -> the Optuna number of the trial it was screened out for, of a sampled study's proposals."""
        return {t.user_attrs["arch_id"]: t.user_attrs[SCREENED_BY_ATTR] for t in self.passed
                if SCREENED_BY_ATTR in t.user_attrs}

    def _lost(self) -> tuple[int, Candidate, str] | None:
        """A trial that a killed driver started and Ray Tune never recorded (its experiment state was saved before
        the trial began), and none of this search has handed out again: in the results database, unfinished,
        with an Optuna trial this searcher never asked. It continues under its own id and Optuna number, from
        its newest checkpoint."""
        handed = set(self.asked.values())
        for row in self.store.trials(status=(status.PENDING, status.INTERRUPTED)):
            if row["number"] is not None and row["number"] not in handed and \
                    not self.optuna.state(row["number"]).is_finished():
                arch = Arch.from_json(row["arch"])
                return row["number"], self.propose.candidate(arch, row["schedule"], row["seed"]), row["trial_id"]
        return None

    def _trials_spent(self) -> bool:
        """The study's `trials` are the trials the database holds with a result and those in training: Ray Tune's
        own count, restored from its last saved state, misses a trial that ended just before a driver was
        killed, and would train one more."""
        if self.study.archs:
            return False
        searching = {t for t, key in self.in_flight.items() if key[2] is None}  # some measured already (a replay)
        measured = self.store.count(status.KNOWN)
        return measured + len(searching) - self.store.count(status.KNOWN, among=searching) >= self.study.trials

    def _exhausted(self, pool: list[tuple[optuna.Trial, Candidate]] = ()) -> bool:
        """No candidate left: a grid or fixed list all asked, or every feasible arch of a finite space known, in
        training, screened out or in the screening `pool`."""
        if self.study.archs:
            return not self.ot_study.get_trials(deepcopy=False, states=(TrialState.WAITING,))
        if self.feasible is None:
            return False
        taken = {key[0] for key in self.in_flight.values()} | {candidate.arch.arch_id for _, candidate in pool}
        return self.feasible <= taken | self.store.arch_ids(status.KNOWN) | set(self._screened_out())

    def _known(self, candidate: Candidate) -> tuple[TrialState, dict[str, Any]] | Measured | None:
        """What is known of a candidate that needs no training: how its proposal is told (state, user
        attributes), or a measurement Optuna was never told; None when it must be trained."""
        if candidate.violations:
            return TrialState.PRUNED, {"skipped": f"infeasible: {'; '.join(candidate.violations)}"}
        training = next((t for t, key in self.in_flight.items() if key == candidate.key), None)
        if training is not None:
            attrs = {"skipped": f"duplicate: the arch is being trained by trial {training}"}
            if training in self.asked:
                attrs["duplicate_of"] = self.asked[training]
            return TrialState.FAIL, attrs
        if self.screen is not None and self.study.archs and not self.screen.keeps(candidate.arch):
            return TrialState.PRUNED, self.screen.screened_out(candidate.arch)
        screened = self._screened_out().get(candidate.arch.arch_id)
        if screened is not None:
            return TrialState.FAIL, {"skipped": f"screened out: for trial {screened}"}
        measured = self.store.measured(*candidate.key)
        if measured is None or measured.status not in status.KNOWN:
            return None
        original = (self.store.trial(measured.trial_id) or {}).get("number")
        if original is not None and self.optuna.finished(original):  # Optuna knows the result: told once, there
            return TrialState.FAIL, {"skipped": f"measured: by trial {measured.trial_id}", "measured_by": original}
        return measured

    def _skipped(self, number: int, candidate: Candidate) -> bool:
        """Tell Optuna at once what is known about the candidate of trial `number`; False when it must be
        trained."""
        known = self._known(candidate)
        if known is None:
            return False
        if isinstance(known, Measured):
            self._tell_measured(number, candidate, known)
            return True
        state, attrs = known
        for key, value in attrs.items():
            self.optuna.set_user_attr(number, key, value)
        self.optuna.tell(number, state=state)
        return True

    def _tell_measured(self, number: int, candidate: Candidate, measured: Measured) -> None:
        """A result Optuna was never told (its trial is not in this study), told on trial `number`."""
        self.optuna.set_user_attr(number, "skipped", f"measured: by trial {measured.trial_id}")
        for rung in measured.rungs:
            self._report(number, None, rung["budget"], rung["metrics"])
        last = {**measured.rungs[-1]["metrics"], **candidate.cost, STATUS_KEY: measured.status,
                SCHEDULE_KEY: candidate.schedule}
        self._tell(number, measured.status, last)

    def _report(self, number: int, trial_id: str | None, budget: int, metrics: Mapping[str, Any]) -> None:
        """What a trial measured at a budget, as a user attribute, and as an intermediate value with one objective
        (Optuna takes none for several)."""
        reported = self.reported.setdefault(trial_id, set()) if trial_id else set()
        if budget in reported:
            return
        # optuna-dashboard shows 1,024 characters of an attribute: every trained metric, the objectives' intervals
        # and eval-set sizes, and where the rung stands, to six digits
        kept = {*TRAINED, "budget", "samples_seen", "wall_s",
                *(f"{name}_{part}" for name in self.study.objectives for part in ("n", "low", "high"))}
        shown = {k: float(f"{v:.6g}") if isinstance(v, float) else v
                 for k, v in rung_metrics(dict(metrics)).items() if k in kept}
        self.optuna.set_user_attr(number, f"budget_{int(budget)}", shown)
        if isinstance(self.metric, str) and self.metric in metrics:
            self.optuna.report(number, metrics[self.metric], step=int(budget))
        reported.add(budget)

    def _tell(self, number: int, end: str, result: Mapping[str, Any] | None) -> None:
        """COMPLETE only at the full budget; an early stop is PRUNED; oom/diverged are PRUNED and violate a
        `trainable` constraint, so that samplers learn to avoid such archs as they avoid infeasible ones."""
        self.optuna.set_user_attr(number, "status", end)
        if end in status.UNTRAINABLE:
            self.optuna.set_constraint(number, "trainable", 1.0)
        if end == status.COMPLETED:
            values = [result[name] for name in self.study.objectives]
            self.optuna.tell(number, values if len(values) > 1 else values[0])
        elif end == status.FAILED:
            self.optuna.tell(number, state=TrialState.FAIL)
        else:
            self.optuna.tell(number, state=TrialState.PRUNED)
