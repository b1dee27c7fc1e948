"""A real results database for the selection, plotting and report tests.

The design-choice study (studies/vitamin_design_choices.yaml, its archs and labels, with the micro-design
ablations of studies/vitamin_micro_design.yaml) is "measured" at four budgets through `ResultStore`'s own API,
the way the search driver writes. Each candidate's zero-shot error follows a known power law in samples seen,
error = B * (samples / 1000)^-alpha, times a small fixed wobble:

- ViTamin and CoAtNet follow nearly the same law (not distinguishable when extrapolated);
- ConvNeXtHybrid, ConvNeXt and then ViT are worse at every budget (so "ViTamin > CoAtNet > ViT" holds
  everywhere);
- MLP-d12 starts worse than ViTamin but falls faster: it wins from 9000 samples on (the GeGLU claim holds
  at two budgets of four) and is the best candidate extrapolated to a large budget;
- GeGLU-d12 gets worse at the last budget (data scaling is not monotonic for it);
- 8C and 4C were stopped early by ASHA after two rungs and one (too few points for a law);
- one more trial ran out of memory before any rung.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import yaml

from nas.cost import cost
from nas.results import ResultStore
from nas.study import Study, load_study, study_from_dict

REPO = Path(__file__).resolve().parents[1]
DESIGN = REPO / "studies" / "vitamin_design_choices.yaml"
MICRO = REPO / "studies" / "vitamin_micro_design.yaml"
BUDGETS = (1000, 3000, 9000, 27000)
#: label: (B, alpha, rungs measured, error multiplier at the last rung)
LAWS = {
    "ViTamin": (0.620, 0.15, 4, 1.0),
    "CoAtNet": (0.622, 0.15, 4, 1.0),
    "ConvNeXtHybrid": (0.650, 0.145, 4, 1.0),
    "ConvNeXt": (0.680, 0.14, 4, 1.0),
    "ViT": (0.720, 0.13, 4, 1.0),
    "MLP-d12": (0.660, 0.19, 4, 1.0),
    "GeGLU-d12": (0.640, 0.15, 4, 1.25),
    "8C": (0.630, 0.15, 2, 1.0),
    "4C": (0.650, 0.15, 1, 1.0),
}
WOBBLE = 0.003
START = 1_700_000_000.0


def design_study() -> Study:
    """The design-choice study and its micro-design ablations as one study, with this file's four budgets (rungs
    of one schedule, no early stopping) and one seed."""
    raw, micro = yaml.safe_load(DESIGN.read_text()), yaml.safe_load(MICRO.read_text())
    raw["archs"] = {**raw["archs"], **micro["archs"]}
    raw["groups"] = {**raw["groups"], **micro["groups"]}
    raw["budget"] = {"min_samples": BUDGETS[0], "max_samples": BUDGETS[-1], "reduction_factor": 3,
                     "early_stopping": "none"}
    raw.pop("repeats")
    return study_from_dict(raw, source=str(DESIGN))


def error(label: str, samples: float) -> float:
    """The law a label's measurements follow (without the wobble and the last-rung multiplier)."""
    b, alpha, _, _ = LAWS[label]
    return b * (samples / 1000) ** -alpha


def write_design_results(directory: Path) -> ResultStore:
    """The database of the design-choice study, measured as the module docstring says."""
    study = design_study()
    store = ResultStore.create(directory, study)
    rng = np.random.default_rng(0)
    clock = START
    for number, (label, arch) in enumerate(zip(study.labels, study.archs)):
        _, _, rungs, last = LAWS[label]
        trial_id = f"t{number:02d}"
        store.add_trial(trial_id, arch, cost(arch, study.text).metrics(), number=number, created_at=START)
        store.update_trial(trial_id, started_at=clock)
        store.start_attempt(trial_id)
        speed = 4e5 / (1e3 * store.trial(trial_id)["image_gmacs"] + 10)
        for rung, budget in enumerate(BUDGETS[:rungs]):
            err = error(label, budget) * (1 + WOBBLE * rng.standard_normal())
            err *= last if rung == len(BUDGETS) - 1 else 1.0
            store.record_rung(trial_id, {"budget": budget, "samples_seen": budget, "zeroshot_top1": 1 - err,
                                         "zeroshot_top5": 1 - err / 2, "loss": 1 + 3 * err, "images_per_s": speed,
                                         "wall_s": budget / speed + 5, "host": "node-a", "device": "cpu"},
                              rung=rung, session="s1")
        status = "completed" if rungs == len(BUDGETS) else "stopped_early"
        store.update_trial(trial_id, status=status, ended_at=clock + BUDGETS[rungs - 1] / speed)
        clock += 60
    oom = load_study(REPO / "studies" / "model_scaling.yaml").archs[-1]
    store.add_trial("t99", oom, cost(oom, study.text).metrics(), number=99, created_at=START)
    store.update_trial("t99", status="oom", error="CUDA out of memory")
    return store
