"""Tables of an experiment's README: the metric per setting as mean [95% CI] over seeds (the interval within the
metric's range: stats.mean_ci)."""
from __future__ import annotations

from typing import Sequence

import pandas as pd

from tl_research.analysis import results
from tl_research.experiments import stats


def done(rows: list[dict]) -> pd.DataFrame:
    """The finished runs as a frame (numbers parsed), seed as int."""
    df = results.frame([r for r in rows if r.get("status") == "done"])
    if not df.empty and "seed" in df:
        df["seed"] = pd.to_numeric(df["seed"], errors="coerce").astype("Int64")
    return df


def cell(values, digits: int = 3, bounds=None) -> str:
    """'mean [95% CI] (n)' of the values, `digits` decimals; the interval within `bounds` (low, high) if given."""
    e = stats.mean_ci(pd.to_numeric(pd.Series(list(values)), errors="coerce").tolist(), bounds=bounds)
    if e.n == 0:
        return ""
    if e.n < 2:
        return f"{e.mean:.{digits}f} (1)"
    return f"{e.mean:.{digits}f} [{e.low:.{digits}f}, {e.high:.{digits}f}] ({e.n})"


def ci_table(df: pd.DataFrame, metric: str, rows: Sequence[str], column: str | None, title: str,
             order: Sequence | None = None, digits: int = 3, bounds=stats.AUTO) -> str:
    """One table row per combination of `rows`, one column per value of `column` (None: one metric column):
    'mean [95% CI] (n)' with `digits` decimals, the interval within `bounds` (AUTO: stats.range_of(metric))."""
    bounds = stats.range_of(metric) if isinstance(bounds, str) else bounds
    if df.empty or metric not in df:
        return f"{title}\n\n(no finished runs)\n"
    keys = [k for k in rows if k in df]
    out = []
    groups = df.groupby(keys, dropna=False, sort=False) if keys else [((), df)]
    for name, g in groups:
        name = name if isinstance(name, tuple) else (name,)
        row = dict(zip(keys, name))
        if column and column in df:
            values = order if order is not None else sorted(df[column].dropna().unique(), key=_sort_key)
            for v in values:
                row[f"{column}={v}"] = cell(g[stats.matches(g, {column: v})][metric], digits, bounds)
        else:
            row[metric] = cell(g[metric], digits, bounds)
        out.append(row)
    return results.frame_to_markdown(pd.DataFrame(out), title)


def _sort_key(v):
    number = pd.to_numeric(pd.Series([v]), errors="coerce")[0]
    return (0, float(number), "") if not pd.isna(number) else (1, 0.0, str(v))
