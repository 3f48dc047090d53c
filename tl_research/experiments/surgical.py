"""Surgical fine-tuning (Lee et al., ICLR 2023): tuning one block of a source network beats tuning all of them,
and which block depends on the shift: the first under an input-level shift, a middle one under a feature-level
shift, the last layer under a label-level shift."""
from __future__ import annotations

import dataclasses
import pathlib

import pandas as pd

from tl_research.experiments import common, plots, stats, tables, verdict
from tl_research.experiments.common import DELTA, SOURCE_CLASSES
from tl_research.experiments.spec import Analysis, Experiment

PERMUTED = (1, 2, 3, 4, 0)  # data.classes in this order: digit 1 -> label 0, ..., digit 0 -> label 4
SHIFTS = {  # target -> (level, data.name, data.classes)
    "mnist_inverted 0-4": ("input", "mnist_inverted", SOURCE_CLASSES),
    "mnist_m 0-4": ("input", "mnist_m", SOURCE_CLASSES),
    "mnist_subset 5-9": ("feature", "mnist_subset", (5, 6, 7, 8, 9)),
    "mnist_subset 0-4 permuted": ("label", "mnist_subset", PERMUTED),
}
# what trains besides the new head, by arm (Lee et al.'s ResNet blocks: "Block 1" = the stem and the first block)
ARMS = {"full": {"frozen_depth": 0}, "first": {"strategy.trainable_units": (0, 1)},
        "middle": {"strategy.trainable_units": (2,)}, "last": {"strategy.trainable_units": (3,)},
        "head": {"frozen_depth": "all"}}
CLAIMED = {"input": "first", "feature": "middle", "label": "head"}  # the arm Lee et al. find best per level
LEVEL_TEXT = {"input": "input-level shift", "feature": "feature-level shift", "label": "label-level shift"}
PUBLISHED = "no number: the sign of Figure 2 (Table 1's numbers not in the copies searched)"
PART_TEXT = {"head": "last layer (the head)"}  # every other arm: "<arm> block"


@dataclasses.dataclass(frozen=True)
class Setting:
    """What the analysis reads off the config module in use (the digits' constants above without one):
    shifts: target -> (level, the keys of its runs); arms: every arm's name, "full" first; claimed: the arm Lee
    et al. find best per level."""
    shifts: dict
    arms: tuple
    claimed: dict

    @property
    def partial(self) -> tuple:
        return tuple(a for a in self.arms if a != "full")


def setting(module=None) -> Setting:
    """The config module's SHIFTS (target -> (level, data.name, data.classes), the digits' shape, or (level, a
    dict of the target's keys), paper.py's), ARMS and CLAIMED; this module's where it has none."""
    shifts = {t: (v[0], v[1] if len(v) == 2 else {"data.name": v[1], "data.classes": v[2]})
              for t, v in getattr(module, "SHIFTS", SHIFTS).items()}
    return Setting(shifts, tuple(getattr(module, "ARMS", ARMS)), dict(getattr(module, "CLAIMED", CLAIMED)))


def part_text(arm: str) -> str:
    return PART_TEXT.get(arm, f"{arm} block")


def targets(df: pd.DataFrame, st: Setting | None = None) -> list[str]:
    """Each run's target name (a key of the setting's shifts), from the keys of its runs (data.name and
    data.classes on the digits)."""
    out = pd.Series("", index=df.index)
    for name, (_, where) in (st or setting()).shifts.items():
        out[stats.matches(df, where)] = name
    return out.tolist()


def selected(df: pd.DataFrame) -> pd.DataFrame:
    """The runs at the LR each (target, arm) reaches its best mean validation accuracy at (Lee et al. pick the
    LR per arm on validation data too); all runs when the LR was not swept."""
    if "schedule.lr" not in df or df.empty:
        return df
    keep = []
    for _, g in df.groupby(["target", "label"], sort=False):
        lr = pd.to_numeric(g["val_accuracy"], errors="coerce").groupby(g["schedule.lr"]).mean().idxmax()
        keep.append(g[g["schedule.lr"] == lr])
    return pd.concat(keep)


def level_rows(df: pd.DataFrame, level: str, st: Setting) -> pd.DataFrame:
    return df[df["target"].isin([t for t, s in st.shifts.items() if s[0] == level])]


def by_target_and_seed(df: pd.DataFrame, level: str, arm: str, metric: str = "test_accuracy",
                       st: Setting | None = None) -> pd.Series:
    """`metric` of `arm` on the level's targets, indexed by (target, seed)."""
    rows = level_rows(df, level, st or setting())
    rows = rows[stats.matches(rows, {"label": arm})]
    if metric not in rows:
        return pd.Series(dtype=float)
    return pd.to_numeric(rows[metric], errors="coerce").groupby([rows["target"], rows["seed"]]).mean()


def difference(df: pd.DataFrame, level: str, a: str, b: str, st: Setting | None = None) -> stats.Estimate:
    """a - b per seed, the mean over the level's targets both ran on (paired by target and seed)."""
    x, y = (by_target_and_seed(df, level, arm, st=st) for arm in (a, b))
    common_ = x.index.intersection(y.index)
    d = (x[common_] - y[common_]).groupby(level="seed").mean()
    return stats.mean_ci(d.tolist(), paired=True, bounds=stats.DIFFERENCE)


def at_chance(df: pd.DataFrame, level: str, arms, st: Setting | None = None) -> str:
    """Why a comparison of `arms` under the level's shift is not testable: each at chance (per seed, the mean
    over the level's targets; balanced accuracy where the rows have it; chance: 1/num_classes of the level's
    runs), else ''."""
    st = st or setting()
    metric = stats.chance_metric(df, "test_accuracy")

    def per_seed(arm):
        s = by_target_and_seed(df, level, arm, metric, st)
        return s.groupby(level="seed").mean() if len(s) else s
    return stats.chance_reason({arm: per_seed(arm) for arm in arms}, common.chance(level_rows(df, level, st)))


def level_verdicts(df: pd.DataFrame, level: str, st: Setting) -> tuple[list[verdict.Verdict], dict]:
    best = st.claimed[level]
    relative = {arm: difference(df, level, arm, "full", st) for arm in st.partial}
    others = [a for a in st.partial if a != best and relative[a].n]
    rival = max(others, key=lambda a: relative[a].mean) if others else [a for a in st.partial if a != best][-1]
    text = LEVEL_TEXT[level]
    out = [verdict.greater(f"{text}: tuning only the {part_text(best)} beats full fine-tuning", f"{best} - full",
                           relative[best], delta=DELTA, published=PUBLISHED,
                           untestable=at_chance(df, level, (best, "full"), st)),
           verdict.greater(f"{text}: the {part_text(best)} is the best part to tune",
                           f"{best} - {rival} (the best other part)", difference(df, level, best, rival, st),
                           delta=DELTA, published=PUBLISHED, untestable=at_chance(df, level, (best, rival), st))]
    return out, relative


def prepared(df: pd.DataFrame, module=None) -> pd.DataFrame:
    """The finished runs with their target, at the LR chosen on validation."""
    return (selected(df.assign(target=targets(df, setting(module)))) if not df.empty
            else df.assign(target=[], label=[]))


def verdicts(df: pd.DataFrame, module=None) -> tuple[list[verdict.Verdict], dict]:
    """The six verdicts (two per shift level) from prepared(df), and each level's arms relative to full."""
    st = setting(module)
    found, relative = [], {}
    for level in st.claimed:
        v, relative[level] = level_verdicts(df, level, st)
        found += v
    return found, relative


def analyse(rows: list[dict], workdir: pathlib.Path, module=None) -> Analysis:
    st = setting(module)
    df = prepared(tables.done(rows), module)
    found, relative = verdicts(df, module)
    acc = tables.ci_table(df, "test_accuracy", ["target"], "label", "Test accuracy per target and tuned part "
                          "(at the LR chosen on validation): mean [95% CI] (n seeds)", order=list(st.arms))
    rel = tables.results.frame_to_markdown(pd.DataFrame(
        [{"shift": LEVEL_TEXT[lv], **{arm: e.text() for arm, e in r.items()}} for lv, r in relative.items()]),
        "Accuracy relative to full fine-tuning (Lee et al.'s Figure 2), mean over the level's targets, paired by seed")
    chosen = (df.groupby(["target", "label"], sort=False)["schedule.lr"].first().unstack()
              .reindex(columns=list(st.arms)).reset_index() if "schedule.lr" in df and not df.empty
              else pd.DataFrame())
    lrs = tables.results.frame_to_markdown(chosen, "LR chosen on validation") if not chosen.empty else ""
    counts = {arm: pd.to_numeric(df[stats.matches(df, {"label": arm})].get("trainable_params", pd.Series(
        dtype=float)), errors="coerce").median() for arm in st.arms} if not df.empty else {}
    sizes = "Trainable parameters (the new head included): " + ", ".join(
        f"{arm} {n:,.0f}" for arm, n in counts.items() if pd.notna(n)) + "."

    def plot(path):
        plots.bars({LEVEL_TEXT[lv]: r for lv, r in relative.items()}, path,
                   ylabel="test accuracy - full fine-tuning's",
                   title="Surgical fine-tuning: one part tuned vs all (95% CI, paired by seed)")
    headline = "; ".join(f"{lv}: {st.claimed[lv]} - full {relative[lv][st.claimed[lv]].text().split(' [')[0]}"
                         for lv in st.claimed)
    return Analysis([acc, rel, lrs, sizes], found, plot, headline=headline)


EXPERIMENT = Experiment(
    name="surgical",
    title="Surgical fine-tuning: which block to tune depends on the shift (Lee et al., ICLR 2023)",
    question="With a small target set, does tuning a single block of the source network beat tuning all of "
             "them, and is the best block the first under an input-level shift, a middle one under a "
             "feature-level shift and the last layer under a label-level shift?",
    published="""Lee, Chen, Tajwar, Kumar, Yao, Liang, Finn 2023, *Surgical Fine-Tuning Improves Adaptation to
Distribution Shifts* (ICLR 2023, arXiv 2210.11466). Abstract: "selectively fine-tuning a subset of layers ...
matches or outperforms commonly used fine-tuning approaches ... for image corruptions, fine-tuning only the first
few layers works best". Figure 1: "Fine-tuning the first block works best for input-level shifts such as CIFAR-C
(image corruption), later blocks work best for feature-level shifts such as Entity-30 (shift in entity
subgroup), and tuning the last layer works best for output-level shifts such as CelebA (spurious correlation
between gender and hair color)." Figure 2 plots "(surgical fine-tuning accuracy) - (full fine-tuning accuracy),
along with standard errors across three runs" per tuned block and dataset: "Fine-tuning a single parameter
block can outperform full fine-tuning, and more importantly, different blocks are best for different distribution
shifts. The location of the best block reflects the nature of the shift: tuning earlier layers performs best for
input-level shifts while tuning later layers is best for output-level shifts." Input-level: CIFAR-C, ImageNet-C;
feature-level: Living-17, Entity-30; output-level: CIFAR-Flip, Waterbirds, CelebA. Tested here: the first block
under an input-level shift, the middle block (the second of three; Figure 1 says "later blocks", and the last
block is reported beside it) under a feature-level shift, the last layer under a label-level shift, each against
full fine-tuning and against the best other single part. Their CIFAR-C setting (the authors' code,
github.com/anniesch/surgical-finetuning): a CIFAR-10 ResNet-26, 1,000 corrupted target images, "Block 1" = the
first conv and the first stage, the "last layer" = the classifier, Adam with the LR chosen per block on
validation. (The per-dataset numbers of their Table 1 were not in the stored copies searched for this page; the
claims tested are the directions above.)""",
    differences="""- Source: the 4-unit ResNet (stem + 3 residual blocks, 77k parameters) trained on 1,750 MNIST digits
  0-4, not ResNet-26 / ResNet-50 on CIFAR-10 / ImageNet. Targets: 20 training images per class (100 in all; Lee
  et al.'s CIFAR-C: 1,000 against CIFAR-10's 50,000), 60 steps of SGD, the LR of each (target, arm) chosen among
  0.01, 0.03 and 0.1 by mean validation accuracy over the 5 seeds.
- Input-level shift: the same digits 0-4 inverted and tinted (`mnist_inverted`) or blended over photographs
  (`mnist_m`), read in grey, instead of synthetic corruptions.
- Feature-level shift: digits 5-9 of the source's own domain. Like BREEDS' Living-17 / Entity-30 (the same
  image statistics, other subpopulations making up each class), the pixels' look is unchanged and what changes
  is which shapes the mid-level features must tell apart; unlike BREEDS, the classes are new, not new
  subpopulations of the same classes.
- Label-level shift: digits 0-4 of the source's own images with their labels permuted (`data.classes` in the
  order 1, 2, 3, 4, 0), as CIFAR-Flip permutes CIFAR-10's labels. This codebase gives every transfer run a new,
  zero-initialised head that always trains, so a permutation is invisible to it: this target is the source
  task with its classifier re-learnt, the case where Lee et al.'s theory (their Proposition 2) has the last layer
  suffice. Their head is the source's, and only the arms that tune it can follow the permutation.
- Every arm trains the new head besides its block (Lee et al. keep the source head frozen in the block arms);
  the trainable blocks' BatchNorm uses batch statistics (their code runs BatchNorm in eval mode).""",
    claim="first block best under input-level shift, a middle block under feature-level shift, the last layer "
          "under label-level shift; each beats full fine-tuning",
    analyse=analyse,
)
