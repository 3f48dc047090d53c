"""experiments/<name>/README.md and experiments/README.md, rendered from an experiment's texts, its analysis
and summary.json (nothing in them is written by hand but the texts of tl_research/experiments/<name>.py)."""
from __future__ import annotations

import pathlib

import pandas as pd

from tl_research.experiments import tables
from tl_research.experiments.spec import Analysis, Experiment
from tl_research.experiments.verdict import FAILED, HELD, NOISE


def command(name: str) -> str:
    return f"python -m tl_research.experiments run {name}"


def wall_time_text(seconds) -> str:
    if seconds is None:
        return "not measured"
    minutes, s = divmod(int(round(float(seconds))), 60)
    return f"{minutes} min {s:02d} s"


def basis(rows: list[dict]) -> str:
    """The seeds, steps and data the verdicts rest on, read from the finished runs."""
    df = tables.done(rows)
    failed = sum(1 for r in rows if r.get("status") != "done")
    if df.empty:
        return "No finished runs."
    parts = [f"{len(df)} finished runs ({failed} failed)"]
    if "seed" in df:
        parts.append("seeds " + ", ".join(str(s) for s in sorted(df["seed"].dropna().unique())))
    if "steps" in df:
        parts.append("steps per run " + ", ".join(str(int(s)) for s in sorted(df["steps"].dropna().unique())))
    for key in ("data.name", "data.per_class", "data.imbalance_ratio"):
        if key in df:
            parts.append(f"{key} " + ", ".join(str(v) for v in sorted(df[key].dropna().unique(), key=str)))
    return "; ".join(parts) + "."


def sources_text(sources: int) -> str:
    return {0: "", 1: ", source model included"}.get(sources, f", {sources} source models included")


def render(exp: Experiment, analysis: Analysis, summary: dict, rows: list[dict], sources: int = 0) -> str:
    verdicts = "\n".join(f"- **{v.status}**: {v.claim}: {v.figure}" for v in analysis.verdicts)
    out = [f"# {exp.title}", "", "## Question", "", exp.question.strip(), "",
           "## Published", "", exp.published.strip(), "",
           "## Command", "", "```bash", command(exp.name), f"python -m tl_research.experiments report {exp.name}"
           "   # tables, plot and verdicts again from the workdir", "```", "",
           f"Config: [`config.py`]({exp.config}). Wall time: {wall_time_text(summary.get('wall_time_s'))} "
           f"(the whole command from an empty workdir{sources_text(sources)}, on a shared 2-core CPU).", "",
           "## Verdict", "", "Computed from the results: mean and 95% Student-t interval over seeds (paired by "
           f"seed where the runs pair); *{HELD}*: the interval is on the claimed side, *{FAILED}*: on the other "
           f"side, *{NOISE}*: it straddles the threshold.", "", verdicts, "",
           f"Runs: {basis(rows)}", "", "## Results", "", "![plot](plot.png)", ""]
    out += [t.strip() + "\n" for t in analysis.tables]
    out += ["## What differs from the paper", "", exp.differences.strip(), ""]
    return "\n".join(out)


def index(root: pathlib.Path, experiments: list[Experiment], summaries: dict[str, dict]) -> str:
    rows = []
    for exp in experiments:
        s = summaries.get(exp.name, {})
        statuses = [v["status"] for v in s.get("verdicts", [])]
        verdict = "; ".join(f"{v['status']}: {v['claim']}" for v in s.get("verdicts", [])) or "not run yet"
        rows.append({"experiment": f"[{exp.name}]({exp.name}/README.md)", "published claim": exp.claim,
                     "our figure": s.get("headline", ""),
                     "verdict": f"{statuses.count(HELD)} of {len(statuses)} held — {verdict}" if statuses else verdict,
                     "command": f"`{command(exp.name)}`", "wall time": wall_time_text(s.get("wall_time_s"))})
    table = tables.results.frame_to_markdown(pd.DataFrame(rows))
    walls = [summaries.get(e.name, {}).get("wall_time_s") for e in experiments]
    total = (f" All {len(walls)} together: {wall_time_text(sum(walls))}." if walls and None not in walls
             else " The total is given once every experiment has a measured wall time.")
    return "\n".join([
        "# Experiments", "",
        "Paper-style reproductions on the built-in MNIST digits (the quickstart's small ResNet, and a small ViT "
        "in peft_vs_full; 40 to 150 steps a run, 3 seeds). Each row is one command; its README sets our table "
        "and plot beside the "
        "published numbers, and the verdict is computed from the results (mean and 95% Student-t interval over "
        "seeds, paired where the design pairs runs). `python -m tl_research.experiments run all` regenerates "
        "every table and plot; `report NAME` rebuilds one from its workdir (default `runs/experiments/NAME`).",
        "", "Wall times: the whole command from an empty workdir on this project's shared 2-core CPU (other jobs "
        "ran at the same time, so they are upper bounds), with JAX's persistent compilation cache "
        "(`~/.cache/tl_research/jax`, or `$TL_RESEARCH_CACHE`) already filled by earlier runs; an empty cache "
        f"adds compilation, about a minute per experiment on this CPU.{total}", "", table])
