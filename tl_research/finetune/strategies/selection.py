"""Which parameters train, chosen freely on top of any strategy's phases: `strategy.trainable_units` (a set of
depth units, the head always training: surgical fine-tuning, Lee et al. ICLR 2023, arXiv 2210.11466) and
`strategy.trainable` (ordered (regex, "train" | "freeze") rules over dotted parameter paths, the first match
winning, every parameter covered).

Both restrict what a phase trains: a parameter trains iff the strategy's phase trains it, its unit is one of
`trainable_units` (when set) and the first rule matching its path says "train" (when rules are set). Applying
them on top of the phases (not as a strategy of their own) keeps every phased strategy usable with them: LP-FT's
head phase stays head only, gradual unfreezing still unfreezes from the top but only the chosen units train
once reached, and bitfit / norm_only can be narrowed to some units. With the defaults (`()` for both) the
phases are the strategy's own, unwrapped, so every existing config plans exactly as before.

A restricted phase derives the rest from its rule like any per-parameter phase: the lowest trainable unit (no
backward pass below it) and the frozen units, which run in inference mode wherever they lie (a frozen unit
between two trainable ones keeps its BatchNorm statistics)."""
from __future__ import annotations

import dataclasses
import re
from typing import Sequence

from tl_research.finetune import freezing
from tl_research.finetune.strategies.base import Phase, err

ACTIONS = ("train", "freeze")
RULES_EXAMPLE = r"e.g. (('units\.0\.', 'train'), ('head\.', 'train'), ('.*', 'freeze'))"


@dataclasses.dataclass(frozen=True)
class Selected(Phase):
    """A strategy's phase (`inner`) restricted to the `units` (the head always) and the first-match `rules`.
    Its fields are JSON values: the run records them with the phase."""

    units: tuple = ()  # trainable depth units; () = every unit the inner phase trains
    rules: tuple = ()  # ((regex, "train" | "freeze"), ...); () = no rule
    inner: Phase | None = None

    def trainable(self, path: str) -> bool:
        if self.inner is not None and not self.inner.trainable(path):
            return False
        if self.units:
            u = freezing.unit_of(path)
            if u is not None and u not in self.units:
                return False
        return not self.rules or rule_for(self.rules, path) == "train"


def rule_for(rules: Sequence, path: str) -> str | None:
    """The action of the first rule whose regex matches `path` (re.match: from the path's start); None if
    none does."""
    for pattern, action in rules:
        if re.match(pattern, path):
            return action
    return None


def rules_of(config) -> tuple:
    """config.strategy.trainable as a tuple of (regex, action) pairs (a JSON round trip gives lists); the
    syntax checked: ConfigError (strategy.trainable) otherwise."""
    value = config.strategy.trainable
    allowed = f"ordered (regex, 'train' | 'freeze') pairs over dotted parameter paths, {RULES_EXAMPLE}; () = none"
    if isinstance(value, (str, bytes)) or not isinstance(value, (tuple, list)):
        raise err("trainable", value, allowed)
    out = []
    for rule in value:
        if isinstance(rule, (str, bytes)) or not isinstance(rule, (tuple, list)) or len(rule) != 2:
            raise err("trainable", value, allowed, why=f"{rule!r} is not a (regex, action) pair")
        pattern, action = rule
        if not isinstance(pattern, str) or action not in ACTIONS:
            raise err("trainable", value, allowed, why=f"{rule!r}: a regex string, then train or freeze")
        try:
            re.compile(pattern)
        except re.error as e:
            raise err("trainable", value, allowed, why=f"{pattern!r} is no regex: {e}") from None
        out.append((pattern, action))
    return tuple(out)


def units_of(config, num_units: int | None = None) -> tuple:
    """config.strategy.trainable_units as a sorted tuple of distinct unit indices (< num_units when given);
    ConfigError (strategy.trainable_units) otherwise."""
    value = config.strategy.trainable_units
    bound = f"0..{num_units - 1}" if num_units else "unit indices >= 0"
    allowed = f"a tuple of distinct depth units ({bound}), e.g. (0,) for the first block only; () = every unit"
    if isinstance(value, (str, bytes)) or not isinstance(value, (tuple, list)):
        raise err("trainable_units", value, allowed)
    if any(isinstance(u, bool) or not isinstance(u, int) or u < 0 for u in value) or len(set(value)) != len(value):
        raise err("trainable_units", value, allowed)
    if num_units is not None and any(u >= num_units for u in value):
        raise err("trainable_units", tuple(value), allowed, why=f"this model has {num_units} depth units")
    return tuple(sorted(value))


def check(config) -> None:
    """The checks that need no model: the syntax of both keys."""
    rules_of(config)
    units_of(config)


def restrict(config, phases: list[Phase], num_units: int, paths: Sequence[str] = ()) -> list[Phase]:
    """The strategy's phases restricted by the two keys (the phases themselves where both are ()). With the
    model's `paths` known, a rule list that leaves a parameter unmatched is refused in one line."""
    rules, units = rules_of(config), units_of(config, num_units)
    if rules:
        for path in paths:
            if rule_for(rules, path) is None:
                raise err("trainable", config.strategy.trainable,
                          f"rules that match every parameter, {RULES_EXAMPLE}",
                          why=f"no rule matches the parameter {path!r}")
    if not rules and not units:
        return phases
    selected = [Selected(p.name, p.start, p.end, p.frozen_depth, units=units, rules=rules, inner=p) for p in phases]
    trained = {freezing.unit_of(path) for phase in selected for path in paths if phase.trainable(path)}
    idle = [u for u in units if u not in trained]
    if paths and idle:  # e.g. trainable_units=(0,) under frozen_depth=2: a unit chosen that never trains
        raise err("trainable_units", tuple(units), "units the strategy's phases train (fine_tune: frozen_depth=0)",
                  why=f"unit(s) {', '.join(map(str, idle))} train in no phase of {config.strategy.name} with "
                      f"frozen_depth={config.frozen_depth} and these rules")
    return selected
