"""The replay benchmark (benchmarks/search_efficiency.py) on a tiny table made here: candidates of the tiny space
whose learning curves are power laws, the best a large tower that starts slow (a crossover)."""

from __future__ import annotations

import math
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from nas.cost import cost
from nas.errors import ConfigError
from nas.stratified import stratified_order
from nas.study import Study, load_study

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "benchmarks"))
import search_efficiency as se  # noqa: E402
import tabular  # noqa: E402

QUICKSTART = REPO / "studies" / "quickstart.yaml"
RUNGS = load_study(QUICKSTART).budget.rungs  # the quickstart's ladder
FIRST, FULL = RUNGS[0], RUNGS[-1]
#: The ladder, one point below it and one between each two of its rungs (geometric)
BUDGETS = tuple(sorted({FIRST // 2, *RUNGS, *(round((a * b) ** 0.5) for a, b in zip(RUNGS, RUNGS[1:]))}))
START = math.log(load_study(QUICKSTART).train.batch_size)  # the loss of an untrained CLIP


def make_table(study: Study, candidates: int = 8, repeated: int = 2) -> pd.DataFrame:
    """Candidates of the study's space; error = b (samples / FIRST)^-a, a and b larger for larger towers, so that
    the largest ends best although it is the worst at the first rung; the repeated ones' second seed is a little
    off the first. Every run learns: its training loss falls linearly in samples from ln(batch) to half of it."""
    archs = stratified_order(study.space.enumerate(feasible=True))[:candidates]
    costs = [cost(a, study.text) for a in archs]
    order = np.argsort([c.image_params for c in costs])
    rows = []
    for rank, i in enumerate(order):
        a, b = 0.02 + 0.02 * rank, 0.80 + 0.01 * rank
        for seed in range(2 if i < repeated else 1):
            for budget in BUDGETS:
                accuracy = 1 - b * (budget / FIRST) ** -a + 0.002 * seed
                rows.append({"candidate_id": archs[i].arch_id, "arch_name": archs[i].name(),
                             "arch": archs[i].to_json(), "seed": seed, "status": "completed", "budget": budget,
                             "zeroshot_top1": accuracy, "zeroshot_top1_n": 400,
                             "loss": START * (1 - budget / FULL / 2),
                             "image_gmacs": costs[i].image_gmacs, "image_params_m": costs[i].image_params / 1e6,
                             "train_gflops": costs[i].train_gflops})
    return pd.DataFrame(rows)


@pytest.fixture(scope="module")
def setting() -> tuple[se.Table, Study]:
    study = load_study(QUICKSTART)
    return se.load_table(make_table(study)), study


def test_the_table_knows_its_best_and_top_candidates(setting):
    table, study = setting
    truths = [c.truth for c in table.candidates]
    best = table.measured.best
    assert best == int(np.argmax(truths)) and table.measured.top(0.1) == {best}  # ceil(0.8) = 1
    largest = max(range(len(table.candidates)), key=lambda i: table.candidates[i].cost["image_params_m"])
    assert best == largest
    assert table.candidates[largest].curves[0][FIRST][0] == min(c.curves[0][FIRST][0] for c in table.candidates)
    assert sum(len(c.curves) == 2 for c in table.candidates) == 2
    repeated = next(c for c in table.candidates if len(c.curves) == 2)
    assert repeated.truth == pytest.approx(np.mean([repeated.curves[s][FULL][0] for s in (0, 1)]))


def test_replays_follow_the_schedulers_rules(setting):
    table, study = setting
    outcomes = se.run_replays(table, study, ["random-full", "asha", "tpe-asha", "curve"], replays=6, workers=2)
    total = se.exhaustive(table, study, "samples")
    assert total == 8 * FULL
    for outcome in outcomes["random-full"]:  # every candidate to the full budget, the best found at the end
        assert outcome.spent[-1] == total and set(outcome.ended.values()) == {FULL}
        assert outcome.regret[-1] == 0.0
    for name in ("asha", "tpe-asha", "curve"):
        for outcome in outcomes[name]:
            assert len(outcome.ended) == 8 and outcome.spent[-1] < total  # all sampled, some stopped early
            assert set(outcome.ended.values()) <= set(RUNGS)  # stopped only at the ladder's rungs
            assert all(r >= 0 for r in outcome.regret if not math.isnan(r))
            assert np.all(np.diff(outcome.spent) > 0)
    # random search's replay r is the same order of candidates and the same seed curves under every rule
    assert [o.started for o in outcomes["asha"]] == [o.started for o in outcomes["curve"]]
    again = se.replay(table, study, se.STRATEGIES["tpe-asha"], 3, 2, "samples", se.space_parameters(study, table))
    assert again.ended == outcomes["tpe-asha"][3].ended and again.spent == outcomes["tpe-asha"][3].spent


def test_asha_stops_the_slow_starting_best_that_the_curve_rule_keeps_more_often(setting):
    """The best candidate starts worst: ASHA stops it at the first rung whenever a rival was recorded there first;
    the curve rule, with the exponent's dependence on size learned from the candidates measured further, stops
    it less often. (A behaviour of this hand-made table, not a figure of the real one.)"""
    table, study = setting
    outcomes = se.run_replays(table, study, ["asha", "curve-dense"], replays=20, workers=1)
    summary = {s.strategy: s for s in se.summarise(table, study, outcomes)}
    assert summary["asha"].best_sampled == summary["curve-dense"].best_sampled == 20
    assert summary["asha"].best_first_rung > summary["curve-dense"].best_first_rung


def test_the_benchmark_prints_and_plots_its_figures(setting, tmp_path, capsys):
    table, study = setting
    make_table(study).to_csv(tmp_path / "table.csv", index=False)
    code = se.main(["--table", str(tmp_path / "table.csv"), "--replays", "4", "--tables", "2", "--jobs", "1",
                    "--strategies", "random-full,asha,pareto-asha,tpe-asha,curve", "--plot", str(tmp_path / "r.png"),
                    "--json", str(tmp_path / "s.json")])
    out = capsys.readouterr().out
    assert code == 0 and out.startswith("did not learn: 0 of 10 runs")
    for text in ("Regret of the best candidate found", "P(top 10 %)", "best stopped at rung 1", "curve - asha at 25%",
                 "tpe-asha", "pareto-asha", "2 bootstrap tables", "2 replays each", "6 of 8 candidates have one seed",
                 "Against random search"):
        assert text in out
    assert (tmp_path / "r.png").stat().st_size > 0 and len(pd.read_json(tmp_path / "s.json")) == 5


def test_a_run_that_did_not_learn_is_no_truth_and_a_slow_learner_is():
    """A repeated candidate's second seed stays at ln(batch), chance accuracy, while its first is the table's best;
    a single-seed candidate stays there too; another's first seed learns slowly (within 25 % of ln(batch) to the
    end, but falling more than 5 % over every ladder step)."""
    study = load_study(QUICKSTART)
    frame = make_table(study)
    seeds = frame.groupby("candidate_id").seed.nunique()
    (stuck, slow), lost = seeds[seeds == 2].index, seeds[seeds == 1].index[0]
    at = {name: (frame.candidate_id == candidate) & (frame.seed == seed)
          for name, candidate, seed in (("stuck", stuck, 1), ("best", stuck, 0), ("slow", slow, 0), ("lost", lost, 0))}
    frame.loc[at["stuck"] | at["lost"], ["loss", "zeroshot_top1"]] = [START, 1 / 80]
    frame.loc[at["best"], "zeroshot_top1"] += 0.3
    frame.loc[at["slow"], "loss"] = [START * f for f in (0.995, 0.95, 0.87, 0.78)]
    judged = tabular.learned(frame, study)
    assert sorted((c, s) for c, _, s, _ in judged.flagged) == sorted([(stuck, 1), (lost, 0)])
    assert all(reason.startswith(f"did not learn: loss {START:.3f}") for *_, reason in judged.flagged)
    assert judged.left == (lost,) and (judged.rate.failed, judged.rate.runs) == (2, 10)
    assert "did not learn: 2 of 10 runs" in judged.lines() and "no seed learned" in judged.lines()

    table = se.load_table(judged.frame, failed=judged.failed)
    index = {c.candidate_id: i for i, c in enumerate(table.candidates)}
    assert lost not in index and len(table.candidates) == 7
    assert set(table.candidates[index[stuck]].curves) == {0} and set(table.candidates[index[slow]].curves) == {0, 1}
    assert set(table.candidates[index[stuck]].failed) == {1} and table.measured.failed == 1  # lost's: out
    assert table.candidates[index[stuck]].truth == frame[at["best"] & (frame.budget == FULL)].zeroshot_top1.item()
    assert table.measured.best == index[stuck]
    # every replay trains the best's learned seed, first or after its failed one: the whole table searched,
    # it is found
    for outcome in se.run_replays(table, study, ["random-full"], replays=5, workers=2)["random-full"]:
        assert outcome.regret[-1] == 0.0


def test_bad_input_names_what_is_wrong(setting, tmp_path, capsys):
    table, study = setting
    with pytest.raises(ConfigError, match="unknown strateg"):
        se.run_replays(table, study, ["hyperband"], replays=1, workers=1)
    with pytest.raises(ConfigError, match="no column zeroshot_top1"):
        se.load_table(make_table(study).drop(columns="zeroshot_top1"))
    coarse = se.load_table(make_table(study).query(f"budget != {FIRST}"))
    with pytest.raises(ConfigError, match="not budgets of the table"):
        se.run_replays(coarse, study, ["asha"], replays=1, workers=1)
    assert se.main(["--table", str(tmp_path / "none.csv")]) == 2
    assert "make it with benchmarks/tabular.py" in capsys.readouterr().err


def three_seed_table(value, candidates: int = 8) -> se.Table:
    """`make_table`'s candidates, each with seeds 0, 1 and 2, its metric `value(rank, seed, budget)`."""
    first = make_table(load_study(QUICKSTART), candidates, repeated=0).drop_duplicates("candidate_id")
    rows = [{**row, "seed": seed, "budget": budget, "zeroshot_top1": value(i, seed, budget)}
            for i, row in enumerate(first.to_dict("records")) for seed in range(3) for budget in BUDGETS]
    return se.load_table(pd.DataFrame(rows))


def test_a_bootstrap_table_resamples_each_candidates_seeds_and_keeps_a_single_one():
    table = three_seed_table(lambda i, seed, budget: 0.1 * i + 0.01 * seed)
    one = table.candidates[-1].curves[2]
    table = se.Table((*table.candidates[:-1], replace(table.candidates[-1], curves={2: one}, truth=one[FULL][0])),
                     table.budgets, table.metric)
    draws = se.draw_tables(table, 200, seed=3)
    assert se.draw_tables(table, 0) == [table.measured] and draws == se.draw_tables(table, 200, seed=3)
    assert all(len(d.seeds[0]) == 3 and set(d.seeds[0]) <= {0, 1, 2} for d in draws)
    assert {d.seeds[-1] for d in draws} == {(2,)} and {d.truth[-1] for d in draws} == {one[FULL][0]}  # kept
    # seeds 0.00, 0.01, 0.02 above the candidate's own level: their mean, and the SD of a resample's mean
    truths = np.array([d.truth[0] for d in draws]) - table.candidates[0].curves[0][FULL][0]
    assert truths.mean() == pytest.approx(0.01, abs=0.001) and truths.std() == pytest.approx(0.01 * (2 / 9) ** 0.5,
                                                                                              rel=0.15)
    assert {d.best for d in draws} == {table.measured.best}  # 10 points apart: seeds never reorder them


def test_the_interval_holds_the_spread_between_tables_beside_the_replays_noise():
    rng = np.random.default_rng(0)
    tables = np.repeat(np.arange(40), 10)
    noise = rng.normal(0, 1.0, size=400)
    mean, low, high = se.interval(noise, np.zeros(400))  # one table: a t interval over the replays
    assert high - low == pytest.approx(2 * 1.966 * noise.std(ddof=1) / 20, rel=0.01) and low < 0 < high
    # no spread between tables: wider than the replays' noise alone by the uncertainty of the tables' variance,
    # never wider than the interval of the tables' means taken as single values
    _, low40, high40 = se.interval(noise, tables)
    means = noise.reshape(40, 10).mean(axis=1)
    assert high - low < high40 - low40 < 2 * 2.03 * means.std(ddof=1) * (1 + 1 / 40) ** 0.5
    shifted = noise + rng.normal(0, 2.0, size=40)[tables]  # each table moves its replays by an SD of 2
    _, low, high = se.interval(shifted, tables)
    assert (high - low) / 2 == pytest.approx(2.02 * 2.0, rel=0.3)
    assert se.verdict((1.0, 0.5, 1.5)) == "worse" and se.verdict((-1.0, -1.5, -0.5)) == "better"
    assert se.verdict((-1.0, -1.5, 0.5)) == "not distinguishable" and se.verdict((0.2, 0.1, 0.3), False) == "better"


def test_asha_is_better_than_random_where_the_first_rung_ranks_as_the_last():
    """Eight candidates 5 points apart at every budget, three seeds within half a point: ASHA, promoting the
    first rung's best, has the best by half the exhaustive compute, random search half the time."""
    table = three_seed_table(lambda i, seed, budget: 0.1 + 0.05 * i + 0.1 * budget / FULL + 0.002 * seed)
    study = load_study(QUICKSTART)
    outcomes = se.run_replays(table, study, ["random-full", "asha"], replays=60, workers=2, tables=6)
    (asha,) = se.versus(table, study, outcomes)
    assert asha.verdicts()["50%"] == "better" and asha.verdicts()["100%"] == "not distinguishable"
    assert {o.draw.index for o in outcomes["asha"]} == set(range(6))


def test_on_a_table_of_pure_noise_no_strategy_is_told_from_random():
    """Eight candidates of one true accuracy, every seed and budget off it by an independent seed-sized noise."""
    rng = np.random.default_rng(0)
    noise = {(i, seed, budget): rng.normal(0.3, 0.03) for i in range(8) for seed in range(3) for budget in BUDGETS}
    table = three_seed_table(lambda i, seed, budget: noise[i, seed, budget])
    study = load_study(QUICKSTART)
    outcomes = se.run_replays(table, study, ["random-full", "asha"], replays=30, workers=2, tables=5)
    (asha,) = se.versus(table, study, outcomes)
    assert set(asha.verdicts().values()) == {"not distinguishable"}
    with pytest.raises(ConfigError, match="two replays or more"):
        se.run_replays(table, study, ["asha"], replays=5, workers=1, tables=3)


def test_a_replay_is_judged_by_the_seeds_it_did_not_see():
    """The truth a replay is judged by leaves out the seed whose curve it saw: on a table where each seed's run is
    its own noise, constant over budgets, random search's pick at 100 % (the best seen) is on average no better
    than the mean candidate; judged by a truth that holds the seed seen, it would look far closer to the best."""
    table = three_seed_table(lambda i, seed, budget: 0.1 * i + 0.01 * seed)
    study, strategy = load_study(QUICKSTART), se.STRATEGIES["random-full"]
    outcome = se.replay(table, study, strategy, 0, 2, "samples", None)
    for i, seen in outcome.seen.items():
        others = tuple(s for s in range(3) if s != seen)
        level = table.candidates[i].curves[0][FULL][0]  # seed s at level + 0.01 s
        assert outcome.draw.seeds[i] == others and outcome.draw.truth[i] == pytest.approx(level + 0.005 * sum(others))
    rng = np.random.default_rng(1)
    noise = {(i, seed): rng.normal(0.3, 0.03) for i in range(8) for seed in range(3)}
    table = three_seed_table(lambda i, seed, budget: noise[i, seed])
    held_in, held_out, advantage = [], [], []
    for r in range(100):
        outcome = se.replay(table, study, strategy, r, 2, "samples", None)
        truth, pick = np.array(outcome.draw.truth), outcome.incumbent[-1]
        advantage.append(truth[pick] - truth.mean())
        held_out.append(outcome.regret[-1])
        held_in.append(max(table.measured.truth) - table.measured.truth[pick])
    assert abs(np.mean(advantage)) < 0.006  # 3 standard errors of the mean of 100 held-out differences
    assert np.mean(held_in) + 0.01 < np.mean(held_out)


def table_with_a_failed_run(accuracy: float) -> tuple[se.Table, int, int]:
    """`make_table`'s, its worst candidate at the full budget given a third seed whose loss stays at ln(batch) (a
    run that did not learn) and whose metric is `accuracy` at every budget: the table, that candidate's index, and
    the budget at which the rule caught the run."""
    study = load_study(QUICKSTART)
    frame = make_table(study, repeated=0)
    worst = frame[frame.budget == FULL].sort_values("zeroshot_top1").candidate_id.iloc[0]
    runs = frame[frame.candidate_id == worst]
    frame = pd.concat([frame, *(runs.assign(seed=seed, zeroshot_top1=runs.zeroshot_top1 + 0.001 * seed)
                                for seed in (1, 2)),
                       runs.assign(seed=3, zeroshot_top1=accuracy, loss=START)], ignore_index=True)
    judged = tabular.learned(frame, study)
    assert [(c, s) for c, _, s, _ in judged.flagged] == [(worst, 3)]
    table = se.load_table(judged.frame, failed=judged.failed)
    index = [c.candidate_id for c in table.candidates].index(worst)
    return table, index, int(judged.failed.caught.iloc[0])


def test_a_replay_that_draws_a_failed_run_spends_it_to_the_catching_rung_and_reruns_a_learned_seed():
    """The worst candidate's run that did not learn reports the best metric of the table at every budget: a replay
    that draws it spends its samples up to the first rung at or after where the rule caught it (between the
    quickstart's two rungs: at its full budget; reporting at every budget of the table: before it), then trains the
    candidate again with a learned seed; the run is never the incumbent, and never in the truth."""
    table, worst, caught = table_with_a_failed_run(accuracy=0.99)
    candidate = table.candidates[worst]
    assert set(candidate.curves) == {0, 1, 2} and set(candidate.failed) == {3} and candidate.runs == (0, 1, 2, 3)
    assert candidate.truth == pytest.approx(np.mean([candidate.curves[s][FULL][0] for s in (0, 1, 2)]))
    assert FIRST < caught < FULL and caught in BUDGETS
    study = load_study(QUICKSTART)
    dense = [se.replay(table, study, se.Strategy("random", "none", dense=True), r, 2, "samples", None)
             for r in range(24)]
    outcomes = se.run_replays(table, study, ["random-full", "asha"], replays=24, workers=2)
    for replays, rung in ((dense, caught), (outcomes["random-full"], FULL)):
        drew = [r for r, o in enumerate(replays) if o.failed]
        assert 0 < len(drew) < 24  # a quarter of the runs: about 6
        for r, outcome in enumerate(replays):
            # its 0.99 would have stayed the incumbent: the best is, and no regret
            assert outcome.incumbent[-1] != worst and outcome.regret[-1] == 0.0
            assert outcome.ended[worst] == FULL and outcome.seen[worst] in (0, 1, 2)  # the rerun, to the full budget
            assert outcome.draw.truth[worst] == pytest.approx(np.mean([candidate.curves[s][FULL][0] for s in
                                                                       (0, 1, 2) if s != outcome.seen[worst]]))
            assert outcome.spent[-1] == 8 * FULL + (rung if r in drew else 0)  # the failed run's samples spent
            assert outcome.failed == ({worst: (3, rung)} if r in drew else {})
            assert outcome.started.count(worst) == 1
    # paired: the same runs drawn under ASHA, which promotes the failed run's high values to its catching rung
    assert [o.failed for o in outcomes["asha"]] == [o.failed for o in outcomes["random-full"]]
    assert all(o.incumbent[-1] != worst for o in outcomes["asha"])


def test_bootstrap_tables_redraw_the_failed_runs_at_their_share():
    table, worst, _ = table_with_a_failed_run(accuracy=1 / 80)
    assert table.measured.failed == 1 and table.measured.seeds[worst] == (0, 1, 2, 3)
    draws = se.draw_tables(table, 400, seed=1)
    assert all(any(s != 3 for s in d.seeds[worst]) for d in draws)  # a learned run for the truth, always
    assert all(d.failed == d.seeds[worst].count(3) for d in draws)
    assert all(d.truth[worst] == pytest.approx(np.mean([table.candidates[worst].curves[s][FULL][0]
                                                        for s in d.seeds[worst] if s != 3])) for d in draws)
    # one run in four; a draw of four failed runs (1 in 256) drawn again: (1 - 4/256) / (1 - 1/256) per draw
    assert np.mean([d.failed for d in draws]) / 4 == pytest.approx(252 / 255 / 4, abs=0.03)
