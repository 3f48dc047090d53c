"""The sweep side of `report.transferability` (tl_research/analysis/transferability.py has the scores): the
config check before any work, and after the runs WORKDIR/transferability.csv and WORKDIR/transferability.md.

transferability.md holds two tables:
1. Across pairs: each score at the penultimate layer (and LEEP, NCE, similarity) against the measured
   `report.metric` of the fine-tuned (frozen_depth 0) and the linear-probe (frozen_depth all) runs, per
   setting of the swept keys that are neither the candidate (init, source.*, model.*), the target (data.*),
   the depth nor the seed. Units: the (candidate, target) pairs, the metric averaged over a pair's seeds, the
   scores over its subset draws; Spearman's rho and the weighted Kendall tau with permutation p-values and
   bootstrap intervals over pairs (tl_research.analysis.rank_correlation). Pairs that share a candidate or a
   target are not independent either; the table says how many candidates and targets there are.
2. Per layer: for each pair and setting that measured two or more frozen depths in 1..units, the depth each
   per-layer score ranks first against the best depth measured, the metric given up by following the score
   (regret) and the rank correlation over the depths.
"""
from __future__ import annotations

import logging
import math
import pathlib

import pandas as pd

from tl_research.analysis import rank_correlation as rc
from tl_research.analysis import results
from tl_research.analysis import transferability as tr
from tl_research.analysis import domain_similarity as ds
from tl_research.core import distributed, durable
from tl_research.core.errors import ConfigError
from tl_research.finetune.freezing import resolve_frozen_depth

log = logging.getLogger(__name__)
_NOT_SETTING = ("seed", "frozen_depth", "init")  # with source.*, data.*, model.*: the pair and the depth
KINDS = (("fine-tuned (frozen_depth=0)", "fine_tune"), ("linear probe (frozen_depth=all)", "linear_probe"))


def check(cfg, workdir) -> None:
    """ConfigError before any work for bad report.transferability settings of run config `cfg`."""
    names = tuple(cfg.report.get("transferability", ()))
    allowed = f"a tuple of distinct names from {', '.join(tr.SCORES)}, or () for none"
    if any(n not in tr.SCORES for n in names) or len(set(names)) != len(names):
        raise ConfigError("report.transferability", names, allowed)
    examples = cfg.report.get("transferability_examples", 0)
    if isinstance(examples, bool) or not isinstance(examples, int) or examples < 0:
        raise ConfigError("report.transferability_examples", examples, "an integer >= 0 (0: every training "
                          "example)")
    if names and cfg.task != "classification":
        raise ConfigError("report.transferability", names, "() for a task other than classification",
                          why=f"the scores read image labels; task={cfg.task}")
    if "similarity" in names:
        try:
            ds.source_of(cfg, workdir)
        except ConfigError as e:
            raise ConfigError("report.transferability", names, allowed + " ('similarity' only for runs from "
                              "scratch, init='source' or a run directory)",
                              why=f"init={cfg.init} records no training data to compare with") from e


def setting_of(point: dict) -> str:
    """The run's setting: its swept values other than the pair's (init, source.*, data.*, model.*), the depth
    and the seed; 'all' when there are none."""
    keys = sorted(k for k in point if k not in _NOT_SETTING and not k.startswith(("source.", "data.", "model.")))
    return ", ".join(f"{k}={point[k]}" for k in keys) or "all"


def measured(runs, by_run: dict, rows: list[dict], metric: str) -> pd.DataFrame:
    """Per (candidate, target, setting, depth): the mean of `metric` over the finished runs and their count."""
    done = {r["run_id"]: r for r in rows if r.get("status") == "done"}
    out = []
    for rid, point, cfg in runs:
        rec, row = by_run.get(rid), done.get(rid)
        value = pd.to_numeric(pd.Series([(row or {}).get(metric, "")]), errors="coerce")[0]
        if rec is None or pd.isna(value):
            continue
        out.append({"candidate_key": rec["candidate_key"], "target_key": rec["target_key"],
                    "candidate": rec["candidate"], "target": rec["target"], "setting": setting_of(point),
                    "depth": resolve_frozen_depth(cfg.frozen_depth, rec["num_units"]), "units": rec["num_units"],
                    "value": float(value)})
    if not out:
        return pd.DataFrame(columns=["candidate_key", "target_key", "candidate", "target", "setting", "depth",
                                     "units", "value", "n"])
    df = pd.DataFrame(out)
    keys = ["candidate_key", "target_key", "candidate", "target", "setting", "depth", "units"]
    return df.groupby(keys, sort=False)["value"].agg(value="mean", n="count").reset_index()


def pair_scores(frame: pd.DataFrame, names) -> pd.DataFrame:
    """The scores per (candidate, target, depth), averaged over a pair's subset draws."""
    keys = ["candidate_key", "target_key", "depth", "units"]
    return frame.groupby(keys, sort=False)[list(names)].mean().reset_index()


def across_pairs(scores: pd.DataFrame, meas: pd.DataFrame, names) -> pd.DataFrame:
    """Table 1 (module docstring): one row per (setting, measured kind, score)."""
    top = scores[scores["depth"] == scores["units"]]
    out = []
    for setting in meas["setting"].unique():
        m = meas[meas["setting"] == setting]
        for title, kind in KINDS:
            sel = m[(m["depth"] == 0) if kind == "fine_tune" else (m["depth"] == m["units"])]
            joined = sel.merge(top, on=["candidate_key", "target_key"], suffixes=("", "_s"))
            units = (f"{len(joined)} ({joined['candidate_key'].nunique()} x {joined['target_key'].nunique()})")
            if len(joined) < 3:  # one row for the setting: nothing to rank
                out.append({"setting": setting, "measured": title, "score": ", ".join(names),
                            "pairs (candidates x targets)": units, "Spearman rho [95% CI] p": "too few pairs (3+)",
                            "weighted tau [95% CI] p": ""})
                continue
            for s in names:
                both = joined[~joined[s].isna()]
                rho = rc.agreement(both[s], both["value"], "spearman")
                tau = rc.agreement(both[s], both["value"], "weighted_tau", seed=1)
                out.append({"setting": setting, "measured": title, "score": s,
                            "pairs (candidates x targets)": f"{len(both)} ({both['candidate_key'].nunique()} x "
                                                            f"{both['target_key'].nunique()})",
                            "Spearman rho [95% CI] p": rho.text(), "weighted tau [95% CI] p": tau.text()})
    return pd.DataFrame(out)


def per_layer(scores: pd.DataFrame, meas: pd.DataFrame, names) -> pd.DataFrame:
    """Table 2 (module docstring): one row per (pair, setting, per-layer score) with two or more depths."""
    layer_names = [s for s in names if s in tr.LAYER_SCORES]
    frozen = meas[(meas["depth"] >= 1) & (meas["depth"] <= meas["units"])]
    out = []
    for (ck, tk, setting), m in frozen.groupby(["candidate_key", "target_key", "setting"], sort=False):
        m = m.merge(scores, on=["candidate_key", "target_key", "depth", "units"]).sort_values("depth")
        if len(m) < 2:
            continue
        best = m.loc[m["value"].idxmax()]
        for s in layer_names:
            ranked = m.dropna(subset=[s])
            if len(ranked) < 2:
                continue
            pick = ranked.loc[ranked[s].idxmax()]
            rho = rc.agreement(ranked[s], ranked["value"], "spearman", bootstrap=0)
            out.append({"candidate": m["candidate"].iloc[0], "target": m["target"].iloc[0], "setting": setting,
                        "score": s, "depths": ",".join(str(int(d)) for d in ranked["depth"]),
                        "best measured depth": f"{int(best['depth'])} ({best['value']:.3f})",
                        "score's best depth": f"{int(pick['depth'])} ({pick['value']:.3f})",
                        "regret": f"{best['value'] - pick['value']:.3f}",
                        "Spearman rho over depths, p": "n/a" if math.isnan(rho.value) else
                        f"{rho.value:+.2f}, p={rho.p:.3g}"})
    return pd.DataFrame(out)


def markdown(frame: pd.DataFrame, meas: pd.DataFrame, names, metric: str) -> str:
    """transferability.md."""
    scores = pair_scores(frame, names)
    parts = [f"# Transferability scores against the measured {metric}\n",
             f"Scores: {', '.join(names)}; one row per (candidate, target, depth) in {tr.CSV_FILE}.\n"]
    table = across_pairs(scores, meas, names) if not meas.empty else pd.DataFrame()
    parts.append(results.frame_to_markdown(table, "Across (candidate, target) pairs: the units are the pairs "
                 f"(the {metric} averaged over a pair's seeds); two-sided permutation p-values, 95% percentile "
                 "bootstrap intervals over pairs; 3 or more pairs needed") if not table.empty else
                 "Across pairs: no finished fine-tuned or linear-probe run from a scored candidate.\n")
    layers = per_layer(scores, meas, names) if not meas.empty else pd.DataFrame()
    if not layers.empty:
        hits = int((layers["regret"].astype(float) == 0).sum())
        parts.append(results.frame_to_markdown(layers, "Per layer: the depth each score ranks first against the "
                     "best frozen depth measured (depths 1..units); regret: the metric lost by following the "
                     f"score. The score's first depth measured as well as the best in {hits} of {len(layers)} rows"))
    else:
        parts.append("Per layer: no pair measured at two or more frozen depths in 1..units.\n")
    return "\n".join(parts)


def for_sweep(base, runs, workdir, rows: list[dict], echo=print) -> None:
    """Scores every (candidate, target) pair of the runs whose candidate exists (cached), then writes
    transferability.csv and transferability.md into the workdir."""
    names = tuple(base.report.transferability)
    workdir = pathlib.Path(workdir)
    scorer = tr.Scorer(workdir / tr.CACHE_DIR, names, base.report.transferability_examples,
                       base.report.similarity_gamma)
    records, by_run = {}, {}
    for rid, _, cfg in runs:
        cand = tr.candidate_of(cfg, workdir)
        if cand is None or not cand.exists():
            continue
        key = scorer.key(cand, cfg.data, cfg.seed)
        if key not in records:
            records[key] = scorer.score(cand, cfg.data, cfg.seed)
        by_run[rid] = records[key]
    frame = tr.records_frame(list(records.values()), names)
    if frame.empty:
        echo("transferability: no run starts from a trained source model or checkpoint; nothing scored")
        return
    meas = measured(runs, by_run, rows, base.report.metric)
    md = markdown(frame, meas, names, base.report.metric)
    if distributed.is_writer():
        tr.write_csv(workdir / tr.CSV_FILE, frame)
        durable.write_text(workdir / tr.TABLE_FILE, md)
    echo(f"transferability: {len(records)} (candidate, target) pair(s), {scorer.computed} scored, {scorer.cached} "
         f"read from {workdir / tr.CACHE_DIR}; {workdir / tr.CSV_FILE}, {workdir / tr.TABLE_FILE}")
