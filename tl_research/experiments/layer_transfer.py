"""Layer transfer (Yosinski et al. 2014): AnB, BnB, AnB+, BnB+ against baseB, by frozen depth n."""
from __future__ import annotations

import pathlib

import pandas as pd

from tl_research.experiments import common, plots, stats, tables, verdict
from tl_research.experiments.common import DELTA
from tl_research.experiments.spec import Analysis, Experiment

DEPTHS = (1, 2, 3, 4)  # n without rows to read it from: the digits' 4 units
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


def depths(df) -> list[int]:
    """The n the runs copied (transfer_depth >= 1: 1..4 of the digits' 4 units, 1..8 of ResNet-18's 9 at paper
    scale), in order; DEPTHS without any."""
    found = (sorted({int(n) for n in pd.to_numeric(df["transfer_depth"], errors="coerce").dropna() if n >= 1})
             if "transfer_depth" in df else [])
    return found or list(DEPTHS)


def landmarks(ns: list[int]) -> tuple[int, tuple[int, int]]:
    """The top n and the two middle ones (Yosinski et al.'s n = 4, 5 of 1..7; here 2, 3 of 1..4)."""
    lo = max(0, (len(ns) - 1) // 2)
    return ns[-1], (ns[lo], ns[min(lo + 1, len(ns) - 1)])


def verdicts(df) -> list[verdict.Verdict]:
    """The four claims from the finished runs (one row per run): paired by seed, each not testable when no arm
    it compares is shown above chance (judged on balanced accuracy where the rows have it; chance from the runs'
    num_classes)."""
    ns = depths(df)
    top, middle = landmarks(ns)
    cm, chance = stats.chance_metric(df, "test_accuracy"), common.chance(df)

    def untestable(*arms):  # (label, n) pairs; n None: the arm has no n (baseB); "all": its mean over n
        at = lambda lab, n: (_mean_over_n({k: _arm(df, lab, k, cm) for k in ns}) if n == "all"  # noqa: E731
                             else _arm(df, lab, n, cm))
        return stats.chance_reason({lab if n in (None, "all") else f"{lab}({n})": at(lab, n) for lab, n in arms},
                                   chance)
    anb, bnb, anb_plus = ({n: _arm(df, label, n) for n in ns} for label in ("AnB", "BnB", "AnB+"))
    base_b = _arm(df, "baseB")
    dip = (bnb[middle[0]] + bnb[middle[1]]) / 2
    ends = (bnb[ns[0]] + bnb[top]) / 2
    d = stats.paired_difference
    return [
        verdict.less("AnB falls as n grows past the middle", f"AnB(n={top}) - AnB(n={middle[0]})",
                     d(anb[top], anb[middle[0]]), delta=DELTA, published=PUBLISHED["fall"],
                     untestable=untestable(("AnB", top), ("AnB", middle[0]))),
        verdict.greater("AnB+ is at or above baseB", f"mean over n={ns[0]}..{top} of AnB+(n) - baseB",
                        d(_mean_over_n(anb_plus), base_b), delta=DELTA, published=PUBLISHED["plus"],
                        untestable=untestable(("AnB+", "all"), ("baseB", None))),
        verdict.less("BnB dips at middle n (co-adaptation)",
                     f"mean BnB(n={middle[0]},{middle[1]}) - mean BnB(n={ns[0]},{top})", d(dip, ends), delta=DELTA,
                     published=PUBLISHED["dip"],
                     untestable=untestable(*[("BnB", n) for n in (ns[0], *middle, top)])),
        verdict.less("AnB at the top is below baseB (top features are specific)", f"AnB(n={top}) - baseB",
                     d(anb[top], base_b), delta=DELTA, published=PUBLISHED["top"],
                     untestable=untestable(("AnB", top), ("baseB", None))),
    ]


def analyse(rows: list[dict], workdir: pathlib.Path, module=None) -> Analysis:
    df = tables.done(rows)
    ns = depths(df)
    top, middle = landmarks(ns)
    found = verdicts(df)
    table = tables.ci_table(df, "test_accuracy", ["label"], "transfer_depth",
                            f"Test accuracy on task B ({common.text(module, 'target', 'digits 5-9')}): mean [95% "
                            "CI] (n seeds), by n, the units copied from the base network (baseB: -1, the network "
                            "itself)")

    def plot(path):
        est = lambda s: stats.mean_ci(s.tolist(), bounds=stats.ACCURACY)  # noqa: E731
        lines = {label: [(n, est(_arm(df, label, n))) for n in ns] for label in ("AnB", "BnB", "AnB+", "BnB+")}
        plots.lines(lines, path, xlabel="n (units copied; AnB, BnB: and frozen)", ylabel="test accuracy on B",
                    title="Layer transfer (Yosinski et al. 2014), 95% CI over seeds",
                    references={"baseB": est(_arm(df, "baseB"))})
    fall, plus = (v.figure.split(" = ", 1)[1].split(" (claimed")[0] for v in found[:2])
    return Analysis([table], found, plot, headline=f"AnB({top}) - AnB({middle[0]}) = {fall}; AnB+ - baseB = {plus}")


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
