"""The plots of the experiments: lines with interval bands, grouped bars with interval whiskers, labelled
scatter points (accuracy against trainable parameters)."""
from __future__ import annotations

import pathlib
from typing import Mapping, Sequence

from tl_research.experiments.stats import Estimate

_DASHES = ("--", ":", "-.", (0, (5, 1, 1, 1, 1, 1)))
_MARKERS = ("o", "s", "D", "^", "v")


def _pyplot():
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    return plt


def lines(series: Mapping[str, Sequence[tuple[object, Estimate]]], path: pathlib.Path, *, xlabel: str,
          ylabel: str, title: str, references: Mapping[str, Estimate] | None = None, logx: bool = False,
          whiskers: bool = True, notes: Mapping[object, str] | None = None) -> None:
    """One line per series over its (x, estimate) points, the 95% interval as whiskers; references (single
    levels, e.g. baseB) as dashed lines across the plot, each in its own colour and dash pattern, their
    intervals shaded. Integer x values (a depth n) get integer ticks; logx, a tick at each x.
    whiskers=False: the means alone (a dense curve of few seeds, whose intervals would cover the plot; the
    tables give them). notes: a text at an x, as a tick on the top axis (what a point is, e.g. its target)."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    all_x = []
    for label, points in series.items():
        points = [(x, e) for x, e in points if e.n]
        if not points:
            continue
        xs, es = [p[0] for p in points], [p[1] for p in points]
        all_x += xs
        yerr = [[e.mean - e.low if e.n > 1 else 0 for e in es], [e.high - e.mean if e.n > 1 else 0 for e in es]]
        ax.errorbar(xs, [e.mean for e in es], yerr=yerr if whiskers else None, marker="o", capsize=3,
                    markersize=6 if whiskers else 3, label=label)
    levels = [(label, e) for label, e in (references or {}).items() if e.n]
    for i, (label, e) in enumerate(levels):
        # each level in the colour after the series' (axhline alone draws every one in C0), and with several
        # levels each its own dash pattern
        line = ax.axhline(e.mean, color=f"C{(len(ax.containers) + i) % 10}", label=label,
                          linestyle=_DASHES[i % len(_DASHES)] if len(levels) > 1 else "--")
        if e.n > 1:
            ax.axhspan(e.low, e.high, color=line.get_color(), alpha=0.12 if len(levels) == 1 else 0.08)
    if logx and all_x:  # a few sizes or ratios: a tick at each, read as 1, 10, 350 rather than 10^0
        from matplotlib.ticker import FixedLocator, NullLocator
        ax.set_xscale("log")
        ax.xaxis.set_major_locator(FixedLocator(sorted(set(all_x))))
        ax.xaxis.set_major_formatter(lambda x, _: f"{x:g}")
        ax.xaxis.set_minor_locator(NullLocator())
    elif all_x and all(isinstance(x, int) for x in all_x):  # n = 1, 2, 3: no ticks at 1.5
        from matplotlib.ticker import MaxNLocator
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    if notes:
        top = ax.secondary_xaxis("top")
        top.set_xticks(list(notes), list(notes.values()), fontsize=7, rotation=20, ha="left")
    _finish(ax, fig, path, xlabel, ylabel, title, logx)


def scatter(series: Mapping[str, Sequence[tuple[float, Estimate, str]]], path: pathlib.Path, *, xlabel: str,
            ylabel: str, title: str, logx: bool = True) -> None:
    """One marker series per key, each point (x, estimate, text) at its mean with the 95% interval as a
    vertical whisker and its text beside it, no lines between points (methods, not a curve): the PETL plot of
    accuracy against trainable parameters. logx: a log x axis. Points without runs or with x <= 0 are left out."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    for i, (label, points) in enumerate(series.items()):
        points = [(x, e, t) for x, e, t in points if e.n and x and x > 0]
        if not points:
            continue
        yerr = [[e.mean - e.low if e.n > 1 else 0 for _, e, _ in points],
                [e.high - e.mean if e.n > 1 else 0 for _, e, _ in points]]
        ax.errorbar([x for x, _, _ in points], [e.mean for _, e, _ in points], yerr=yerr, capsize=3,
                    marker=_MARKERS[i % len(_MARKERS)], linestyle="none", label=label)
        for x, e, text in points:
            ax.annotate(text, (x, e.mean), textcoords="offset points", xytext=(4, 3), fontsize=7)
    _finish(ax, fig, path, xlabel, ylabel, title, logx)


def bars(groups: Mapping[str, Mapping[str, Estimate]], path: pathlib.Path, *, ylabel: str, title: str) -> None:
    """Grouped bars: one group per key of `groups`, one bar per inner key, whiskers = the 95% interval."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    names = list(dict.fromkeys(k for g in groups.values() for k in g))
    width = 0.8 / max(len(names), 1)
    for i, name in enumerate(names):
        xs, means, err = [], [], [[], []]
        for j, g in enumerate(groups.values()):
            e = g.get(name)
            if e is None or not e.n:
                continue
            xs.append(j + (i - (len(names) - 1) / 2) * width)
            means.append(e.mean)
            err[0].append(e.mean - e.low if e.n > 1 else 0)
            err[1].append(e.high - e.mean if e.n > 1 else 0)
        ax.bar(xs, means, width=width, yerr=err, capsize=3, label=name)
    ax.set_xticks(range(len(groups)))
    ax.set_xticklabels(list(groups), fontsize=8)
    _finish(ax, fig, path, "", ylabel, title, False)


def _finish(ax, fig, path, xlabel, ylabel, title, logx) -> None:
    if logx and ax.get_xscale() != "log":  # (set again, it would reset the ticks lines() chose)
        ax.set_xscale("log")
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title, fontsize=9)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110, metadata={"Software": None})  # no version stamp: a rerun writes the same bytes
    _pyplot().close(fig)
