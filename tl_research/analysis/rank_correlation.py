"""Does a score rank what was measured? Spearman's rho and the weighted Kendall tau (Vigna 2015, scipy's
`weightedtau`, what You et al. 2021 and TLlib report for transferability) between a score and a measured
accuracy over n independent units, each with

- a permutation p-value (two-sided: the share of relabellings of the accuracies whose |statistic| reaches the
  observed one; every permutation when n! <= `permutations`, else that many drawn at random, counted as
  (1 + hits) / (1 + draws));
- a percentile bootstrap interval: the units resampled with replacement `bootstrap` times, a resample with a
  constant side (no ranking) skipped and counted.

Nothing here assumes normality or treats seeds as units: the caller averages seeds within a unit and says what
its units are. Deterministic for a given `seed`.
"""
from __future__ import annotations

import dataclasses
import itertools
import math

import numpy as np
from scipy import stats

PERMUTATIONS, BOOTSTRAP, LEVEL = 1000, 1000, 0.95


@dataclasses.dataclass(frozen=True)
class Agreement:
    """One statistic between a score and a measurement over n units."""
    n: int
    value: float
    p: float  # permutation p-value, two-sided
    low: float  # bootstrap percentile interval at `level`
    high: float
    resamples: int  # bootstrap resamples that had a ranking on both sides

    def text(self) -> str:
        if math.isnan(self.value):
            return f"n={self.n}: too few"
        ci = "" if math.isnan(self.low) else f" [{self.low:+.2f}, {self.high:+.2f}]"
        return f"{self.value:+.2f}{ci} p={self.p:.3g}"


def spearman(a, b) -> float:
    """Spearman's rho (average ranks for ties); NaN with a constant side."""
    return float(_spearman_rows(np.asarray(a, float)[None], np.asarray(b, float)[None])[0])


def _spearman_rows(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Spearman's rho of each row of a (m, n) against the same row of b: Pearson's r of their ranks."""
    ra, rb = stats.rankdata(a, axis=1), stats.rankdata(b, axis=1)
    ra, rb = ra - ra.mean(axis=1, keepdims=True), rb - rb.mean(axis=1, keepdims=True)
    den = np.sqrt((ra ** 2).sum(axis=1) * (rb ** 2).sum(axis=1))
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(den > 0, (ra * rb).sum(axis=1) / np.where(den > 0, den, 1.0), np.nan)


def weighted_tau(a, b) -> float:
    """scipy's weightedtau (hyperbolic weigher, the top of both rankings weighing most), as LogME reports."""
    a, b = np.asarray(a, float), np.asarray(b, float)
    if len(a) < 2 or np.ptp(a) == 0 or np.ptp(b) == 0:
        return math.nan
    return float(stats.weightedtau(a, b).statistic)


def _weighted_tau_rows(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """weighted_tau of each row of a (m, n) against the same row of b, all rows at once (a permutation test
    and a bootstrap call it thousands of times): Vigna's tau over every pair, with the additive hyperbolic
    weight 1/(r_i + 1) + 1/(r_j + 1) of the pair's ranks r (0: the top), ties counting 0 in the numerator and
    in that side's norm, averaged over the ranking by (a, b) and by (b, a) lexicographically, decreasing, as
    scipy's weightedtau(rank=True) does. NaN where a side is constant."""
    a, b = np.atleast_2d(np.asarray(a, float)), np.atleast_2d(np.asarray(b, float))
    m, n = a.shape
    out = np.full(m, np.nan)
    step = max(1, 2_000_000 // max(n * n, 1))  # rows per chunk: a few (rows, n^2 / 2) arrays of 8 MB
    for lo in range(0, m if n >= 2 else 0, step):
        out[lo:lo + step] = _weighted_tau_chunk(a[lo:lo + step], b[lo:lo + step])
    return out


def _weighted_tau_chunk(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    m, n = a.shape
    iu = np.triu_indices(n, 1)  # each unordered pair once
    sa = np.sign(a[:, iu[0]] - a[:, iu[1]])  # (m, pairs)
    sb = np.sign(b[:, iu[0]] - b[:, iu[1]])
    both, ta, tb = sa * sb, sa != 0, sb != 0

    def tau(first, second):
        order = np.lexsort((second, first), axis=-1)[:, ::-1]  # decreasing by first, then second
        w = 1.0 / (np.argsort(order, axis=1) + 1.0)  # 1 / (rank + 1), rank 0 the top
        pair = w[:, iu[0]] + w[:, iu[1]]
        den = np.sqrt((pair * ta).sum(axis=1) * (pair * tb).sum(axis=1))
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(den > 0, (pair * both).sum(axis=1) / np.where(den > 0, den, 1.0), np.nan)
    return (tau(a, b) + tau(b, a)) / 2.0


STATISTICS = {"spearman": _spearman_rows, "weighted_tau": _weighted_tau_rows}


def agreement(score, measured, statistic: str, *, permutations: int = PERMUTATIONS, bootstrap: int = BOOTSTRAP,
              level: float = LEVEL, seed: int = 0) -> Agreement:
    """The statistic (`spearman` or `weighted_tau`) of `score` against `measured` (one value per unit, NaN
    units dropped), its permutation p-value and bootstrap interval. NaN with fewer than 3 units or a constant
    side."""
    rows = STATISTICS[statistic]
    a, b = np.asarray(score, float), np.asarray(measured, float)
    keep = ~(np.isnan(a) | np.isnan(b))
    a, b = a[keep], b[keep]
    n = len(a)
    value = float(rows(a[None], b[None])[0]) if n >= 3 else math.nan
    if math.isnan(value):
        return Agreement(n, math.nan, math.nan, math.nan, math.nan, 0)
    rng = np.random.default_rng(seed)
    exact = math.factorial(n) <= permutations
    order = (np.array(list(itertools.permutations(range(n)))) if exact
             else np.stack([rng.permutation(n) for _ in range(permutations)]))
    hits = int(np.sum(np.abs(rows(np.broadcast_to(a, order.shape), b[order])) >= abs(value) - 1e-12))
    p = hits / len(order) if exact else (1 + hits) / (1 + permutations)
    pick = rng.integers(0, n, (bootstrap, n))
    boot = rows(a[pick], b[pick]) if bootstrap else np.zeros(0)
    boot = boot[~np.isnan(boot)]
    if len(boot) < max(10, bootstrap // 10):  # too few resamples with a ranking for an interval
        return Agreement(n, value, p, math.nan, math.nan, len(boot))
    tail = (1.0 - level) / 2.0
    low, high = np.quantile(boot, [tail, 1.0 - tail])
    return Agreement(n, value, p, float(low), float(high), len(boot))
