"""benchmarks/study_time.py: a study's runs summed in the order Ray starts them, each on the first slot to come
free (the training speeds are given here; measuring them is the benchmark's, which asserts nothing)."""

from __future__ import annotations

import dataclasses
import sys
from pathlib import Path

from nas.study import load_study

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "benchmarks"))
import study_time  # noqa: E402


def test_the_runs_are_laid_on_the_slots_in_the_studys_order():
    study = load_study(REPO / "studies" / "data_scaling.yaml")  # one arch, 2 at once: at 4k ... 128k, doubling
    study = dataclasses.replace(study, budget=dataclasses.replace(study.budget, reduction_factor=2))
    arch = study.archs[0].arch_id
    result = study_time.estimate(study, {arch: 100.0}, {arch: 2.0}, startup_s=8.0)
    # runs of 50, 90, 170, 330, 650, 1290 s: A 50 -> 220 -> 870, B 90 -> 420 -> 1710
    assert result["runs"] == 6 and result["samples"] == 252_000
    assert result["total_s"] == 1710.0 and result["by_arch_s"] == {arch: 2580.0}
