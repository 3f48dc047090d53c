"""The fine-tuning regularisers of the transfer literature against plain fine-tuning at three label fractions
(TLlib's benchmark, thuml/Transfer-Learning-Library: L2-SP, DELTA, BSS, StochNorm and Co-Tuning, each at its
default strength): does each beat plain fine-tuning with few labels, and does the gain shrink as labels grow?

Each seed trains its own source model, draws its own label subsets (nested: the 15% subset inside the 30% one)
and pairs every method's runs, so each figure is a mean over seeds of per-seed differences."""
from __future__ import annotations

import math
import pathlib

import numpy as np
import pandas as pd

from tl_research.experiments import common, plots, stats, tables, verdict
from tl_research.experiments.common import DELTA
from tl_research.experiments.spec import Analysis, Experiment

# run label -> strategy.regularizer; plain fine-tuning is TLlib's ERM: SGD with weight decay 5e-4
METHODS = {"plain": "weight_decay", "l2_sp": "l2_sp", "delta": "delta", "bss": "bss", "stochnorm": "stochnorm",
           "co_tuning": "co_tuning"}
PLAIN = "plain"
REGULARIZERS = tuple(m for m in METHODS if m != PLAIN)
TARGET = "mnist_subset"  # digits 5-9: the source's domain (the ladder's first rung), classes it never saw
TRAIN_SIZE = 150  # the target's training set: 30 images per class, as CUB-200-2011 has (a stratified draw)
FRACTIONS = (15, 30, 100)  # percent of the training set that keeps its label (TLlib: 15, 30, 50, 100)
BATCH = 16  # fewer than the 22 images of the smallest fraction: a batch of one epoch repeats none
# TLlib's gain over ERM on CUB-200 at 15% (README, supervised ResNet-50), as a difference of accuracies
_TLLIB = "TLlib, CUB-200 at 15%, ResNet-50"
EFFECTS = {"l2_sp": "", "delta": f"+0.036 ({_TLLIB})", "bss": f"+0.022 ({_TLLIB})",
             "stochnorm": f"+0.036 ({_TLLIB})", "co_tuning": f"+0.064 ({_TLLIB})",
             "shrink": "+0.035 (TLlib, CUB-200: the mean gain of BSS, DELTA, StochNorm and Co-Tuning, +0.0395 at "
                       "15%, +0.0045 at 100%)"}


def train_examples(fraction: int, size: int = TRAIN_SIZE) -> int:
    """data.train_examples of a label fraction (percent) of a training set of `size` images."""
    return int(round(fraction / 100 * size))


def fractions(df: pd.DataFrame, size: int = TRAIN_SIZE, fracs=FRACTIONS) -> list:
    """Each run's label fraction (percent of `size` images, one of `fracs`) from its data.train_examples (0: every
    image, 100%; NaN for another count)."""
    by_count = {0: 100, **{train_examples(f, size): f for f in fracs}}
    counts = pd.to_numeric(df.get("data.train_examples", pd.Series(0, index=df.index)), errors="coerce")
    return [by_count.get(int(n), math.nan) if pd.notna(n) else math.nan for n in counts]


def accuracies(df: pd.DataFrame, metric: str = "test_accuracy") -> pd.Series:
    """`metric` indexed by (label, fraction, seed) (several rows of one: their mean); read once per analysis."""
    if df.empty or metric not in df:
        return pd.Series(dtype=float, index=pd.MultiIndex.from_tuples([], names=["label", "fraction", "seed"]))
    values = pd.to_numeric(df[metric], errors="coerce")
    return values.groupby([df["label"], df["fraction"], df["seed"]]).mean().dropna()


def per_seed(acc: pd.Series, method: str, fraction: int) -> pd.Series:
    """Test accuracy per seed of `method` at `fraction` (`acc`: accuracies())."""
    key = (method, fraction)
    return acc.loc[key] if key in acc.index.droplevel("seed") else pd.Series(dtype=float)


def gains(acc: pd.Series, method: str, fraction: int) -> pd.Series:
    """method - plain fine-tuning, test accuracy per seed at `fraction` (the seeds both ran)."""
    a, b = per_seed(acc, method, fraction), per_seed(acc, PLAIN, fraction)
    common = a.index.intersection(b.index)
    return a[common] - b[common]


def gain(acc: pd.Series, method: str, fraction: int) -> stats.Estimate:
    return stats.mean_ci(gains(acc, method, fraction).tolist(), paired=True, bounds=stats.DIFFERENCE)


def shrinks(acc: pd.Series, method: str, fracs=FRACTIONS) -> pd.Series:
    """Per seed, the gain at the smallest fraction of `fracs` less the gain at the largest."""
    small, large = gains(acc, method, min(fracs)), gains(acc, method, max(fracs))
    common = small.index.intersection(large.index)
    return small[common] - large[common]


def mean_over_methods(per_method: dict) -> stats.Estimate:
    """Per seed, the mean over the methods of their per-seed values (seeds where every method has one), then its
    mean and interval over seeds."""
    return stats.mean_ci(pd.DataFrame(per_method).dropna().mean(axis=1).tolist(), paired=True)


def mean_shrink(acc: pd.Series, methods=REGULARIZERS, fracs=FRACTIONS) -> stats.Estimate:
    return mean_over_methods({m: shrinks(acc, m, fracs) for m in methods})


def verdicts(acc: pd.Series, chance_acc: pd.Series | None = None, chance: float = common.CHANCE,
             fracs=FRACTIONS, size: int = TRAIN_SIZE) -> list[verdict.Verdict]:
    """The claims from accuracies(): each regulariser beats plain at the smallest fraction of `fracs` (of `size`
    images; not testable when neither arm is shown above `chance`, 1/num_classes of the runs, on `chance_acc`,
    accuracies() of the balanced accuracy where the rows have it); the mean gain shrinks from the smallest
    fraction to the largest. Equivalence margin: DELTA."""
    chance_acc = acc if chance_acc is None else chance_acc
    lo, hi = min(fracs), max(fracs)
    small = f"{lo}% labels ({train_examples(lo, size)} images)"
    out = [verdict.greater(f"{m} beats plain fine-tuning at {lo}% labels", f"{m} - plain, test accuracy at {small}",
                           gain(acc, m, lo), delta=DELTA, published=EFFECTS[m],
                           untestable=stats.chance_reason({a: per_seed(chance_acc, a, lo) for a in (m, PLAIN)},
                                                          chance))
           for m in REGULARIZERS]
    out.append(verdict.greater("the regularisers' gain shrinks with more labels (mean of the five)",
                               f"gain at {lo}% - gain at {hi}%, mean of the {len(REGULARIZERS)} regularisers",
                               mean_shrink(acc, fracs=fracs), delta=DELTA, published=EFFECTS["shrink"]))
    return out


def _gain_table(acc: pd.Series, fracs=FRACTIONS) -> str:
    last = f"gain at {min(fracs)}% - gain at {max(fracs)}%"
    rows = [{"method": m, **{f"{f}%": gain(acc, m, f).text() for f in fracs},
             last: stats.mean_ci(shrinks(acc, m, fracs).tolist(), paired=True).text()} for m in REGULARIZERS]
    rows.append({"method": "mean of the five", **{f"{f}%": mean_over_methods(
        {m: gains(acc, m, f) for m in REGULARIZERS}).text() for f in fracs},
        last: mean_shrink(acc, fracs=fracs).text()})
    return tables.results.frame_to_markdown(pd.DataFrame(rows), "Gain over plain fine-tuning (test accuracy), "
                                            "paired by seed, per label fraction")


def analyse(rows: list[dict], workdir: pathlib.Path, module=None) -> Analysis:
    """The label fractions and the training set's size from the config module in use (paper.py's FRACTIONS and
    TRAIN_SIZE), this module's without one."""
    fracs, size = tuple(getattr(module, "FRACTIONS", FRACTIONS)), int(getattr(module, "TRAIN_SIZE", TRAIN_SIZE))
    lo, hi = min(fracs), max(fracs)
    df = tables.done(rows)
    chance = common.chance(df)
    if df.empty:
        df = pd.DataFrame(columns=["label", "fraction", "seed"])
    else:  # the methods in METHODS' order, plain fine-tuning first
        rank = {m: i for i, m in enumerate(METHODS)}
        df = df.assign(fraction=fractions(df, size, fracs)).sort_values("label", key=lambda c: c.map(rank),
                                                                        kind="stable")
    acc = accuracies(df)
    table = tables.ci_table(df, "test_accuracy", ["label"], "fraction", "Test accuracy per method and label "
                            "fraction (percent of the training images): mean [95% CI] (n seeds)",
                            order=list(fracs))

    def plot(path):
        plots.lines({m: [(f, gain(acc, m, f)) for f in fracs] for m in REGULARIZERS}, path,
                    xlabel="labelled fraction of the training images (%)",
                    ylabel="test accuracy - plain fine-tuning's", logx=True,
                    references={"plain fine-tuning": stats.Estimate(0.0, math.nan, math.nan, 1)},
                    title="Regulariser minus plain fine-tuning (95% CI over seeds, paired)")
    small = {m: gain(acc, m, lo) for m in REGULARIZERS}
    shown = ", ".join(f"{m} {e.mean:+.3f}" for m, e in small.items() if e.n)
    shrink = mean_shrink(acc, fracs=fracs)
    headline = (f"gain over plain at {lo}%: {shown}; mean gain shrink {lo}% -> {hi}% "
                f"{shrink.mean:+.3f}" if shown and not np.isnan(shrink.mean) else "")
    chance_acc = accuracies(df, stats.chance_metric(df, "test_accuracy"))
    return Analysis([table, _gain_table(acc, fracs)], verdicts(acc, chance_acc, chance, fracs, size), plot,
                    headline=headline)


PUBLISHED = """TLlib's task-adaptation benchmark (github.com/thuml/Transfer-Learning-Library,
examples/task_adaptation/image_classification/README.md, "CUB-200-2011 on ResNet-50 (Supervised Pre-trained)"):
top-1 test accuracy after fine-tuning an ImageNet ResNet-50 on 15%, 30%, 50% and 100% of CUB-200-2011's labelled
training images, every method with the same iterations (20 x 500, batch 48), augmentation and learning rates:

| CUB-200 | 15% | 30% | 50% | 100% |
|---|---|---|---|---|
| ERM (plain fine-tuning) | 51.2 | 64.6 | 74.6 | 81.8 |
| BSS | 53.4 | 66.7 | 76.0 | 82.0 |
| DELTA | 54.8 | 67.3 | 76.3 | 82.3 |
| StochNorm | 54.8 | 66.8 | 75.8 | 82.2 |
| Co-Tuning | 57.6 | 70.1 | 77.3 | 82.5 |

Gain over ERM at 15% / 100%: BSS +2.2 / +0.2, DELTA +3.6 / +0.5, StochNorm +3.6 / +0.4, Co-Tuning +6.4 / +0.7;
their mean +3.95 at 15% and +0.45 at 100%: every regulariser beats plain fine-tuning with few labels and the gain
shrinks as labels grow (the same on Stanford Cars, mean +4.3 / +0.55, and FGVC Aircraft, +2.95 / +1.7, in the same
README). L2-SP is in TLlib (delta.py, `--regularization-type l2_sp`) but not in these tables. The same README's
MoCo-pre-trained tables show the gains are not universal: StochNorm 20.8 against ERM's 28.0 on CUB at 15%.

Each method's own claim (abstracts): L2-SP (Li, Grandvalet & Davoine, ICML 2018, arXiv 1802.01483): "we eventually
recommend a simple L2 penalty with the pre-trained model being a reference as the baseline of penalty for transfer
learning tasks"; DELTA (Li et al., ICLR 2019, arXiv 1901.09229): "our proposed method outperforms these baselines
[L2 and L2-SP] with higher accuracy for new tasks"; BSS (Chen et al., NeurIPS 2019): "BSS can significantly
enhance the performance of representative methods, especially with limited training data"; StochNorm (Kou et al.,
NeurIPS 2020): "a powerful tool to avoid over-fitting in fine-tuning with small datasets"; Co-Tuning (You et al.,
NeurIPS 2020): "Co-Tuning works not only in medium-scale datasets (100 samples per class) but also in large-scale
datasets (1000 samples per class) where regularization-based methods bring no gains over the vanilla fine-tuning".
(The papers' own per-dataset tables were not in the stored copies searched for this page; the numbers above are
TLlib's.)"""

_LIST = ", ".join
_SIZES = (str(train_examples(f)) for f in FRACTIONS)
DIFFERENCES = f"""- Source: the shared small ResNet (stem + 3 residual blocks, 77k parameters) trained from scratch on 1,750
  MNIST digits 0-4, one per seed (`source.seed` = the run's seed), so the intervals over seeds include the source
  model's variance; TLlib: one ImageNet ResNet-50 (25M parameters).
- Target: digits 5-9 of `{TARGET}`, the source's own domain with classes it never saw (TLlib: CUB-200, natural
  images as ImageNet's, 200 finer classes). Its training set: {TRAIN_SIZE} images, 30 per class as CUB-200 has,
  a stratified draw of the 1,750 per seed; the label fractions {_LIST(f'{f}%' for f in FRACTIONS)} keep
  {_LIST(_SIZES)} of them (about 4.5, 9 and 30 per class, as CUB's 15%, 30% and 100%), nested (TLlib: fixed lists,
  and 50% too). Validation 250 and test 500 images of digits 5-9.
- Training: 100 steps of SGD (momentum 0.9, batch {BATCH}, cosine from lr 0.05 after 5 warmup steps), the same for
  every method, no augmentation; the test accuracy at the best validation step (TLlib: 10,000 steps of batch 48,
  lr 0.01 for the head and 0.001 for the backbone, step decay, random-resized crops and flips, and the best test
  accuracy over its epochs). A batch that spans two epochs can repeat an image of the 22, which gives BSS's
  batch feature matrix a zero singular value.
- Strengths (this codebase's defaults, TLlib's): plain = weight decay 5e-4 (TLlib's ERM); L2-SP alpha 0.01 and
  beta 0.01 without weight decay (TLlib's `--trade-off-backbone` / `--trade-off-head`); DELTA with the supervised
  channel attention, alpha 0.48 on a mean over examples (TLlib's 0.01 on a sum over its batch of 48), beta 0.01,
  without weight decay; BSS eta 0.001, k 1; StochNorm p 0.5; Co-Tuning lambda 2.3. BSS, StochNorm and Co-Tuning
  keep the weight decay. No strength is tuned.
- Co-Tuning's category relationship is the paper's calibrated one (`strategy.co_tuning_relationship=calibrated`,
  learnt with the 250 validation images); TLlib's table used its direct average (`direct`).
- The source has 5 classes to the target's 5 (ImageNet's 1,000, dozens of them birds, to CUB's 200), so
  Co-Tuning's relationship rows are far less peaked than on CUB."""

EXPERIMENT = Experiment(
    name="regularizers",
    title="Fine-tuning regularisers vs plain fine-tuning at three label fractions (TLlib's benchmark: L2-SP, DELTA, "
          "BSS, StochNorm, Co-Tuning)",
    question="Do the transfer literature's fine-tuning regularisers, at their default strengths, beat plain "
             "fine-tuning when few target labels are available, and does their gain shrink as labels grow?",
    published=PUBLISHED,
    differences=DIFFERENCES,
    claim="each regulariser beats plain fine-tuning at 15% labels (CUB: +2.2 to +6.4); the gain shrinks with more "
          "labels (mean +3.95 at 15%, +0.45 at 100%)",
    analyse=analyse,
)
