"""Verdicts: a published claim, the figure measured for it, the paper's effect size beside it, and the outcome,
computed from an interval.

A claim is a direction of an effect (greater or less than a threshold, usually 0). Its outcome, first match:
- "not testable here": the runs cannot speak to it (no arm compared shown above chance, or another reason the
  analysis gives);
- "not run": no finished runs;
- "not testable here" again: one seed (no interval), or a rank correlation over too few units to reach the
  level; the reason is given;
- "equivalent" within ±delta: the whole 95% interval lies inside [threshold - delta, threshold + delta] (an
  equivalence test, two one-sided tests at 2.5% each; only for a verdict given a delta, which it states);
- "held": the whole interval lies on the claimed side; "did not hold": the whole interval on the other side;
- "within noise": the interval straddles the threshold (and is not inside ±delta).
A rank-correlation claim reads its permutation p-value instead: held / did not hold at p < 0.05 with the sign
claimed / the other sign, within noise otherwise."""
from __future__ import annotations

import dataclasses
import math

from tl_research.experiments.stats import LEVEL, Estimate, smallest_p

HELD, FAILED, NOISE, NOT_RUN = "held", "did not hold", "within noise", "not run"
EQUIVALENT, NOT_TESTABLE = "equivalent", "not testable here"
OUTCOMES = (HELD, FAILED, EQUIVALENT, NOISE, NOT_TESTABLE, NOT_RUN)


@dataclasses.dataclass(frozen=True)
class Verdict:
    claim: str  # the published finding in a few words
    figure: str  # what was measured for it, e.g. "AnB(4) - AnB(2) = -0.21 [95% CI ...]"
    status: str  # one of OUTCOMES
    published: str = ""  # the paper's effect size for the claim, e.g. "+3.0 points (Table 1)"; "" if none
    delta: float | None = None  # the equivalence margin, in the figure's units (None: no equivalence test)
    reason: str = ""  # why it is not testable here

    def outcome(self) -> str:
        """The status in words: with its margin when equivalent, with its reason when not testable."""
        if self.status == EQUIVALENT and self.delta is not None:
            return f"{EQUIVALENT} within ±{self.delta:g}"
        if self.status == NOT_TESTABLE and self.reason:
            return f"{NOT_TESTABLE} ({self.reason})"
        return self.status

    def line(self) -> str:
        published = f" (published: {self.published})" if self.published else ""
        return f"{self.outcome().upper()}: {self.claim}: {self.figure}{published}"

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


def _status(est: Estimate, threshold: float, greater: bool, delta: float | None) -> tuple[str, str]:
    if est.n < 2 or math.isnan(est.low):
        return NOT_TESTABLE, f"n={est.n} {est.units}: no interval"
    if delta is not None and threshold - delta <= est.low and est.high <= threshold + delta:
        return EQUIVALENT, ""
    above, below = est.low > threshold, est.high < threshold
    if (above and greater) or (below and not greater):
        return HELD, ""
    if above or below:
        return FAILED, ""
    return NOISE, ""


def _verdict(claim: str, name: str, est: Estimate, threshold: float, digits: int, greater: bool,
             delta: float | None, published: str, untestable: str) -> Verdict:
    sign = ">" if greater else "<"
    margin = f"; equivalence margin ±{delta:g}" if delta is not None else ""
    figure = f"{name} = {est.text(digits)} (claimed {sign} {threshold:g}{margin})"
    if untestable:  # the caller saw runs that cannot speak to the claim (their figure may be undefined)
        status, reason = NOT_TESTABLE, untestable
    elif est.n == 0:  # no finished runs to compare: nothing was measured
        status, reason = NOT_RUN, ""
    else:
        status, reason = _status(est, threshold, greater, delta)
    return Verdict(claim, figure, status, published, delta, reason)


def greater(claim: str, name: str, est: Estimate, threshold: float = 0.0, digits: int = 3, *,
            delta: float | None = None, published: str = "", untestable: str = "") -> Verdict:
    """The claim: the effect `name` is above `threshold` (the figure shown with `digits` decimals). delta: the
    equivalence margin; published: the paper's effect size; untestable: why the runs cannot test it ('' when
    they can, e.g. stats.chance_reason(...))."""
    return _verdict(claim, name, est, threshold, digits, True, delta, published, untestable)


def less(claim: str, name: str, est: Estimate, threshold: float = 0.0, digits: int = 3, *,
         delta: float | None = None, published: str = "", untestable: str = "") -> Verdict:
    """The claim: the effect `name` is below `threshold` (the figure shown with `digits` decimals); the keywords
    as greater's."""
    return _verdict(claim, name, est, threshold, digits, False, delta, published, untestable)


def rank(claim: str, name: str, agreement, *, units: str, positive: bool = True, published: str = "",
         level: float = LEVEL) -> Verdict:
    """The claim: the rank correlation `name` (a rank_correlation.Agreement over n independent `units`, e.g.
    "targets (the mean of 3 seeds each)") is positive (or negative). Held / did not hold when its two-sided
    permutation p-value is below 1 - level with the claimed / the other sign; not testable with fewer than 3
    units or too few for any ranking to reach that p."""
    a = agreement
    ci = "" if math.isnan(a.low) else f" [{level:.0%} bootstrap CI {a.low:+.2f}, {a.high:+.2f}]"
    value = "no ranking" if math.isnan(a.value) else f"{a.value:+.2f}{ci}, permutation p = {a.p:.3g}"
    figure = f"{name} = {value}; n={a.n} {units} (claimed {'>' if positive else '<'} 0)"
    alpha = 1 - level
    if a.n == 0:
        status, reason = NOT_RUN, ""
    elif a.n < 3 or math.isnan(a.value):
        status, reason = NOT_TESTABLE, f"n={a.n}: fewer than 3 units or a constant side, no ranking"
    elif smallest_p(a.n) >= alpha:
        status, reason = NOT_TESTABLE, (f"{a.n} units: no ranking of them reaches p < {alpha:g} "
                                        f"(the smallest permutation p is {smallest_p(a.n):.3f})")
    elif a.p < alpha:
        status, reason = (HELD if (a.value > 0) == positive else FAILED), ""
    else:
        status, reason = NOISE, ""
    return Verdict(claim, figure, status, published, None, reason)
