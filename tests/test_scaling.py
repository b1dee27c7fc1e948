"""Scaling-law fits: published fits reproduced on their published data, known laws recovered from synthetic data.

The published data live in ../shared/reference/scaling_data (see its SOURCES.md); those tests skip when the
folder is absent.
"""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy import optimize

from nas import cli
from nas.errors import ConfigError
from nas.scaling import (
    arrays_from_frame,
    compute_optimal,
    fit,
    fit_frame,
    fit_isoflop,
    fit_joint,
    fit_pareto_power,
    fit_power,
    fit_saturating,
    held_out_check,
)

SCALING_DATA = Path(__file__).resolve().parents[2] / "shared" / "reference" / "scaling_data"
CHINCHILLA = {"E": 1.69, "A": 406.4, "B": 410.7, "alpha": 0.34, "beta": 0.28}  # Hoffmann et al.'s fit


@pytest.fixture(scope="module")
def published() -> Path:
    if not SCALING_DATA.is_dir():
        pytest.skip(f"published scaling data not found at {SCALING_DATA} (the shared/ folder beside the repo)")
    return SCALING_DATA


def covers(result, truth: dict[str, float]) -> bool:
    return all(result.ci[name][0] <= value <= result.ci[name][1] for name, value in truth.items())


def chinchilla_loss(n, d):
    p = CHINCHILLA
    return p["E"] + p["A"] / n ** p["alpha"] + p["B"] / d ** p["beta"]


def chinchilla_isoflops(budgets=(1e18, 1e19, 1e20, 1e21, 1e22)) -> tuple[np.ndarray, np.ndarray]:
    """Noiseless IsoFLOP sweeps of Hoffmann et al.'s law: 9 sizes from N*/4 to 4 N* per budget, D = C / 6N."""
    p = CHINCHILLA
    exponent = p["beta"] / (p["alpha"] + p["beta"])
    g = (p["alpha"] * p["A"] / (p["beta"] * p["B"])) ** (1 / (p["alpha"] + p["beta"]))
    runs = np.array([(c, n) for c in budgets for n in g * (c / 6) ** exponent * np.geomspace(0.25, 4, 9)])
    return runs, chinchilla_loss(runs[:, 1], runs[:, 0] / (6 * runs[:, 1]))


# ------------------------------------------------------------------------------ published fits


def test_cherti_openclip_imagenet_frontier_fit(published):
    """Cherti et al. 2023, OpenCLIP ImageNet zero-shot: beta ~ 5.86, alpha ~ -0.111.

    Reproduced by: the 29 rows of zeroshot_results.csv with downstream_dataset == "imagenet1k" and an
    upstream LAION dataset (80M / 400M / 2B; the CLIP-WIT rows are OpenAI's models), compute = gmacs_total
    (GMACs per sample x samples seen), error = 1 - acc1 as a fraction, and their binning: log10 compute cut
    into 5 equal bins over [min, max + 0.1], the lowest error per bin placed at the bin centre, OLS in log10.
    """
    runs = pd.read_csv(published / "openclip" / "zeroshot_results.csv")
    imagenet = runs[(runs.downstream_dataset == "imagenet1k") & (runs.upstream_dataset != "CLIP-WIT")]
    result = fit_pareto_power(imagenet.gmacs_total.to_numpy(), 1 - imagenet.acc1.to_numpy())
    assert len(imagenet) == 29 and result.frontier.sum() == 5
    assert result.params["beta"] == pytest.approx(5.86, abs=0.005)
    assert result.params["alpha"] == pytest.approx(-0.111, abs=0.0005)


def test_cherti_openai_clip_plain_power_fit(published):
    """OpenAI's 3 CLIP models (CLIP-WIT rows): plain log-log OLS, alpha ~ -0.164 as Cherti et al. report."""
    runs = pd.read_csv(published / "openclip" / "zeroshot_results.csv")
    openai = runs[(runs.downstream_dataset == "imagenet1k") & (runs.upstream_dataset == "CLIP-WIT")]
    result = fit_frame(openai, "power", x="gmacs_total", y="1 - acc1")
    assert result.params["alpha"] == pytest.approx(-0.164, abs=0.0005)


@pytest.fixture(scope="module")
def chinchilla_fit(published):
    """Besiroglu et al.'s replication data after dropping the 5 highest-loss points, D = C / (6 N)."""
    runs = pd.read_csv(published / "chinchilla_epoch" / "svg_extracted_data.csv")
    kept = runs.nsmallest(len(runs) - 5, "loss")
    return fit_frame(kept, "joint", n="Model Size", x="Training FLOP", y="loss", n_bootstrap=200, seed=0)


def test_besiroglu_chinchilla_replication(chinchilla_fit):
    """Besiroglu et al. 2024 report E 1.82, A 482, B 2085, alpha 0.348, beta 0.366 (bootstrap s.e. A 124.5,
    B 1293, alpha 0.015, beta 0.021). Their notebook's own optimum on this file is A 477.84, B 2143.86,
    alpha 0.34731, beta 0.36718 (the paper's numbers differ from it by under 0.1 s.e.). We match the notebook
    to 3e-4 relative (our tighter L-BFGS-B tolerances move B, the least identified, most) and the paper
    within its printed precision for E and a tenth of its standard error elsewhere.
    """
    p, se = chinchilla_fit.params, chinchilla_fit.stderr
    notebook = {"A": 477.84171, "B": 2143.86379, "alpha": 0.347313, "beta": 0.367183}
    for name, value in notebook.items():
        assert p[name] == pytest.approx(value, rel=3e-4), name
    assert p["E"] == pytest.approx(1.82, abs=0.005)
    paper = {"A": (482, 124.5), "B": (2085, 1293), "alpha": (0.348, 0.015), "beta": (0.366, 0.021)}
    for name, (value, paper_se) in paper.items():
        assert abs(p[name] - value) < 0.1 * paper_se, name
        assert se[name] == pytest.approx(paper_se, rel=0.3), name  # 200 resamples: the s.e. is itself noisy
    assert not covers(chinchilla_fit, {"B": 410.7, "beta": 0.28})  # Hoffmann et al.'s fit is rejected


def test_compute_optimal_allocation_is_the_constrained_minimum(chinchilla_fit):
    budget = 1e23
    allocation = compute_optimal(chinchilla_fit, [budget])
    along_budget = optimize.minimize_scalar(
        lambda log_n: chinchilla_fit.predict([np.exp(log_n), budget / (6 * np.exp(log_n))]), bounds=(15, 30),
        method="bounded", options={"xatol": 1e-10})
    assert allocation.n[0] == pytest.approx(np.exp(along_budget.x), rel=1e-4)
    assert allocation.n[0] * allocation.d[0] * 6 == pytest.approx(budget)
    p = chinchilla_fit.params
    assert allocation.n_exponent == pytest.approx(p["beta"] / (p["alpha"] + p["beta"]))
    low, high = allocation.n_bounds
    assert low[0] < allocation.n[0] < high[0]
    assert allocation.loss.lower[0] < allocation.loss.y[0] < allocation.loss.upper[0]


def test_compute_optimal_constant_is_configurable(chinchilla_fit):
    six, eight = (compute_optimal(chinchilla_fit, 1e22, flops_per_param_token=k) for k in (6.0, 8.0))
    assert six.n * six.d * 6 == pytest.approx(1e22)
    assert eight.n * eight.d * 8 == pytest.approx(1e22)
    assert eight.n < six.n


def porian_configs():
    """(configuration, published basic fit) pairs from Porian et al. 2024's flattened results."""
    if not SCALING_DATA.is_dir():
        return [pytest.param(None, None, marks=pytest.mark.skip(reason=f"no published data at {SCALING_DATA}"))]
    keys = ["source_file", "dataset", "hparams", "warmup", "decay", "param_count", "loss_split"]
    pairs = pd.read_csv(SCALING_DATA / "porian2024" / "optimal_pairs.csv").dropna(subset=["n_star"])
    fits = pd.read_csv(SCALING_DATA / "porian2024" / "fit_results.csv").query("fit == 'basic'")
    return [pytest.param(group, fits.merge(pd.DataFrame([key], columns=keys)).iloc[0], id="-".join(key[1:6]))
            for key, group in pairs.groupby(keys)]


@pytest.mark.parametrize(("pairs", "published_fit"), porian_configs())
def test_porian_compute_optimal_power_laws(pairs, published_fit):
    """Porian et al.'s N*(C) and D*(C): OLS of log optimum on log compute, exponent, coefficient and R^2."""
    n_law = fit_power(pairs.flops.to_numpy(), pairs.n_star.to_numpy())
    assert n_law.params["alpha"] == pytest.approx(published_fit.n_exponent, rel=1e-6)
    assert n_law.params["beta"] == pytest.approx(published_fit.n_coef, rel=1e-5)
    assert n_law.r2_log == pytest.approx(published_fit.n_r2, rel=1e-6)
    d_law = fit_power(pairs.flops.to_numpy(), pairs.t_star.to_numpy())
    assert d_law.params["alpha"] == pytest.approx(published_fit.t_exponent, rel=1e-6)


@pytest.mark.parametrize(("pairs", "published_fit"), porian_configs())
def test_porian_saturating_loss_fit(pairs, published_fit):
    """Porian et al.'s L*(C) = E + A C^-alpha: least squares on log loss for 1e16 < C < 5e17.

    In one configuration (kaplan_tuned_hparams) E and A are barely identified and the authors' curve_fit
    (ftol 1e-6, 100 evaluations) stopped short: there our optimum must fit at least as well as theirs.
    """
    window = pairs.query("flops > 1e16 and flops < 5e17")
    flops, loss = window.flops.to_numpy(), window.loss_star.to_numpy()
    result = fit_saturating(flops, loss)
    if published_fit.source_file == "summary_df_kaplan_tuned_hparams":
        theirs = published_fit.E + published_fit.A * flops**-published_fit.alpha
        assert np.sum(np.log(result.predict(flops) / loss) ** 2) <= np.sum(np.log(theirs / loss) ** 2)
        return
    assert result.params["E_inf"] == pytest.approx(published_fit.E, rel=2e-4)
    assert result.params["A"] == pytest.approx(published_fit.A, rel=2e-3)
    assert result.params["alpha"] == pytest.approx(published_fit.alpha, rel=5e-4)


def test_llama3_isoflop_fit(published):
    """Llama 3 (Dubey et al. 2024, sec. 3.2.1): parabolas per budget, then D*(C) = A C^alpha with
    (alpha, A) = (0.53, 0.29), which suggests 16.55T tokens at 3.8e25 FLOPs. The points were digitised from
    their Fig. 2 by a third party, so we ask for agreement at that precision: alpha within 0.01, the
    published values inside our intervals, and the 3.8e25 extrapolation within 5%.
    """
    runs = pd.read_csv(published / "llama3_isoflops" / "isoflops_points.csv")
    result = fit_frame(runs, "isoflop", x="compute_budget", n="training_tokens", y="validation_loss")
    assert len(result.y) == 10
    assert result.params["exponent"] == pytest.approx(0.53, abs=0.01)
    assert covers(result, {"exponent": 0.53, "coefficient": 0.29})
    tokens = result.extrapolate(3.8e25)
    assert tokens.y == pytest.approx(16.55e12, rel=0.05)
    assert tokens.lower < 16.55e12 < tokens.upper and tokens.extrapolated


# ----------------------------------------------------------------------------- synthetic laws


def test_power_law_recovered_with_covering_intervals():
    rng = np.random.default_rng(0)
    compute = np.geomspace(1e9, 1e13, 25)
    error = 4.0 * compute**-0.12 * np.exp(rng.normal(0, 0.03, compute.size))
    result = fit("power", compute, error)
    assert result.params["alpha"] == pytest.approx(-0.12, abs=0.01)
    assert result.params["beta"] == pytest.approx(4.0, rel=0.25)
    assert covers(result, {"beta": 4.0, "alpha": -0.12})
    assert result.r2_log > 0.9 and result.huber is None


def test_pareto_power_fits_the_best_run_per_bin():
    """Frontier runs at the bin centres, dominated runs elsewhere: the frontier law comes back exactly."""
    rng = np.random.default_rng(1)
    centres = np.array([9.5, 10.5, 11.5, 12.5, 13.5])  # bins of [9, 13.9 + 0.1] are one decade wide
    frontier = 10.0**centres
    dominated = 10.0 ** np.concatenate([[9.0, 13.9], rng.uniform(9, 13.9, 40)])
    compute = np.concatenate([frontier, dominated])
    law = 6.0 * compute**-0.1
    error = law * np.exp(np.concatenate([np.zeros(5), rng.uniform(0.2, 1.0, dominated.size)]))
    result = fit_pareto_power(compute, error)
    assert result.params["alpha"] == pytest.approx(-0.1, abs=1e-9)
    assert result.params["beta"] == pytest.approx(6.0, rel=1e-9)
    assert np.flatnonzero(result.frontier).tolist() == [0, 1, 2, 3, 4]
    assert fit_power(compute, error).params["alpha"] != pytest.approx(-0.1, abs=0.01)  # all runs: biased


def test_saturating_law_recovered_analytic_and_reproducible_bootstrap():
    rng = np.random.default_rng(2)
    compute = np.geomspace(1e15, 1e21, 30)
    error = (1.5 + 800 * compute**-0.25) * np.exp(rng.normal(0, 0.005, compute.size))
    truth = {"E_inf": 1.5, "A": 800.0, "alpha": 0.25}
    analytic = fit_saturating(compute, error)
    assert analytic.params["E_inf"] == pytest.approx(1.5, rel=0.01)
    assert abs(analytic.params["alpha"] - 0.25) < 2 * analytic.stderr["alpha"]
    assert covers(analytic, truth)
    bootstrap = fit_saturating(compute, error, n_bootstrap=60, seed=0)
    assert bootstrap.params == analytic.params and covers(bootstrap, truth)
    assert bootstrap.stderr["alpha"] == pytest.approx(analytic.stderr["alpha"], rel=0.3)
    np.testing.assert_array_equal(fit_saturating(compute, error, n_bootstrap=60, seed=0).draws, bootstrap.draws)
    assert not np.array_equal(fit_saturating(compute, error, n_bootstrap=60, seed=1).draws, bootstrap.draws)


def test_a_floor_the_data_cannot_see_is_reported_as_not_identified():
    """Error that keeps falling as a plain power law (as a short data ladder does): the best floor is ~0, and
    its interval must say "anywhere below the smallest error", not a zero-width interval at ~0."""
    rng = np.random.default_rng(4)
    samples = np.geomspace(2e3, 3.2e4, 5)
    error = 1.2 * samples**-0.028 * np.exp(rng.normal(0, 0.003, samples.size))
    for result in (fit_saturating(samples, error), fit_saturating(samples, error, n_bootstrap=40, seed=0)):
        assert np.isnan(result.stderr["E_inf"]) and result.ci["E_inf"] == (0.0, error.min())
        assert result.params["alpha"] == pytest.approx(0.028, abs=0.005)
        assert "nan" in result.summary()


def test_joint_law_recovered_with_covering_bootstrap_intervals():
    rng = np.random.default_rng(3)
    n, d = (grid.ravel() for grid in np.meshgrid(np.geomspace(5e7, 1e10, 8), np.geomspace(1e9, 3e11, 8)))
    loss = chinchilla_loss(n, d) * np.exp(rng.normal(0, 0.01, n.size))
    result = fit_joint(n, d, loss, n_bootstrap=50, seed=7)
    assert covers(result, CHINCHILLA)
    assert result.params["alpha"] == pytest.approx(0.34, abs=0.03)
    assert result.params["beta"] == pytest.approx(0.28, abs=0.03)
    assert result.params["E"] == pytest.approx(1.69, abs=0.1)
    assert result.draws.shape == (50, 5) and result.huber > 0


def test_isoflop_recovers_the_compute_optimal_exponent_of_the_joint_law():
    """Approach 2 on exact IsoFLOP sweeps and approach 3 on the same runs agree on a = beta / (alpha + beta)."""
    runs, loss = chinchilla_isoflops()
    exponent = CHINCHILLA["beta"] / (CHINCHILLA["alpha"] + CHINCHILLA["beta"])
    isoflop = fit("isoflop", runs, loss)
    assert isoflop.params["exponent"] == pytest.approx(exponent, abs=1e-6)
    joint = fit_joint(runs[:, 1], runs[:, 0] / (6 * runs[:, 1]), loss, n_bootstrap=0)
    assert compute_optimal(joint, 1e20).n_exponent == pytest.approx(exponent, abs=1e-4)
    assert compute_optimal(joint, 1e20).n == pytest.approx(isoflop.predict(1e20), rel=0.03)


def test_isoflop_skips_budgets_without_an_interior_optimum():
    runs, loss = chinchilla_isoflops()
    smallest = runs[:, 0] == 1e18
    keep = ~smallest | (runs[:, 1] > np.median(runs[smallest, 1]))  # its sweep now starts past the optimum
    result = fit_isoflop(runs[keep, 0], runs[keep, 1], loss[keep])
    assert result.x.tolist() == [1e19, 1e20, 1e21, 1e22]


# --------------------------------------------------------------------- predictions and held-out


def test_fit_is_frozen_and_extrapolation_brackets_prediction():
    compute = np.geomspace(1e9, 1e12, 10)
    result = fit_power(compute, 3 * compute**-0.1 * np.exp(np.linspace(-0.02, 0.02, 10) ** 2))
    with pytest.raises(dataclasses.FrozenInstanceError):
        result.law = "other"
    targets = np.array([[1e10, 1e13], [1e14, 1e15]])
    interval = result.extrapolate(targets, level=0.9)
    assert interval.y.shape == targets.shape == result.predict(targets).shape
    assert np.all((interval.lower < interval.y) & (interval.y < interval.upper))
    assert interval.extrapolated.tolist() == [[False, True], [True, True]]
    wider = result.extrapolate(1e15, level=0.99)
    assert wider.upper - wider.lower > interval.upper[1, 1] - interval.lower[1, 1]


def test_held_out_check_scores_the_largest_runs():
    rng = np.random.default_rng(4)
    compute = rng.permutation(np.geomspace(1e9, 1e14, 40))
    error = 5 * compute**-0.1 * np.exp(rng.normal(0, 0.02, compute.size))
    check = held_out_check("power", compute, error, n_test=10)
    assert check.fit.x.max() < np.min(check.prediction.x)
    assert len(check.y) == 10 and check.prediction.extrapolated.all()
    assert check.mean_abs_relative_error < 0.05 and check.coverage >= 0.8
    floor = held_out_check("power", compute, 0.5 + error, n_test=10)  # a floor the power law cannot see
    assert np.all(floor.relative_error < 0) and floor.coverage < 0.5


def test_held_out_check_on_isoflop_holds_out_whole_budgets():
    runs, loss = chinchilla_isoflops()
    check = held_out_check("isoflop", runs, loss, n_test=2)
    assert check.fit.x.tolist() == [1e18, 1e19, 1e20] and check.prediction.x.tolist() == [1e21, 1e22]
    assert check.mean_abs_relative_error < 1e-6


# ------------------------------------------------------------------------- DataFrames and CLI


def test_columns_by_name_or_expression_and_clear_errors():
    frame = pd.DataFrame({"Training FLOP": [1e18, 1e19, 1e20], "Model Size": [1e8, 3e8, 1e9],
                          "acc1": [0.5, 0.6, 0.7], "note": ["a", "b", "c"]})
    x, y = arrays_from_frame(frame, "power", x="Training FLOP", y="1 - acc1")
    np.testing.assert_allclose(y, [0.5, 0.4, 0.3])
    x, _ = arrays_from_frame(frame, "joint", n="Model Size", x="Training FLOP", y="acc1")
    np.testing.assert_allclose(x[:, 1], frame["Training FLOP"] / (6 * frame["Model Size"]))
    with pytest.raises(ConfigError, match="no column 'flops'.*available columns: Training FLOP, Model Size"):
        arrays_from_frame(frame, "power", x="flops", y="acc1", source="runs.csv")
    with pytest.raises(ConfigError, match="'note' has non-numeric values"):
        arrays_from_frame(frame, "power", x="note", y="acc1")
    with pytest.raises(ConfigError, match=r"'acc1 - 0.6' has 2 values <= 0"):
        arrays_from_frame(frame, "power", x="Training FLOP", y="acc1 - 0.6")
    with pytest.raises(ConfigError, match="--n: the isoflop law needs this column"):
        arrays_from_frame(frame, "isoflop", x="Training FLOP", y="acc1")
    with pytest.raises(ConfigError, match="unknown law 'cubic'"):
        fit("cubic", x, y)


@pytest.fixture
def runs_csv(tmp_path) -> Path:
    rng = np.random.default_rng(5)
    compute = np.geomspace(1e10, 1e13, 20)
    error = 4 * compute**-0.1 * np.exp(rng.normal(0, 0.02, compute.size))
    path = tmp_path / "runs.csv"
    pd.DataFrame({"gmacs_total": compute, "acc1": 1 - error, "family": ["vitamin"] * 20}).to_csv(path, index=False)
    return path


def test_fit_command_prints_the_fit_and_writes_png_and_svg(runs_csv, tmp_path, capsys):
    out = tmp_path / "fig" / "scaling.png"
    code = cli.main(["fit", str(runs_csv), "--law", "pareto-power", "--x", "gmacs_total", "--y", "1 - acc1",
                     "--where", "family == 'vitamin'", "--at", "1e14", "--hold-out", "4", "--out", str(out)])
    printed = capsys.readouterr().out
    assert code == 0
    assert "alpha" in printed and "R^2 (log)" in printed and "at 1e+14:" in printed
    assert "extrapolated" in printed and "held-out check" in printed
    assert out.with_suffix(".png").stat().st_size > 0 and out.with_suffix(".svg").stat().st_size > 0


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--law", "power", "--x", "gmacs", "--y", "acc1"], "no column 'gmacs'.*available columns: gmacs_total"),
        (["--law", "power", "--x", "gmacs_total", "--y", "acc1", "--bootstrap", "10"], "--bootstrap"),
        (["--law", "power", "--x", "gmacs_total", "--y", "acc1", "--where", "family == 'vit'"], "no rows"),
    ],
)
def test_fit_command_bad_input_exits_2(runs_csv, capsys, args, message):
    assert cli.main(["fit", str(runs_csv), *args]) == 2
    assert re.search(message, capsys.readouterr().err)


def test_fit_command_missing_file_exits_2(tmp_path, capsys):
    assert cli.main(["fit", str(tmp_path / "absent.csv"), "--law", "power", "--x", "c", "--y", "e"]) == 2
    assert "absent.csv: no such file" in capsys.readouterr().err
