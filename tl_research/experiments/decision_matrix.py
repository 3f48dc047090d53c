"""The four-cell rule of thumb: data size x domain similarity -> feature extraction, fine-tuning or scratch."""
from __future__ import annotations

import pathlib

import pandas as pd

from tl_research.experiments import plots, stats, tables, verdict
from tl_research.experiments.common import CHANCE, DELTA
from tl_research.experiments.spec import Analysis, Experiment

ARMS = ("feature extraction", "fine-tuning", "scratch")
SIZES = {"small": 10, "large": 350}
DOMAINS = {"similar": "mnist_subset", "different": "mnist_m"}
RULE = {("small", "similar"): ("feature extraction",), ("large", "similar"): ("fine-tuning",),
        ("large", "different"): ("fine-tuning", "scratch")}  # small + different: "hard" (checked apart)
PUBLISHED = "no number: a rule of thumb"


def _best(acc: dict, arms) -> tuple[str, pd.Series]:
    arm = max(arms, key=lambda a: acc[a].mean() if len(acc[a]) else float("-inf"))
    return arm, acc[arm]


def cells(df: pd.DataFrame, metric: str = "test_accuracy") -> dict:
    return {(size, dom): {arm: stats.per_seed(df, metric, {"label": arm, "data.per_class": k, "data.name": name})
                          for arm in ARMS}
            for size, k in SIZES.items() for dom, name in DOMAINS.items()}


def cell_verdict(by_cell: dict, chance_cells: dict, size: str, dom: str) -> verdict.Verdict:
    """The rule's verdict for one cell: its arm(s) against the best other arm, paired by seed; "hard": the
    lowest best of the other cells against this cell's best. Not testable when every arm compared is at chance
    (for "hard": every arm of every cell)."""
    acc, rule = by_cell[(size, dom)], RULE.get((size, dom))
    if rule:
        expected, exp_acc = _best(acc, rule)
        other, other_acc = _best(acc, [a for a in ARMS if a not in rule])
        why = stats.chance_reason({a: chance_cells[(size, dom)][a] for a in (expected, other)}, CHANCE)
        return verdict.greater(f"{size} + {dom}: {' or '.join(rule)}", f"{expected} - {other}",
                               stats.paired_difference(exp_acc, other_acc), delta=DELTA, published=PUBLISHED,
                               untestable=why)
    others = [_best(a, ARMS)[1] for c, a in by_cell.items() if c != (size, dom)]
    floor = pd.concat(others, axis=1).min(axis=1) if others else pd.Series(dtype=float)
    why = stats.chance_reason({f"{a} ({s} + {d})": v for (s, d), arms in chance_cells.items()
                               for a, v in arms.items()}, CHANCE)
    return verdict.greater(f"{size} + {dom}: hard (the lowest best accuracy of the four cells)",
                           "lowest best of the other cells - this cell's best",
                           stats.paired_difference(floor, _best(acc, ARMS)[1]), delta=DELTA, published=PUBLISHED,
                           untestable="no arm of any cell shown above chance" if why else "")


def verdicts(df: pd.DataFrame) -> list[verdict.Verdict]:
    by_cell, chance_cells = cells(df), cells(df, stats.chance_metric(df, "test_accuracy"))
    return [cell_verdict(by_cell, chance_cells, size, dom) for size, dom in by_cell]


def analyse(rows: list[dict], workdir: pathlib.Path) -> Analysis:
    df = tables.done(rows)
    by_cell = cells(df)
    found, table = verdicts(df), []
    for ((size, dom), acc), v in zip(by_cell.items(), found):
        winner, win = _best(acc, ARMS)
        runner, second = _best(acc, [a for a in ARMS if a != winner])
        margin = stats.paired_difference(win, second)
        table.append({"cell": f"{size} + {dom}", **{a: tables.cell(acc[a], bounds=stats.ACCURACY) for a in ARMS},
                      "winner": winner, "margin over the runner-up": f"{margin.text()} over {runner}",
                      "rule of thumb": v.claim.split(": ", 1)[1], "verdict": v.outcome()})

    def plot(path):
        plots.bars({f"{s} + {d}": {a: stats.mean_ci(acc[a].tolist(), bounds=stats.ACCURACY) for a in ARMS}
                    for (s, d), acc in by_cell.items()}, path, ylabel="test accuracy",
                   title="Decision matrix: size x similarity (95% CI over seeds)")
    md = tables.results.frame_to_markdown(pd.DataFrame(table), "Test accuracy of digits 5-9 per cell: mean [95% CI] "
                                                               "(n seeds); the winner and its paired margin")
    return Analysis([md], found, plot,
                    headline="; ".join(f"{r['cell']}: {r['winner']}" for r in table))


EXPERIMENT = Experiment(
    name="decision_matrix",
    title="The transfer-learning decision matrix: data size x domain similarity",
    question="Does the practitioners' four-cell rule of thumb pick the best of feature extraction, "
             "fine-tuning and training from scratch?",
    published="""The rule of thumb of course notes and tutorials (e.g. CS231n's *Transfer Learning* notes, the
Keras and TensorFlow transfer-learning guides), in line with Yosinski et al. 2014 and Kornblith et al. 2019:
small + similar data: feature extraction (a linear classifier on the pretrained features); large + similar:
fine-tune; small + different: hard (fine-tune from earlier layers, little to gain); large + different:
fine-tune, or train from scratch. No paper numbers: a rule, tested cell by cell.""",
    differences="""- Similar: digits 5-9 of MNIST (the source's own domain, digits 0-4); different: digits 5-9 of
  MNIST-M (digits over photographs), read in grey. Small: 10 images per class (50 steps); large: all 350 per
  class (150 steps). 5 seeds, paired.
- "Hard" is read as: the best accuracy in that cell is below the best of each other cell.""",
    claim="small+similar: feature extraction; large+similar: fine-tune; small+different: hard; "
          "large+different: fine-tune or scratch",
    analyse=analyse,
)
