"""Pareto fronts and exact hypervolume of objective vectors (numpy only, no torch).

Points are costs to minimise, ``(N, K)`` float64: a maximised objective enters negated
(:func:`as_costs`). Shared by the dashboards' Pareto views and the platform's replay, so both
measure a front the same way.
"""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def as_costs(values: np.ndarray, directions: Sequence[str]) -> np.ndarray:
    """Returns ``values`` ``(N, K)`` as costs to minimise: columns whose direction is ``"max"``
    negated, ``(N, K)`` float64."""
    signs = np.array([-1.0 if d == "max" else 1.0 for d in directions])
    return np.asarray(values, dtype="float64").reshape(-1, len(signs)) * signs  # (N, K)


def non_dominated(costs: np.ndarray) -> np.ndarray:
    """Returns the mask ``(N,)`` of the rows of ``costs`` ``(N, K)`` that no other row dominates;
    O(N^2 K)."""
    weakly = (costs[:, None, :] <= costs[None, :, :]).all(axis=-1)  # (N, N): i no worse than j
    strictly = (costs[:, None, :] < costs[None, :, :]).any(axis=-1)  # (N, N): i better somewhere
    return ~(weakly & strictly).any(axis=0)


def hypervolume(costs: np.ndarray, reference: np.ndarray) -> float:
    """Returns the exact hypervolume that ``costs`` ``(N, K)`` dominate up to ``reference``
    ``(K,)``, in the product of the objectives' units; 0 when no point is strictly inside."""
    costs = costs[(costs < reference).all(axis=1)]
    if not len(costs):
        return 0.0
    return float(_slices(np.unique(costs[non_dominated(costs)], axis=0), reference))


def _slices(costs: np.ndarray, reference: np.ndarray) -> float:
    """HSO on mutually non-dominated points strictly inside the reference."""
    if costs.shape[1] == 1:
        return reference[0] - costs[:, 0].min()
    if costs.shape[1] == 2:  # sweep by the first objective: each point adds its strip below the last
        costs = costs[np.lexsort((costs[:, 1], costs[:, 0]))]  # non-dominated: 2nd now non-increasing
        upper = np.append(reference[1], costs[:-1, 1])
        return float(((reference[0] - costs[:, 0]) * (upper - costs[:, 1])).sum())
    costs = costs[np.argsort(costs[:, -1], kind="stable")]
    tops = np.append(costs[1:, -1], reference[-1])  # each slice spans [own last coordinate, next one)
    volume = 0.0
    for i in range(len(costs)):
        depth = tops[i] - costs[i, -1]
        if depth > 0:  # the points at or below this slice, projected onto the other objectives
            below = costs[: i + 1, :-1]
            volume += depth * _slices(below[non_dominated(below)], reference[:-1])
    return volume
