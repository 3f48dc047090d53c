"""Parameter-efficient fine-tuning vs full fine-tuning (the PETL plot of VPT, Jia et al. 2022): accuracy against
trainable parameters for every method, on a ResNet and a ViT source, along the domain ladder.

The methods are named by `strategy.name`; the sweep keeps those registered (`methods_for`), so a strategy that
another part of the code registers later joins the experiment without a change here. Those missing are named in
one printed line, and so is a method whose config validation refuses a source (e.g. one that needs attention
layers), which is then left out for that source."""
from __future__ import annotations

import dataclasses
import pathlib

import pandas as pd

from tl_research.core.errors import ConfigError
from tl_research.data.domains import LADDER
from tl_research.experiments import common, plots, stats, tables, verdict
from tl_research.experiments.common import DELTA
from tl_research.experiments.spec import Analysis, Experiment

METHODS = ("fine_tune", "feature_extraction", "bitfit", "norm_only", "lora", "adapter", "ssf", "vpt_shallow",
           "vpt_deep")
VIT_ONLY = frozenset({"vpt_shallow", "vpt_deep"})  # prompt tokens: the ViT family only
FULL, PROBE = "fine_tune", "feature_extraction"
_TABLE1 = "Table 1: ViT-B/16, VTAB-1k, the mean of the 3 group means"
PUBLISHED = {"deep_full": f"+0.030 ({_TABLE1})", "deep_shallow": f"+0.041 ({_TABLE1})",
             "deep_bitfit": f"+0.067 ({_TABLE1})", "full_bitfit": f"+0.037 ({_TABLE1}; a ViT only)"}


@dataclasses.dataclass(frozen=True)
class Source:
    name: str  # as the tables and the plot show it
    model: str  # model.name
    overrides: dict  # the keys of this source's runs and of its source model (source.*)
    lr_full: float  # full fine-tuning's LR
    lr_peft: float  # every other method's


_VIT_KEYS = {"model.name": "vit_micro", "model.image_size": 16, "data.image_size": 16, "optimizer.name": "adam",
             "optimizer.weight_decay": 0.05}
SOURCES = {
    "ResNet": Source("ResNet", "resnet_cifar", {"model.name": "resnet_cifar"}, 0.05, 0.1),
    "ViT": Source("ViT", "vit_micro", {**_VIT_KEYS, "train.steps": 80,
                                        **{f"source.{k}": v for k, v in _VIT_KEYS.items()},
                                        "source.schedule.lr": 3e-3, "source.train.epochs": 10.0}, 1e-3, 1e-2),
}
_SAID: set[str] = set()  # the lines said in this process (the config is read more than once a command)


def say_once(line: str, echo=print) -> None:
    if line not in _SAID:
        _SAID.add(line)
        echo(line)


def arm(source: Source, method: str) -> dict:
    """The keys of one method's runs on `source`: the strategy and its LR."""
    keys = {"strategy.name": method, "schedule.lr": source.lr_full if method == FULL else source.lr_peft}
    if method == "lora" and not source.model.startswith("vit_"):  # a ResNet's only dense layer is the head:
        keys["strategy.lora.convs"] = True  # LoRA on its 1x1 convolutions (projections)
    return keys


def refusal(base, point: dict) -> str:
    """Why config validation refuses `base` with `point` applied ('' when it passes)."""
    from tl_research import config as config_lib
    try:
        config_lib.validate(config_lib.apply_overrides(base, point))
    except ConfigError as e:
        return str(e)
    return ""


def methods_for(base, source: Source, methods=METHODS, echo=print, check: bool = True) -> list[str]:
    """`methods` that run on `source`: registered strategies, VPT on a ViT only, and (check) what config
    validation of `base` with the method's keys passes; one printed line names the unregistered ones, one line
    each refused method. check=False where validation needs what is not at hand (weights, data)."""
    from tl_research.finetune import strategies
    registered = set(strategies.names())
    missing = [m for m in methods if m not in registered]
    if missing:
        say_once(f"peft_vs_full: not registered strategies, left out: {', '.join(missing)}", echo)
    out = []
    for m in methods:
        if m not in registered or (m in VIT_ONLY and not source.model.startswith("vit_")):
            continue
        why = refusal(base, {**source.overrides, **arm(source, m)}) if check else ""
        if why:
            say_once(f"peft_vs_full: {m} left out on {source.model}: {why}", echo)
            continue
        out.append(m)
    return out


def sources(module=None) -> dict[str, Source]:
    """The sources of the config module in use (its SOURCES: paper.py's one ViT-B/16), SOURCES without one."""
    return dict(getattr(module, "SOURCES", SOURCES))


def _where(df: pd.DataFrame, source: Source, method: str) -> dict:
    """The keys of one method's runs on `source` (model.name only where the sweep varies it: one source else)."""
    return {**({"model.name": source.model} if "model.name" in df else {}), "strategy.name": method}


def _source_of(model_name, srcs: dict) -> str:
    return next((s.name for s in srcs.values() if s.model == model_name), str(model_name))


def per_seed(df: pd.DataFrame, source: str, method: str, metric: str = "test_accuracy",
             srcs: dict | None = None) -> pd.Series:
    """`metric` per seed, the mean over the targets, of one method on one source (a name of `srcs`, default
    SOURCES)."""
    return stats.per_seed(df, metric, _where(df, (srcs or SOURCES)[source], method))


def params(df: pd.DataFrame, source: str, method: str, srcs: dict | None = None) -> float:
    rows = df[stats.matches(df, _where(df, (srcs or SOURCES)[source], method))]
    values = pd.to_numeric(rows.get("trainable_params", pd.Series(dtype=float)), errors="coerce").dropna()
    return float(values.median()) if len(values) else float("nan")


def verdicts(df: pd.DataFrame, module=None) -> list[verdict.Verdict]:
    """The claims from the finished runs, paired by seed: VPT-deep against full fine-tuning, VPT-shallow and
    BitFit, and full fine-tuning against BitFit, on each ViT source (the digits' ViT; paper.py's ViT-B/16), then
    full fine-tuning against BitFit on each other source (the digits' ResNet); each not testable when both methods
    compared are at chance (balanced accuracy where the rows have it, chance from the runs' num_classes)."""
    cm, srcs = stats.chance_metric(df, "test_accuracy"), sources(module)
    n = df["data.name"].nunique() if "data.name" in df else 1

    def v(claim, src, a, b, key):
        at = lambda m, metric="test_accuracy": per_seed(df, src, m, metric, srcs)  # noqa: E731
        chance = common.chance(df, {"model.name": srcs[src].model} if "model.name" in df else None)
        return verdict.greater(f"{claim} ({src})", f"{a} - {b}, test accuracy, mean of the {n} targets",
                               stats.paired_difference(at(a), at(b)), delta=DELTA, published=PUBLISHED[key],
                               untestable=stats.chance_reason({m: at(m, cm) for m in (a, b)}, chance))
    vits = [name for name, s in srcs.items() if s.model.startswith("vit_")]
    return [claim for src in vits for claim in (
        v("VPT-deep beats full fine-tuning", src, "vpt_deep", FULL, "deep_full"),
        v("VPT-deep beats VPT-shallow", src, "vpt_deep", "vpt_shallow", "deep_shallow"),
        v("VPT-deep beats BitFit", src, "vpt_deep", "bitfit", "deep_bitfit"),
        v("full fine-tuning beats BitFit", src, FULL, "bitfit", "full_bitfit"))] + [
        v("full fine-tuning beats BitFit", src, FULL, "bitfit", "full_bitfit") for src in srcs if src not in vits]


def _long(df: pd.DataFrame, srcs: dict) -> pd.DataFrame:
    """One row per run plus one per (source, method, seed) for the mean of the targets, ordered by source and
    METHODS, with the source's display name and the method's trainable parameters."""
    models = df["model.name"] if "model.name" in df else [next(iter(srcs.values())).model] * len(df)
    df = df.assign(source=[_source_of(m, srcs) for m in models], method=df["strategy.name"])
    mean = (df.groupby(["source", "method", "seed"], as_index=False)["test_accuracy"].mean()
            .assign(**{"data.name": "mean"}))
    out = pd.concat([df[["source", "method", "seed", "data.name", "test_accuracy"]], mean], ignore_index=True)
    out["trainable params"] = [f"{params(df, s, m, srcs):,.0f}" for s, m in zip(out["source"], out["method"])]
    rank = {m: i for i, m in enumerate(METHODS)}
    key = lambda col: col.map(lambda v: rank.get(v, len(rank))) if col.name == "method" else col
    return out.sort_values(["source", "method"], key=key, kind="stable")


def analyse(rows: list[dict], workdir: pathlib.Path, module=None) -> Analysis:
    df = tables.done(rows)
    if df.empty:
        return Analysis(["(no finished runs)"], verdicts(df, module),
                        lambda path: plots.scatter({}, path, xlabel="", ylabel="", title=""))
    srcs = sources(module)
    long = _long(df, srcs)
    targets = common.text(module, "targets", "digits 5-9 per ladder target")
    table = tables.ci_table(long, "test_accuracy", ["source", "method", "trainable params"], "data.name",
                            f"Test accuracy of {targets} and their mean: mean [95% CI] (n seeds)",
                            order=[*getattr(module, "TASKS", LADDER), "mean"])
    at = lambda s, m: per_seed(df, s, m, srcs=srcs)  # noqa: E731
    ran = {s: [m for m in METHODS if len(at(s, m))] for s in srcs}
    n = df["data.name"].nunique() if "data.name" in df else 1

    def plot(path):
        est = lambda s, m: stats.mean_ci(at(s, m).tolist(), bounds=stats.ACCURACY)  # noqa: E731
        plots.scatter({s: [(params(df, s, m, srcs), est(s, m), m) for m in ms] for s, ms in ran.items()}, path,
                      xlabel="trainable parameters (log scale)",
                      ylabel=f"test accuracy, mean of the {n} {common.text(module, 'kind', 'ladder targets')}",
                      title="Accuracy against trainable parameters (95% CI over seeds)")

    def best(s):
        others = [m for m in ran[s] if m != FULL]
        return max(others, key=lambda m: at(s, m).mean()) if others else None
    parts = []
    for s, ms in ran.items():
        shown = [m for m in (FULL, best(s)) if m in ms]
        parts.append(f"{s}: " + ", ".join(f"{m} {at(s, m).mean():.3f} at {params(df, s, m, srcs):,.0f} params"
                                          for m in shown))
    return Analysis([table], verdicts(df, module), plot,
                    headline="; ".join(p for p in parts if ": " in p and p[-1] != " "))


EXPERIMENT = Experiment(
    name="peft_vs_full",
    title="Parameter-efficient fine-tuning vs full fine-tuning: accuracy against trainable parameters (VPT, "
          "Jia et al. 2022)",
    question="How close do parameter-efficient methods (BitFit, norm-only, LoRA, adapters, SSF, VPT) come to full "
             "fine-tuning, at how many trainable parameters, on a ResNet and a ViT source moved along the "
             "domain ladder?",
    published="""Jia, Tang, Chen, Cardie, Belongie, Hariharan, Lim 2022, *Visual Prompt Tuning* (arXiv
2203.12119): VPT adds "less than 1% of model parameters" and "even outperforms full fine-tuning in many cases".
Table 1, ViT-B/16 pretrained on ImageNet-21k, VTAB-1k mean accuracy per task group (rows as reprinted in the
Convpass README, github.com/JieShibo/PETL-ViT, and the OQFV README):

| method | Natural (7) | Specialized (4) | Structured (8) |
|---|---|---|---|
| Full fine-tuning | 75.88 | 83.36 | 47.64 |
| Bias (BitFit) | 73.3 | 78.3 | 44.1 |
| VPT-shallow | 76.8 | 79.7 | 47.0 |
| VPT-deep | 78.48 | 82.43 | 54.98 |

Findings tested: VPT-deep beats full fine-tuning (+3.0 points, the mean of the three groups), VPT-shallow
(+4.1) and BitFit (+6.7); full fine-tuning beats BitFit (+3.7). V-PETL Bench (Xin et al. 2024) reruns these
methods and more under one protocol on the same benchmark.""",
    differences="""- Sources trained from scratch on 1,750 images of digits 0-4 (a ResNet of 77k parameters at 28x28
  and a ViT of 137k with 4x4 patches at 16x16), not ViT-B/16 (86M) on ImageNet-21k; targets: digits 5-9 on the
  4 rungs of the domain ladder, 600 training images each (VTAB-1k: 1,000), 60 (ResNet) or 80 (ViT) steps.
- No per-task hyper-parameter search (VPT tunes the LR and weight decay per task on val200): full fine-tuning at
  the source's LR, every other method at 10x it (ResNet: 2x), each method at its strategy defaults.
- The head is a new linear classifier and trains in every method, as in VPT; `trainable_params` counts it.
- VPT runs on the ViT only; LoRA on the ResNet adapts its 1x1 convolutions (`strategy.lora.convs`: its one
  dense layer is the head), on the ViT every dense layer (the default targets, not Hu et al.'s query and value
  only). A method whose strategy is not registered where the command runs is left out, its verdicts "not run".""",
    claim="VPT-deep > full FT (+3.0), > VPT-shallow (+4.1), > BitFit (+6.7) on VTAB-1k; full FT > BitFit (+3.7)",
    analyse=analyse,
)
