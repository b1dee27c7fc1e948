"""Pareto math on arrays (smaller is better in every column): which rows no other dominates, NSGA-II's fronts and
crowding distances, and the order they give. The store's readers, the schedulers, selection and plots use it.

    points = minimization(frame, {"zeroshot_top1": "max", "image_gmacs": "min"})
    frame[pareto_mask(points)]                     # the front
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np


def minimization(frame: Any, objectives: Mapping[str, str]) -> np.ndarray:
    """(n, k) values, negated where the objective is maximised, so that smaller is better in every column."""
    return np.column_stack([np.asarray(frame[name], dtype=float) * (-1.0 if direction == "max" else 1.0)
                            for name, direction in objectives.items()])


def pareto_mask(points: np.ndarray) -> np.ndarray:
    """Which rows (minimisation) no other row dominates."""
    points = np.asarray(points, dtype=float)
    better_or_equal = (points[:, None, :] <= points[None, :, :]).all(axis=2)
    strictly = (points[:, None, :] < points[None, :, :]).any(axis=2)
    dominated = (better_or_equal & strictly).any(axis=0)
    return ~dominated


def nondominated_ranks(points: np.ndarray) -> np.ndarray:
    """NSGA-II's front index of every row: 0 for the Pareto front, 1 for the front once it is removed, ..."""
    points = np.asarray(points, dtype=float)
    ranks = np.full(len(points), -1)
    remaining = np.arange(len(points))
    front = 0
    while remaining.size:
        mask = pareto_mask(points[remaining])
        ranks[remaining[mask]] = front
        remaining = remaining[~mask]
        front += 1
    return ranks


def crowding_distance(points: np.ndarray) -> np.ndarray:
    """NSGA-II's crowding distance within one front: larger for points in sparser regions (ends: infinite)."""
    points = np.asarray(points, dtype=float)
    n, k = points.shape
    distance = np.zeros(n)
    if n <= 2:
        return np.full(n, np.inf)
    for j in range(k):
        order = np.argsort(points[:, j], kind="stable")
        span = points[order[-1], j] - points[order[0], j]
        distance[order[0]] = distance[order[-1]] = np.inf
        if span > 0:
            distance[order[1:-1]] += (points[order[2:], j] - points[order[:-2], j]) / span
    return distance


def pareto_order(points: np.ndarray) -> np.ndarray:
    """Row indices best first: by front, then by crowding distance (as NSGA-II and MO-ASHA select)."""
    points = np.asarray(points, dtype=float)
    ranks = nondominated_ranks(points)
    crowding = np.zeros(len(points))
    for front in np.unique(ranks):
        members = np.flatnonzero(ranks == front)
        crowding[members] = crowding_distance(points[members])
    return np.lexsort((-crowding, ranks))
