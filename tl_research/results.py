"""A sweep's results: `results.csv` (one row per run), paper-style tables (Markdown, LaTeX) and plots."""
from __future__ import annotations

import csv
import io
import math
import os
import pathlib
import tempfile

import numpy as np
import pandas as pd

FIRST_COLUMNS = ["run_id", "status", "reason", "val_accuracy", "test_accuracy", "best_step",
                 "trainable_params", "wall_time"]


def read_rows(path) -> list[dict]:
    path = pathlib.Path(path)
    if not path.exists():
        return []
    with path.open(newline="") as f:
        return list(csv.DictReader(f))


def write_rows(path, rows: list[dict]) -> None:
    """Atomic: the whole file is written to a temporary name and renamed over the old one, so a kill never
    leaves a half-written results.csv."""
    path = pathlib.Path(path)
    keys = [k for k in FIRST_COLUMNS if any(k in r for r in rows)]
    keys += sorted({k for r in rows for k in r} - set(keys))
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=keys, extrasaction="ignore")
    writer.writeheader()
    for r in rows:
        writer.writerow({k: _cell(r.get(k, "")) for k in keys})
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".results-", suffix=".csv")
    with os.fdopen(fd, "w", newline="") as f:
        f.write(buf.getvalue())
    os.replace(tmp, path)


def _cell(v):
    if isinstance(v, (list, tuple)):
        return str(tuple(v))
    if isinstance(v, float):
        return repr(round(v, 6))
    return v


def upsert_row(path, row: dict) -> list[dict]:
    """Adds a run's row, replacing an earlier row of the same run id (a retried failure)."""
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
    ignore = set(FIRST_COLUMNS) | {"seed", "steps", "stopped_early", "num_units", "frozen_depth_resolved",
                                   "val_loss", "test_loss", metric}
    metric_like = {c for c in df.columns if c.endswith(("_accuracy", "_loss", "_f1", "_time", "similarity"))
                   or c.startswith("phase")}  # per-phase metrics of multi-phase strategies
    keys = [c for c in df.columns if c not in ignore and c not in metric_like and c not in (x, *series)]
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
        wide = wide[[*rowkeys, *([x] if x in summary.columns else []), "cell"]]
    header = f"{metric}: mean ± std over seeds (n runs)\n\n"
    cols = list(wide.columns)
    lines = ["| " + " | ".join(map(str, cols)) + " |", "|" + "---|" * len(cols)]
    for _, r in wide.iterrows():
        lines.append("| " + " | ".join("" if (isinstance(v, float) and math.isnan(v)) else str(v)
                                        for v in r.values) + " |")
    return header + "\n".join(lines) + "\n"


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
    fig.savefig(path, dpi=120)
    plt.close(fig)


def write_report(workdir, report_cfg, rows: list[dict]) -> str:
    """table.md, table.tex and plot.png in the workdir; returns the Markdown table."""
    workdir = pathlib.Path(workdir)
    x, series, metric = report_cfg.x, tuple(report_cfg.series), report_cfg.metric
    summary = summarise(rows, x, series, metric)
    md = to_markdown(summary, metric, x)
    (workdir / "table.md").write_text(md)
    (workdir / "table.tex").write_text(to_latex(summary, metric, x))
    plot(summary, x, series, metric, workdir / "plot.png")
    if report_cfg.get("kind", "grid") == "schedules":
        table = schedule_table(workdir, rows, by=x)
        extra = frame_to_markdown(table, "Per schedule, at the peak LR chosen on validation accuracy: test "
                                         "accuracy (best seen during training, final, at the best validation "
                                         "step) and steps to reach the constant LR's best")
        md = md + "\n" + extra
        (workdir / "table.md").write_text(md)
        if not table.empty:
            with (workdir / "table.tex").open("a") as f:
                f.write("\n" + table.to_latex(index=False))
    return md


# ---------------------------------------------------------------------------------------------- schedules

def _first_step_reaching(run_dir: pathlib.Path, target: float) -> int | None:
    """The first evaluated step whose test accuracy reaches `target` (from the run's metrics.jsonl)."""
    from tl_research.tracking import read_metrics
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
    lines += ["| " + " | ".join(str(v) for v in r.values) + " |" for _, r in df.iterrows()]
    return (f"{title}\n\n" if title else "") + "\n".join(lines) + "\n"
