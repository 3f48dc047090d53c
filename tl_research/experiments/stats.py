"""Means and 95% confidence intervals over seeds (Student's t), plain and paired; what every verdict rests on."""
from __future__ import annotations

import dataclasses
import math
from typing import Iterable, Mapping

import numpy as np
import pandas as pd
from scipy import stats as scipy_stats

LEVEL = 0.95


@dataclasses.dataclass(frozen=True)
class Estimate:
    """The mean of n values and its two-sided Student-t interval (NaN bounds with n < 2: no interval)."""
    mean: float
    low: float
    high: float
    n: int
    paired: bool = False

    def text(self, digits: int = 3, signed: bool = True) -> str:
        fmt = f"{{:{'+' if signed else ''}.{digits}f}}"
        if math.isnan(self.mean):
            return "no runs"
        if self.n < 2:
            return f"{fmt.format(self.mean)} (n={self.n}, no interval)"
        kind = ", paired by seed" if self.paired else ""
        return (f"{fmt.format(self.mean)} [95% CI {fmt.format(self.low)}, {fmt.format(self.high)}; "
                f"n={self.n}{kind}]")


def mean_ci(values: Iterable[float], *, paired: bool = False, level: float = LEVEL) -> Estimate:
    """mean ± t_{(1+level)/2, n-1} * s / sqrt(n) (s: the sample standard deviation)."""
    v = np.asarray([x for x in values if x is not None and not math.isnan(x)], float)
    if len(v) == 0:
        return Estimate(math.nan, math.nan, math.nan, 0, paired)
    if len(v) < 2:
        return Estimate(float(v[0]), math.nan, math.nan, 1, paired)
    half = float(scipy_stats.t.ppf((1 + level) / 2, len(v) - 1) * v.std(ddof=1) / math.sqrt(len(v)))
    return Estimate(float(v.mean()), float(v.mean()) - half, float(v.mean()) + half, len(v), paired)


def matches(df: pd.DataFrame, where: Mapping[str, object]) -> pd.Series:
    """Rows whose columns equal `where` (values compared as numbers when both read as numbers, else as text:
    results.csv gives back '0.01', 'all', 10.0 alike)."""
    keep = pd.Series(True, index=df.index)
    for key, value in where.items():
        if key not in df:
            return pd.Series(False, index=df.index)
        col = df[key]
        hit = col.astype(str) == str(value)
        number = pd.to_numeric(pd.Series([value]), errors="coerce")[0]
        if not pd.isna(number):
            hit |= pd.to_numeric(col, errors="coerce") == number
        keep &= hit
    return keep


def per_seed(df: pd.DataFrame, metric: str, where: Mapping[str, object], on: str = "seed") -> pd.Series:
    """metric of the rows matching `where`, indexed by seed (several rows of a seed: their mean)."""
    rows = df[matches(df, where)]
    if rows.empty or metric not in rows:
        return pd.Series(dtype=float)
    return pd.to_numeric(rows[metric], errors="coerce").groupby(rows[on]).mean()


def paired_difference(a: pd.Series, b: pd.Series) -> Estimate:
    """a - b over the seeds both have: the same seed draws the same subset and the same initial head."""
    common = a.index.intersection(b.index)
    return mean_ci((a[common] - b[common]).tolist(), paired=True)
