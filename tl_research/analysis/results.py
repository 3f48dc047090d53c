"""A sweep's results: `results.csv` (one row per run), paper-style tables (Markdown, LaTeX) and plots."""
from __future__ import annotations

import csv
import io
import math
import pathlib

import numpy as np
import pandas as pd

from tl_research.core import durable, locks

# the tasks' headline metrics (each task's `result_columns`, tl_research.tasks: accuracy; segmentation mIoU and
# pixel accuracy; detection COCO mAP@[.5:.95], @.5, @.75) lead, between these; a column no row has is left out.
# A phased strategy's headline metrics are its final phase's; the best eval of any phase (best_any_phase_*,
# loop.plan_columns) follows best_step, and frozen_depth_reached and plan_shortfall where a run stopped short.
LEADING_COLUMNS = ["run_id", "status", "reason"]
TRAILING_COLUMNS = ["best_step", "best_any_phase_step", "best_any_phase_name", "frozen_depth_reached",
                    "plan_shortfall", "trainable_params", "wall_time"]
# the result's columns about the plan (not settings): never a grouping key of a table
PLAN_COLUMNS = ("phase", "best_any_phase_", "frozen_depth_reached", "plan_shortfall")
SUFFIXES = ("_accuracy", "_loss", "_f1", "_std", "_time", "similarity")  # and the tasks' metrics


def first_columns() -> list[str]:
    """results.csv's leading columns: the run's identity and status, every registered task's result columns
    (a task registered from outside included), then the best step (and of a phased run the best of any phase:
    its val metrics, step and phase), trainable parameters and wall time."""
    from tl_research import tasks
    columns = tasks.result_columns()
    any_phase = [f"best_any_phase_{c}" for c in columns if c.startswith("val_")]
    return [*LEADING_COLUMNS, *columns, TRAILING_COLUMNS[0], *any_phase, *TRAILING_COLUMNS[1:]]


def metric_suffixes() -> tuple[str, ...]:
    """The column endings that mark a metric (not a setting): SUFFIXES and the tasks' metric names."""
    from tl_research import tasks
    return SUFFIXES + tuple(dict.fromkeys("_" + c.split("_", 1)[1] for c in tasks.result_columns()))


def read_rows(path) -> list[dict]:
    path = pathlib.Path(path)
    if not path.exists():
        return []
    with path.open(newline="") as f:
        rows = list(csv.DictReader(f))
    # a row cut short (a disk that lost the end of the file) has missing cells: dropped, the run is recorded
    # again from its result.json on relaunch
    return [r for r in rows if None not in r.values() and None not in r and r.get("run_id")]


def write_rows(path, rows: list[dict]) -> None:
    """Atomic and fsynced (tl_research.core.durable): a crash never leaves a half-written results.csv. Callers
    that read, change and write it back hold `locked(path)` around all three."""
    path = pathlib.Path(path)
    keys = [k for k in first_columns() if any(k in r for r in rows)]
    keys += sorted({k for r in rows for k in r} - set(keys))
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=keys, extrasaction="ignore")
    writer.writeheader()
    for r in rows:
        writer.writerow({k: _cell(r.get(k, "")) for k in keys})
    durable.write_text(path, buf.getvalue(), point="results.csv")


def locked(path):
    """Holds results.csv's lock (DIR/.locks/results.lock): processes sharing a workdir update it in turn."""
    path = pathlib.Path(path)
    return locks.held(locks.lock_path(path.parent, "results"), what=f"{path.name}")


def _cell(v):
    if isinstance(v, (list, tuple)):
        return str(tuple(v))
    if isinstance(v, float):
        return repr(round(v, 6))
    return v


def upsert_row(path, row: dict) -> list[dict]:
    """Adds a run's row, replacing an earlier row of the same run id (a retried failure)."""
    with locked(path):
        rows = [r for r in read_rows(path) if r["run_id"] != row["run_id"]]
        rows.append({k: v for k, v in row.items()})
        write_rows(path, rows)
        return read_rows(path)


def frame(rows: list[dict]) -> pd.DataFrame:
    df = pd.DataFrame(rows)
    for col in df.columns:
        converted = pd.to_numeric(df[col], errors="coerce")
        if converted.notna().sum() == df[col].replace("", np.nan).notna().sum():
            df[col] = converted
    return df


def summarise(rows: list[dict], x: str, series: tuple[str, ...], metric: str) -> pd.DataFrame:
    """Mean, standard deviation and count of `metric` over seeds (every swept key other than x, series and
    seed is kept as a grouping column too), finished runs only."""
    df = frame([r for r in rows if r.get("status") == "done"])
    if df.empty or metric not in df:
        return pd.DataFrame()
    keys = [c for c in _setting_keys(df, metric) if c not in ("seed", x, *series)]
    keys = [c for c in keys if not _follows(df, c, x)]  # zipped with x (e.g. steps per data size): part of x
    group = [k for k in (*series, *keys, x) if k in df.columns]
    if not group:
        df["_all"] = "all"
        group = ["_all"]
    out = df.groupby(group, dropna=False)[metric].agg(["mean", "std", "count"]).reset_index()
    out["std"] = out["std"].fillna(0.0)
    return out


def to_markdown(summary: pd.DataFrame, metric: str, x: str) -> str:
    """One row per series (and other swept keys), one column per x value: 'mean ± std (n)'."""
    if summary.empty:
        return "(no finished runs)\n"
    rowkeys = [c for c in summary.columns if c not in ("mean", "std", "count", x)]
    cell = summary.apply(lambda r: f"{r['mean']:.3f} ± {r['std']:.3f}" + (f" ({int(r['count'])})"), axis=1)
    wide = summary.assign(cell=cell)
    # one column per x value, unless every row would fill just one of them (x names variants whose other
    # keys differ anyway, e.g. strategy labels): then one row per x value
    rows_per_x = summary.groupby(rowkeys, dropna=False)[x].nunique() if x in summary.columns and rowkeys else None
    if rows_per_x is not None and rows_per_x.max() == 1 and summary[x].nunique() > 2:
        wide = wide[[x, *rowkeys, "cell"]].rename(columns={"cell": metric})
    elif x in summary.columns and rowkeys:
        wide = wide.pivot_table(index=rowkeys, columns=x, values="cell", aggfunc="first").reset_index()
        wide.columns = [str(c) if c not in rowkeys else c for c in wide.columns]
        wide = wide.rename(columns={str(c): f"{x}={c}" for c in summary[x].unique()})
    else:
        wide = wide[[*rowkeys, *([x] if x in summary.columns else []), "cell"]].rename(columns={"cell": metric})
    return frame_to_markdown(wide, f"{metric}: mean ± std over seeds (n runs)")


def to_latex(summary: pd.DataFrame, metric: str, x: str) -> str:
    if summary.empty:
        return ""
    df = summary.copy()
    df[metric] = df.apply(lambda r: f"${r['mean']:.3f} \\pm {r['std']:.3f}$", axis=1)
    return df.drop(columns=["mean", "std"]).to_latex(index=False, escape=False)


def plot(summary: pd.DataFrame, x: str, series: tuple[str, ...], metric: str, path) -> None:
    """metric vs x, one line per series value, with ± std bands."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    if not summary.empty and x in summary.columns:
        keys = [c for c in summary.columns if c not in ("mean", "std", "count", x)]
        groups = summary.groupby(keys, dropna=False) if keys else [((), summary)]
        for name, g in groups:
            g = g.sort_values(x)
            label = ", ".join(f"{k}={v}" for k, v in zip(keys, name if isinstance(name, tuple) else (name,)))
            xs = g[x].astype(str) if g[x].dtype == object else g[x]
            if len(g) == 1 and len(summary[x].unique()) > 1:  # a reference (e.g. baseB): a level, not a point
                line = ax.axhline(g["mean"].iloc[0], linestyle="--", label=label or metric)
                ax.axhspan(g["mean"].iloc[0] - g["std"].iloc[0], g["mean"].iloc[0] + g["std"].iloc[0],
                           color=line.get_color(), alpha=0.12)
                continue
            ax.errorbar(xs, g["mean"], yerr=g["std"], marker="o", capsize=3, label=label or metric)
        ax.legend(fontsize=7)
    ax.set_xlabel(x)
    if not summary.empty and x in summary.columns and summary[x].dtype == object:
        ax.tick_params(axis="x", labelrotation=30)  # category names (e.g. strategy labels)
    ax.set_ylabel(metric)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, dpi=120, format="png")
    plt.close(fig)
    durable.write_bytes(path, buf.getvalue())


def write_report(workdir, report_cfg, rows: list[dict]) -> str:
    """table.md, table.tex and plot.png in the workdir; returns the Markdown table."""
    workdir = pathlib.Path(workdir)
    x, series, metric = report_cfg.x, tuple(report_cfg.series), report_cfg.metric
    summary = summarise(rows, x, series, metric)
    md, tex = report_tables(report_cfg, rows, summary, workdir=workdir)
    # atomic: workers sharing a workdir each write the report when they finish
    durable.write_text(workdir / "table.md", md)
    durable.write_text(workdir / "table.tex", tex)
    plot(summary, x, series, metric, workdir / "plot.png")
    return md


# ---------------------------------------------------------------------------------------------- schedules

def _first_step_reaching(run_dir: pathlib.Path, target: float) -> int | None:
    """The first evaluated step whose test accuracy reaches `target` (from the run's metrics.jsonl)."""
    from tl_research.core.tracking import read_metrics
    path = run_dir / "metrics.jsonl"
    if not path.exists():
        return None
    for r in read_metrics(path):
        if "test_accuracy" in r and "event" not in r and r["test_accuracy"] >= target - 1e-9:
            return int(r["step"])
    return None


def schedule_table(workdir, rows: list[dict], *, by: str = "frozen_depth", schedule_key: str = "schedule.name",
                   lr_key: str = "schedule.lr", reference: str = "constant") -> pd.DataFrame:
    """Per schedule (and `by` value): the peak LR chosen on validation accuracy (mean over seeds), then at
    that LR the best test accuracy seen during training, the final and the best-validation-step test
    accuracy, and the steps each run needed to reach the best test accuracy the reference (constant) LR
    reached (Smith 2017's comparison: the same accuracy in fewer steps). Runs need train.eval_test."""
    df = frame([r for r in rows if r.get("status") == "done"])
    need = {schedule_key, lr_key, "val_accuracy", "best_seen_test_accuracy", "final_test_accuracy"}
    if df.empty or not need <= set(df.columns):
        return pd.DataFrame()
    by_keys = [by] if by in df.columns else []
    chosen = []
    for key, g in df.groupby([schedule_key, *by_keys], dropna=False):
        lr = g.groupby(lr_key)["val_accuracy"].mean().idxmax()
        chosen.append(g[g[lr_key] == lr])
    chosen = pd.concat(chosen)
    targets = {}  # the reference schedule's best test accuracy, per `by` value
    for key, g in chosen[chosen[schedule_key] == reference].groupby(by_keys or [schedule_key]):
        key = key if isinstance(key, tuple) else (key,)
        targets[key[0] if by_keys else None] = g["best_seen_test_accuracy"].mean()
    out = []
    for key, g in chosen.groupby([schedule_key, *by_keys], dropna=False):
        key = key if isinstance(key, tuple) else (key,)
        target = targets.get(key[1] if by_keys else None)
        reached = [_first_step_reaching(pathlib.Path(workdir) / rid, target) if target is not None else None
                   for rid in g["run_id"]]
        hit = [s for s in reached if s is not None]
        row = {schedule_key: key[0], **({by: key[1]} if by_keys else {}), "lr": g[lr_key].iloc[0],
               "best_seen_test": _mean_std(g["best_seen_test_accuracy"]),
               "final_test": _mean_std(g["final_test_accuracy"]),
               "test_at_best_val": _mean_std(g["test_accuracy"]),
               f"steps_to_{reference}_best": (f"{np.mean(hit):.0f}" + ("" if len(hit) == len(reached)
                                                                        else f" ({len(hit)}/{len(reached)} runs)"))
               if hit else "not reached",
               "total_steps": int(g["steps"].max()), "n": len(g)}
        out.append(row)
    return pd.DataFrame(out).sort_values([*by_keys, schedule_key]).reset_index(drop=True)


def _mean_std(s: pd.Series) -> str:
    return f"{s.mean():.3f} ± {s.std(ddof=1) if len(s) > 1 else 0.0:.3f}"


def frame_to_markdown(df: pd.DataFrame, title: str = "") -> str:
    if df.empty:
        return "(no finished runs)\n"
    cols = list(df.columns)
    lines = ["| " + " | ".join(map(str, cols)) + " |", "|" + "---|" * len(cols)]
    lines += ["| " + " | ".join("" if (isinstance(v, float) and math.isnan(v)) else str(v) for v in r.values)
              + " |" for _, r in df.iterrows()]
    return (f"{title}\n\n" if title else "") + "\n".join(lines) + "\n"


# ---------------------------------------------------------------------------------------------- more tables

REPORT_TABLES = ("mean", "gain", "similarity", "schedules")
SIMILARITY = "domain_similarity"


def check_report(report_cfg, points: list[dict]) -> None:
    """ConfigError for report.tables / report.baseline before any run starts."""
    from tl_research.core.errors import ConfigError
    tables = tuple(report_cfg.get("tables", ("mean",)))
    if not tables or any(t not in REPORT_TABLES for t in tables):
        raise ConfigError("report.tables", tables, f"a non-empty tuple of {', '.join(REPORT_TABLES)}")
    if "similarity" in tables and not report_cfg.get("similarity", False):
        raise ConfigError("report.tables", tables, "'similarity' together with report.similarity=True")
    if "gain" in tables:
        key, eq, value = str(report_cfg.get("baseline", "")).partition("=")
        values = {str(p[key]) for p in points if key in p}
        if not eq or key not in report_cfg.series or (values and value not in values):
            shown = sorted(values) if values else "a value of it"
            raise ConfigError("report.baseline", report_cfg.get("baseline", ""),
                              f"KEY=VALUE with KEY one of report.series ({', '.join(report_cfg.series)}) and "
                              f"VALUE one the sweep gives it ({shown}), e.g. init=scratch")


def report_tables(report_cfg, rows: list[dict], summary: pd.DataFrame, workdir=".") -> tuple[str, str]:
    """(Markdown, LaTeX) of the tables report.tables lists, in order (`workdir` holds the runs' folders)."""
    x, series, metric = report_cfg.x, tuple(report_cfg.series), report_cfg.metric
    md, tex = [], []
    for name in report_cfg.get("tables", ("mean",)):
        if name == "mean":
            md.append(to_markdown(summary, metric, x))
            tex.append(to_latex(summary, metric, x))
        elif name == "gain":
            label = f"{metric} gain over {report_cfg.baseline}"
            table = gains(rows, x, series, metric, report_cfg.baseline)
            md.append(to_markdown(table, label, x))
            tex.append(to_latex(table, label, x))
        elif name == "similarity":
            table = by_similarity(rows, x, series, metric)
            md.append(similarity_markdown(table, x, metric))
            tex.append(table.to_latex(index=False, escape=True, na_rep="") if not table.empty else "")
        elif name == "schedules":
            table = schedule_table(workdir, rows, by=x)
            md.append(frame_to_markdown(table, "Per schedule, at the peak LR chosen on validation accuracy: test "
                                               "accuracy (best seen during training, final, at the best "
                                               "validation step) and steps to reach the constant LR's best"))
            tex.append(table.to_latex(index=False) if not table.empty else "")
    return "\n".join(md), "\n".join(tex)


def _setting_keys(df: pd.DataFrame, metric: str) -> list[str]:
    """The columns that describe a run's setting (swept keys, seed included): not results, not metrics (per-
    phase metrics of multi-phase strategies included)."""
    ignore = set(first_columns()) | {"steps", "stopped_early", "num_units", "num_classes", "frozen_depth_resolved",
                                     "val_loss", "strategy_resolved", "feature_path", "feature_path_reason",
                                     "test_loss", metric}
    metric_like = {c for c in df.columns if c.endswith(metric_suffixes()) or c.startswith(PLAN_COLUMNS)}
    return [c for c in df.columns if c not in ignore and c not in metric_like]


def _follows(df: pd.DataFrame, key: str, x: str) -> bool:
    """Whether swept `key` varies, but only with x (zipped with it, e.g. train.steps with data.per_class)."""
    if x not in df.columns or key == x or df[key].nunique(dropna=False) <= 1:
        return False
    return bool((df.groupby(x, dropna=False)[key].nunique(dropna=False) <= 1).all())


def _is(column: pd.Series, value: str) -> pd.Series:
    """column == value, for a value given as text (report.baseline) and a column read from results.csv."""
    match = column.astype(str) == value
    number = pd.to_numeric(pd.Series([value]), errors="coerce")[0]
    if not pd.isna(number):
        match |= pd.to_numeric(column, errors="coerce") == number
    return match


def gains(rows: list[dict], x: str, series: tuple[str, ...], metric: str, baseline: str) -> pd.DataFrame:
    """The gain of each setting over the baseline runs (report.baseline = "KEY=VALUE", e.g. init=scratch):
    metric(run) - metric(the baseline run with the same seed, x and other keys the baseline varies in), then
    mean, std and count over seeds, laid out as summarise() lays out the metric. A key the baseline runs hold
    fixed is not matched: a baseline at a single x value (a reference, like baseB) is the baseline at every
    x."""
    df = frame([r for r in rows if r.get("status") == "done"])
    key, _, value = baseline.partition("=")
    if df.empty or metric not in df or key not in df:
        return pd.DataFrame()
    is_base = _is(df[key], value)
    base, other = df[is_base], df[~is_base]
    if base.empty or other.empty:
        return pd.DataFrame()
    # paired on what the baseline runs vary in (seed, x, ...); what they hold fixed (scratch runs at
    # frozen_depth 0, a single x) defines the baseline and applies to every run
    keys = [c for c in _setting_keys(df, metric) if c not in series and not _follows(df, c, x)]
    pair = [c for c in keys if base[c].nunique(dropna=False) > 1]
    reference = base.groupby(pair, dropna=False)[metric].mean().rename("_baseline").reset_index() if pair else \
        pd.DataFrame({"_baseline": [base[metric].mean()]})
    paired = other.merge(reference, on=pair, how="inner") if pair else other.assign(_baseline=reference.iloc[0, 0])
    paired["_gain"] = paired[metric] - paired["_baseline"]
    group = [k for k in (*series, *[c for c in keys if c not in ("seed", x)], x) if k in paired.columns]
    out = paired.groupby(group, dropna=False)["_gain"].agg(["mean", "std", "count"]).reset_index()
    out["std"] = out["std"].fillna(0.0)
    return out


def _rank_correlation(a: np.ndarray, b: np.ndarray) -> tuple[float, float]:
    """(Spearman's rho, Pearson's r); NaN with fewer than 3 points or a constant side."""
    a, b = np.asarray(a, float), np.asarray(b, float)
    keep = ~(np.isnan(a) | np.isnan(b))
    a, b = a[keep], b[keep]
    if len(a) < 3 or a.std() == 0 or b.std() == 0:
        return math.nan, math.nan
    rank = lambda v: pd.Series(v).rank().to_numpy()  # average ranks for ties
    return float(np.corrcoef(rank(a), rank(b))[0, 1]), float(np.corrcoef(a, b)[0, 1])


def by_similarity(rows: list[dict], x: str, series: tuple[str, ...], metric: str) -> pd.DataFrame:
    """One row per value of x (the target data), most similar to the source first: its mean domain
    similarity and, per series setting, the metric as 'mean ± std (n)'; then the rank (Spearman) and linear
    (Pearson) correlation between similarity and the mean metric over the x values, per series setting."""
    df = frame([r for r in rows if r.get("status") == "done"])
    if df.empty or metric not in df or SIMILARITY not in df or x not in df:
        return pd.DataFrame()
    sims = pd.to_numeric(df[SIMILARITY], errors="coerce").groupby(df[x]).mean().dropna()
    if sims.empty:
        return pd.DataFrame()
    summary = summarise(rows, x, series, metric)
    labels = [c for c in summary.columns if c not in ("mean", "std", "count", x)]
    if labels:
        summary["_setting"] = summary[labels].astype(str).apply(
            lambda r: ", ".join(f"{k}={v}" for k, v in zip(labels, r)), axis=1)
    else:
        summary["_setting"] = metric
    order = sims.sort_values(ascending=False)
    table = pd.DataFrame({x: order.index, SIMILARITY: [f"{v:.4f}" for v in order.values]})
    correlations = {}
    for setting, g in summary.groupby("_setting", sort=False):
        g = g.set_index(x)
        table[setting] = [f"{g.loc[v, 'mean']:.3f} ± {g.loc[v, 'std']:.3f} ({int(g.loc[v, 'count'])})"
                          if v in g.index else "" for v in order.index]
        correlations[setting] = _rank_correlation(order.values, [g["mean"].get(v, math.nan) for v in order.index])
    for i, name in enumerate(("Spearman ρ", "Pearson r")):
        table.loc[len(table)] = [f"{name} (similarity, mean)", ""] + [
            "" if math.isnan(c[i]) else f"{c[i]:+.2f}" for c in correlations.values()]
    return table


def similarity_markdown(table: pd.DataFrame, x: str, metric: str) -> str:
    if table.empty:
        return "(no finished runs with a domain_similarity)\n"
    return frame_to_markdown(table, f"{metric} by domain similarity to the source (exp(-gamma * EMD) of "
                                    f"class-mean source-model features, Cui et al. 2018), most similar first")
