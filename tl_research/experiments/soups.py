"""Model soups (Wortsman et al., ICML 2022) and WiSE-FT (Wortsman et al., CVPR 2022) against the best single run
of a fine-tuning sweep, in and out of distribution, with the loss barrier along the straight path between runs.

Each source seed is one independent group: its own source model, its own target subset, its own ingredients
(INGREDIENTS) and linear probe. The analysis builds the soups of each group with the soup command's code
(tl_research.analysis.soups.make, cached in WORKDIR/soups/group_<g>/), twice: with the BatchNorm
statistics of every mixture re-estimated from the training split (the comparison the verdicts read) and averaged
with the weights (the soup command's default; the uniform and greedy soups and the path, for the record). Every
interval is over the groups, paired by group (`compare`, a pure function of the soups' rows)."""
from __future__ import annotations

import pathlib

import pandas as pd

from tl_research.analysis import soups as soups_lib
from tl_research.core.errors import ConfigError
from tl_research.experiments import common, plots, stats, tables, verdict
from tl_research.experiments.common import CHANCE, DELTA
from tl_research.experiments.lp_ft import ood_columns
from tl_research.experiments.spec import Analysis, Experiment

OOD = ("mnist_inverted", "mnist_m", "digits_upsampled")
GROUPS = (0, 1, 2, 3, 4)  # source seeds: one source model and one set of ingredients each
# The ingredients of every group: full fine-tuning runs that differ as the paper's (LR, weight decay, length,
# label smoothing, augmentation, mixup) and in their seed (data order, augmentation draws)
INGREDIENTS = {
    "lr0.05": {"schedule.lr": 0.05},
    "lr0.02 ls0.1": {"schedule.lr": 0.02, "train.label_smoothing": 0.1},
    "lr0.1 crop": {"schedule.lr": 0.1, "augment": ("crop(2)",)},
    "lr0.05 rotate+zoom ls0.1": {"schedule.lr": 0.05, "augment": ("rotate(10)", "zoom(0.1)"),
                                 "train.label_smoothing": 0.1},
    "lr0.03 mixup": {"schedule.lr": 0.03, "augment": ("mixup(0.2)",)},
    "lr0.05 jitter wd5e-3": {"schedule.lr": 0.05, "augment": ("jitter(0.3)",), "optimizer.weight_decay": 5e-3},
    "lr0.1 crop+mixup ls0.1": {"schedule.lr": 0.1, "augment": ("crop(2)", "mixup(0.2)"),
                               "train.label_smoothing": 0.1},
    "lr0.02 90 steps": {"schedule.lr": 0.02, "train.steps": 90},
}
PROBE = {"label": "LP", "frozen_depth": "all"}  # WiSE-FT's theta_0: the source features with a trained head
MAIN, PLAIN = "recompute", "average"  # BatchNorm statistics of a mixture: re-estimated (verdicts), averaged
BEST, UNIFORM, GREEDY = "best single run", "uniform soup", "greedy soup"
WISE_VAL, WISE_HALF, LP = "WiSE-FT, alpha on val", "WiSE-FT, alpha 0.5", "linear probe (alpha 0)"
MODELS = (BEST, UNIFORM, GREEDY, WISE_VAL, WISE_HALF, LP)
GROUP_KEY = "data.subset_seed"  # what tells the groups apart (equal to source.seed here; a tag in paper.py)
ERROR_BARRIER = 0.02  # the basin test's threshold: a val error barrier below 2 points
UNITS = "source seeds"  # the independent units of every interval (the groups)
# the papers' effect sizes, as accuracy differences (CLIP ViT-B/32: the authors' released evaluations)
PUBLISHED = {
    "greedy_id": "+0.006 (CLIP ViT-B/32: 81.03% vs 80.39%; ViT-G/14, Table 1: +0.002)",
    "greedy_ood": "+0.029 (CLIP ViT-B/32: 50.86% vs 47.97%, mean of 5 shifts; ViT-G/14, Table 1: +0.003)",
    "uniform_id": "-0.004 (CLIP ViT-B/32: 79.97% vs 80.39%)",
    "uniform_ood": "+0.036 (CLIP ViT-B/32: 51.58% vs 47.97%)",
    "wise_ood": "+0.04 to +0.06 (abstract, over prior work; first version: +0.02 to +0.10 over standard fine-tuning)",
    "wise_id": "+0.009 (first version's abstract: 'nearly 1 percentage point' over standard fine-tuning)",
}


def points(groups=GROUPS, ingredients=INGREDIENTS, probe=PROBE) -> list[dict]:
    """The sweep: per group g (source.seed g, data.subset_seed g), every ingredient (seed 100 g + its index) and
    the linear probe (seed 100 g)."""
    out = []
    for g in groups:
        keys = {"source.seed": g, "data.subset_seed": g}
        out += [{**keys, "seed": 100 * g + i, "label": name, **where}
                for i, (name, where) in enumerate(ingredients.items())]
        out.append({**keys, "seed": 100 * g, **probe})
    return out


def build(workdir: pathlib.Path, groups, key: str = GROUP_KEY, echo=print) -> dict:
    """{group: {MAIN: rows, PLAIN: rows}}: soups.make's rows for the runs whose `key` is each group (WORKDIR/
    soups/group_<g>/; a group whose runs cannot be souped, e.g. none finished, is left out in one line). Stored
    evaluations are read back, not redone."""
    out = {}
    for g in groups:
        where, folder = [f"{key}={g}"], f"{soups_lib.FOLDER}/group_{g}"
        try:
            main = soups_lib.make(workdir, where, bn_stats=MAIN, out=folder, echo=lambda *_: None)
            plain = soups_lib.make(workdir, where, bn_stats=PLAIN, wise=False, out=folder, echo=lambda *_: None)
        except ConfigError as e:
            echo(f"soups: group {key}={g} left out: {e}")
            continue
        out[g] = {MAIN: main, PLAIN: plain}
    return out


def _models(rows: list[dict]) -> dict[str, dict]:
    """The compared models of one group's soup rows, by MODELS name (the WiSE-FT ones when there are any)."""
    lines = soups_lib.summary(rows, "val_accuracy")
    out = {BEST: lines[0], UNIFORM: lines[1], GREEDY: lines[2]}
    if len(lines) > 3:
        out.update({WISE_VAL: lines[3], WISE_HALF: lines[4]})
        out[LP] = next(r for r in rows if r["model"].startswith("wise_ft") and r["alpha"] == 0.0)
    return out


def barriers(rows: list[dict]) -> dict:
    """The straight path's barriers between the two best runs: in val loss and in val error (1 - accuracy)."""
    path = sorted((r for r in rows if r["model"].startswith("path ")), key=lambda r: r["alpha"])
    if not path:
        return {"loss": float("nan"), "error": float("nan")}
    return {"loss": soups_lib.barrier([r["val_loss"] for r in path]),
            "error": soups_lib.barrier([1.0 - r["val_accuracy"] for r in path])}


def frame(per_group: dict) -> pd.DataFrame:
    """One row per (group, BatchNorm mode, model): val, ID test, each OOD test and their mean; alpha, members,
    the run ids; and the group's path barriers."""
    out = []
    for g, modes in per_group.items():
        for mode, rows in modes.items():
            b = barriers(rows)
            for name, r in _models(rows).items():
                out.append({"group": g, "bn": mode, "model": name, "alpha": r["alpha"], "members": r["members"],
                            "run_ids": r["run_ids"], "barrier_loss": b["loss"], "barrier_error": b["error"],
                            **{k: v for k, v in r.items() if k.startswith(("val_", "test_"))}})
    df = pd.DataFrame(out)
    ood = ood_columns(df) if not df.empty else []
    return df.assign(ood_accuracy=df[ood].mean(axis=1) if ood else float("nan"))


def by_group(df: pd.DataFrame, model: str, metric: str, bn: str = MAIN) -> pd.Series:
    rows = df[(df["model"] == model) & (df["bn"] == bn)] if not df.empty else df
    return pd.to_numeric(rows.get(metric, pd.Series(dtype=float)), errors="coerce").groupby(
        rows.get("group", pd.Series(dtype=float))).mean()


def difference(df: pd.DataFrame, a: str, b: str, metric: str, bn: str = MAIN) -> stats.Estimate:
    """a - b per group (paired: the same source, subset and ingredients), mean and 95% interval over groups."""
    return stats.paired_difference(by_group(df, a, metric, bn), by_group(df, b, metric, bn), units=UNITS)


def _name(col: str) -> str:
    return col[len("test_"):-len("_accuracy")]


def ood_difference(df: pd.DataFrame, a: str, b: str, bn: str = MAIN,
                   chance: float = CHANCE) -> tuple[stats.Estimate, str, str]:
    """a - b in the mean accuracy over the OOD test sets where not both are at chance (each set judged on its
    balanced accuracy, as lp_ft does; all of them when every one is), per group; the figure's note on the sets
    left out; why the pair is not testable ('' when some set is kept)."""
    kept, dropped = [], []
    for col in ood_columns(df) if not df.empty else []:
        cm = stats.chance_metric(df, col)
        reason = stats.chance_reason({m: by_group(df, m, cm, bn) for m in (a, b)}, chance)
        (dropped if reason else kept).append(col)
    cols = kept or dropped
    mean = lambda m: (pd.concat([by_group(df, m, c, bn) for c in cols], axis=1).mean(axis=1)  # noqa: E731
                      if cols else pd.Series(dtype=float))
    note = f"; {', '.join(map(_name, dropped))} left out: both at chance there" if dropped and kept else ""
    untestable = (f"{a} and {b} not shown above chance (1/{round(1 / chance)}) on any OOD test set"
                  if dropped and not kept else "")
    return stats.paired_difference(mean(a), mean(b), units=UNITS), note, untestable


def verdicts(df: pd.DataFrame, chance: float = CHANCE) -> list[verdict.Verdict]:
    """The eight claims, paired by group; accuracy differences with an equivalence margin of one point; an arm
    at `chance` (1/num_classes of the runs) cannot test a claim."""
    g = "per source seed"

    def id_claim(claim, a, b, key, make=verdict.greater):
        cm = stats.chance_metric(df, "test_accuracy") if not df.empty else "test_accuracy"
        untestable = stats.chance_reason({m: by_group(df, m, cm) for m in (a, b)}, chance)
        return make(claim, f"{a} - {b}, ID test ({g})", difference(df, a, b, "test_accuracy"), delta=DELTA,
                    published=PUBLISHED[key], untestable=untestable)

    def ood_claim(claim, a, b, key, make=verdict.greater):
        est, note, untestable = ood_difference(df, a, b, chance=chance)
        return make(claim, f"{a} - {b}, mean OOD test ({g}{note})", est, delta=DELTA, published=PUBLISHED[key],
                    untestable=untestable)
    barrier = stats.mean_ci(by_group(df, BEST, "barrier_error").tolist(), units=UNITS)
    return [
        id_claim("the greedy soup beats the best single run in distribution", GREEDY, BEST, "greedy_id"),
        ood_claim("the greedy soup beats the best single run out of distribution", GREEDY, BEST, "greedy_ood"),
        id_claim("the uniform soup falls below the best single run in distribution", UNIFORM, BEST, "uniform_id",
                 verdict.less),
        ood_claim("the uniform soup beats the best single run out of distribution", UNIFORM, BEST, "uniform_ood"),
        ood_claim("WiSE-FT (alpha chosen on val) beats the fine-tuned run out of distribution", WISE_VAL, BEST,
                  "wise_ood"),
        ood_claim("WiSE-FT (alpha 0.5) beats the fine-tuned run out of distribution", WISE_HALF, BEST, "wise_ood"),
        id_claim("WiSE-FT (alpha 0.5) keeps or raises the fine-tuned run's accuracy in distribution", WISE_HALF,
                 BEST, "wise_id"),
        verdict.less("runs fine-tuned from one source lie in one basin (val error barrier below 2 points)",
                     f"val error barrier on the path between the two best runs ({g})", barrier, ERROR_BARRIER,
                     published="no number (abstract: fine-tuned models 'often appear to lie in a single low error "
                               "basin')"),
    ]


def accuracy_table(df: pd.DataFrame) -> str:
    main = df[df["bn"] == MAIN] if not df.empty else df
    sets = [("val", "val_accuracy"), ("ID test", "test_accuracy"),
            *[(c[len("test_"):-len("_accuracy")], c) for c in ood_columns(df)], ("mean OOD", "ood_accuracy")]
    long = pd.concat([main.assign(test_set=name, accuracy=main[col]) for name, col in sets if col in main])
    return tables.ci_table(long, "accuracy", ["model"], "test_set",
                           "Accuracy of each model (mixtures with their BatchNorm statistics re-estimated): mean "
                           "[95% CI] (n source seeds)", order=[name for name, _ in sets], digits=3)


def difference_table(df: pd.DataFrame) -> str:
    out = []
    for model in (UNIFORM, GREEDY, WISE_VAL, WISE_HALF, LP):
        for bn in (MAIN, PLAIN):
            if by_group(df, model, "test_accuracy", bn).empty:
                continue
            out.append({"model": model, "BatchNorm statistics": "re-estimated" if bn == MAIN else "averaged",
                        "ID test": difference(df, model, BEST, "test_accuracy", bn).text(),
                        "mean OOD test (every set)": difference(df, model, BEST, "ood_accuracy", bn).text()})
    return tables.results.frame_to_markdown(pd.DataFrame(out), "Each model minus the best single run (chosen on "
                                            "val), paired by source seed")


def basin_table(df: pd.DataFrame, labels: dict) -> str:
    """Per group: the two best runs, the path's barriers with either BatchNorm mode, the greedy soup's members
    and the alpha chosen on val."""
    out = []
    for g, rows in df.groupby("group", sort=True):
        pick = lambda model, bn=MAIN: rows[(rows["model"] == model) & (rows["bn"] == bn)]  # noqa: E731
        best, plain, greedy, wise = pick(BEST), pick(BEST, PLAIN), pick(GREEDY), pick(WISE_VAL)
        if best.empty:
            continue
        pair = str(best["run_ids"].iloc[0])  # the best run; the path's second run is the second best
        out.append({"source seed": g, "best run": labels.get(pair, pair),
                    "val loss barrier (re-estimated / averaged)":
                        f"{best['barrier_loss'].iloc[0]:+.3f} / {plain['barrier_loss'].iloc[0]:+.3f}"
                        if not plain.empty else f"{best['barrier_loss'].iloc[0]:+.3f}",
                    "val error barrier (re-estimated / averaged)":
                        f"{best['barrier_error'].iloc[0]:+.3f} / {plain['barrier_error'].iloc[0]:+.3f}"
                        if not plain.empty else f"{best['barrier_error'].iloc[0]:+.3f}",
                    "greedy soup": ", ".join(labels.get(r, r) for r in str(greedy["run_ids"].iloc[0]).split(";"))
                    if not greedy.empty else "",
                    "alpha on val": wise["alpha"].iloc[0] if not wise.empty else ""})
    return tables.results.frame_to_markdown(pd.DataFrame(out), "Per source seed: the straight path between the "
                                            "two best runs (barrier: the largest rise above the line between its "
                                            "ends; near 0 or below: one basin), the greedy soup and WiSE-FT's alpha")


def points_of(per_group: dict, prefix: str, labels: dict | None = None) -> pd.DataFrame:
    """The soup rows whose model starts with `prefix` ("wise_ft": WiSE-FT's curve, "run ": every ingredient),
    one per (group, model), with the run's label and the mean OOD accuracy."""
    rows = [{"group": g, "label": (labels or {}).get(r["run_ids"], r["run_ids"]), **r}
            for g, modes in per_group.items() for r in modes[MAIN] if r["model"].startswith(prefix)]
    df = pd.DataFrame(rows)
    ood = ood_columns(df) if not df.empty else []
    return df.assign(ood_accuracy=df[ood].mean(axis=1) if ood else float("nan"))


def compare(per_group: dict, labels: dict | None = None, chance: float = CHANCE,
            ingredients: int = len(INGREDIENTS)) -> Analysis:
    """Tables, verdicts and plot from {group: {MAIN: soup rows, PLAIN: soup rows}} (soups.make's rows), the
    runs' chance level and the number of ingredients per group."""
    labels = labels or {}
    df = frame(per_group)
    curve, singles = points_of(per_group, "wise_ft"), points_of(per_group, "run ", labels)
    vs = verdicts(df, chance)
    n = len(per_group)
    count = (f"Independent units: {n} source seed(s), each its own source model, target subset, "
             f"{ingredients} ingredients and linear probe; every interval is over them.")
    tabs = [count, accuracy_table(df), difference_table(df), basin_table(df, labels)] if not df.empty else [count]
    if not curve.empty:
        tabs.append(tables.ci_table(curve.assign(alpha=curve["alpha"].astype(float)), "ood_accuracy", ["alpha"],
                                    None, "WiSE-FT from the linear probe (alpha 0) to the best run (alpha 1): mean "
                                    "OOD test accuracy [95% CI] (n source seeds)"))

    def plot(path):
        series = {"each ingredient": [(float(c["test_accuracy"].mean()), stats.mean_ci(c["ood_accuracy"].tolist()),
                                       "") for _, c in singles.groupby("label")]} if not singles.empty else {}
        if not df.empty:
            main = df[df["bn"] == MAIN]
            series.update({m: [(float(main[main["model"] == m]["test_accuracy"].mean()),
                                 stats.mean_ci(main[main["model"] == m]["ood_accuracy"].tolist()), "")]
                           for m in (BEST, UNIFORM, GREEDY)})
        if not curve.empty:
            series["WiSE-FT (alpha)"] = [
                (float(c["test_accuracy"].mean()), stats.mean_ci(c["ood_accuracy"].tolist()), f"{a:g}")
                for a, c in curve.groupby(curve["alpha"].astype(float))]
        plots.scatter(series, path, xlabel="ID test accuracy (mean over source seeds)",
                      ylabel="mean OOD test accuracy (95% CI)", logx=False,
                      title=f"Soups and WiSE-FT vs the best single run ({n} source seeds)")
    headline = "; ".join(f"{v.figure.split(' (per')[0]} {v.figure.split(' = ')[1].split(' [')[0]}"
                         for v in (vs[0], vs[1], vs[5]))
    return Analysis(tabs, vs, plot, headline=headline)


def analyse(rows: list[dict], workdir: pathlib.Path, module=None) -> Analysis:
    df = tables.done(rows)
    groups = sorted(int(g) for g in df[GROUP_KEY].dropna().unique()) if GROUP_KEY in df else []
    labels = dict(zip(df["run_id"], df["label"])) if "label" in df else {}
    # the ingredients: every label but the linear probe's (INGREDIENTS' names here, "ingredient i" at paper scale)
    names = df["label"][df["label"] != PROBE["label"]].nunique() if "label" in df else len(INGREDIENTS)
    return compare(build(pathlib.Path(workdir), groups), labels, common.chance(df), names)


EXPERIMENT = Experiment(
    name="soups",
    title="Model soups and WiSE-FT: weight averages of a fine-tuning sweep against its best run (Wortsman et al. "
          "2022)",
    question="Runs fine-tuned from one source with different hyper-parameters are usually thrown away but the best "
             "on validation. Does averaging their weights (a uniform or a greedy soup) beat the best run in and out "
             "of distribution, does interpolating the best run with the source's linear probe (WiSE-FT) buy "
             "robustness to distribution shift at little cost in distribution, and do the runs lie in one basin?",
    published="""Wortsman, Ilharco, Gadre, Roelofs, Gontijo-Lopes, Morcos, Namkoong, Farhadi, Carmon, Kornblith,
Schmidt 2022, *Model soups: averaging weights of multiple fine-tuned models improves accuracy without increasing
inference time* (ICML 2022, arXiv 2203.05482). Abstract: "fine-tuned models often appear to lie in a single low
error basin. We show that averaging the weights of multiple models fine-tuned with different hyperparameter
configurations often improves accuracy and robustness." Table 1 (ViT-G/14 pre-trained on JFT-3B, fine-tuned on
ImageNet): the best model of the hyper-parameter search 90.78% ImageNet top-1 and 84.68% over the distribution
shifts; the greedy soup 90.94% and 85.02%. Their CLIP ViT-B/32 sweep (72 fine-tuning runs on ImageNet with random
LR, weight decay, epochs, label smoothing, RandAugment and mixup; the authors' released evaluations behind their
Figure 1, github.com/mlfoundations/model-soups `individual_model_results.jsonl`, `uniform_soup_results.jsonl`,
`greedy_soup_results.jsonl`): the best single model on their held-out split (2% of ImageNet train) 80.39%
ImageNet and 47.97% mean over the five shifts (ImageNet-V2, -R, -Sketch, -A, ObjectNet); the **uniform soup**
of all 72 79.97% / 51.58% (**below the best model in distribution, 3.6 points above it out of
distribution**); the **greedy soup** (Recipe 1: ingredients in order of held-out accuracy, each kept only if
the soup's held-out accuracy does not fall) 81.03% / 50.86% (**+0.64 in distribution, +2.89 out of
distribution**).

Wortsman, Ilharco, Kim, Li, Kornblith, Roelofs, Gontijo-Lopes, Hajishirzi, Farhadi, Namkoong, Schmidt 2022,
*Robust fine-tuning of zero-shot models* (CVPR 2022, arXiv 2109.01903), WiSE-FT: (1 - alpha) theta_zero-shot +
alpha theta_fine-tuned. Abstract: "Compared to standard fine-tuning, WiSE-FT provides large accuracy improvements
under distribution shift, while preserving high accuracy on the target distribution. On ImageNet and five derived
distribution shifts, WiSE-FT improves accuracy under distribution shift by 4 to 6 percentage points (pp) over
prior work while increasing ImageNet accuracy by 1.6 pp"; the first version's abstract, against standard
fine-tuning: "improve out-of-distribution accuracy by 2 to 10 percentage points while increasing in-distribution
accuracy by nearly 1 percentage point". alpha = 0.5 is their fixed choice when nothing is tuned.

The basin test: the val error along the straight path between the two best runs (Frankle, Dziugaite, Roy,
Carbin 2020, arXiv 1912.05671: networks are linearly connected when the error barrier on that path is about 0);
the verdict asks for a barrier below 2 points of error.""",
    differences="""- Source: the 4-unit ResNet (stem + 3 residual blocks, 77k parameters, BatchNorm) trained for 5
  epochs on the 1,750 MNIST digits 0-4, one per group (`source.seed` = the group: the group's runs share their
  source, as a soup's ingredients must, and the intervals over groups include the source's variance), not CLIP
  ViT-B/32 or ViT-G/14. Its features are digit-specific and not robust: the linear probe that
  stands for WiSE-FT's zero-shot model (the source features with a head trained for 60 steps) is itself near
  chance on the shifted test sets, where CLIP's zero-shot model is the robust one WiSE-FT borrows from.
- Target: digits 5-9 of mnist_subset, 600 training images per group (`data.subset_seed` = the group), the 500
  val images (what the best run, the greedy soup and alpha are chosen on) and 500 test images; out of
  distribution: digits 5-9 of `mnist_inverted`, `mnist_m` and `digits_upsampled`, read in grey, instead of
  ImageNet's five natural shifts. As in lp_ft, an OOD set where both models compared are at chance (their
  balanced accuracy's interval not above 1/5) is left out of their mean and named in the figure: every model is
  at chance on `mnist_inverted`, most on `mnist_m`, so the OOD claims rest mostly on `digits_upsampled`.
- Ingredients: 8 per group from a fixed list (`tl_research.experiments.soups.INGREDIENTS`), not a random search
  of 72: LR 0.02 to 0.1, label smoothing 0 or 0.1, augmentation (none, crop, rotate + zoom, jitter, mixup, crop
  + mixup), weight decay 5e-4 or 5e-3, 60 or 90 steps of SGD with momentum (cosine), each run its own seed.
  Every run's new head starts at zero, so a group's ingredients start from the same weights.
- BatchNorm: the paper's ViTs have none. The statistics of a mixture are not the mixture of the statistics, so
  every model that mixes runs (soups, the inside of the WiSE-FT curve and of the path) gets its running mean and
  variance re-estimated from the group's 600 training images (`python -m tl_research.soup --bn_stats recompute`,
  SWA's bn_update); the verdicts read those. The soups with the statistics averaged with the weights (the soup
  command's default) are in the tables for comparison.
- WiSE-FT interpolates the best single run (the fine-tuned endpoint, alpha 1) with the group's linear probe
  (alpha 0), at alpha 0, 0.1, ..., 1; alpha chosen on val (ties toward 0.5) and the fixed 0.5.
- The greedy soup keeps an ingredient when the val accuracy does not fall (the paper's Recipe 1; the authors'
  `main.py` keeps it only when it rises). The path is measured between the two best runs only.""",
    claim="greedy soup > best single run in and out of distribution; uniform soup < best in distribution, > best "
          "out of distribution; WiSE-FT +4-6 points out of distribution at no cost in distribution",
    analyse=analyse,
)
