"""Layer transfer (Yosinski et al. 2014): AnB, BnB, AnB+, BnB+ against baseB, by frozen depth n."""
from __future__ import annotations

import pathlib

import pandas as pd

from tl_research.experiments import plots, stats, tables, verdict
from tl_research.experiments.common import CHANCE, DELTA
from tl_research.experiments.spec import Analysis, Experiment

UNITS = 4
MIDDLE = (2, 3)
# the paper's effect per claim, ImageNet top-1 (the table under Published)
PUBLISHED = {"fall": "-0.058: AnB(7) - AnB(4) = .542 - .600", "plus": "+0.017: mean over n = 1..7 of AnB+(n) "
             "(.642) - baseB (.625)", "dip": "-0.026: mean BnB(4, 5) .599 - mean BnB(1, 7) .625",
             "top": "-0.083: AnB(7) - baseB = .542 - .625"}


def _arm(df, label, n=None, metric="test_accuracy"):
    """`metric` per seed of one arm (at n units copied: transfer_depth)."""
    where = {"label": label, **({"transfer_depth": n} if n is not None else {})}
    return stats.per_seed(df, metric, where)


def _mean_over_n(arms: dict) -> pd.Series:
    """Per seed, the mean over n of an arm (the seeds every n has)."""
    return pd.concat(list(arms.values()), axis=1).dropna().mean(axis=1)


def verdicts(df) -> list[verdict.Verdict]:
    """The four claims from the finished runs (one row per run): paired by seed, each not testable when no arm
    it compares is shown above chance (judged on balanced accuracy where the rows have it)."""
    depths = range(1, UNITS + 1)
    cm = stats.chance_metric(df, "test_accuracy")

    def untestable(*arms):  # (label, n) pairs; n None: the arm has no n (baseB); "all": its mean over n
        at = lambda lab, n: (_mean_over_n({k: _arm(df, lab, k, cm) for k in depths}) if n == "all"  # noqa: E731
                             else _arm(df, lab, n, cm))
        return stats.chance_reason({lab if n in (None, "all") else f"{lab}({n})": at(lab, n) for lab, n in arms},
                                   CHANCE)
    anb, bnb, anb_plus = ({n: _arm(df, label, n) for n in depths} for label in ("AnB", "BnB", "AnB+"))
    base_b = _arm(df, "baseB")
    middle = (bnb[MIDDLE[0]] + bnb[MIDDLE[1]]) / 2
    ends = (bnb[1] + bnb[UNITS]) / 2
    d = stats.paired_difference
    return [
        verdict.less("AnB falls as n grows past the middle", f"AnB(n={UNITS}) - AnB(n={MIDDLE[0]})",
                     d(anb[UNITS], anb[MIDDLE[0]]), delta=DELTA, published=PUBLISHED["fall"],
                     untestable=untestable(("AnB", UNITS), ("AnB", MIDDLE[0]))),
        verdict.greater("AnB+ is at or above baseB", f"mean over n=1..{UNITS} of AnB+(n) - baseB",
                        d(_mean_over_n(anb_plus), base_b), delta=DELTA, published=PUBLISHED["plus"],
                        untestable=untestable(("AnB+", "all"), ("baseB", None))),
        verdict.less("BnB dips at middle n (co-adaptation)",
                     f"mean BnB(n={MIDDLE[0]},{MIDDLE[1]}) - mean BnB(n=1,{UNITS})", d(middle, ends), delta=DELTA,
                     published=PUBLISHED["dip"], untestable=untestable(*[("BnB", n) for n in (1, *MIDDLE, UNITS)])),
        verdict.less("AnB at the top is below baseB (top features are specific)", f"AnB(n={UNITS}) - baseB",
                     d(anb[UNITS], base_b), delta=DELTA, published=PUBLISHED["top"],
                     untestable=untestable(("AnB", UNITS), ("baseB", None))),
    ]


def analyse(rows: list[dict], workdir: pathlib.Path) -> Analysis:
    df = tables.done(rows)
    depths = range(1, UNITS + 1)
    found = verdicts(df)
    table = tables.ci_table(df, "test_accuracy", ["label"], "transfer_depth",
                            "Test accuracy on task B (digits 5-9): mean [95% CI] (n seeds), by n, the units "
                            "copied from the base network (baseB: -1, the network itself)")

    def plot(path):
        est = lambda s: stats.mean_ci(s.tolist(), bounds=stats.ACCURACY)  # noqa: E731
        lines = {label: [(n, est(_arm(df, label, n))) for n in depths] for label in ("AnB", "BnB", "AnB+", "BnB+")}
        plots.lines(lines, path, xlabel="n (units copied; AnB, BnB: and frozen)", ylabel="test accuracy on B",
                    title="Layer transfer (Yosinski et al. 2014), 95% CI over seeds",
                    references={"baseB": est(_arm(df, "baseB"))})
    fall, plus = (v.figure.split(" = ", 1)[1].split(" (claimed")[0] for v in found[:2])
    return Analysis([table], found, plot, headline=f"AnB(4) - AnB(2) = {fall}; AnB+ - baseB = {plus}")


EXPERIMENT = Experiment(
    name="layer_transfer",
    title="Layer transfer: how general are the features of each depth? (Yosinski et al. 2014)",
    question="Copy the first n units of a network trained on task A (or on B itself), keep them frozen or "
             "fine-tune them, re-initialise the rest and train it on task B: how does accuracy on B change "
             "with n?",
    published="""Yosinski, Clune, Bengio, Lipson 2014, *How transferable are features in deep neural networks?*
(arXiv 1411.1792), ImageNet split into two halves of 500 classes, top-1 on B, n = 1..7:

| n | 1 | 2 | 3 | 4 | 5 | 6 | 7 |
|---|---|---|---|---|---|---|---|
| AnB | .628 | .624 | .619 | .600 | .578 | .581 | .542 |
| BnB | .627 | .624 | .621 | .605 | .593 | .619 | .623 |
| AnB+ | .637 | .636 | .643 | .640 | .645 | .646 | .646 |
| baseB | .625 | | | | | | |

Findings: AnB falls as n grows past the middle (upper layers are specific); AnB+ is at or above baseB at every
n; BnB dips at middle n (fragile co-adaptation of neighbouring layers), then recovers.""",
    differences="""- MNIST digits 0-4 (A) vs 5-9 (B), 1,750 training images each, a 4-unit ResNet (stem + 3 residual
  blocks) instead of 8-layer AlexNet on 1.2M ImageNet images; every network (baseA, baseB, every target run)
  trains 5 epochs of SGD with a cosine schedule; 5 seeds, each with its own baseA and baseB.
- As in the paper, the units above n are re-initialised (`transfer_depth = n`: from the run's seed, as a run
  from scratch) and trained on B; AnB/BnB keep the first n frozen, AnB+/BnB+ fine-tune them. baseB is the B
  network itself (the same config as BnB's source), not a shorter run from scratch.
- n = 4 copies every unit (only the head is new), so AnB(4) is a linear probe on baseA's features; the paper's
  n runs to 7 of 8 layers.""",
    claim="AnB falls past the middle n; AnB+ ≥ baseB; BnB dips at middle n",
    analyse=analyse,
)
