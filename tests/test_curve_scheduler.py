"""`CurveASHA` (`budget.early_stopping: curve`): promotion by the predicted value at the full budget.

Its decisions are checked against hand-made learning curves with a known crossover: small towers whose
error falls slowly, and large ones that start worse but fall faster and end better. ASHA (Ray Tune's, and
ParetoASHA's rule with one objective) stops a late large tower at the first rung; the curve rule, having
learned from the towers measured further that larger ones fall faster, keeps it, and still stops a small
tower that starts badly.
"""

from __future__ import annotations

import math
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from ray.tune.schedulers import AsyncHyperBandScheduler, FIFOScheduler, TrialScheduler

from nas.search.schedulers import (
    DEFAULT_SLOPE_SPREAD,
    Curve,
    CurveASHA,
    ParetoASHA,
    SlopePrior,
    fit_prior,
    log_curve,
    make_scheduler,
    own_slope,
    predict,
)
from nas.study import study_from_dict

REPO = Path(__file__).resolve().parents[1]
COMMON = {"time_attr": "samples_seen", "max_t": 9000, "grace_period": 1000, "reduction_factor": 3}
#: error = b (samples / 1000)^-a: (b, a, image parameters in millions)
LAWS = {"L1": (0.86, 0.16, 4.0), "L2": (0.86, 0.16, 4.0), "S1": (0.80, 0.05, 1.0), "S2": (0.81, 0.05, 1.0),
        "S3": (0.90, 0.05, 1.0)}
#: the order results arrive in (asynchronous): L1 and S1 are carried further; L2 and S3 arrive late
EVENTS = [("L1", 1000), ("S1", 1000), ("S2", 1000), ("L1", 3000), ("S1", 3000), ("L1", 9000), ("L2", 1000),
          ("S3", 1000)]


def accuracy(name: str, samples: float) -> float:
    b, a, _ = LAWS[name]
    return 1 - b * (samples / 1000) ** -a


def decisions(scheduler: TrialScheduler) -> dict[tuple[str, int], str]:
    trials = {name: SimpleNamespace(trial_id=name) for name in LAWS}
    for trial in trials.values():
        scheduler.on_trial_add(None, trial)
    out = {}
    for name, samples in EVENTS:
        result = {"samples_seen": samples, "zeroshot_top1": accuracy(name, samples), "zeroshot_top1_n": 2000,
                  "image_params_m": LAWS[name][2]}
        out[name, samples] = scheduler.on_trial_result(None, trials[name], result)
    return out


def test_the_crossover_is_real():
    assert accuracy("L2", 1000) < min(accuracy(s, 1000) for s in ("S1", "S2"))  # L2 trails at the first rung
    assert accuracy("L2", 9000) > max(accuracy(s, 9000) for s in ("S1", "S2", "S3"))  # and the best at the end


def test_asha_stops_the_late_large_tower_at_the_first_rung_and_the_curve_rule_keeps_it():
    ray_asha = decisions(AsyncHyperBandScheduler(metric="zeroshot_top1", mode="max", **COMMON))
    rank_asha = decisions(ParetoASHA({"zeroshot_top1": "max"}, **COMMON))
    curve = decisions(CurveASHA({"zeroshot_top1": "max"}, **COMMON))
    for asha in (ray_asha, rank_asha):
        assert asha["L2", 1000] == TrialScheduler.STOP
    assert curve["L2", 1000] == TrialScheduler.CONTINUE
    assert curve["S3", 1000] == TrialScheduler.STOP  # a small tower that starts badly is still stopped
    assert curve["L1", 1000] == curve["S1", 1000] == TrialScheduler.CONTINUE  # the first ones, as ASHA
    assert curve["L1", 9000] == TrialScheduler.STOP  # the end of the budget


def test_the_prior_learns_that_larger_towers_fall_faster():
    scheduler = CurveASHA({"zeroshot_top1": "max"}, **COMMON)
    decisions(scheduler)
    prior = scheduler.priors()["zeroshot_top1"]
    slope_small, _ = prior.slope(math.log(1.0))
    slope_large, _ = prior.slope(math.log(4.0))
    assert slope_small == pytest.approx(-0.05, abs=0.005) and slope_large == pytest.approx(-0.16, abs=0.005)
    bound = scheduler.predicted("L2", "zeroshot_top1", prior)
    assert bound[0] == pytest.approx(accuracy("L2", 9000), abs=0.01) and bound[1] > bound[0]


def test_prediction_in_closed_form():
    # one evaluation: the point moved along the prior's slope; variance = its own + the slope's x distance^2
    x, y, v = np.log([1000.0]), np.log([0.8]), np.array([0.01])
    mean, sd = predict(x, y, v, (-0.1, 0.04), math.log(9000))
    distance = math.log(9)
    assert mean == pytest.approx(math.log(0.8) - 0.1 * distance)
    assert sd == pytest.approx(math.sqrt(0.01 + 0.04 * distance**2))
    # exact power-law points and a vague prior: the law itself
    x = np.log([1000.0, 2000.0, 4000.0])
    y = np.log(0.8) - 0.2 * (x - x[0])
    mean, sd = predict(x, y, np.full(3, 1e-6), (0.0, 100.0), math.log(16000))
    assert mean == pytest.approx(math.log(0.8) - 0.2 * math.log(16), abs=1e-6) and sd < 0.01
    # a confident prior pulls an unsure own slope towards it
    shrunk, _ = predict(x, y, np.full(3, 1.0), (0.0, 1e-6), math.log(16000))
    assert shrunk == pytest.approx(np.average(y, weights=np.ones(3)), abs=1e-3)


def test_slopes_and_the_binomial_noise_of_a_log_error():
    curve = Curve()
    for samples, value in ((1000, 0.2), (3000, 0.3), (3000, 0.35)):  # a rung reported again: the latest stands
        curve.add(samples, value, 400)
    x, y, variance = log_curve(curve, "max")
    assert list(np.exp(x)) == pytest.approx([1000, 3000]) and list(np.exp(y)) == pytest.approx([0.8, 0.65])
    assert variance[0] == pytest.approx(0.2 / (400 * 0.8))  # p / (n (1 - p))
    slope, slope_variance = own_slope(x, y, variance)
    assert slope == pytest.approx(math.log(0.65 / 0.8) / math.log(3))
    assert slope_variance == pytest.approx(variance.sum() / math.log(3) ** 2)
    assert own_slope(x[:1], y[:1], variance[:1]) is None


def test_the_prior_without_candidates_measured_further_is_vague():
    assert fit_prior([]) == SlopePrior()
    assert SlopePrior().slope(1.0) == (0.0, pytest.approx(2 * DEFAULT_SLOPE_SPREAD**2))
    line = fit_prior([(-0.05 - 0.1 * s, 1e-6, s) for s in (0.0, 1.0, 2.0, 3.0)])
    assert line.intercept == pytest.approx(-0.05) and line.coefficient == pytest.approx(-0.1)
    one_size = fit_prior([(-0.1, 1e-4, 1.0), (-0.2, 1e-4, 1.0)])
    assert one_size.coefficient == 0.0 and one_size.intercept == pytest.approx(-0.15)


def test_a_study_chooses_the_curve_rule(tmp_path):
    raw = {"name": "c", "space": str(REPO / "search_spaces" / "tiny.yaml"),
           "data": {"urls": str(tmp_path), "zeroshot": str(tmp_path)},
           "objectives": {"zeroshot_top1": "max", "image_gmacs": "min"}, "trials": 4,
           "budget": {"min_samples": 100, "max_samples": 900, "early_stopping": "curve"},
           "train": {"batch_size": 50, "warmup": 2}}
    study = study_from_dict(raw)
    scheduler = make_scheduler(study)
    assert isinstance(scheduler, CurveASHA) and scheduler.objectives == study.objectives
    assert scheduler.measured == ["zeroshot_top1"] and sorted(scheduler.rungs) == [100, 300]
    assert "CurveASHA" in scheduler.debug_string()
    raw["budget"]["early_stopping"] = "none"
    assert type(make_scheduler(study_from_dict(raw))) is FIFOScheduler
