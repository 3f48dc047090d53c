"""Changing a config: dotted keys set with type checks (`set_value`), command-line values (`parse_value`), a
run's overrides applied to a copy (`apply_overrides`) with the keys derived from others filled in."""
from __future__ import annotations

import ast
import copy
import difflib
import re
from typing import Any

import ml_collections

from tl_research import tasks
from tl_research.core.errors import ConfigError


def _get(config: ml_collections.ConfigDict, key: str, value: Any = "?"):
    """config[key] for a dotted key; ConfigError naming the closest existing key (a typo's likely target,
    matched as ConfigDict's own KeyError suggests one) and the keys around it otherwise."""
    node = config
    parts = key.split(".")
    for i, p in enumerate(parts):
        if not isinstance(node, ml_collections.ConfigDict) or p not in node:
            parent = ".".join(parts[:i]) or "config"
            keys = sorted(node.keys()) if isinstance(node, ml_collections.ConfigDict) else []
            close = difflib.get_close_matches(p, keys, n=1)
            closest = f"{'.'.join([*parts[:i], close[0]])} (the closest) or " if close else ""
            raise ConfigError(key, value, f"{closest}a key of {parent}: {', '.join(keys)}", why="no such key")
        node = node[p]
    return node


def set_value(config: ml_collections.ConfigDict, key: str, value: Any) -> None:
    """config[key] = value for a dotted key that must exist; the value must fit the key's type."""
    old = _get(config, key, value)
    *parents, leaf = key.split(".")
    node = config
    for p in parents:
        node = node[p]
    if isinstance(value, list):
        value = tuple(value)
    if isinstance(old, ml_collections.ConfigDict) and isinstance(value, dict):
        for k, v in value.items():
            set_value(config, f"{key}.{k}", v)
        return
    try:
        node[leaf] = value
    except (TypeError, ValueError) as e:
        kind = type(old).__name__
        raise ConfigError(key, value, f"a value of type {kind}", why=str(e).split(".")[0][:80]) from None


def parse_value(text: str) -> Any:
    """A command-line value: a Python literal (1, 0.1, (5, 6), True, None) or else the bare string."""
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError):
        return text


def apply_overrides(config, overrides: dict[str, Any]) -> ml_collections.ConfigDict:
    config = copy_config(config)
    for key, value in overrides.items():
        set_value(config, key, value)
    resolve_source_seed(config)
    resolve_task_targets(config)
    return expand_extra_test_sets(config)


RUN_SEED = -1  # source.seed = RUN_SEED: the source model's seed is the run's (data.subset_seed's convention)


def resolve_source_seed(config) -> ml_collections.ConfigDict:
    """source.seed = seed where it is RUN_SEED (-1, "the run's seed"), in place, down a source's own source;
    returns config. So a sweep of `seed` trains one source model per seed (the sweep keys source models by
    their config) and an interval over seeds holds the source's variance; a source.seed >= 0 stays fixed."""
    source = config.get("source")
    if isinstance(source, ml_collections.ConfigDict):
        if source.get("seed") == RUN_SEED:
            source.seed = config.seed
        resolve_source_seed(source)
    return config


def resolve_task_targets(config) -> None:
    """data.targets from config.task, in the run's config and its source's (tasks.resolve_targets)."""
    tasks.resolve_targets(config)
    if config.get("source") is not None:
        resolve_task_targets(config.source)


def expand_extra_test_sets(config) -> ml_collections.ConfigDict:
    """data.extra_test_sets -> one classification evaluator per name (kept in the config: config.json shows
    what ran). An evaluator of that name the config sets itself is left as it is."""
    for name in config.data.get("extra_test_sets", ()):
        if not isinstance(name, str) or not name:
            raise ConfigError("data.extra_test_sets", tuple(config.data.extra_test_sets),
                              "a tuple of dataset names with the run's classes, e.g. ('mnist_m',)")
        key = "test_" + re.sub(r"[^A-Za-z0-9_]+", "_", name)
        if key not in config.evals:
            config.evals[key] = dict(type="classification", data=name, split="test", every=-1)
    return config


def copy_config(config) -> ml_collections.ConfigDict:
    """An independent copy that keeps each field's declared type (copy_and_resolve_references would narrow
    `frozen_depth` to the type of its current value) and the lock of every block: a copy made in a config
    file (e.g. a source run's) refuses unknown keys as the original does."""
    return copy.deepcopy(config)


def from_record(recorded: dict) -> ml_collections.ConfigDict:
    """A run's config.json (what it ran with) as a config again: JSON lists back to tuples, the record-only
    `runtime` dropped, and every key the record lacks (one added to the defaults after the run) at its default,
    so a run recorded by an earlier version is read with the meaning it had."""
    def tuples(v):
        if isinstance(v, list):
            return tuple(tuples(x) for x in v)
        if isinstance(v, dict):
            return {k: tuples(x) for k, x in v.items()}
        return v

    def fill(cfg: ml_collections.ConfigDict, defaults: ml_collections.ConfigDict) -> None:
        for key, value in defaults.items():
            if key not in cfg:
                cfg[key] = copy.deepcopy(value)
            elif isinstance(value, ml_collections.ConfigDict) and isinstance(cfg[key], ml_collections.ConfigDict):
                fill(cfg[key], value)

    from tl_research.config.defaults import base_config
    cfg = ml_collections.ConfigDict(tuples({k: v for k, v in recorded.items() if k != "runtime"}))
    fill(cfg, base_config())
    if isinstance(cfg.get("source"), ml_collections.ConfigDict):
        fill(cfg.source, base_config())
    return cfg
