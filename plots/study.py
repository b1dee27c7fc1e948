"""Every figure of a study, from its results database (`vitamin-nas plot DIR` and the report use this).

    figures = study_figures(ResultStore.open("runs/quickstart", readonly=True), "runs/quickstart/figures")

Writes (PNG and SVG each): the search's own figures (`nas.search_cli.write_figures`: Pareto fronts of all
budgets on one axes, history by trial), the Pareto fronts against GMACs, parameters and throughput at each
budget, the rung history, one comparison per group of the study, the scaling laws of error against compute
per arch family (each with its band and extrapolation, and all on one axes), and the diagrams of the study's
labelled candidates (else of the Pareto front at the largest budget).
"""

from __future__ import annotations

import re
from pathlib import Path

import pandas as pd

from nas.arch import Arch
from nas.results import ResultStore
from nas.select import direction, family_laws, measurements, study_groups, study_labels, with_labels

#: At most this many architecture diagrams per study.
MAX_DIAGRAMS = 12


def slug(name: str) -> str:
    """A file-name-safe form of a label or family (`C-C-T/geglu` -> `C-C-T_geglu`)."""
    return re.sub(r"[^A-Za-z0-9._-]+", "_", name).strip("_") or "x"


def study_figures(store: ResultStore, out: str | Path, metric: str = "zeroshot_top1",
                  law: str = "power") -> list[Path]:
    """Write every figure of the study into `out`; returns the PNG paths (the SVG lie beside them)."""
    from nas.search_cli import write_figures

    out = Path(out)
    frame = measurements(store, metric)
    if frame.empty:
        return []
    written = list(write_figures(store, out))
    written += _pareto(store, frame, metric, out)
    written += _history(frame, metric, out)
    written += _groups(store, frame, metric, out)
    written += _scaling(frame, metric, law, out)
    written += _diagrams(store, frame, metric, out)
    return written


def _png(path: Path) -> Path:
    return path.with_suffix(".png")


def _pareto(store: ResultStore, frame: pd.DataFrame, metric: str, out: Path) -> list[Path]:
    from plots.pareto import pareto_front

    written = []
    labels = study_labels(store)
    for budget in sorted(frame.budget.unique()):
        at = with_labels(store.at_budget(int(budget)), labels)
        path = out / f"pareto_{budget}"
        pareto_front(at, metric, direction=direction(metric), path=path,
                     title=f"Pareto fronts at {budget:,} samples seen")
        written.append(_png(path))
    return written


def _history(frame: pd.DataFrame, metric: str, out: Path) -> list[Path]:
    from plots.history import rung_history

    path = out / "rung_history"
    rung_history(frame, metric, direction(metric), path=path)
    return [_png(path)]


def _groups(store: ResultStore, frame: pd.DataFrame, metric: str, out: Path) -> list[Path]:
    from plots.compare import group_curves

    written = []
    for name, labels in study_groups(store).items():
        path = out / f"group_{slug(name)}"
        group_curves(frame, labels, metric, path=path, title=f"{name}: {' vs '.join(labels)}")
        written.append(_png(path))
    return written


def _scaling(frame: pd.DataFrame, metric: str, law: str, out: Path) -> list[Path]:
    from plots.scaling import scaling_curve, scaling_curves

    fits = family_laws(frame, law)
    ylabel = "loss" if direction(metric) == "min" else f"1 - {metric}"
    xlabel = "compute (image GMACs x samples seen)"
    written = []
    for family, fit in fits.items():
        path = out / f"scaling_{slug(family)}"
        members = frame[frame.family == family].arch_id.nunique()
        scaling_curve(fit, path, xlabel=xlabel, ylabel=ylabel,
                      title=f"{family} ({members} archs): {fit.law} law, R$^2$ (log) = {fit.r2_log:.3f}")
        written.append(_png(path))
    if len(fits) > 1:
        path = out / "scaling"
        scaling_curves(fits, path, xlabel=xlabel, ylabel=ylabel)
        written.append(_png(path))
    return written


def _diagrams(store: ResultStore, frame: pd.DataFrame, metric: str, out: Path) -> list[Path]:
    """The study's labelled candidates, else the front of `metric` against GMACs at the largest budget."""
    from plots.arch import arch_diagram

    labelled = frame[frame.label != frame.arch_name]
    if labelled.empty:
        budget = int(frame.budget.max())
        labelled = store.pareto_front({metric: direction(metric), "image_gmacs": "min"}, budget=budget)
        labelled = labelled.assign(label=labelled.arch_name)
    written = []
    for row in labelled.drop_duplicates("arch_id").head(MAX_DIAGRAMS).itertuples():
        path = out / f"arch_{slug(row.label)}"
        arch = Arch.from_json(row.arch)
        arch_diagram(arch, path, title=f"{row.label}: {arch.name()}" if row.label != arch.name() else None)
        written.append(_png(path))
    return written
