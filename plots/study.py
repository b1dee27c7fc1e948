"""Every figure of a study, from its results database (`vitamin-nas plot DIR` and the report use this).

    figures = study_figures(ResultStore.open("runs/quickstart", readonly=True), "runs/quickstart/figures")
    figures["group:family"]                 # each figure by its name; figure_index(dir) reads them back

Writes (PNG and SVG each): the search's own figures (`plots.search.search_figures`: Pareto fronts of all
budgets on one axes, history by trial), the Pareto fronts against GMACs, parameters and throughput at each
budget, the rung history, one comparison per group of the study, the scaling laws of error against compute
per arch family (each with its band and extrapolation, and all on one axes), and the diagrams of the study's
labelled candidates (else of the Pareto front at the largest budget); and `figures.json`, the index of the
figures by name, which `figure_index` reads and through which the report (`nas.report`) links them.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pandas as pd

from nas.arch import Arch
from nas.metrics import direction
from nas.results import ResultStore
from nas.seeds import arch_means
from nas.select import family_laws, measurements
from plots.search import search_figures

#: At most this many architecture diagrams per study.
MAX_DIAGRAMS = 12
INDEX = "figures.json"


def slug(name: str) -> str:
    """A file-name-safe form of a label or family (`C-C-T/geglu` -> `C-C-T_geglu`)."""
    return re.sub(r"[^A-Za-z0-9._-]+", "_", name).strip("_") or "x"


def study_figures(store: ResultStore, out: str | Path, metric: str = "zeroshot_top1",
                  law: str = "power") -> dict[str, Path]:
    """Write every figure of the study into `out`; returns them by name (PNG paths; the SVG lie beside them)."""
    out = Path(out)
    frame = measurements(store, metric)
    if frame.empty:
        return {}
    written = dict(zip(("pareto_fronts", "search_history"), search_figures(store, out)))
    written |= _pareto(store, frame, metric, out)
    written |= _history(frame, metric, out)
    written |= _groups(store, frame, metric, out)
    written |= _scaling(frame, metric, law, out)
    written |= _diagrams(store, frame, metric, out)
    (out / INDEX).write_text(json.dumps({name: path.name for name, path in written.items()}, indent=2) + "\n")
    return written


def figure_index(directory: str | Path) -> dict[str, Path]:
    """The figures `study_figures` wrote into `directory`, by name ({} when it wrote none there)."""
    index = Path(directory) / INDEX
    if not index.is_file():
        return {}
    return {name: Path(directory) / file for name, file in json.loads(index.read_text()).items()}


def _png(path: Path) -> Path:
    return path.with_suffix(".png")


def _pareto(store: ResultStore, frame: pd.DataFrame, metric: str, out: Path) -> dict[str, Path]:
    from plots.pareto import pareto_front

    written = {}
    study = store.study()
    for budget in sorted(frame.budget.unique()):
        at, seeds = arch_means(frame[frame.budget == budget], metric, study.train.seed)
        path = out / f"pareto_{budget}"
        pareto_front(at, metric, direction=direction(metric), path=path,
                     title=f"Pareto fronts at {budget:,} samples seen\n({seeds}; throughput: the best of an "
                           "arch's runs, measured beside concurrent trials)")
        written[f"pareto:{budget}"] = _png(path)
    return written



def _history(frame: pd.DataFrame, metric: str, out: Path) -> dict[str, Path]:
    from plots.history import rung_history

    path = out / "rung_history"
    rung_history(frame, metric, direction(metric), path=path)
    return {"rung_history": _png(path)}


def _groups(store: ResultStore, frame: pd.DataFrame, metric: str, out: Path) -> dict[str, Path]:
    from plots.compare import group_curves

    written = {}
    for name, labels in store.study().groups.items():
        path = out / f"group_{slug(name)}"
        group_curves(frame, labels, metric, path=path, title=f"{name}: {' vs '.join(labels)}",
                     own_seed=store.study().train.seed)
        written[f"group:{name}"] = _png(path)
    return written


def _scaling(frame: pd.DataFrame, metric: str, law: str, out: Path) -> dict[str, Path]:
    from plots.scaling import scaling_curve, scaling_curves

    fits = family_laws(frame, law)
    ylabel = "loss" if direction(metric) == "min" else f"1 - {metric}"
    xlabel = "compute (image GMACs x samples seen)"
    written = {}
    for family, fit in fits.items():
        path = out / f"scaling_{slug(family)}"
        members = frame[frame.family == family].arch_id.nunique()
        scaling_curve(fit, path, xlabel=xlabel, ylabel=ylabel,
                      title=f"{family} ({members} archs): {fit.law} law, R$^2$ (log) = {fit.r2_log:.3f}")
        written[f"scaling:{family}"] = _png(path)
    if len(fits) > 1:
        path = out / "scaling"
        scaling_curves(fits, path, xlabel=xlabel, ylabel=ylabel)
        written["scaling"] = _png(path)
    return written


def _diagrams(store: ResultStore, frame: pd.DataFrame, metric: str, out: Path) -> dict[str, Path]:
    """The study's labelled candidates, else the front of `metric` against GMACs at the largest budget."""
    from plots.arch import arch_diagram

    labelled = frame[frame.label != frame.arch_name]
    if labelled.empty:
        budget = int(frame.budget.max())
        labelled = store.pareto_front({metric: direction(metric), "image_gmacs": "min"}, budget=budget)
        labelled = labelled.assign(label=labelled.arch_name)
    written = {}
    for row in labelled.drop_duplicates("arch_id").head(MAX_DIAGRAMS).itertuples():
        path = out / f"arch_{slug(row.label)}"
        arch = Arch.from_json(row.arch)
        arch_diagram(arch, path, title=f"{row.label}: {arch.name()}" if row.label != arch.name() else None)
        written[f"arch:{row.label}"] = _png(path)
    return written
