"""Fine-tuning vs linear probing vs LP-FT (Kumar et al. 2022), in and out of distribution."""
from __future__ import annotations

import pathlib

import pandas as pd

from tl_research.experiments import plots, stats, tables, verdict
from tl_research.experiments.spec import Analysis, Experiment

ARMS = ("LP", "FT", "LP-FT")


def ood_columns(df: pd.DataFrame) -> list[str]:
    """The extra test sets' accuracies (data.extra_test_sets -> test_NAME_accuracy)."""
    return sorted(c for c in df.columns if c.startswith("test_") and c.endswith("_accuracy")
                  and not c.endswith("_balanced_accuracy") and c != "test_accuracy")


def analyse(rows: list[dict], workdir: pathlib.Path) -> Analysis:
    df = tables.done(rows)
    ood = ood_columns(df)
    df = df.assign(ood_accuracy=df[ood].mean(axis=1) if ood else float("nan"))
    get = lambda metric, arm: stats.per_seed(df, metric, {"label": arm})
    d = stats.paired_difference
    verdicts = [
        verdict.greater("FT beats LP in distribution", "FT - LP, ID test", d(get("test_accuracy", "FT"),
                                                                              get("test_accuracy", "LP"))),
        verdict.less("FT loses to LP out of distribution", "FT - LP, mean OOD test",
                     d(get("ood_accuracy", "FT"), get("ood_accuracy", "LP"))),
        verdict.greater("LP-FT beats FT out of distribution", "LP-FT - FT, mean OOD test",
                        d(get("ood_accuracy", "LP-FT"), get("ood_accuracy", "FT"))),
        verdict.greater("LP-FT beats LP out of distribution", "LP-FT - LP, mean OOD test",
                        d(get("ood_accuracy", "LP-FT"), get("ood_accuracy", "LP"))),
    ]
    long = pd.concat([df.assign(test_set=name, accuracy=df[col]) for name, col in
                      [("ID: mnist_subset", "test_accuracy"),
                       *[(c[len("test_"):-len("_accuracy")], c) for c in ood], ("mean OOD", "ood_accuracy")]])
    table = tables.ci_table(long, "accuracy", ["test_set"], "label",
                            "Test accuracy of digits 5-9 per test set: mean [95% CI] (n seeds)", order=ARMS)

    def plot(path):
        groups = {s: {arm: stats.mean_ci(g[g["label"] == arm]["accuracy"].tolist()) for arm in ARMS}
                  for s, g in long.groupby("test_set", sort=False)}
        plots.bars(groups, path, ylabel="test accuracy", title="LP vs FT vs LP-FT, ID and OOD (95% CI)")
    return Analysis([table], verdicts, plot,
                    headline="; ".join(f"{v.figure.split(' = ')[0]} {v.figure.split(' = ')[1].split(' [')[0]}"
                                       for v in verdicts[:3]))


EXPERIMENT = Experiment(
    name="lp_ft",
    title="Fine-tuning distorts features: LP vs FT vs LP-FT in and out of distribution (Kumar et al. 2022)",
    question="Fine-tuning the whole network beats a linear probe on the training distribution; does it lose "
             "out of distribution, and does training the head first (LP-FT) get the best of both?",
    published="""Kumar, Raghunathan, Jones, Ma, Liang 2022, *Fine-Tuning can Distort Pretrained Features and
Underperform Out-of-Distribution* (arXiv 2202.10054), averaged over their ten distribution shifts: FT beats LP
in distribution by about 2% and loses to it out of distribution by about 7%; LP-FT beats both out of
distribution (about +10% over FT) and matches or beats FT in distribution (+1%).""",
    differences="""- Source digits 0-4; ID target digits 5-9 of MNIST (600 images); OOD test sets: digits 5-9 of
  `mnist_inverted`, `mnist_m` and `digits_upsampled` (`data.extra_test_sets`), read in grey. Their pretrained
  models were CLIP / MoCo ResNets and ViTs: here a 4-unit ResNet trained for 5 epochs on digits 0-4, whose
  features are themselves digit-specific.
- LP: 60 head steps at lr 0.05; FT: 60 steps at 0.05; LP-FT: those 60 head steps, then 60 steps of all
  units at 0.005 (so LP-FT trains twice as many steps); no hyper-parameter search.""",
    claim="FT > LP in distribution (+2%), FT < LP out of distribution (-7%), LP-FT > both OOD (+10%)",
    analyse=analyse,
)
