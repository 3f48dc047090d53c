"""Cyclical learning rates (Smith 2017): steps to reach the tuned fixed LR's final accuracy."""
from __future__ import annotations

import pathlib

import pandas as pd

from tl_research.experiments import common, plots, stats, tables, verdict
from tl_research.experiments.common import DELTA
from tl_research.experiments.spec import Analysis, Experiment
from tl_research.core.tracking import read_metrics

MODES = ("triangular", "triangular2", "exp_range")
STEPS_DELTA = 22  # equivalence margin of a difference in steps: one evaluation interval (train.eval_every), the
# finest difference the curves resolve; analyse reads the interval off the curves
PUBLISHED = {"triangular2": "45k of 70k iterations saved: 25k vs 70k to 81.4% (CIFAR-10)",
             "final": "+0.000: 81.4% both (CIFAR-10)"}  # triangular, exp_range: "likewise early", no number


def _curve(workdir: pathlib.Path, run_id: str) -> list[tuple[int, float]]:
    """(step, test accuracy) of every evaluation of a run (train.eval_test), in order."""
    return [(int(r["step"]), float(r["test_accuracy"])) for r in read_metrics(workdir / run_id / "metrics.jsonl")
            if "test_accuracy" in r and "event" not in r]


def _steps_to(curve, target: float, total: int) -> int:
    """The first evaluated step at or above target; a run that never gets there counts its whole length
    (censored: the truth is 'more than total')."""
    return next((s for s, a in curve if a >= target - 1e-9), total)


def verdicts(df, best: str, grid: float = STEPS_DELTA) -> list[verdict.Verdict]:
    """The claims from the finished runs with their steps_to_target column, against the fixed LR `best` (steps
    equivalent within one evaluation interval, `grid`): not testable when the fixed LR's final accuracy (the
    target) is at chance, or both arms of the final-accuracy claim are (chance from the runs' num_classes)."""
    final = lambda lab, metric="final_test_accuracy": stats.per_seed(df, metric, {"label": lab})
    cm, chance = stats.chance_metric(df, "final_test_accuracy"), common.chance(df)
    target_at_chance = stats.chance_reason({f"{best} (the target)": final(best, cm)}, chance)
    steps = {lab: stats.per_seed(df, "steps_to_target", {"label": lab}) for lab in (best, *MODES)}
    total = float(df["steps"].max()) if "steps" in df and len(df) else float("inf")  # a run's length bounds both
    out = [verdict.greater(f"{mode} reaches the fixed LR's final accuracy in fewer steps",
                           f"steps({best}) - steps({mode})",
                           stats.paired_difference(steps[best], steps[mode], bounds=(-total, total)),
                           digits=1, delta=grid, published=PUBLISHED.get(mode, ""),
                           untestable=target_at_chance) for mode in MODES]
    out.append(verdict.greater("triangular2 ends at or above the fixed LR", f"final accuracy triangular2 - {best}",
                               stats.paired_difference(final("triangular2"), final(best)), delta=DELTA,
                               published=PUBLISHED["final"],
                               untestable=stats.chance_reason({"triangular2": final("triangular2", cm),
                                                               best: final(best, cm)}, chance)))
    return out


def analyse(rows: list[dict], workdir: pathlib.Path, module=None) -> Analysis:
    df = tables.done(rows)
    fixed = df[df["label"].astype(str).str.startswith("fixed")]
    best = fixed.groupby("label")["val_accuracy"].mean().idxmax()
    target = float(fixed[fixed["label"] == best]["final_test_accuracy"].mean())
    total = int(df["steps"].max())
    curves = {r: _curve(workdir, r) for r in df["run_id"]}
    df = df.assign(steps_to_target=[_steps_to(curves[r], target, total) for r in df["run_id"]])
    gaps = [b[0] - a[0] for c in curves.values() for a, b in zip(c, c[1:])]
    found = verdicts(df, best, grid=min(gaps) if gaps else STEPS_DELTA)
    summary = tables.ci_table(df, "val_accuracy", ["label"], None, "Validation accuracy (the fixed LR is chosen "
                                                                    f"on it: **{best}**)")
    final = tables.ci_table(df, "final_test_accuracy", ["label"], None, "Final test accuracy")
    reach = tables.ci_table(df, "steps_to_target", ["label"], None,
                            f"Steps to reach {target:.3f} (the mean final test accuracy of {best}; a run that "
                            f"never reaches it counts {total})", digits=1, bounds=(0, total))

    def plot(path):
        series = {}
        for lab in (*sorted(fixed["label"].unique()), *MODES):
            curves = pd.DataFrame([dict(step=s, acc=a) for rid in df[df["label"] == lab]["run_id"]
                                   for s, a in _curve(workdir, rid)])
            if not curves.empty:
                series[lab] = [(s, stats.mean_ci(g["acc"].tolist(), bounds=stats.ACCURACY))
                               for s, g in curves.groupby("step")]
        plots.lines(series, path, xlabel="step", ylabel="test accuracy", whiskers=False,
                    title=f"Cyclical LR vs fixed LR (Smith 2017), mean of {df['seed'].nunique()} seeds; "
                          f"target {target:.3f} dashed",
                    references={f"{best} final": stats.mean_ci([target, target])})
    saved = [v.figure.split(" = ", 1)[1].split(" ")[0] for v in found[:len(MODES)]]
    return Analysis([summary, final, reach], found, plot,
                    headline=f"steps saved vs {best} (of {total}, mean over seeds): "
                             + ", ".join(f"{m} {x}" for m, x in zip(MODES, saved)))


EXPERIMENT = Experiment(
    name="cyclical_lr",
    title="Cyclical learning rates vs a tuned fixed LR (Smith 2017)",
    question="Do cyclical LR policies reach the accuracy a well-chosen fixed LR ends at in fewer iterations?",
    published="""Smith 2017, *Cyclical Learning Rates for Training Neural Networks* (arXiv 1506.01186): on CIFAR-10,
triangular2 reached in 25k iterations the accuracy the tuned fixed LR reached in 70k (81.4%); exp_range and
triangular likewise reached it early. Policies: `lr = base + (max - base) * max(0, 1 - x) * scale`, scale 1
(triangular), 1/2^(cycle-1) (triangular2), gamma^t (exp_range).""",
    differences="""- Digits 5-9 from scratch, 1,100 steps of batch 32 (20 epochs), evaluated every 22 steps,
  instead of CIFAR-10 for 70k iterations (140 epochs). The fixed LR is chosen from three (0.01, 0.03, 0.1) by
  mean validation accuracy; cyclical bounds 0.01-0.1 (the grid's ends, not an LR range test), half cycle 110
  steps (2 epochs; Smith: 2-10 epochs; his CIFAR-10 runs use 4), 5 whole cycles (Smith's triangular2 reached
  the target after 6.25).
- "Steps to reach" is read on the test curve at the 22-step evaluation grid; a run that never reaches the
  target counts all 1,100 steps, which favours the fixed LR.""",
    claim="cyclical policies reach the fixed LR's final accuracy in fewer iterations",
    analyse=analyse,
)
