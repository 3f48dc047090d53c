"""Data size (BiT / Kornblith et al.): linear probe, fine-tune and scratch from 1 example per class to all."""
from __future__ import annotations

import pathlib

import pandas as pd

from tl_research.experiments import common, plots, stats, tables, verdict
from tl_research.experiments.common import DELTA
from tl_research.experiments.spec import Analysis, Experiment

ARMS = ("linear probe", "fine-tune", "scratch")
COMPETITIVE = 0.02  # the non-inferiority margin read into "competitive" (Kornblith et al. give no number)
PUBLISHED = {"shrink": "+0.128 / +0.096 / +0.052: gain at 1k examples - gain at full data, VTAB natural / "
                       "specialized / structured (Zhai et al. 2019)",
             "probe": "no number: fixed features 'competitive' with fine-tuning when data is scarce (Kornblith "
                      "et al. 2019)"}


def _accuracies(df, metric: str = "test_accuracy") -> tuple[list[int], dict]:
    sizes = sorted(int(s) for s in df["data.per_class"].unique()) if "data.per_class" in df else []
    return sizes, {(arm, k): stats.per_seed(df, metric, {"label": arm, "data.per_class": k})
                   for arm in ARMS for k in sizes}


def verdicts(df) -> list[verdict.Verdict]:
    """The three claims from the finished runs, paired by seed (the same subset for every arm of a seed); not
    testable when every arm a claim compares is at chance (balanced accuracy where the rows have it; chance from
    the runs' num_classes)."""
    sizes, acc = _accuracies(df)
    _, chance_acc = _accuracies(df, stats.chance_metric(df, "test_accuracy"))
    small, large = (sizes[0], sizes[-1]) if sizes else (1, 350)
    get = lambda table, arm, k: table.get((arm, k), pd.Series(dtype=float))
    chance = common.chance(df)
    at_chance = lambda *arms: stats.chance_reason({f"{a} at {k}/class": get(chance_acc, a, k) for a, k in arms},
                                                  chance)
    gain = {k: get(acc, "fine-tune", k) - get(acc, "scratch", k) for k in (small, large)}
    d = stats.paired_difference
    return [
        verdict.greater("transfer's gain shrinks as data grows",
                        f"gain(fine-tune - scratch) at {small}/class - at {large}/class",
                        d(gain[small], gain[large], bounds=(-2.0, 2.0)), delta=DELTA, published=PUBLISHED["shrink"],
                        untestable=(at_chance(("fine-tune", small), ("scratch", small))  # a gain at either end
                                    or at_chance(("fine-tune", large), ("scratch", large)))),
        # Kornblith et al.'s "competitive": not worse than fine-tuning by more than COMPETITIVE (non-inferiority)
        verdict.greater(f"the linear probe is competitive with fine-tuning at the smallest size (at most "
                        f"{COMPETITIVE:g} below it)", f"linear probe - fine-tune at {small}/class",
                        d(get(acc, "linear probe", small), get(acc, "fine-tune", small)), threshold=-COMPETITIVE,
                        published=PUBLISHED["probe"],
                        untestable=at_chance(("linear probe", small), ("fine-tune", small))),
        verdict.greater("the linear probe wins at the smallest size (vs scratch)",
                        f"linear probe - scratch at {small}/class",
                        d(get(acc, "linear probe", small), get(acc, "scratch", small)), delta=DELTA,
                        untestable=at_chance(("linear probe", small), ("scratch", small))),
    ]


def analyse(rows: list[dict], workdir: pathlib.Path, module=None) -> Analysis:
    df = tables.done(rows)
    sizes, acc = _accuracies(df)
    small, large = sizes[0], sizes[-1]
    gain = {k: acc[("fine-tune", k)] - acc[("scratch", k)] for k in sizes}
    found = verdicts(df)
    gains = df[df["label"] != "scratch"].copy()
    base = {(s, k): v for k in sizes for s, v in acc[("scratch", k)].items()}
    gains["gain_over_scratch"] = [a - base.get((s, int(k)), float("nan")) for a, s, k in
                                  zip(gains["test_accuracy"], gains["seed"], gains["data.per_class"])]
    t1 = tables.ci_table(df, "test_accuracy", ["label"], "data.per_class",
                         f"Test accuracy on {common.text(module, 'target', 'digits 5-9')}: mean [95% CI] (n seeds), "
                         "by training examples per class")
    t2 = tables.ci_table(gains, "gain_over_scratch", ["label"], "data.per_class",
                         "Gain over scratch, paired by seed (the same subset)", bounds=stats.DIFFERENCE)

    def plot(path):
        plots.lines({arm: [(k, stats.mean_ci(acc[(arm, k)].tolist(), bounds=stats.ACCURACY)) for k in sizes]
                     for arm in ARMS}, path, xlabel="training examples per class", ylabel="test accuracy",
                    logx=True, title="Data size: transfer vs scratch, 95% CI over seeds")
    return Analysis([t1, t2], found, plot,
                    headline=f"gain {stats.mean_ci(gain[small].tolist()).mean:+.3f} at {small}/class, "
                             f"{stats.mean_ci(gain[large].tolist()).mean:+.3f} at {large}/class; "
                             f"LP - FT at {small}/class {found[1].figure.split(' = ')[1].split(' [')[0]}")


EXPERIMENT = Experiment(
    name="data_size",
    title="Data size: transfer's gain from 1 example per class to all (BiT, Kornblith et al.)",
    question="How does the gain of transfer over training from scratch change as target data grows, and "
             "which of a linear probe and fine-tuning is better with very few examples?",
    published="""Kolesnikov et al. 2019, *Big Transfer (BiT)* (arXiv 1912.11370): few-shot subsets of k = 1, 5, 10,
25 examples per class, drawn with a seed; the gain from pretraining is largest with the fewest examples.
Zhai et al. 2019 (VTAB, arXiv 1910.04867): ImageNet-supervised vs scratch at 1k examples 73.5 / 82.5 / 52.1 vs
27.9 / 68.9 / 43.6 (natural / specialized / structured), at full data 86.4 / 89.3 / 92.9 vs 53.6 / 85.3 /
89.6: the gain shrinks with data. Kornblith et al. 2019 (arXiv 1805.08974): fixed features (a linear probe)
are competitive with fine-tuning when data is scarce and fall behind it as data grows.""",
    differences="""- Source: digits 0-4 (1,750 images); target digits 5-9 with 1, 10, 100, 350 (all) images per
  class; steps grow with the data (40, 50, 100, 150); 5 seeds, the same subset for every arm of a seed.
- A small ResNet trained for 5 epochs is a far weaker source than ImageNet-21k BiT models.""",
    claim="transfer's gain shrinks as data grows; a linear probe is competitive with fine-tuning at the smallest "
          "sizes",
    analyse=analyse,
)
