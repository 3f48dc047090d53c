"""The four-cell rule of thumb: data size x domain similarity -> feature extraction, fine-tuning or scratch."""
from __future__ import annotations

import pathlib

import pandas as pd

from tl_research.experiments import common, plots, stats, tables, verdict
from tl_research.experiments.common import DELTA
from tl_research.experiments.spec import Analysis, Experiment

ARMS = ("feature extraction", "fine-tuning", "scratch")
SIZES = {"small": 10, "large": 350}  # examples per class without rows to read them from (the digits')
DOMAINS = {"similar": "mnist_subset", "different": "mnist_m"}  # the digits' (a config module's DOMAINS instead)
RULE = {("small", "similar"): ("feature extraction",), ("large", "similar"): ("fine-tuning",),
        ("large", "different"): ("fine-tuning", "scratch")}  # small + different: "hard" (checked apart)
PUBLISHED = "no number: a rule of thumb"


def _best(acc: dict, arms) -> tuple[str, pd.Series]:
    arm = max(arms, key=lambda a: acc[a].mean() if len(acc[a]) else float("-inf"))
    return arm, acc[arm]


def where(df: pd.DataFrame, module=None) -> dict:
    """(size, domain) -> the keys of the cell's runs: small is the fewest examples per class the runs have and
    large the most (SIZES without rows); a domain's data.name from the config module's DOMAINS (a name, or a
    dict of data keys: paper.py's), DOMAINS without a module."""
    ks = (sorted({int(k) for k in pd.to_numeric(df["data.per_class"], errors="coerce").dropna()})
          if "data.per_class" in df else [])
    sizes = {"small": ks[0], "large": ks[-1]} if ks else SIZES
    domains = {dom: v["data.name"] if isinstance(v, dict) else v
               for dom, v in getattr(module, "DOMAINS", DOMAINS).items()}
    return {(size, dom): {"data.per_class": k, "data.name": name}
            for size, k in sizes.items() for dom, name in domains.items()}


def cells(df: pd.DataFrame, metric: str = "test_accuracy", module=None) -> dict:
    return {cell: {arm: stats.per_seed(df, metric, {"label": arm, **keys}) for arm in ARMS}
            for cell, keys in where(df, module).items()}


def cell_verdict(by_cell: dict, chance_cells: dict, size: str, dom: str, chance: dict) -> verdict.Verdict:
    """The rule's verdict for one cell: its arm(s) against the best other arm, paired by seed; "hard": the
    lowest best of the other cells against this cell's best. Not testable when every arm compared is at chance
    (chance[cell]: 1/num_classes of the cell's runs; for "hard": every arm of every cell)."""
    acc, rule = by_cell[(size, dom)], RULE.get((size, dom))
    if rule:
        expected, exp_acc = _best(acc, rule)
        other, other_acc = _best(acc, [a for a in ARMS if a not in rule])
        why = stats.chance_reason({a: chance_cells[(size, dom)][a] for a in (expected, other)}, chance[(size, dom)])
        return verdict.greater(f"{size} + {dom}: {' or '.join(rule)}", f"{expected} - {other}",
                               stats.paired_difference(exp_acc, other_acc), delta=DELTA, published=PUBLISHED,
                               untestable=why)
    others = [_best(a, ARMS)[1] for c, a in by_cell.items() if c != (size, dom)]
    floor = pd.concat(others, axis=1).min(axis=1) if others else pd.Series(dtype=float)
    every = all(stats.chance_reason({f"{a} ({s} + {d})": v for a, v in arms.items()}, chance[(s, d)])
                for (s, d), arms in chance_cells.items())
    return verdict.greater(f"{size} + {dom}: hard (the lowest best accuracy of the four cells)",
                           "lowest best of the other cells - this cell's best",
                           stats.paired_difference(floor, _best(acc, ARMS)[1]), delta=DELTA, published=PUBLISHED,
                           untestable="no arm of any cell shown above chance" if every else "")


def verdicts(df: pd.DataFrame, module=None) -> list[verdict.Verdict]:
    by_cell = cells(df, module=module)
    chance_cells = cells(df, stats.chance_metric(df, "test_accuracy"), module)
    chance = {cell: common.chance(df, keys) for cell, keys in where(df, module).items()}
    return [cell_verdict(by_cell, chance_cells, size, dom, chance) for size, dom in by_cell]


def analyse(rows: list[dict], workdir: pathlib.Path, module=None) -> Analysis:
    df = tables.done(rows)
    by_cell = cells(df, module=module)
    found, table = verdicts(df, module), []
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
    md = tables.results.frame_to_markdown(pd.DataFrame(table), f"Test accuracy of "
                                          f"{common.text(module, 'target', 'digits 5-9')} per cell: mean [95% CI] "
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
