"""Means and 95% intervals over independent units (seeds), plain and paired, within the range the values can
take; whether an arm is at chance; rank correlations over units. What every verdict rests on.

An interval is Student-t over the units, intersected with the metric's range (an accuracy's [0, 1], a
difference of two accuracies' [-1, 1]): the true mean lies in the range, so the intersection covers it exactly
as often as the t-interval does, and no bound reads as an impossible value. Not the percentile bootstrap: with
3 seeds its 95% interval is the seeds' [min, max], which holds the mean about 75% of the time (5 seeds: about
82%; 10 seeds: 90%; simulated for normal and Beta(45, 2) accuracies, where t holds it 92-95% of the time at
every n). `mean_ci(method="bootstrap")` (the percentile interval, a fixed RNG seed: a report is a function of
its rows) is there for many units. Rank correlations use tl_research.analysis.rank_correlation: a permutation
p-value and a bootstrap interval, over units the caller names (never seeds taken as domains).
"""
from __future__ import annotations

import dataclasses
import math
from typing import Iterable, Mapping

import numpy as np
import pandas as pd
from scipy import stats as scipy_stats

from tl_research.analysis import rank_correlation

LEVEL = 0.95
ACCURACY = (0.0, 1.0)  # the range of an accuracy, balanced accuracy or F1
DIFFERENCE = (-1.0, 1.0)  # the range of a difference of two of them
AUTO = "auto"  # paired_difference: DIFFERENCE when both sides hold values in [0, 1], else no range
BOOTSTRAP, RNG_SEED = 2000, 0  # resamples and RNG seed of every bootstrap here
METHODS = ("t", "bootstrap")


@dataclasses.dataclass(frozen=True)
class Estimate:
    """The mean of n values over independent units and its two-sided interval (NaN bounds with n < 2: none)."""
    mean: float
    low: float
    high: float
    n: int
    paired: bool = False
    method: str = "t"  # "t": Student-t within the range; "bootstrap": percentile bootstrap
    units: str = "seeds"  # what the n independent units are

    def text(self, digits: int = 3, signed: bool = True) -> str:
        fmt = f"{{:{'+' if signed else ''}.{digits}f}}"
        if math.isnan(self.mean):
            return "no runs"
        if self.n < 2 or math.isnan(self.low):
            return f"{fmt.format(self.mean)} (n={self.n} {self.units}, no interval)"
        kind = "bootstrap CI" if self.method == "bootstrap" else "CI"
        pairing = ", paired" if self.paired else ""
        return (f"{fmt.format(self.mean)} [{LEVEL:.0%} {kind} {fmt.format(self.low)}, {fmt.format(self.high)}; "
                f"n={self.n} {self.units}{pairing}]")


def _clean(values: Iterable[float]) -> np.ndarray:
    return np.asarray([x for x in values if x is not None and not pd.isna(x)], float)


def mean_ci(values: Iterable[float], *, paired: bool = False, level: float = LEVEL, bounds=None,
            method: str = "t", units: str = "seeds") -> Estimate:
    """The mean and its interval, intersected with `bounds` (low, high) when given. method "t":
    mean ± t_{(1+level)/2, n-1} * s / sqrt(n) (s: the sample standard deviation); "bootstrap": the
    percentile interval of BOOTSTRAP resampled means (RNG seed RNG_SEED)."""
    if method not in METHODS:
        raise ValueError(f"method {method!r}: one of {', '.join(METHODS)}")
    v = _clean(values)
    if len(v) == 0:
        return Estimate(math.nan, math.nan, math.nan, 0, paired, method, units)
    mean = float(v.mean())
    if len(v) < 2:
        return Estimate(mean, math.nan, math.nan, 1, paired, method, units)
    if method == "t":
        half = float(scipy_stats.t.ppf((1 + level) / 2, len(v) - 1) * v.std(ddof=1) / math.sqrt(len(v)))
        low, high = mean - half, mean + half
    else:
        means = v[np.random.default_rng(RNG_SEED).integers(0, len(v), (BOOTSTRAP, len(v)))].mean(axis=1)
        low, high = (float(q) for q in np.quantile(means, [(1 - level) / 2, (1 + level) / 2]))
    if bounds is not None:
        low, high = max(low, bounds[0]), min(high, bounds[1])
    return Estimate(mean, low, high, len(v), paired, method, units)


def range_of(metric: str):
    """ACCURACY for a metric named like an accuracy or an F1 (test_accuracy, ood_accuracy,
    test_balanced_accuracy, test_macro_f1), else None (no range known)."""
    return ACCURACY if metric.endswith("accuracy") or metric.endswith("_f1") else None


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


def _within(s: pd.Series, low: float, high: float) -> bool:
    v = _clean(s.tolist())
    return len(v) > 0 and bool(((v >= low) & (v <= high)).all())


def paired_difference(a: pd.Series, b: pd.Series, *, bounds=AUTO, units: str = "seeds") -> Estimate:
    """a - b over the seeds both have (the same seed draws the same subset, initial head and source model).
    bounds AUTO: [-1, 1] when every value of a and b lies in [0, 1] (accuracies), else none; or (low, high);
    or None."""
    common = a.index.intersection(b.index)
    a, b = a[common], b[common]
    if isinstance(bounds, str):
        bounds = DIFFERENCE if _within(a, *ACCURACY) and _within(b, *ACCURACY) else None
    return mean_ci((a - b).tolist(), paired=True, bounds=bounds, units=units)


def chance_metric(df: pd.DataFrame, metric: str) -> str:
    """The column chance is judged on for `metric`: its balanced accuracy when the rows have it (a constant
    prediction scores exactly 1/classes there, whatever the test set's class frequencies), else `metric`."""
    if metric.endswith("accuracy") and not metric.endswith("balanced_accuracy"):
        balanced = metric[:-len("accuracy")] + "balanced_accuracy"
        if balanced in df:
            return balanced
    return metric


def at_chance(values, chance: float, level: float = LEVEL) -> bool:
    """No interval above chance: the values' interval (one value: the value) does not exclude `chance`
    (1/classes) from above. False without values."""
    e = mean_ci(list(values), level=level, bounds=ACCURACY)
    if e.n == 0:
        return False
    return (e.mean if math.isnan(e.low) else e.low) <= chance


def chance_reason(arms: Mapping[str, Iterable[float]], chance: float) -> str:
    """Why a comparison of these arms is not testable: no arm's accuracy shown above chance (one line), else ''."""
    values = {name: list(v) for name, v in arms.items()}
    if not values or not all(len(_clean(v)) and at_chance(v, chance) for v in values.values()):
        return ""
    names = list(values)
    who = names[0] if len(names) == 1 else ", ".join(names[:-1]) + " and " + names[-1]
    return f"{who} not shown above chance (1/{round(1 / chance)} = {chance:.3f}: no {LEVEL:.0%} interval lies above it)"


def rank_agreement(x, y, statistic: str = "spearman") -> rank_correlation.Agreement:
    """The rank correlation of x and y over their units (one value each), its permutation p-value and bootstrap
    interval (rank_correlation.agreement, RNG seed RNG_SEED)."""
    return rank_correlation.agreement(list(x), list(y), statistic, seed=RNG_SEED)


def smallest_p(n: int) -> float:
    """The smallest two-sided permutation p-value a rank correlation over n untied units can reach: 2 / n!
    (the ranking and its reverse); 1 below 2 units."""
    return 1.0 if n < 2 else min(1.0, 2.0 / math.factorial(n))
