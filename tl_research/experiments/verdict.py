"""Verdicts: a published claim, the figure measured for it, and whether it held, computed from an interval.

A claim is a direction of an effect (greater or less than a threshold, usually 0). It "held" when the whole 95%
interval lies on the claimed side, "did not hold" when the whole interval lies on the other side, and is
"within noise" when the interval straddles the threshold (or there are too few seeds for an interval); "not run" without runs."""
from __future__ import annotations

import dataclasses
import math

from tl_research.experiments.stats import Estimate

HELD, FAILED, NOISE, NOT_RUN = "held", "did not hold", "within noise", "not run"


@dataclasses.dataclass(frozen=True)
class Verdict:
    claim: str  # the published finding in a few words
    figure: str  # what was measured for it, e.g. "AnB(4) - AnB(2) = -0.21 [95% CI ...]"
    status: str  # HELD | FAILED | NOISE

    def line(self) -> str:
        return f"{self.status.upper()}: {self.claim}: {self.figure}"

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


def _status(est: Estimate, threshold: float, greater: bool) -> str:
    if est.n == 0:  # no finished runs to compare: nothing was measured
        return NOT_RUN
    if est.n < 2 or math.isnan(est.low):
        return NOISE
    above, below = est.low > threshold, est.high < threshold
    if (above and greater) or (below and not greater):
        return HELD
    if above or below:
        return FAILED
    return NOISE


def greater(claim: str, name: str, est: Estimate, threshold: float = 0.0, digits: int = 3) -> Verdict:
    """The claim: the effect `name` is above `threshold` (the figure shown with `digits` decimals)."""
    return Verdict(claim, f"{name} = {est.text(digits)} (claimed > {threshold:g})", _status(est, threshold, True))


def less(claim: str, name: str, est: Estimate, threshold: float = 0.0, digits: int = 3) -> Verdict:
    """The claim: the effect `name` is below `threshold` (the figure shown with `digits` decimals)."""
    return Verdict(claim, f"{name} = {est.text(digits)} (claimed < {threshold:g})", _status(est, threshold, False))
