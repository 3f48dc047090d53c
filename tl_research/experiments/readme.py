"""experiments/<name>/README.md and experiments/README.md, rendered from an experiment's texts, its analysis
and summary.json (nothing in them is written by hand but the texts of tl_research/experiments/<name>.py)."""
from __future__ import annotations

import dataclasses
import pathlib

import pandas as pd

from tl_research.experiments import tables
from tl_research.experiments.spec import Analysis, Experiment
from tl_research.experiments.verdict import EQUIVALENT, FAILED, HELD, NOISE, NOT_RUN, NOT_TESTABLE, OUTCOMES, Verdict

METHOD = ("mean over seeds and its 95% Student-t interval, within the metric's range (an accuracy's [0, 1], a "
          "difference of accuracies' [-1, 1]), paired by seed where the runs pair; a rank correlation over the "
          "units it names, with a permutation p-value and a bootstrap interval")
OUTCOME_TEXT = (f"*{HELD}*: the interval is on the claimed side; *{FAILED}*: on the other side; *{EQUIVALENT} "
                f"within ±delta*: the whole interval inside ±delta of the threshold (the verdict states delta); "
                f"*{NOISE}*: it straddles the threshold otherwise; *{NOT_TESTABLE}*: the runs cannot speak to the "
                f"claim (the reason given: one seed, no arm compared shown above chance, too few units for a rank "
                f"test); *{NOT_RUN}*: no finished runs")


# where a summary without its own record of the machine was measured: the committed digit results on this
# project's shared 2-core CPU
DEFAULT_HOST = {"config.py": "a shared 2-core CPU", "paper.py": "a machine not recorded"}


def scale_flag(exp: Experiment) -> str:
    """' --scale paper' for an experiment at the paper's scale (its paper.py), '' for the digits' config.py."""
    return " --scale paper" if exp.config == "paper.py" else ""


def command(exp: Experiment, verb: str = "run") -> str:
    return f"python -m tl_research.experiments {verb} {exp.name}{scale_flag(exp)}"


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


def verdict_of(record: dict) -> Verdict:
    """A Verdict from its summary.json record (an older record lacks the later fields: their defaults)."""
    names = {f.name for f in dataclasses.fields(Verdict)}
    return Verdict(**{k: v for k, v in record.items() if k in names})


def verdict_table(verdicts: list[Verdict]) -> str:
    """One row per claim: ours, the paper's effect size, the outcome."""
    rows = [{"claim": v.claim, "ours": v.figure, "published": v.published or "(no number)",
             "outcome": f"**{v.outcome()}**"} for v in verdicts]
    return tables.results.frame_to_markdown(pd.DataFrame(rows)) if rows else "(no verdicts)\n"


def outcome_counts(verdicts: list[Verdict]) -> str:
    """'2 held, 1 did not hold of 3' in OUTCOMES order."""
    counts = [(o, sum(v.status == o for v in verdicts)) for o in OUTCOMES]
    return ", ".join(f"{n} {o}" for o, n in counts if n) + f" of {len(verdicts)}"


def render(exp: Experiment, analysis: Analysis, summary: dict, rows: list[dict], sources: int = 0,
           differences: str | None = None) -> str:
    """The experiment's README; `differences`: what differs from the paper at the scale it ran (default: the
    digits' text, exp.differences)."""
    verdicts = verdict_table(analysis.verdicts)
    out = [f"# {exp.title}", "", "## Question", "", exp.question.strip(), "",
           "## Published", "", exp.published.strip(), "",
           "## Command", "", "```bash", command(exp), command(exp, "report")
           + "   # tables, plot and verdicts again from the workdir", "```", "",
           f"Config: [`{exp.config}`]({exp.config}). Wall time: {wall_time_text(summary.get('wall_time_s'))} "
           f"(the whole command from an empty workdir{sources_text(sources)}, analysis included, on "
           f"{summary.get('ran_on') or DEFAULT_HOST[exp.config]}).", "",
           "## Verdict", "", f"Computed from the results: {METHOD}. {OUTCOME_TEXT}. *published*: the paper's "
           "effect size for the claim, where it gives one.", "", verdicts,
           f"Runs: {basis(rows)}", "", "## Results", "", "![plot](plot.png)", ""]
    out += [t.strip() + "\n" for t in analysis.tables]
    out += ["## What differs from the paper", "", (differences or exp.differences).strip(), ""]
    return "\n".join(out)


def claims_table(experiments: list[Experiment], summaries: dict[str, dict]) -> str:
    """One row per claim of every experiment: ours, the paper's, the outcome and where the README says why a
    difference is expected."""
    rows = []
    for exp in experiments:
        for v in (verdict_of(r) for r in summaries.get(exp.name, {}).get("verdicts", [])):
            rows.append({"experiment": exp.name, "claim": v.claim, "ours": v.figure,
                         "published": v.published or "(no number)", "outcome": v.outcome(),
                         "why it may differ": f"[{exp.name}]({exp.name}/README.md#what-differs-from-the-paper)"})
    return tables.results.frame_to_markdown(pd.DataFrame(rows)) if rows else "(no experiment run yet)\n"


DIGITS_INTRO = (
    "Paper-style reproductions on the built-in MNIST digits (the quickstart's small ResNet, and small ViTs in "
    "some; 40 to 1,100 steps a run, 3 or 5 seeds, each seed with its own source model; each README gives its "
    "own). `python -m tl_research.experiments run all` regenerates every table and plot; `report NAME` rebuilds "
    "one from its workdir (default `runs/experiments/NAME`).")
PAPER_INTRO = (
    "Reproductions at the papers' scale (`--scale paper`: experiments/NAME/paper.py, the papers' datasets and "
    "converted weights; each README names them). `python -m tl_research.experiments run NAME --scale paper` "
    "regenerates one; `report NAME --scale paper` rebuilds it from its workdir (default "
    "`runs/experiments_paper/NAME/runs`).")


def index(root: pathlib.Path, experiments: list[Experiment], summaries: dict[str, dict]) -> str:
    rows = []
    for exp in experiments:
        s = summaries.get(exp.name, {})
        verdicts = [verdict_of(r) for r in s.get("verdicts", [])]
        outcomes = "; ".join(f"{v.status}: {v.claim}" for v in verdicts)
        rows.append({"experiment": f"[{exp.name}]({exp.name}/README.md)", "published claim": exp.claim,
                     "our figure": s.get("headline", ""),
                     "verdict": f"{outcome_counts(verdicts)} — {outcomes}" if verdicts else "not run yet",
                     "command": f"`{command(exp)}`", "wall time": wall_time_text(s.get("wall_time_s"))})
    table = tables.results.frame_to_markdown(pd.DataFrame(rows))
    walls = [summaries.get(e.name, {}).get("wall_time_s") for e in experiments]
    total = (f" All {len(walls)} together: {wall_time_text(sum(walls))}." if walls and None not in walls
             else " The total is given once every experiment has a measured wall time.")
    intro = PAPER_INTRO if any(e.config == "paper.py" for e in experiments) else DIGITS_INTRO
    return "\n".join([
        "# Experiments", "", intro + " Each row is one command; its README sets our table and plot beside the "
        f"published numbers, and the verdict is computed from the results: {METHOD}.", "",
        "Wall times: the whole command from an empty workdir, analysis included, on the machine each README names "
        "(on a shared machine, such as this project's 2-core CPU, they are upper bounds), with JAX's persistent "
        "compilation cache (`~/.cache/tl_research/jax`, or `$TL_RESEARCH_CACHE`) already filled by earlier runs; "
        f"an empty cache adds compilation, about a minute per experiment on a CPU.{total}", "", table,
        "## Every claim: ours, the paper's, the outcome", "", f"Outcomes: {OUTCOME_TEXT}.", "",
        claims_table(experiments, summaries)])
