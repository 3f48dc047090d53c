"""Fine-tuning vs linear probing vs LP-FT (Kumar et al. 2022), in and out of distribution."""
from __future__ import annotations

import pathlib

import pandas as pd

from tl_research.experiments import common, plots, stats, tables, verdict
from tl_research.experiments.common import DELTA
from tl_research.experiments.spec import Analysis, Experiment

ARMS = ("LP", "FT", "LP-FT")
PUBLISHED = {"id": "+0.02 (about 2%, the mean of 10 shifts)", "ood": "-0.07 (about 7%)",
             "lpft_ft": "+0.10 (about 10%)", "lpft_lp": "+0.03 (derived: +10% over FT, which is 7% below LP)"}


def ood_columns(df: pd.DataFrame) -> list[str]:
    """The extra test sets' accuracies (data.extra_test_sets -> test_NAME_accuracy)."""
    return sorted(c for c in df.columns if c.startswith("test_") and c.endswith("_accuracy")
                  and not c.endswith("_balanced_accuracy") and c != "test_accuracy")


def _name(col: str) -> str:
    return col[len("test_"):-len("_accuracy")]


def ood_pair(df: pd.DataFrame, a: str, b: str) -> tuple[pd.Series, pd.Series, str, str]:
    """Arms a and b's accuracy per seed, the mean over the OOD test sets where not both are at chance (judged
    on each set's balanced accuracy where the rows have it, chance from the runs' num_classes: every test set is
    read with the target's classes; all of them when every one is); the figure's name for that mean; and why the
    pair is not testable ('' when some set is kept)."""
    kept, dropped = [], []
    chance = common.chance(df)
    for col in ood_columns(df):
        cm = stats.chance_metric(df, col)
        reason = stats.chance_reason({arm: stats.per_seed(df, cm, {"label": arm}) for arm in (a, b)}, chance)
        (dropped if reason else kept).append(col)
    mean = df[kept or dropped].mean(axis=1) if kept or dropped else pd.Series(float("nan"), index=df.index)
    at = df.assign(_ood=mean)
    a_acc, b_acc = (stats.per_seed(at, "_ood", {"label": arm}) for arm in (a, b))
    left_out = f" ({', '.join(map(_name, dropped))} left out: {a} and {b} at chance there)" if dropped and kept else ""
    name = f"{a} - {b}, mean OOD test" + left_out
    untestable = (f"{a} and {b} not shown above chance (1/{round(1 / chance)}) on any OOD test set"
                  if dropped and not kept else "")
    return a_acc, b_acc, name, untestable


def verdicts(df: pd.DataFrame) -> list[verdict.Verdict]:
    """The four claims from the finished runs, paired by seed; an OOD test set where both arms compared are at
    chance is left out of their mean (named in the figure), and a claim with none left is not testable."""
    cm = stats.chance_metric(df, "test_accuracy")
    id_acc = {arm: stats.per_seed(df, "test_accuracy", {"label": arm}) for arm in ("FT", "LP")}
    out = [verdict.greater("FT beats LP in distribution", "FT - LP, ID test",
                           stats.paired_difference(id_acc["FT"], id_acc["LP"]), delta=DELTA, published=PUBLISHED["id"],
                           untestable=stats.chance_reason({arm: stats.per_seed(df, cm, {"label": arm})
                                                           for arm in ("FT", "LP")}, common.chance(df)))]
    for claim, a, b, key, greater in (("FT loses to LP out of distribution", "FT", "LP", "ood", False),
                                      ("LP-FT beats FT out of distribution", "LP-FT", "FT", "lpft_ft", True),
                                      ("LP-FT beats LP out of distribution", "LP-FT", "LP", "lpft_lp", True)):
        a_acc, b_acc, name, untestable = ood_pair(df, a, b)
        make = verdict.greater if greater else verdict.less
        out.append(make(claim, name, stats.paired_difference(a_acc, b_acc), delta=DELTA, published=PUBLISHED[key],
                        untestable=untestable))
    return out


def analyse(rows: list[dict], workdir: pathlib.Path, module=None) -> Analysis:
    df = tables.done(rows)
    ood = ood_columns(df)
    found = verdicts(df)
    df = df.assign(ood_accuracy=df[ood].mean(axis=1) if ood else float("nan"))
    long = pd.concat([df.assign(test_set=name, accuracy=df[col]) for name, col in
                      [(f"ID: {common.text(module, 'id', 'mnist_subset')}", "test_accuracy"),
                       *[(_name(c), c) for c in ood], ("mean OOD", "ood_accuracy")]])
    table = tables.ci_table(long, "accuracy", ["test_set"], "label",
                            f"Test accuracy of {common.text(module, 'target', 'digits 5-9')} per test set: mean "
                            "[95% CI] (n seeds)", order=ARMS)

    def plot(path):
        groups = {s: {arm: stats.mean_ci(g[g["label"] == arm]["accuracy"].tolist(), bounds=stats.ACCURACY)
                      for arm in ARMS} for s, g in long.groupby("test_set", sort=False)}
        plots.bars(groups, path, ylabel="test accuracy", title="LP vs FT vs LP-FT, ID and OOD (95% CI)")
    return Analysis([table], found, plot,
                    headline="; ".join(f"{v.figure.split(' = ')[0]} {v.figure.split(' = ')[1].split(' [')[0]}"
                                       for v in found[:3]))


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
