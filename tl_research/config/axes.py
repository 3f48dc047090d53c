"""Sweep axes: the helpers a config file's get_sweep builds its points with, one {dotted key: value} per run."""
from __future__ import annotations

import itertools
from typing import Any, Iterable

Points = list[dict[str, Any]]


def axis(key: str, values: Iterable) -> Points:
    """One sweep axis: a run per value of `key`."""
    return [{key: v} for v in values]


def product(*axes: Points) -> Points:
    """Every combination of the axes (the last varies fastest)."""
    out = []
    for combo in itertools.product(*axes):
        point: dict[str, Any] = {}
        for part in combo:
            point.update(part)
        out.append(point)
    return out


def zip_axes(*axes: Points) -> Points:
    """Axes of equal length, walked together."""
    lengths = {len(a) for a in axes}
    if len(lengths) > 1:
        raise ValueError(f"zip_axes needs axes of equal length, got {sorted(lengths)}")
    return [{k: v for part in parts for k, v in part.items()} for parts in zip(*axes)]


def chain(*axes: Points) -> Points:
    """The runs of several sweeps, one after the other."""
    return [dict(p) for a in axes for p in a]
