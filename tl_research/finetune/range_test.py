"""The LR range test's settings (`config.lr_range`) and their check: what the test (tl_research/run/lr_range.py)
reads, kept here so that the config checks them without importing the run wing."""
from __future__ import annotations

import math

import ml_collections

from tl_research.core.errors import ConfigError


def default_config() -> ml_collections.ConfigDict:
    """The `config.lr_range` block."""
    return ml_collections.ConfigDict(dict(
        min_lr=1e-5, max_lr=10.0, steps=100,
        smoothing=0.9,  # EMA factor of the loss (bias-corrected)
        diverge=4.0,  # stop once the smoothed loss exceeds this multiple of its minimum
        start_drop=0.1,  # base_lr: where the smoothed loss has fallen this fraction of its total fall
    ))


def check(cfg) -> None:
    def bad(key, allowed):
        return ConfigError(f"lr_range.{key}", cfg[key], allowed)
    for key in ("min_lr", "max_lr"):
        v = cfg[key]
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) or v <= 0:
            raise bad(key, "a number > 0")
    if cfg.max_lr <= cfg.min_lr:
        raise bad("max_lr", f"a value above lr_range.min_lr={cfg.min_lr}")
    if isinstance(cfg.steps, bool) or not isinstance(cfg.steps, int) or cfg.steps < 10:
        raise bad("steps", "an integer >= 10")
    if not 0 <= cfg.smoothing < 1:
        raise bad("smoothing", "a number in [0, 1)")
    if not cfg.diverge > 1:
        raise bad("diverge", "a number > 1")
    if not 0 < cfg.start_drop < 1:
        raise bad("start_drop", "a number in (0, 1)")
