"""The regulariser contract: a Term (hyper-parameters and what the train step computes with them), the context
its `apply` reads (Pass), the registry mapping `strategy.regularizer` to a Term class, and the helpers the terms
share (their errors, numeric keys, one pass of the source model over a split)."""
from __future__ import annotations

import dataclasses
import math
from typing import Any, Callable, ClassVar

import jax
import numpy as np

from tl_research.core.errors import ConfigError

# the regularizer values that are no Term: the optimizer's decoupled weight decay, or nothing
PLAIN = ("weight_decay", "none")
_REGISTRY: dict[str, type["Term"]] = {}


@dataclasses.dataclass(frozen=True)
class Pass:
    """What a term's `apply` may read besides the model, the batch and the forward call: the trainable and all
    parameters, the BatchNorm statistics the step started from, the anchor and the steps' model maker."""

    train_params: dict
    params: dict
    stats: dict
    anchor: Any
    model_of: Callable  # (params, stats) -> the model (steps._merger)


@dataclasses.dataclass(frozen=True)
class Term:
    """One regulariser: its hyper-parameters (the dataclass fields) and what it computes (defaults: nothing)."""

    name: ClassVar[str] = ""
    transfer_only: ClassVar[bool] = False  # pulls towards transferred weights: refused for init=scratch
    classification_only: ClassVar[bool] = False  # reads the classification head (task=classification)
    keeps_weight_decay: ClassVar[bool] = False  # the optimizer's weight decay applies beside it

    @classmethod
    def from_config(cls, s) -> "Term":
        """The term of the strategy block `s` (config.strategy)."""
        raise NotImplementedError

    @classmethod
    def check(cls, config) -> None:
        """Its own checks, when chosen (ConfigError)."""

    def extend(self, model, config, weights):
        """The model with what this term changes or adds; `weights` the run's starting weights (None: scratch)."""
        return model

    def prepare(self, model, preprocess, data, config, lowest_unit: int) -> dict:
        """Host arrays computed before training from the starting `model` (inference mode) and `data`'s training
        split; `lowest_unit` the lowest unit any phase trains."""
        return {}

    def anchor(self, params: dict, stats: dict, prepared: dict):
        """What the train step receives as `anchor` (host arrays)."""
        return {}

    def anchor_shardings(self, param_shardings: dict, repl):
        """The anchor's placement: a prefix of its tree (a sharding stands for everything under it)."""
        return {}

    def apply(self, model, images, targets: dict, call: dict, ctx: Pass):
        """(outputs, penalty or None, metrics) of the batch: the forward pass `model(images, **call)` and more."""
        return model(images, **call), None, {}

    def summary(self) -> str:
        fields = ", ".join(f"{f.name} {getattr(self, f.name)}" for f in dataclasses.fields(self))
        return f"{self.name} {fields}".strip()


def register(cls: type[Term]) -> type[Term]:
    _REGISTRY[cls.name] = cls
    return cls


def get(name: str) -> type[Term] | None:
    return _REGISTRY.get(name)


def names() -> tuple[str, ...]:
    return tuple(_REGISTRY)


def err(key: str, value, allowed: str, why: str = "") -> ConfigError:
    return ConfigError(f"strategy.{key}", value, allowed, why)


def number(s, key: str, *, lo: float = 0.0, hi: float | None = None, integer: bool = False):
    """strategy.<key> as a finite number (an int where `integer`) in [lo, hi]; ConfigError otherwise."""
    v = s[key]
    kinds = (int,) if integer else (int, float)
    if isinstance(v, bool) or not isinstance(v, kinds) or not math.isfinite(v) or v < lo or (hi is not None
                                                                                           and v > hi):
        what = "an integer" if integer else "a number"
        raise err(key, v, f"{what} >= {lo:g}" + (f" and <= {hi:g}" if hi is not None else ""))
    return v


def source_pass(fn: Callable, data, split, batch_size: int, threads: int):
    """Sums `fn(batch)` (a tuple of host arrays, e.g. per-class sums over the batch's real examples) over every
    batch of `split` in order, and over the processes of a multi-process run (each reads its part of a batch)."""
    from tl_research.data import pipeline
    total = None
    for batch in pipeline.eval_batches(data, split, batch_size, threads):
        out = tuple(np.asarray(x, np.float64) for x in jax.device_get(fn(batch)))
        total = out if total is None else tuple(a + b for a, b in zip(total, out))
    if jax.process_count() > 1:
        from jax.experimental import multihost_utils
        total = tuple(np.asarray(multihost_utils.process_allgather(t)).sum(0) for t in total)
    return total


def source_rows(fn: Callable, data, split, batch_size: int, threads: int) -> tuple:
    """The rows `fn(batch)` gives per example (a tuple of host arrays (B, ...), e.g. the source model's logits and
    the labels), for the split's real examples in order, over every batch and every process's part of a batch
    (a multi-process run gathers them all, so each process holds the same arrays)."""
    from tl_research.data import pipeline

    def every_process(x):
        x = np.asarray(x)
        if jax.process_count() == 1:
            return x
        from jax.experimental import multihost_utils
        return np.concatenate(list(np.asarray(multihost_utils.process_allgather(x))))

    parts = []
    for batch in pipeline.eval_batches(data, split, batch_size, threads):
        keep = every_process(batch["mask"])
        parts.append(tuple(every_process(x)[keep] for x in jax.device_get(fn(batch))))
    if not parts:
        return ()
    return tuple(np.concatenate(column) for column in zip(*parts))

