"""Layer transfer (Yosinski et al. 2014): AnB, BnB, AnB+, BnB+ against baseB, by frozen depth n."""
from __future__ import annotations

import pathlib

from tl_research.experiments import plots, stats, tables, verdict
from tl_research.experiments.spec import Analysis, Experiment

UNITS = 4
MIDDLE = (2, 3)


def _arm(df, label, n=None):
    where = {"label": label, **({"frozen_depth": n} if n is not None else {})}
    return stats.per_seed(df, "test_accuracy", where)


def analyse(rows: list[dict], workdir: pathlib.Path) -> Analysis:
    df = tables.done(rows)
    anb = {n: _arm(df, "AnB", n) for n in range(1, UNITS + 1)}
    bnb = {n: _arm(df, "BnB", n) for n in range(1, UNITS + 1)}
    base_b, anb_plus = _arm(df, "baseB"), _arm(df, "AnB+")
    fall = stats.paired_difference(anb[UNITS], anb[MIDDLE[0]])
    plus = stats.paired_difference(anb_plus, base_b)
    middle = (bnb[MIDDLE[0]] + bnb[MIDDLE[1]]) / 2
    ends = (bnb[1] + bnb[UNITS]) / 2
    dip = stats.paired_difference(middle, ends)
    verdicts = [
        verdict.less("AnB falls as n grows past the middle", f"AnB(n={UNITS}) - AnB(n={MIDDLE[0]})", fall),
        verdict.greater("AnB+ is at or above baseB", "AnB+ - baseB", plus),
        verdict.less("BnB dips at middle n (co-adaptation)",
                     f"mean BnB(n={MIDDLE[0]},{MIDDLE[1]}) - mean BnB(n=1,{UNITS})", dip),
        verdict.less("AnB at the top is below baseB (top features are specific)", f"AnB(n={UNITS}) - baseB",
                     stats.paired_difference(anb[UNITS], base_b)),
    ]
    table = tables.ci_table(df, "test_accuracy", ["label"], "frozen_depth",
                            "Test accuracy on task B (digits 5-9): mean [95% CI] (n seeds), by frozen depth n")

    def plot(path):
        est = lambda s: stats.mean_ci(s.tolist())
        plots.lines({"AnB": [(n, est(anb[n])) for n in anb], "BnB": [(n, est(bnb[n])) for n in bnb]}, path,
                    xlabel="n (units copied and frozen)", ylabel="test accuracy on B",
                    title="Layer transfer (Yosinski et al. 2014), 95% CI over seeds",
                    references={"baseB": est(base_b), "AnB+": est(anb_plus), "BnB+": est(_arm(df, "BnB+"))})
    return Analysis([table], verdicts, plot, headline=f"AnB(4) - AnB(2) = {fall.text()}; AnB+ - baseB = "
                                                      f"{plus.text()}")


EXPERIMENT = Experiment(
    name="layer_transfer",
    title="Layer transfer: how general are the features of each depth? (Yosinski et al. 2014)",
    question="Copy the first n units of a network trained on task A (or on B itself), keep them frozen or "
             "fine-tune them, and train the rest on task B: how does accuracy on B change with n?",
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
  blocks) instead of 8-layer AlexNet on 1.2M ImageNet images; 60 steps a target run, 3 seeds.
- The units above n are **not re-initialised**: every run starts from all of the copied network's units and
  trains those above n on from their copied weights (this codebase's `frozen_depth`). So AnB+ and BnB+
  (everything fine-tuned) do not depend on n and appear as one level each, and BnB cannot break a
  co-adaptation by re-initialisation: its dip is not expected here (REFERENCES.md: report, do not assert).
- n = 4 freezes every unit (a linear probe on the copied features); n = 0 would be AnB+.""",
    claim="AnB falls past the middle n; AnB+ ≥ baseB; BnB dips at middle n",
    analyse=analyse,
)
