"""A stratified order of candidates: every prefix covers each design choice and the cost range as evenly as it can.

A grid study that measures fewer candidates than its space holds, and a tabular benchmark of a space, want
candidates spread over every block type, width and depth the space offers, and over its cost range: a
random subset of 32 from 432 leaves some choices with two or three candidates, and the cheapest corner is
no more likely than any other to be missed. `stratified_order` takes the candidates one at a time, each
time the one whose values (every field of the arch that varies among the candidates, and its tercile of
image GMACs) have been taken least so far, ties broken by a seeded draw. Any prefix of the order is then
balanced on every field's marginal to within one candidate per value where the constraints allow, and the
order of a given set and seed is reproducible.
"""

from __future__ import annotations

import itertools
import random
from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np

from nas.arch import Arch
from nas.cost import cost

#: Cost strata: the candidates' image GMACs cut at their terciles.
COST_BINS = 3
#: Fields balanced first: what a space's author varies on purpose.
PRIMARY = ("block", "depth", "width", "mlp")


def arch_fields(arch: Arch) -> dict[str, Any]:
    """The arch as flat `field: value` pairs (`stages.1.block`, `transformer.depth`, `image_size`, ...)."""
    flat: dict[str, Any] = {}

    def walk(value: Any, prefix: str) -> None:
        if isinstance(value, dict):
            for key, item in value.items():
                walk(item, f"{prefix}.{key}" if prefix else key)
        elif isinstance(value, list):
            flat[f"{prefix}.count"] = len(value)
            for index, item in enumerate(value):
                walk(item, f"{prefix}.{index}")
        else:
            flat[prefix] = value

    walk(arch.to_dict(), "")
    return flat


def _determines(by: Sequence[tuple[str, ...]], values: Sequence[str]) -> bool:
    """Whether `values` are a function of `by` (one value for each combination seen)."""
    seen: dict[tuple[str, ...], str] = {}
    return all(seen.setdefault(key, value) == value for key, value in zip(by, values))


def _design_fields(fields: list[dict[str, str]]) -> list[str]:
    """The fields that vary, less those that other fields determine (a kernel set by the block, heads by the
    width, the stem's width by the first stage's): counted twice, they would weigh some choices double.
    Blocks, depths and widths are kept first."""
    names = sorted({n for f in fields for n in f})
    columns = {n: [f.get(n, "None") for f in fields] for n in names}
    varying = [n for n in names if len(set(columns[n])) > 1]
    varying.sort(key=lambda n: (0 if n.rsplit(".", 1)[-1] in PRIMARY else 1, n))
    kept: list[str] = []
    for name in varying:
        groups = [(k,) for k in kept] + list(itertools.combinations(kept, 2))
        if not any(_determines(list(zip(*(columns[k] for k in group))), columns[name]) for group in groups):
            kept.append(name)
    return kept


def strata(archs: Sequence[Arch], cost_bins: int = COST_BINS) -> list[dict[str, Any]]:
    """Each candidate's stratum on every design field (`_design_fields`) and its image GMACs bin."""
    fields = [{n: repr(v) for n, v in arch_fields(a).items()} for a in archs]
    names = _design_fields(fields)
    gmacs = np.array([cost(a).image_gmacs for a in archs])
    edges = np.quantile(gmacs, np.linspace(0, 1, cost_bins + 1)[1:-1]) if len(archs) > 1 else np.array([])
    bins = np.searchsorted(edges, gmacs, side="right")
    return [{**{n: f.get(n, "None") for n in names}, "image_gmacs_bin": int(b)} for f, b in zip(fields, bins)]


def stratified_order(archs: Iterable[Arch], seed: int = 0, cost_bins: int = COST_BINS) -> list[Arch]:
    """`archs` (distinct) reordered so that each prefix covers their design choices and cost range evenly."""
    archs = list(archs)
    if len(archs) < 2:
        return archs
    keys = strata(archs, cost_bins)
    names = list(keys[0])
    codes = np.array([[sorted({k[n] for k in keys}).index(k[n]) for n in names] for k in keys])
    taken = np.zeros((len(names), codes.max() + 1), dtype=int)  # how often each value of each field was taken
    columns = np.arange(len(names))
    left = list(range(len(archs)))
    random.Random(seed).shuffle(left)  # the tie-break: among equally covered candidates, the first in this order
    order = []
    while left:
        best = left[int(np.argmin(taken[columns, codes[left]].sum(axis=1)))]
        taken[columns, codes[best]] += 1
        left.remove(best)
        order.append(archs[best])
    return order
