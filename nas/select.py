"""Final-design selection: Pareto fronts per budget, and a choice that looks past the budgets measured.

Two questions, both answered from a study's results database (`nas.results.ResultStore`):

- Which candidates are not dominated? `fronts(store)`: the Pareto front of accuracy against each cost
  (image GMACs, image parameters, measured training throughput) at every budget. It is the store's own
  per-budget front, so only results measured at the same budget compete.
- Which candidate will be best at the target scale? `at_target(store, target_samples=...)` fits a scaling law
  (`nas.scaling`) of error against samples seen to every arch measured at several budgets (or of error
  against compute to every family), extrapolates it to the target with its prediction interval, and ranks by
  it. The best of a short proxy run is often not the best at scale; the law says so before the long run.
  Two candidates whose intervals overlap cannot be told apart: `choose` keeps the best and every candidate
  that is not distinguishable from it, rather than pretend to a winner.

`write_selection` writes each chosen arch as `nas.export` does, with the trained weights of the furthest rung the
search kept a checkpoint of (open_clip loads them), or as its open_clip config alone when none was kept; and as
arch JSON (`tower.json`), to train it at the target scale.

    store = ResultStore.open("runs/vitamin_design_choices", readonly=True)
    ranking = at_target(store, target_samples=1_280_000, max_gmacs=0.03)
    write_selection(store, ranking, choose(ranking), "runs/vitamin_design_choices/selection")
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from nas import status
from nas.arch import Arch
from nas.errors import ConfigError
from nas.metrics import TRAINED, direction, to_error
from nas.presets import TextTower
from nas.results import ResultStore

if TYPE_CHECKING:
    import pandas as pd

    from nas.scaling import Fit

#: The costs accuracy is traded against, and which way each is better.
COST_AXES = {"image_gmacs": "min", "image_params_m": "min", "images_per_s": "max"}
#: What one ranked candidate is: an arch (law in samples seen), or a family (law in compute, over its members).
BY = ("arch", "family")
SELECTION_FILE = "selection.json"
TOWER_FILE = "tower.json"


# ---- what a study measured ---------------------------------------------------------------------------------


def with_labels(frame: pd.DataFrame, labels: dict[str, str]) -> pd.DataFrame:
    """`frame` with a `label` column: the study's label of each arch_id, else the arch's name."""
    return frame.assign(label=[labels.get(a, name) for a, name in zip(frame.arch_id, frame.arch_name)])


def measurements(store: ResultStore, metric: str = "zeroshot_top1") -> pd.DataFrame:
    """One row per usable trial and rung (`ResultStore.frame`), with `label` (the study's, else the arch name),
    `compute` (image GMACs x samples seen: the searched tower's forward compute over training, in the units of
    `--target-gmacs` x `--target-samples`) and `error` (`to_error`)."""
    frame = with_labels(store.frame(status=status.MEASURED), store.study().label_of)
    frame["compute"] = frame.image_gmacs.astype(float) * frame.samples_seen.astype(float)
    if metric not in frame:
        if not frame.empty:
            raise ConfigError(f"no trial reported {metric!r}; measured: {', '.join(_metrics(frame))}",
                              source=str(store.path), field="--metric")
        frame[metric] = np.nan
    frame["error"] = to_error(frame[metric].astype(float), metric)
    return frame


def _metrics(frame: pd.DataFrame) -> list[str]:
    return [c for c in frame.columns if c in TRAINED or c == "images_per_s"]


def fronts(store: ResultStore, metric: str = "zeroshot_top1", axes: dict[str, str] | None = None,
           budget: int | None = None) -> pd.DataFrame:
    """The Pareto front of `metric` against each cost axis at every budget (or one); column `axis` names the
    cost, `label` the candidate. Axes no trial measured (throughput before any rung) are left out."""
    import pandas as pd

    columns = set(store.frame().columns)
    parts = [store.pareto_front({metric: direction(metric), axis: way}, budget=budget).assign(axis=axis)
             for axis, way in (axes or COST_AXES).items() if axis in columns]
    front = pd.concat(parts, ignore_index=True) if parts else store.frame().iloc[0:0].assign(axis=None)
    return with_labels(front, store.study().label_of)


def family_laws(frame: pd.DataFrame, law: str = "power", level: float = 0.95) -> dict[str, Fit]:
    """Error against compute per arch family (`measurements` rows), over all its members and budgets: how a
    layout scales, whatever its size. Families with too few points for `law` are left out."""
    from nas.scaling import fit

    laws = {}
    for family, rows in frame.dropna(subset=["error"]).groupby("family", sort=True):
        try:
            laws[family] = fit(law, rows.compute, rows.error, level=level)
        except ConfigError:
            continue
    return laws


# ---- scaling-aware ranking ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Prediction:
    """One candidate (an arch, or a family) with its law extrapolated to the target.

    `value`, `lower` and `upper` are the metric (accuracy, or loss) at `target` with its prediction
    interval; NaN when no law could be fitted (`note` says why). `arch` is what would be built: the arch
    itself, or the family's best measured member.
    """

    key: str
    label: str
    arch: Arch
    image_gmacs: float
    image_params_m: float
    target: float
    measured: float
    points: int
    value: float
    lower: float
    upper: float
    fit: Fit | None = None
    note: str = ""
    as_measured: bool = False  # no candidate had a law: `value` is the measured one at `target` (`as_measured`)

    @property
    def fitted(self) -> bool:
        return self.fit is not None

    @property
    def ranked(self) -> bool:
        """It has a value to rank by: its law's, or (no candidate had a law) its measured one."""
        return self.fitted or (self.as_measured and not math.isnan(self.value))

    @property
    def extrapolated(self) -> bool:
        return self.target > self.measured

    def overlaps(self, other: Prediction) -> bool:
        """Not distinguishable: the two prediction intervals share a value."""
        return self.ranked and other.ranked and self.lower <= other.upper and other.lower <= self.upper

    @property
    def degenerate(self) -> str:
        """Why this prediction's interval cannot separate it from anything ("" when it can): not finite, of
        zero width, or cut off at an accuracy of 0 or 1 (the law's interval ran past what accuracy can be)."""
        if not self.fitted:
            return "no law"
        if not (math.isfinite(self.lower) and math.isfinite(self.upper)):
            return "interval not finite"
        if self.upper - self.lower <= 0:
            return "zero-width interval"
        if self.lower <= 0.0 or self.upper >= 1.0:
            return "interval cut off at an accuracy of 0 or 1"
        return ""

    @property
    def decades(self) -> float:
        """How far the target lies beyond the largest measured value, in decades (0 inside the data)."""
        return max(0.0, math.log10(self.target / self.measured)) if self.measured > 0 else math.inf

    def to_dict(self) -> dict[str, Any]:
        fitted = {"law": self.fit.law, "params": self.fit.params, "ci": self.fit.ci, "r2_log": self.fit.r2_log} \
            if self.fit else None
        return {"key": self.key, "label": self.label, "arch_name": self.arch.name(), "arch_id": self.arch.arch_id,
                "image_gmacs": self.image_gmacs, "image_params_m": self.image_params_m, "target": self.target,
                "measured": self.measured, "points": self.points, "extrapolated": self.extrapolated,
                "value": _finite(self.value), "lower": _finite(self.lower), "upper": _finite(self.upper),
                "fit": fitted, "note": self.note, "as_measured": self.as_measured}


def _finite(value: float) -> float | None:
    return None if math.isnan(value) else value


def at_target(store: ResultStore, *, target_samples: float | None = None, target_compute: float | None = None,
              max_gmacs: float | None = None, gmacs_tolerance: float = 0.1, by: str = "arch", law: str = "power",
              metric: str = "zeroshot_top1", level: float = 0.95) -> list[Prediction]:
    """Every candidate's metric extrapolated to the target, best first (candidates without a law last).

    By arch, the law is error against samples seen, extrapolated to `target_samples`, or to `target_compute`
    / the arch's image GMACs, or else to the largest budget measured. By family, it is error against
    compute over every member and budget, extrapolated to `target_compute` (or `max_gmacs` x
    `target_samples`). `max_gmacs` keeps candidates whose image tower costs at most that much (plus
    `gmacs_tolerance`, as matched comparisons allow).
    """
    if by not in BY:
        raise ConfigError(f"{by!r} is not one of {', '.join(BY)}", field="--by")
    if target_samples is not None and target_compute is not None:
        raise ConfigError("give a target in samples seen or in compute, not both", field="--target-compute")
    frame = measurements(store, metric).dropna(subset=["error"])
    if frame.empty:
        raise ConfigError(f"no usable measurement of {metric} yet", source=str(store.path))
    limit = None if max_gmacs is None else max_gmacs * (1 + gmacs_tolerance)
    if by == "family":
        if target_compute is None:
            if (max_gmacs is None) != (target_samples is None):
                raise ConfigError("ranking families needs a target compute: --target-compute, or --target-gmacs "
                                  "with --target-samples (default: the largest compute measured)",
                                  field="--target-compute")
            target_compute = float(frame.compute.max()) if max_gmacs is None else max_gmacs * target_samples
        predictions = [_family(family, rows, target_compute, limit, law, metric, level)
                       for family, rows in frame.groupby("family", sort=True)]
    else:
        default = float(frame.budget.max())
        predictions = [_arch(rows, _samples_target(rows, target_samples, target_compute, default), law, metric, level)
                       for _, rows in frame.groupby("arch_id", sort=False)
                       if limit is None or rows.image_gmacs.iloc[0] <= limit]
    predictions = [p for p in predictions if p is not None]
    if predictions and not any(p.fitted for p in predictions):
        predictions = as_measured(frame if limit is None else frame[frame.image_gmacs <= limit], by, metric)
    sign = -1.0 if direction(metric) == "max" else 1.0
    return sorted(predictions, key=lambda p: (not p.ranked, sign * p.value if p.ranked else 0.0, p.label))


def as_measured(frame: pd.DataFrame, by: str, metric: str) -> list[Prediction]:
    """When no candidate has a law: each one by its value measured at the furthest budget that two or more
    candidates reached (the furthest, when only one did), with its interval over the eval set; a family by its
    best member there. Nothing is extrapolated; candidates not measured at that budget are not ranked."""
    key = "arch_id" if by == "arch" else "family"
    reached = frame.groupby("budget")[key].nunique()
    common = reached[reached >= 2]
    budget = int(common.index.max() if not common.empty else reached.index.max())
    ranked = []
    for name, rows in frame.groupby(key, sort=True):
        at = rows[rows.budget == budget].sort_values("error", kind="stable")
        best = (at if not at.empty else rows.sort_values(["budget", "error"], ascending=[False, True])).iloc[0]
        value = float(best[metric]) if not at.empty else math.nan
        low, high = (float(best.get(f"{metric}_{end}", value)) for end in ("low", "high"))
        low, high = (value, value) if math.isnan(low) or math.isnan(high) else (low, high)
        note = f"measured at {budget:,} samples seen, not extrapolated" if not at.empty else \
            f"not measured at {budget:,} samples seen: not ranked"
        ranked.append(Prediction(key=str(name), label=str(name) if by == "family" else best.label,
                                 arch=Arch.from_json(best.arch), image_gmacs=float(best.image_gmacs),
                                 image_params_m=float(best.image_params_m), target=float(budget),
                                 measured=float(best.samples_seen), points=int(rows.budget.nunique()), value=value,
                                 lower=low, upper=high, note=note, as_measured=True))
    return ranked


def _samples_target(rows: pd.DataFrame, samples: float | None, compute: float | None, default: float) -> float:
    if samples is not None:
        return float(samples)
    if compute is not None:
        return float(compute) / float(rows.image_gmacs.iloc[0])
    return default


def _arch(rows: pd.DataFrame, target: float, law: str, metric: str, level: float) -> Prediction:
    """An arch's law through its seed mean at each budget (a confirmed finalist ran with several seeds)."""
    first = rows.iloc[0]
    means = rows.groupby("budget")[["samples_seen", "error"]].mean()
    return _predict(first.arch_id, first.label, Arch.from_json(first.arch), first, means.samples_seen, means.error,
                    target, law, metric, level)


def _family(family: str, rows: pd.DataFrame, target: float, limit: float | None, law: str, metric: str,
            level: float) -> Prediction | None:
    """The family's law over all its members; the arch written is its best member (within the GMACs limit) at
    the largest budget that member reached."""
    members = rows if limit is None else rows[rows.image_gmacs <= limit]
    if members.empty:
        return None
    furthest = members[members.budget == members.budget.max()]
    best = furthest.sort_values("error", kind="stable").iloc[0]
    return _predict(family, family, Arch.from_json(best.arch), best, rows.compute, rows.error, target, law,
                    metric, level)


def _predict(key: str, label: str, arch: Arch, row: Any, x: Any, error: Any, target: float, law: str, metric: str,
             level: float) -> Prediction:
    from nas.scaling import backtest, fit

    x, error = np.asarray(x, dtype=float), np.asarray(error, dtype=float)
    common = {"key": key, "label": label, "arch": arch, "image_gmacs": float(row.image_gmacs),
              "image_params_m": float(row.image_params_m), "target": float(target), "measured": float(x.max()),
              "points": len(x)}
    try:
        law_fit = fit(law, x, error, level=level)
    except ConfigError as err:
        return Prediction(**common, value=math.nan, lower=math.nan, upper=math.nan,
                          note=f"no {law} law: {err.message}")
    interval = law_fit.extrapolate([target], level=level)
    notes = list(law_fit.warnings)
    if interval.depends_on:
        notes.append(f"its interval at the target depends on {', '.join(interval.depends_on)}, which the runs do not "
                     "identify: the range over the values they allow")
    if interval.extrapolated.any():
        checked = backtest(law_fit, x, error, [target], level=level)
        notes += checked.warnings
        interval = checked.interval  # a power law's widened to hold a floor the runs cannot rule out
    low, high = float(interval.lower[0]), float(interval.upper[0])
    value, lower, upper = float(interval.y[0]), low, high
    if direction(metric) == "max":  # an error law may pass 1 (a rising error): accuracy stays in [0, 1]
        value, lower, upper = (float(np.clip(1.0 - v, 0.0, 1.0)) for v in (value, high, low))
    return Prediction(**common, value=value, lower=lower, upper=upper, fit=law_fit, note="; ".join(notes))


def choose(ranking: list[Prediction]) -> list[Prediction]:
    """The best candidate and every one that is not distinguishable from it (overlapping intervals)."""
    ranked = [p for p in ranking if p.ranked]
    if not ranked:
        return []
    best = ranked[0]
    return [best, *(p for p in ranked[1:] if p.overlaps(best))]


def separation(ranking: list[Prediction], chosen: list[Prediction], level: float = 0.95) -> str:
    """One sentence on whether the best candidate can be told from the others at the target, never claiming
    more than the intervals hold: "distinguishable" only when at least one other candidate has a law, and the
    best's interval and every other fitted one are sound and apart."""
    if not chosen:
        return "no candidate was measured at enough budgets to fit a law: nothing can be ranked"
    best, *tied = chosen
    if not best.fitted:  # ranked as measured (`as_measured`)
        ties = f", not distinguishable from {', '.join(p.label for p in tied)} ({level:.0%} intervals over the " \
            "eval set overlap)" if tied else ""
        return (f"no candidate was measured at enough budgets to fit a law, so nothing was extrapolated: ranked by "
                f"the value measured at {best.target:,.0f} samples seen; {best.label} is best{ties}")
    others = [p for p in ranking if p is not best]
    unfitted = [p.label for p in others if not p.fitted]
    if tied:
        return (f"{best.label} is best, but not distinguishable from {', '.join(p.label for p in tied)} "
                f"({level:.0%} prediction intervals overlap)")
    if not [p for p in others if p.fitted]:
        reason = f" ({', '.join(unfitted)} had too few budgets for a law)" if unfitted else ""
        return f"{best.label} is the only candidate with a law{reason}: it cannot be called distinguishable"
    unsound = [f"{p.label}: {p.degenerate}" for p in [best, *others] if p.fitted and p.degenerate]
    if unsound:
        return (f"{best.label} is best, but its separation from the others cannot be claimed: "
                f"{'; '.join(unsound)}")
    note = f"; {', '.join(unfitted)} had no law and are not compared" if unfitted else ""
    return f"{best.label} is best, distinguishable from every other fitted candidate at {level:.0%}{note}"


def extrapolation_warnings(ranking: list[Prediction], max_gmacs: float | None = None) -> list[str]:
    """Where a target lies more than one decade beyond the data: in samples seen or compute (each candidate's
    law), or in GMACs (a target tower far larger than any candidate measured); and what each candidate's law
    warns of (`Fit.warnings`: lack of fit, unidentified terms; the backtest of its extrapolation)."""
    warnings = []
    far = [p for p in ranking if p.decades > 1]
    if far:
        worst = max(far, key=lambda p: p.decades)
        warnings.append(f"the target is {worst.decades:.1f} decades beyond the data for {worst.label} (more than one "
                        f"decade for {len(far)} of {len(ranking)} candidates): these are extrapolations, not "
                        "measurements")
    if max_gmacs is not None and ranking:
        largest = max(p.image_gmacs for p in ranking)
        decades = math.log10(max_gmacs / largest) if largest > 0 else math.inf
        if decades > 1:
            warnings.append(f"--target-gmacs {max_gmacs:g} is {decades:.1f} decades beyond the largest candidate "
                            f"measured ({largest:.3g} GMACs): the ranking says nothing measured about towers that "
                            "large")
    warnings += [f"{p.label}: {p.note}" for p in ranking if p.fitted and p.note]  # its law's own Fit.warnings
    return warnings


# ---- writing the choice --------------------------------------------------------------------------------------


def write_selection(store: ResultStore, ranking: list[Prediction], chosen: list[Prediction],
                    out: str | os.PathLike, **target: Any) -> Path:
    """`out/selection.json` (the ranking, the choice, the target) and, per chosen arch, `out/NN-<arch_id>/`:
    `tower.json` (the Arch, for `vitamin-nas arch` and `train --arch`) and the layout `nas.export` writes, with
    the trained weights of the furthest rung whose checkpoint the search kept (`nas.export.load_open_clip(dir)`
    loads the trained model), or without weights when it kept none (each entry's `weights` is then null)."""
    from nas.export import MEASURED_FILE, WEIGHTS_FILE, export_trained, furthest_trained

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    study = store.study()
    text = study.text
    written = []
    for rank, prediction in enumerate(chosen, start=1):
        directory = out / f"{rank:02d}-{prediction.arch.arch_id}"
        kept = furthest_trained(store, prediction.arch.arch_id)
        if kept is None:
            for stale in (WEIGHTS_FILE, MEASURED_FILE):  # a previous selection's
                (directory / stale).unlink(missing_ok=True)
            write_model_config(prediction.arch, text, directory)
        else:
            export_trained(store, kept, directory)
            (directory / TOWER_FILE).write_text(prediction.arch.to_json(indent=2) + "\n")
        weights = None if kept is None else {"trial": kept.number, "rung": kept.rung, "budget": kept.budget,
                                             "samples_seen": kept.samples_seen}
        written.append({**prediction.to_dict(), "dir": str(directory), "weights": weights,
                        "load": f"nas.export.load_open_clip({str(directory)!r})" if kept else None})
    summary = {"study": study.name, "database": str(store.path), "target": target,
               "separation": separation(ranking, chosen, target.get("level", 0.95)),
               "warnings": extrapolation_warnings(ranking, target.get("max_image_gmacs")),
               "text": asdict(text), "chosen": written, "ranking": [p.to_dict() for p in ranking]}
    path = out / SELECTION_FILE
    path.write_text(json.dumps(summary, indent=2) + "\n")
    return path


def write_model_config(arch: Arch, text: TextTower, directory: Path) -> Path:
    """An export directory without weights: what open_clip needs to build the model, and the arch."""
    from nas.export import ARCH_FILE, CONFIG_FILE, model_config, preprocess_config

    directory.mkdir(parents=True, exist_ok=True)
    config = {"model_cfg": model_config(arch, text), "preprocess_cfg": preprocess_config(arch)}
    (directory / CONFIG_FILE).write_text(json.dumps(config, indent=2) + "\n")
    (directory / ARCH_FILE).write_text(json.dumps({"arch": arch.to_dict(), "text": asdict(text)}, indent=2) + "\n")
    (directory / TOWER_FILE).write_text(arch.to_json(indent=2) + "\n")
    return directory


__all__ = ["BY", "COST_AXES", "Prediction", "at_target", "choose", "extrapolation_warnings", "family_laws", "fronts",
           "measurements", "separation", "with_labels", "write_model_config", "write_selection"]
