"""Which parameters train, in which group, and the optimizer built from that.

Freezing is declared, not coded: every parameter gets a label from its name and the config, and the
optimizer is an `optax.multi_transform` over those labels. `frozen` parameters get no update at all (no
weight decay either); every trainable group gets its own learning-rate multiplier and regulariser. Labels are
a pure function of the parameter names and a rule saying which of them train: the depth rule (`labels`,
units below frozen_depth frozen) or any per-parameter rule a strategy's phase gives (`labels_where`).
"""
from __future__ import annotations

import re
from typing import Callable

import optax

from tl_research.core.errors import ConfigError

# One name per optimizer: Adam with optimizer.weight_decay > 0 is AdamW, since the decay here is always
# decoupled (added after Adam's scaling), so a separate "adamw" would be the same optimizer under two names.
OPTIMIZERS = ("sgd", "adam")
FROZEN = "frozen"
NO_DECAY = "/no_decay"
_UNIT = re.compile(r"^units\.(\d+)\.")


def unit_of(name: str) -> int | None:
    """The depth unit a parameter belongs to (`units.3.conv.kernel` -> 3); None for the head."""
    m = _UNIT.match(name)
    if m:
        return int(m.group(1))
    if name.startswith("head."):
        return None
    raise ValueError(f"parameter {name!r} belongs to no depth unit and not to the head")


def group_of(name: str) -> str:
    u = unit_of(name)
    return "head" if u is None else f"unit_{u}"


def decays(name: str) -> bool:
    """Weight decay applies to kernels (conv and dense weights), not to biases or normalisation params."""
    return name.endswith(".kernel")


def trains_at_depth(name: str, frozen_depth: int) -> bool:
    """The depth rule: a parameter trains iff it is in the head or in a unit >= frozen_depth."""
    u = unit_of(name)
    return u is None or u >= frozen_depth


def labels(names, frozen_depth: int) -> dict[str, str]:
    """name -> 'frozen' for units below frozen_depth, else its group ('unit_i' or 'head'), with a
    '/no_decay' suffix for parameters that weight decay leaves alone."""
    return labels_where(names, lambda n: trains_at_depth(n, frozen_depth))


def labels_where(names, trains: Callable[[str], bool]) -> dict[str, str]:
    """As `labels`, with any per-parameter rule: name -> 'frozen' where `trains(name)` is false, else its
    group (+ '/no_decay'). `labels(names, k)` is `labels_where(names, <the depth rule at k>)`."""
    out = {}
    for n in names:
        group = group_of(n)  # every name must belong to a unit or the head, trained or not
        out[n] = group + ("" if decays(n) else NO_DECAY) if trains(n) else FROZEN
    return out


def lowest_trainable_unit(names, trains: Callable[[str], bool]) -> int:
    """The lowest depth unit holding a parameter that trains under `trains`: a step needs no backward pass
    below it (and runs the units below it in inference mode). With no unit parameter training (the head
    alone): one past the deepest unit the names hold."""
    units = [(n, unit_of(n)) for n in names]
    trained = [u for n, u in units if u is not None and trains(n)]
    if trained:
        return min(trained)
    return 1 + max((u for _, u in units if u is not None), default=-1)


def frozen_units(names, trains: Callable[[str], bool]) -> frozenset[int]:
    """The depth units that hold parameters of which none trains under `trains`: such a unit runs in inference
    mode (BatchNorm on its running statistics, never updated), wherever it lies."""
    held, trained = set(), set()
    for n in names:
        u = unit_of(n)
        if u is not None:
            held.add(u)
            if trains(n):
                trained.add(u)
    return frozenset(held - trained)


def resolve_frozen_depth(value, num_units: int) -> int:
    """'all' or -1 -> num_units (a linear probe); k in 0..num_units as is."""
    if value in ("all", -1):
        return num_units
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= num_units:
        raise ConfigError("frozen_depth", value, f"0..{num_units}, -1 or 'all' (this model has {num_units} "
                                                  "depth units)")
    return value


def trainable(label_map: dict[str, str]) -> list[str]:
    return sorted(n for n, lab in label_map.items() if lab != FROZEN)


def build_optimizer(opt_cfg, label_map: dict[str, str], lr_multipliers: dict[str, float] | None = None,
                    weight_decay: float | None = None) -> optax.GradientTransformation:
    """An optimizer whose learning rate and momentum are fed in every step (`inject_hyperparams`), so
    runs that differ only in their schedule share one compiled step.

    Per trainable group g: direction (SGD momentum or Adam) -> + weight_decay * w (decoupled, Loshchilov &
    Hutter 2019, arXiv 1711.05101; kernels only: `adam` with weight decay is AdamW) -> * -(lr * multiplier[g]).
    `weight_decay` overrides opt_cfg.weight_decay (a strategy with another regulariser turns it off).
    """
    lr_multipliers = lr_multipliers or {}
    if opt_cfg.name not in OPTIMIZERS:
        why = "adam with optimizer.weight_decay > 0 is AdamW" if opt_cfg.name == "adamw" else ""
        raise ConfigError("optimizer.name", opt_cfg.name, ", ".join(OPTIMIZERS), why)
    if opt_cfg.weight_decay < 0:
        raise ConfigError("optimizer.weight_decay", opt_cfg.weight_decay, "a value >= 0")
    groups = sorted(set(label_map.values()) - {FROZEN})
    name = opt_cfg.name
    wd = float(opt_cfg.weight_decay if weight_decay is None else weight_decay)
    nesterov, b2, eps = bool(opt_cfg.nesterov), float(opt_cfg.b2), float(opt_cfg.eps)

    def make(learning_rate, momentum):
        transforms = {FROZEN: optax.set_to_zero()}
        for g in groups:
            base = g.removesuffix(NO_DECAY)
            parts = [optax.trace(decay=momentum, nesterov=nesterov) if name == "sgd"
                     else optax.scale_by_adam(b1=momentum, b2=b2, eps=eps)]
            if wd > 0 and not g.endswith(NO_DECAY):
                parts.append(optax.add_decayed_weights(wd))
            parts.append(optax.scale_by_learning_rate(learning_rate * lr_multipliers.get(base, 1.0)))
            transforms[g] = optax.chain(*parts)
        tx = optax.multi_transform(transforms, label_map)
        if opt_cfg.grad_clip > 0:
            tx = optax.chain(optax.clip_by_global_norm(float(opt_cfg.grad_clip)), tx)
        return tx

    default_momentum = float(opt_cfg.momentum if name == "sgd" else opt_cfg.b1)
    return optax.inject_hyperparams(make)(learning_rate=0.0, momentum=default_momentum)
