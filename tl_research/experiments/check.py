"""`python -m tl_research.experiments check NAME [--tolerance T]`: the experiment rerun from nothing into a
temporary workdir and report folder (the committed experiments/NAME files are only read), its verdicts compared
with the committed summary.json.

Verdicts pair by claim. A verdict agrees when its status is the same and every number of its figure is within
the tolerance of the committed one: |now - committed| <= T x max(1, |committed|, |now|), an absolute tolerance
for accuracies and differences of accuracies, a relative one for larger numbers such as step counts; the words
of the figure must be the same. One line per verdict; the exit status is 1 when any status differs, a verdict is
missing or new, or a figure differs beyond the tolerance, else 0.
"""
from __future__ import annotations

import pathlib
import re
import tempfile

from tl_research.core.errors import ConfigError
from tl_research.experiments import runner
from tl_research.experiments.spec import Experiment

DEFAULT_TOLERANCE = 0.02
NUMBER = re.compile(r"[-+]?\d+(?:\.\d+)?")
SAME, FLIPPED, DRIFTED, MISSING, NEW = "same", "STATUS DIFFERS", "FIGURE DIFFERS", "MISSING", "NEW"


def figure_difference(committed: str, now: str, tolerance: float) -> tuple[float, bool]:
    """(the largest difference between the two figures' numbers, whether the figures agree): the same words
    and every pair of numbers within the tolerance (scaled by the numbers' size above 1)."""
    a, b = NUMBER.findall(committed), NUMBER.findall(now)
    if NUMBER.sub("#", committed) != NUMBER.sub("#", now) or len(a) != len(b):
        return float("inf"), False
    worst, ok = 0.0, True
    for x, y in zip(map(float, a), map(float, b)):
        diff = abs(x - y)
        worst = max(worst, diff)
        ok &= diff <= tolerance * max(1.0, abs(x), abs(y))
    return worst, ok


def _paired(committed: list[dict], now: list[dict]) -> list[tuple[dict | None, dict | None]]:
    """Verdicts paired by claim, in the committed order, then the new ones; a repeated claim pairs in order."""
    left = list(now)
    pairs = []
    for c in committed:
        match = next((n for n in left if n["claim"] == c["claim"]), None)
        if match is not None:
            left.remove(match)
        pairs.append((c, match))
    return pairs + [(None, n) for n in left]


def compare(committed: dict, now: dict, tolerance: float = DEFAULT_TOLERANCE) -> tuple[list[str], int]:
    """One line per verdict of two summaries (summary.json contents), and the exit status: 1 when a status
    differs, a verdict is missing or new, or a figure differs beyond the tolerance, else 0."""
    lines, code = [], 0
    for c, n in _paired(committed.get("verdicts", []), now.get("verdicts", [])):
        if n is None:
            lines.append(f"{MISSING}: {c['claim']}: committed {c['status']} ({c['figure']}), not in the rerun")
        elif c is None:
            lines.append(f"{NEW}: {n['claim']}: {n['status']} ({n['figure']}), not in the committed summary")
        else:
            worst, agree = figure_difference(c["figure"], n["figure"], tolerance)
            if c["status"] != n["status"]:
                lines.append(f"{FLIPPED}: {c['claim']}: committed {c['status']}, now {n['status']} "
                             f"(committed {c['figure']}; now {n['figure']})")
            elif not agree:
                gap = "other words" if worst == float("inf") else f"a number differs by {worst:.4g} > tolerance {tolerance:g}"
                lines.append(f"{DRIFTED}: {c['claim']}: {c['status']} both, {gap} "
                             f"(committed {c['figure']}; now {n['figure']})")
            else:
                lines.append(f"{SAME}: {c['claim']}: {c['status']}, numbers within {worst:.4g} "
                             f"(tolerance {tolerance:g})")
                continue
        code = 1
    return lines, code


def check(exp: Experiment, experiments: list[Experiment], *, root: pathlib.Path = runner.ROOT,
          tolerance: float = DEFAULT_TOLERANCE, jobs: int = 0, opts=None, echo=print) -> int:
    """Reruns `exp` (its digits-scale config) into a temporary directory, compares its verdicts with the
    committed root/<name>/summary.json and prints one line per verdict; returns the exit status."""
    if tolerance < 0:
        raise ConfigError("--tolerance", tolerance, "a number >= 0")
    committed = runner.read_summary(pathlib.Path(root) / exp.name)
    if not committed.get("verdicts"):
        raise ConfigError("experiment NAME", exp.name, "an experiment with a committed summary.json",
                          why=f"no verdicts in {pathlib.Path(root) / exp.name / runner.SUMMARY}")
    with tempfile.TemporaryDirectory(prefix=f"check-{exp.name}-") as tmp:
        out = pathlib.Path(tmp) / "experiments"
        runner.run(exp, [exp], root=root, out=out, workdir=pathlib.Path(tmp) / "runs", jobs=jobs, opts=opts,
                   echo=echo)
        now = runner.read_summary(out / exp.name)
    lines, code = compare(committed, now, tolerance)
    echo(f"{exp.name}: the rerun against the committed {pathlib.Path(root) / exp.name / runner.SUMMARY}:")
    for line in lines:
        echo(line)
    return code
