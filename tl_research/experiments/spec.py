"""What an experiment is: its texts (question, published claim, what differs), its config under
experiments/<name>/, and the analysis that turns its results rows into tables, a plot and verdicts."""
from __future__ import annotations

import dataclasses
import pathlib
from typing import Callable

from tl_research.experiments.verdict import Verdict


@dataclasses.dataclass
class Analysis:
    tables: list[str]  # Markdown, in order
    verdicts: list[Verdict]
    plot: Callable[[pathlib.Path], None]  # writes plot.png
    headline: str = ""  # the figure experiments/README.md shows; default: the first verdict's


@dataclasses.dataclass(frozen=True)
class Experiment:
    name: str
    title: str
    question: str
    published: str  # the claim, its source and numbers (Markdown)
    differences: str  # what differs from the paper's setting (Markdown)
    claim: str  # the published claim in one line, for experiments/README.md
    # (results rows, workdir, module) -> Analysis; module: the config module the rows come from (experiments/
    # <name>/config.py or paper.py), whose constants (e.g. TEXTS) stand in for the digits' where it has them;
    # None: the digits' setting. An analysis of (rows, workdir) alone is called without it (runner.analyse).
    analyse: Callable[..., Analysis]
    config: str = "config.py"  # under experiments/<name>/: get_config() and get_sweep()
