"""The report's markdown: the study's tables beside the paper's numbers, the claims' verdicts, run-to-run noise,
fidelity, scaling and the extrapolated choice (`report`)."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from nas import status
from nas.errors import ConfigError
from nas.leaderboard import seed_notes
from nas.learning import study_failure_rate
from nas.metrics import direction
from nas.presets import PRESETS
from nas.report.claims import Verdict, study_table, trial_seed, verdicts
from nas.report.paper import Claim, Paper
from nas.results import ResultStore
from nas.select import at_target, choose, extrapolation_warnings, family_laws, measurements, separation

#: How many times the smallest tower's parameters the largest must have for a model-size law at fixed data.
SIZE_SPAN = 4


def _markdown_table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    lines += ["| " + " | ".join(_cell(v) for v in row) + " |" for row in rows]
    return "\n".join(lines)


def _cell(value: Any) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    return f"{value:.1f}" if isinstance(value, float) else str(value)


def _samples(value: float) -> str:
    for unit, scale in (("B", 1e9), ("M", 1e6), ("k", 1e3)):
        if value >= scale:
            return f"{value / scale:g}{unit}"
    return f"{value:g}"


def _header(store: ResultStore, frame: pd.DataFrame, metric: str) -> list[str]:
    study = store.study()
    statuses = pd.Series([t["status"] for t in store.trials()]).value_counts()
    counts = ", ".join(f"{statuses[s]} {s.replace('_', ' ')}" for s in (*status.FINAL, status.RUNNING)
                       if s in statuses)
    budgets = ", ".join(_samples(b) for b in sorted(frame.budget.unique()))
    lines = [f"# Study report: {study.name}", ""]
    if study.description:
        lines += [study.description, ""]
    where = Path(store.path).resolve()
    if where.is_relative_to(Path.cwd()):
        where = where.relative_to(Path.cwd())  # a committed report does not name the machine it ran on
    lines += [f"- results: `{where}`", f"- trials: {len(store.trials())} ({counts})",
              f"- budgets (samples seen): {budgets}", f"- metric: `{metric}` (percent)"]
    if study.data.synthetic is not None:
        synth = study.data.synthetic
        lines.append(f"- data: synthetic scenes ({synth.scenes}, {synth.size} px, {synth.samples:,} captioned images), "
                     "not DataComp: they measure how fast each design learns one simple task in minutes of CPU, "
                     "where the paper's numbers are ImageNet zero-shot after 128M-1.28B web samples; an ordering "
                     "that reproduces here agrees with the paper, it does not replicate it")
    if study.repeats.seeds:
        repeated = study.repeats.count(len(study.archs))
        lines.append(f"- seeds: {', '.join(map(str, (study.train.seed, *study.repeats.seeds)))} ("
                     f"{'every candidate' if repeated == len(study.archs) else f'the first {repeated} candidates'}; "
                     "the tables give the mean over seeds)")
    lines += [f"- {note}" for note in seed_notes(store, metric)]
    failures = study_failure_rate(store)
    if failures.runs:
        lines.append(f"- {failures.line()}: never a candidate's measurement")
    if study.budget.per_budget:
        lines.append("- each budget is a run of its own, with a cosine schedule that ends at that budget")
    elif study.budget.early_stopping == "none" and frame.budget.nunique() > 1:
        lines.append("- the budgets are rungs of one training schedule per candidate: all but the last are measured "
                     "mid-schedule, so they compare candidates fairly but understate what a run of that length reaches")
    return lines


def _claims_section(results: list[tuple[Claim, Verdict, Verdict | None]], paper: Paper) -> list[str]:
    lines = ["", "## The paper's findings at proxy scale", "",
             f"Each finding is checked on this study's results and, with the same code, on the paper's published "
             f"benchmark ({paper.source}); a finding whose accuracies the paper does not publish is its design "
             f"choice. On the study, a comparison counts where the designs' per-seed paired differences (same "
             f"seed, same eval images) hold: every seed agrees and the 95 % t interval over seeds excludes 0 "
             f"(nas.seeds); 'seed-dependent' where the seeds point different ways beyond their eval noise; with "
             f"one seed, where McNemar's exact test rejects at 5 %, which covers eval noise only. A chain "
             f"(A > B > C) is reversed at a budget where any of its pairs is. The margin is the smallest gap in the "
             f"finding's direction: the seed mean of the paired difference, with its 95 % interval; where no "
             f"comparison holds, the study cannot tell.", ""]
    if not results:
        return lines + ["None of the paper's findings names this study's candidates."]
    rows = [[claim.text, ours.describe(), theirs.describe(reference=True) if theirs else "design choice (no "
             "published accuracies)"] for claim, ours, theirs in results]
    lines.append(_markdown_table(["finding", "this study", "paper"], rows))
    reproduced = [c.text for c, v, _ in results if v.outcome == "reproduced"]
    failed = [c.text for c, v, _ in results if v.outcome in ("partly", "reversed", "not reproduced")]
    unclear = [c.text for c, v, _ in results if v.outcome == "not distinguishable"]
    lines += ["", f"Reproduced: {'; '.join(reproduced) or 'none'}.",
              f"Not (or not at every budget) reproduced: {'; '.join(failed) or 'none'}.",
              f"Not distinguishable at any budget (the eval set cannot tell): {'; '.join(unclear) or 'none'}."]
    return lines


def _noise_section(frame: pd.DataFrame, metric: str, own_seed: int) -> list[str]:
    """Each measurement repeated with other seeds, its seeds side by side: the run-to-run noise (initialisation and
    data order) that a difference between candidates has to exceed, beside the eval set's own."""
    seeds = frame.assign(seed=[own_seed if trial_seed(v) is None else trial_seed(v) for v in frame.seed])
    rows, spreads, halves = [], [], []
    for (label, budget), runs in seeds.groupby(["label", "budget"], sort=False):
        if runs.seed.nunique() < 2:
            continue
        values = runs.sort_values("seed").drop_duplicates("seed")
        spread = float(values[metric].max() - values[metric].min())
        spreads.append((spread, label, budget))
        if f"{metric}_low" in values:
            halves += list((values[f"{metric}_high"] - values[f"{metric}_low"]).dropna() / 2)
        rows.append([label, _samples(budget), ", ".join(f"{100 * v:.1f} (seed {s})" for s, v in
                                                          zip(values.seed, values[metric])), 100 * spread])
    if not rows:
        return []
    spread = sorted(spreads)
    median, (largest, label, budget) = spread[len(spread) // 2][0], spread[-1]
    lines = ["", "## Run-to-run noise", "",
             f"Every run measured with more than one seed (weights and data order), side by side. Median spread "
             f"between seeds {100 * median:.1f} pts, largest {100 * largest:.1f} pts ({label} at {_samples(budget)})"]
    if halves:
        lines[-1] += (f"; one evaluation's 95 % interval is ±{100 * float(pd.Series(halves).median()):.1f} pts "
                      "(median)")
    lines[-1] += (". The tables give the mean over seeds; a finding holds at a budget only where every seed's "
                  "paired test agrees.")
    return lines + ["", _markdown_table(["label", "budget", f"{metric} (%) by seed", "spread (pts)"], rows)]


def _group_section(name: str, labels: Sequence[str], frame: pd.DataFrame, table: pd.DataFrame, paper: Paper | None,
                   metric: str, figure: str | None) -> list[str]:
    """The group's candidates at each budget; beside the paper's models they stand for, with a `paper`."""
    budgets = list(table.columns)
    paper_table = paper.table() if paper else None
    paper_budgets = list(paper_table.columns) if paper else []
    rows = []
    for label in labels:
        arch = frame[frame.label == label]
        if arch.empty:
            rows.append([label, "not measured", *["-"] * (2 + len(budgets) + (2 + len(paper_budgets) if paper else 0))])
            continue
        first = arch.iloc[0]
        row = [label, f"`{first.arch_name}`", f"{first.image_gmacs:.4g}", f"{first.image_params_m:.2f}",
               *(100 * table.loc[label, b] if label in table.index else None for b in budgets)]
        if paper:
            model = paper.models.get(label)
            theirs = [100 * paper_table.loc[model, b] if model in paper_table.index else None for b in paper_budgets]
            gmacs = f"{paper.benchmark[paper.benchmark.model == model].image_gmacs.max():.2f}" if model else None
            row += [model or "-", gmacs, *theirs]
        rows.append(row)
    headers = ["label", "arch", "image GMACs", "params (M)", *(f"{metric} @ {_samples(b)}" for b in budgets)]
    if paper:
        headers += ["paper model", "paper image GMACs", *(f"paper @ {_samples(b)}" for b in paper_budgets)]
    lines = ["", f"### {name}", "", _markdown_table(headers, rows)]
    if figure:
        lines += ["", f"![{name}]({figure})"]
    return lines


def _ablation_section(frame: pd.DataFrame, paper: Paper) -> list[str]:
    """The proxies' cost relative to the ViTamin proxy beside the authors' variants' relative to ViTamin-B."""
    costs = frame.drop_duplicates("label").set_index("label").image_gmacs
    base = next((a for a in paper.ablations if a["label"] == "ViTamin"), None)
    variants = [a for a in paper.ablations if a["label"] in costs.index]
    if base is None or "ViTamin" not in costs.index or len(variants) < 2:
        return []
    rows = [[a["label"], a["name"], f"{costs[a['label']] / costs['ViTamin']:.3f}",
             f"{a['image_gmacs'] / base['image_gmacs']:.3f}"] for a in variants]
    return ["", "### Ablation variants: GMACs relative to ViTamin", "",
            "The proxies are the authors' own design variants scaled down; their cost ratios match the paper's.", "",
            _markdown_table(["label", "authors' variant", "proxy GMACs / ViTamin proxy", "paper GMACs / ViTamin-B"],
                            rows)]


def _fidelity_section(store: ResultStore, metric: str) -> list[str]:
    """How far the study's cheap measurements (earlier budgets, size, and the zero-cost proxies it scored) rank
    its candidates as its most expensive one does (`vitamin-nas fidelity` adds the proxies it did not score)."""
    from nas.fidelity import MIN_CANDIDATES, format_fidelity, study_fidelity

    rows = study_fidelity(store, metric, proxies=None)
    if not rows:
        return []
    return ["", "## Fidelity: do cheap measurements rank the candidates as the expensive ones do?", "",
            f"Rank correlations over the candidates measured at both, with 95 % bootstrap intervals (below "
            f"{MIN_CANDIDATES} candidates: too few for one, the exact permutation p instead); changed "
            "promotions: of the candidates successive halving would keep on the cheap ranking, how many the "
            "expensive one would not; noise p > 0.05: the cheap ranking cannot be told from eval noise.", "",
            "```", format_fidelity(rows), "```"]


def _scaling_section(frame: pd.DataFrame, paper: Paper, law: str) -> list[str]:
    """Per family, the exponent of error against compute, beside the same law on the paper's S/B/L models."""
    ours = family_laws(frame, law)
    if not ours:
        return []
    rows, caveats = [], []
    for family, fit in ours.items():
        models = paper.families.get(family, [])
        theirs = _paper_law(paper, models, law)
        gate = _gated(fit, family, caveats)
        rows.append([family, frame[frame.family == family].arch_id.nunique(), len(fit.y), gate or _exponent(fit),
                     f"{fit.r2_log:.3f}", ", ".join(models) or "-", _exponent(theirs) if theirs else "-"])
        published = sorted({PRESETS[m][0].family for m in models if m in PRESETS} - {family})
        if published:
            caveats.append(f"{family} is not the family of the paper's {', '.join(models)} ({', '.join(published)}): "
                           "this study's towers are a hybrid stand-in for them, so their exponents compare different "
                           "architectures.")
        caveats += [f"{family}: {warning}" for warning in fit.warnings]  # lack of fit, unidentified terms
    return ["", f"## Scaling: error against compute ({law} law)", "",
            "Compute is image GMACs x samples seen on both sides; the exponent is d log(error) / d log(compute) "
            "with its 95% interval, shown only where the law passes its lack-of-fit checks and identifies its "
            "parameters (else the failed check and the local slopes). The paper's column fits the same law to its "
            "S/B/L models at 128M/512M/1.28B.", "",
            _markdown_table(["family", "archs", "points", "exponent [95% CI]", "R^2 (log)", "paper models",
                             "paper exponent [95% CI]"], rows), *(["", *(f"Caveat: {c}" for c in caveats)]
                                                                 if caveats else [])]


def _size_section(frame: pd.DataFrame, paper: Paper) -> list[str]:
    """Per family with a ladder of sizes measured at one budget (three or more, spanning `SIZE_SPAN` in parameters:
    design variants of one size are no ladder): error against image parameters at that fixed budget (a model-size
    law), beside the same law on the paper's S/B/L models of the family at the budget of the same rank when the
    study has as many budgets as the paper (three)."""
    from nas.scaling import fit

    paper_budgets = sorted(paper.benchmark.samples.unique())
    rows, gated = [], []
    for family, members in frame.dropna(subset=["error"]).groupby("family", sort=True):
        budgets = sorted(members.budget.unique())
        models = paper.families.get(family, [])
        for rank, budget in enumerate(budgets):
            sizes = members[members.budget == budget].groupby("arch_id").agg(
                params=("image_params_m", "first"), error=("error", "mean"))
            if len(sizes) < 3 or sizes.params.max() < SIZE_SPAN * sizes.params.min():
                continue
            ours = fit("power", sizes.params, sizes.error)
            gate = _gated(ours, f"{family} at {_samples(budget)}", gated)
            theirs, paper_budget = None, None
            if models and len(budgets) == len(paper_budgets):
                paper_budget = paper_budgets[rank]
                rows_p = paper.benchmark[paper.benchmark.model.isin(models) & (paper.benchmark.samples == paper_budget)]
                theirs = fit("power", rows_p.image_params_m, 1 - rows_p[paper.metric] / 100) if len(rows_p) >= 3 \
                    else None
            rows.append([family, _samples(budget), len(sizes),
                         f"{sizes.params.min():.3g}-{sizes.params.max():.3g}", gate or _exponent(ours),
                         ", ".join(models) or "-", _samples(paper_budget) if paper_budget else "-",
                         _exponent(theirs) if theirs else "-"])
    if not rows:
        return []
    return ["", "## Model size at fixed data (power law)", "",
            "Error against image parameters (M) at each budget; the exponent is d log(error) / d log(params) with "
            "its 95% interval (only where the law passes its checks, as above), beside the same law on the paper's "
            "S/B/L models of the family at the budget of the same rank (three points: a wide interval).", "",
            _markdown_table(["family", "budget", "sizes", "params (M)", "exponent [95% CI]", "paper models",
                             "paper budget", "paper exponent [95% CI]"], rows),
            *(["", *(f"Caveat: {c}" for c in gated)] if gated else [])]


def _gated(fit, name: str, caveats: list[str]) -> str | None:
    """None where `fit`'s exponent may stand beside the paper's (`fit_gate`); else the cell that says why not,
    with the failed checks and local slopes added to `caveats`."""
    from nas.scaling import fit_gate

    gate = fit_gate(fit)
    if gate.passed:
        return None
    caveats.append(f"{name}: the {fit.law} law's exponent is {gate.summary()}.")
    return "not compared: fails its checks"


def _paper_law(paper: Paper, models: Sequence[str], law: str):
    from nas.scaling import fit

    rows = paper.benchmark[paper.benchmark.model.isin(models)]
    if rows.empty:
        return None
    try:
        return fit(law, rows.image_gmacs * rows.samples, 1 - rows[paper.metric] / 100)
    except ConfigError:
        return None


def _exponent(fit) -> str:
    name = "alpha"
    low, high = fit.ci[name]
    sign = 1 if fit.law in ("power", "pareto-power") else -1  # saturating: E_inf + A C^-alpha
    value, low, high = sign * fit.params[name], sign * low, sign * high
    return f"{value:.3f} [{min(low, high):.3f}, {max(low, high):.3f}]"


def _ranking_section(store: ResultStore, frame: pd.DataFrame, metric: str, law: str) -> list[str]:
    """The scaling-aware choice at ten times the largest budget (`vitamin-nas select` for other targets)."""
    target = 10 * float(frame.budget.max())
    ranking = [p for p in at_target(store, target_samples=target, law=law, metric=metric) if p.fitted]
    if not ranking:
        return []
    best = ranking[0]
    rows = [[p.label, f"`{p.arch.name()}`", 100 * p.value, f"[{100 * p.lower:.1f}, {100 * p.upper:.1f}]",
             "best" if p is best else "not distinguishable" if p.overlaps(best) else ""] for p in ranking]
    measured = frame.budget.max()
    lines = ["", f"## Extrapolated to {_samples(target)} samples seen ({law} law per arch)", "",
             f"An extrapolation a decade beyond the data: each arch's law is fitted to its {frame.budget.nunique()} "
             f"budgets ({_samples(frame.budget.min())} to {_samples(measured)}) and read at ten times the largest; "
             f"only the prediction intervals say how far that can be trusted.", "",
             _markdown_table(["label", "arch", f"predicted {metric}", "95% prediction interval", ""], rows), "",
             f"{separation(ranking, choose(ranking))}."]
    return lines + [f"Warning: {w}." for w in extrapolation_warnings(ranking)]


def report(store: ResultStore, paper: Paper, figures: Mapping[str, str] | None = None,
           metric: str = "zeroshot_top1", law: str = "power") -> str:
    """The markdown report. `figures` are figures by name, their paths relative to where the report is written."""
    if direction(metric) != "max":
        raise ConfigError("the report sets accuracies beside the paper's: give a zero-shot or retrieval metric",
                          field="--metric")
    frame = measurements(store, metric).dropna(subset=[metric])
    if frame.empty:
        raise ConfigError(f"no measurement of {metric} yet", source=str(store.path))
    table = study_table(frame, metric)
    figure_of = dict(figures or {})
    lines = _header(store, frame, metric)
    lines += _claims_section(verdicts(paper, frame, metric), paper)
    lines += _noise_section(frame, metric, store.study().train.seed)
    groups = store.study().groups or {"all candidates": list(table.index[:20])}
    beside = any(label in paper.models for label in table.index)  # its candidates stand for the paper's models
    if beside:
        lines += ["", "## Tables beside the paper", "",
                  f"This study's {metric} (%) at each budget; the paper's zero-shot ImageNet top-1 (%) of the "
                  f"benchmark model each label stands for ({paper.title}; {paper.source})."]
    else:
        lines += ["", "## Tables", "", f"This study's {metric} (%) at each budget (none of its candidates stands for "
                  "a model of the paper: nothing to set beside the paper's numbers)."]
    for name, labels in groups.items():
        lines += _group_section(name, labels, frame, table, paper if beside else None, metric,
                                figure_of.pop(f"group:{name}", None))
    lines += _ablation_section(frame, paper)
    lines += _fidelity_section(store, metric)
    lines += _scaling_section(frame, paper, law)
    lines += _size_section(frame, paper)
    lines += _ranking_section(store, frame, metric, law)
    if figure_of:
        lines += ["", "## Figures", ""] + [f"![{name}]({path})" for name, path in figure_of.items()]
    return "\n".join(lines) + "\n"
