"""Pareto fronts: the points no other point beats on every objective.

``export --pareto`` (the Pareto set of a search's trials), the report's size figure and a
study's ``pareto`` comparison all use :func:`pareto_front`.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np


def pareto_front(points: Sequence[Sequence[float]], modes: Sequence[str]) -> list[int]:
    """Indices (ascending) of the non-dominated ``points`` under ``modes`` (``"max"``/``"min"``
    per coordinate). A point is dominated if another is at least as good in every coordinate
    and strictly better in one; equal points do not dominate each other, so duplicates on the
    front are all kept. Values must be finite numbers."""
    modes = list(modes)
    if not modes or any(m not in ("max", "min") for m in modes):
        raise ValueError(f"modes must be a non-empty list of 'max'/'min', found {modes}")
    if len(points) == 0:
        return []
    values = np.asarray(points, dtype=float)
    if values.ndim != 2 or values.shape[1] != len(modes):
        raise ValueError(f"expected points of {len(modes)} values each, found shape {values.shape}")
    if not np.isfinite(values).all():
        raise ValueError("pareto_front needs finite values")
    values = values * np.array([1.0 if m == "max" else -1.0 for m in modes])  # larger is better everywhere
    front = []
    for i, point in enumerate(values):
        dominated = ((values >= point).all(axis=1) & (values > point).any(axis=1)).any()
        if not dominated:
            front.append(i)
    return front


def score_cost_front(points: dict[str, tuple[float, float]]) -> list[str]:
    """The names of ``points`` (``{name: (score, cost)}``) on the front of score (higher is
    better) against cost (lower is better), by increasing cost."""
    names = list(points)
    front = [names[i] for i in pareto_front([points[n] for n in names], ["max", "min"])] if names else []
    return sorted(front, key=lambda n: points[n][1])
