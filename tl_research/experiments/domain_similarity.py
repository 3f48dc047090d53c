"""Domain similarity vs transfer gain (Cui et al. 2018): several source domains ranked for one target. The rank
correlation between a source's similarity to the target (measured on one common feature extractor) and the
gain of transferring from it over scratch, over the sources (each the mean of its seeds: the source networks
are the independent units, the seeds only average the target runs' noise), with a permutation p-value and a
bootstrap interval."""
from __future__ import annotations

import pathlib

import pandas as pd

from tl_research.experiments import common, plots, stats, tables, verdict
from tl_research.experiments.spec import Analysis, Experiment

ARMS = {"fine-tune": {"init": "source", "frozen_depth": 0}, "linear probe": {"init": "source", "frozen_depth": "all"}}
SCRATCH = {"init": "scratch"}
EXTRACTOR = "extractor"  # the label prefix of the common extractor's own run: shown, never ranked
PUBLISHED = ("+0.088 on CUB-200 from the more similar source (iNat .651 vs ImageNet .563); no correlation "
             "given")


def gains(df: pd.DataFrame) -> pd.DataFrame:
    """One row per (arm, source, seed): the source's similarity to the target and the run's accuracy minus
    scratch's on the same seed (the same 600 images)."""
    scratch = df[stats.matches(df, SCRATCH)].groupby("seed")["test_accuracy"].mean()
    out = []
    for arm, where in ARMS.items():
        for _, r in df[stats.matches(df, where)].iterrows():
            base = scratch.get(r["seed"])
            if base is not None and not str(r.get("label", "")).startswith(EXTRACTOR):
                out.append({"arm": arm, "source": r["label"], "seed": r["seed"],
                            "similarity": r.get("domain_similarity"), "gain": r["test_accuracy"] - base})
    return pd.DataFrame(out, columns=["arm", "source", "seed", "similarity", "gain"])


def per_source(g: pd.DataFrame, arm: str) -> pd.DataFrame:
    """The arm's similarity and gain per source, each the mean over its seeds (with their count)."""
    a = g[g["arm"] == arm]
    return a.groupby("source").agg(similarity=("similarity", "mean"), gain=("gain", "mean"),
                                   seeds=("seed", "nunique"))


def verdicts(g: pd.DataFrame) -> tuple[list[verdict.Verdict], dict]:
    """Per arm: Spearman's rho(similarity, gain) over the sources (seed means), its permutation p-value and
    bootstrap interval; the verdict and the agreement by arm."""
    out, rho = [], {}
    for arm in ARMS:
        t = per_source(g, arm)
        rho[arm] = stats.rank_agreement(t["similarity"], t["gain"])
        lo, hi = (int(t["seeds"].min()), int(t["seeds"].max())) if len(t) else (0, 0)
        seeds = f", each the mean of {lo if lo == hi else f'{lo}-{hi}'} seeds" if len(t) else ""
        out.append(verdict.rank(f"gain increases with similarity ({arm})",
                                "Spearman rho(similarity, gain over scratch)", rho[arm],
                                units=f"source domains{seeds}", published=PUBLISHED))
    return out, rho


def arm_names(df: pd.DataFrame) -> list[str]:
    """Each run's arm, as the gain table names it (fine-tune, linear probe, scratch)."""
    names = pd.Series("", index=df.index)
    for arm, where in {**ARMS, "scratch": SCRATCH}.items():
        names[stats.matches(df, where)] = arm
    return names.tolist()


def analyse(rows: list[dict], workdir: pathlib.Path, module=None) -> Analysis:
    df = tables.done(rows)
    g = gains(df)
    found, rho = verdicts(g)
    order = g.groupby("source")["similarity"].mean().sort_values(ascending=False).index.tolist()
    table = tables.ci_table(g, "gain", ["arm"], "source", f"Gain over scratch on "
                            f"{common.text(module, 'target', 'MNIST 5-9')} (test accuracy, paired by seed), by "
                            "source domain, most similar first",
                            order=order, bounds=stats.DIFFERENCE)
    rank = {s: i for i, s in enumerate(order)}
    one_arm = g[g["arm"] == "fine-tune"].sort_values("source", key=lambda s: s.map(rank), kind="stable")
    sims = tables.ci_table(one_arm, "similarity", ["source"], None,
                           "Measured similarity of each source domain's training images to the target's, "
                           "exp(-0.01 EMD) on the common extractor's features, most similar first",
                           bounds=(0.0, 1.0))
    acc = tables.ci_table(df.assign(arm=arm_names(df)), "test_accuracy", ["arm"], "label", "Test accuracy",
                          order=[*order, "scratch"])

    def plot(path):
        series = {arm: sorted([(float(s["similarity"].mean()), stats.mean_ci(s["gain"].tolist(),
                                                                              bounds=stats.DIFFERENCE))
                               for _, s in g[g["arm"] == arm].groupby("source")], key=lambda p: p[0]) for arm in ARMS}
        notes = g.groupby("source")["similarity"].mean()
        plots.lines(series, path, xlabel="domain similarity to the target (common extractor; Cui et al. 2018)",
                    ylabel="gain over scratch", title=f"Gain vs similarity, {len(order)} sources, 95% CI over seeds",
                    notes={float(x): source for source, x in notes.items()})
    return Analysis([sims, table, acc], found, plot,
                    headline="; ".join(f"rho {arm} {a.text()} (n={a.n} sources)" for arm, a in rho.items()))


EXPERIMENT = Experiment(
    name="domain_similarity",
    title="Domain similarity and transfer gain (Cui et al. 2018)",
    question="Does the measured similarity of a source domain to the target, on one common feature extractor, "
             "predict how much transferring from it gains over scratch?",
    published="""Cui, Song, Sun, Howard, Belongie 2018, *Large Scale Fine-Grained Categorization and
Domain-Specific Transfer Learning* (arXiv 1806.06193): similarity `exp(-gamma * EMD)` of class-mean source
features (gamma 0.01); transfer accuracy rises with it (e.g. CUB-200: ImageNet source .563 vs iNat source .651,
iNat being the more similar). The claim: gain increases with similarity.""",
    differences="""- One target (MNIST digits 5-9, 600 training images) and 7 source domains: digits 0-4 of the 4
  ladder rungs (MNIST, scikit-learn's digits upsampled, MNIST inverted, MNIST-M) and digits 5-9 of the 3
  rungs other than MNIST, each a small ResNet trained from scratch for 5 epochs, all in grey at 28x28; Cui et
  al. rank large source datasets (ImageNet, iNat and subsets) for fine-grained targets with Inception-v3.
- The common extractor is the same small ResNet trained on all ten MNIST digits (the target's images
  included, as JFT holds ImageNet's); Cui et al.'s is an Inception-v3 trained on JFT-300M.
- The sources are the independent units: rho over the 7 sources (each the mean of 5 target seeds) with an
  exact permutation p-value; one network per source domain (seed 0), so the source's training noise is not
  averaged. The gain is over scratch on the same target seed.""",
    claim="gain increases with similarity",
    analyse=analyse,
)
