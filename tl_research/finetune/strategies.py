"""Fine-tuning strategies: the `strategy` block of a config turned into a plan the one training loop follows.

A strategy never changes the loop. It decides, as pure functions of the config:

    phases        which units are frozen during which steps
                  fine_tune           one phase at `frozen_depth` (0 = full fine-tuning)
                  feature_extraction  one phase with every unit frozen (a new head on fixed features)
                  two_phase           head only, then units frozen_depth.. also train (LP-FT, Kumar et al.
                                      2022, arXiv 2202.10054); each phase has its own schedule
                  gradual_unfreezing  head only, then one more unit from the top every E epochs (or steps)
                                      down to `frozen_depth` (ULMFiT, Howard & Ruder 2018, arXiv 1801.06146)
    LR per step   the schedule(s), precomputed for every step
    LR per unit   discriminative fine-tuning (ULMFiT): lr(unit i) = lr(unit i + 1) / lr_decay, the head at the
                  schedule's LR, so unit i gets lr / lr_decay ** (num_units - i)
    regulariser   decoupled weight decay (optimizer.weight_decay), L2-SP (Li et al. 2018, arXiv 1802.01483:
                  alpha/2 ||w - w0||^2 on transferred weights + beta/2 ||w_head||^2), or none
    BatchNorm     'update': trainable units use batch statistics and update their running ones (frozen units
                  never do); 'source': every unit keeps the statistics it started with
"""
from __future__ import annotations

import dataclasses
import math

import jax.numpy as jnp
import ml_collections
import numpy as np

from tl_research.finetune import schedules
from tl_research.core.errors import ConfigError

NAMES = ("fine_tune", "feature_extraction", "two_phase", "gradual_unfreezing")
REGULARIZERS = ("weight_decay", "l2_sp", "none")
BN_POLICIES = ("update", "source")


def default_config() -> ml_collections.ConfigDict:
    """The `config.strategy` block."""
    head_schedule = schedules.default_config()
    head_schedule.lr = 0.1  # the head alone takes a much larger LR than the fine-tuning phase
    return ml_collections.ConfigDict(dict(
        name="fine_tune",  # fine_tune | feature_extraction | two_phase | gradual_unfreezing
        # two_phase: steps of the head-only phase; > 0 wins, else boundary_epochs * steps per epoch. The
        # head phase follows head_schedule; the rest of the run follows config.schedule, restarted at the
        # boundary, with units frozen_depth.. trainable (0: all of them).
        boundary_steps=0,
        boundary_epochs=1.0,
        head_schedule=head_schedule,
        # gradual_unfreezing: one more unit every unfreeze_every_steps (> 0 wins) or unfreeze_every_epochs,
        # until frozen_depth is reached; one schedule (config.schedule) over the whole run.
        unfreeze_every_steps=0,
        unfreeze_every_epochs=1.0,
        lr_decay=1.0,  # discriminative LRs: each unit's LR is the one above's / lr_decay (ULMFiT: 2.6); 1 = off
        regularizer="weight_decay",  # weight_decay (optimizer.weight_decay) | l2_sp | none
        l2sp_alpha=0.01,  # L2-SP: pull towards the starting weights
        l2sp_beta=0.01,  # L2-SP: plain L2 on the new head
        bn="update",  # BatchNorm statistics of trainable units: update | source
    ))


@dataclasses.dataclass(frozen=True)
class Phase:
    name: str
    start: int  # first step index (0-based) of the phase
    end: int  # one past its last step index
    frozen_depth: int


@dataclasses.dataclass
class Plan:
    phases: list[Phase]
    lrs: np.ndarray  # (total_steps,) learning rate of each step
    momenta: np.ndarray  # (total_steps,) momentum (SGD) or b1 (Adam) of each step
    lr_multipliers: dict[str, float]  # group ('unit_i' | 'head') -> LR factor
    weight_decay: float  # decoupled weight decay the optimizer applies
    l2sp: tuple[float, float] | None  # (alpha, beta) when L2-SP is on
    update_stats: bool

    def phase_index(self, step_index: int) -> int:
        """The phase of 0-based step index t (the step that makes `t + 1` steps done)."""
        for i, p in enumerate(self.phases):
            if step_index < p.end:
                return i
        return len(self.phases) - 1


def _err(key, value, allowed, why=""):
    return ConfigError(f"strategy.{key}", value, allowed, why)


def _length(cfg, steps_key: str, epochs_key: str, steps_per_epoch: int) -> int:
    steps = cfg[steps_key]
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 0:
        raise _err(steps_key, steps, f"an integer >= 0 (0: use strategy.{epochs_key})")
    if steps:
        return steps
    epochs = cfg[epochs_key]
    if isinstance(epochs, bool) or not isinstance(epochs, (int, float)) or not epochs > 0:
        raise _err(epochs_key, epochs, "a number > 0")
    return max(1, int(round(epochs * steps_per_epoch)))


def _schedule_arrays(sched_cfg, length: int, steps_per_epoch: int, momentum: float, key_prefix: str = ""):
    try:
        lr_fn = schedules.build(sched_cfg, length, steps_per_epoch)
        mom_fn = schedules.build_momentum(sched_cfg, length, steps_per_epoch)
    except ConfigError as e:
        if key_prefix:  # errors of the head schedule name it, not config.schedule
            raise ConfigError(key_prefix + e.key.removeprefix("schedule."), e.value, e.allowed) from None
        raise
    # Schedules are host functions evaluated in float64; each step is fed its value as float32.
    t = np.arange(length)
    lrs = np.asarray(lr_fn(t), np.float32)
    moms = np.asarray(mom_fn(t), np.float32) if mom_fn is not None else np.full(length, momentum, np.float32)
    return lrs, moms


def check(config) -> None:
    """The checks that need no model or data."""
    s = config.strategy
    if s.name not in NAMES:
        raise _err("name", s.name, ", ".join(NAMES))
    if s.regularizer not in REGULARIZERS:
        raise _err("regularizer", s.regularizer, ", ".join(REGULARIZERS))
    if s.bn not in BN_POLICIES:
        raise _err("bn", s.bn, ", ".join(BN_POLICIES))
    decay = s.lr_decay
    if isinstance(decay, bool) or not isinstance(decay, (int, float)) or not math.isfinite(decay) or decay < 1:
        raise _err("lr_decay", decay, "a number >= 1 (1: the same LR for every unit; ULMFiT: 2.6)")
    for key in ("l2sp_alpha", "l2sp_beta"):
        v = s[key]
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) or v < 0:
            raise _err(key, v, "a number >= 0")
    if s.regularizer == "l2_sp" and config.init == "scratch":
        raise _err("regularizer", "l2_sp", "weight_decay or none for init=scratch",
                   why="L2-SP pulls towards transferred weights and a scratch run has none")
    if s.name == "feature_extraction" and config.frozen_depth not in (0, -1, "all"):
        raise _err("name", s.name, "fine_tune (or two_phase / gradual_unfreezing) with frozen_depth="
                   f"{config.frozen_depth}", why="feature extraction freezes every unit")
    if s.name == "two_phase":
        _schedule_arrays(s.head_schedule, 10**6, 1000, 0.9, "strategy.head_schedule.")


def plan(config, *, num_units: int, frozen_depth: int, total_steps: int, steps_per_epoch: int) -> Plan:
    """The phases, per-step LRs and momenta, LR multipliers, regulariser and BN policy of one run."""
    check(config)
    s = config.strategy
    opt = config.optimizer
    momentum = float(opt.momentum if opt.name == "sgd" else opt.b1)
    if s.name == "feature_extraction":
        frozen_depth = num_units
    if s.name in ("fine_tune", "feature_extraction"):
        phases = [Phase("train", 0, total_steps, frozen_depth)]
        lrs, moms = _schedule_arrays(config.schedule, total_steps, steps_per_epoch, momentum)
    elif s.name == "two_phase":
        b = _length(s, "boundary_steps", "boundary_epochs", steps_per_epoch)
        if b >= total_steps:
            raise _err("boundary_steps" if s.boundary_steps else "boundary_epochs",
                       s.boundary_steps or s.boundary_epochs, f"a boundary before the run's last step "
                       f"({total_steps} steps)", why=f"the head phase would take {b} steps")
        if frozen_depth == num_units:
            raise _err("name", s.name, "fine_tune, or frozen_depth below the number of units "
                       f"({num_units})", why="phase 2 would unfreeze nothing")
        phases = [Phase("head", 0, b, num_units), Phase("fine_tune", b, total_steps, frozen_depth)]
        lr1, m1 = _schedule_arrays(s.head_schedule, b, steps_per_epoch, momentum, "strategy.head_schedule.")
        lr2, m2 = _schedule_arrays(config.schedule, total_steps - b, steps_per_epoch, momentum)
        lrs, moms = np.concatenate([lr1, lr2]), np.concatenate([m1, m2])
    else:  # gradual_unfreezing: head only, then units num_units-1, num_units-2, ... down to frozen_depth
        every = _length(s, "unfreeze_every_steps", "unfreeze_every_epochs", steps_per_epoch)
        phases, start = [], 0
        for k, depth in enumerate(range(num_units, frozen_depth - 1, -1)):
            if start >= total_steps:
                break
            last = depth == frozen_depth
            end = total_steps if last else min(total_steps, start + every)
            phases.append(Phase("head" if k == 0 else f"unfreeze_{k}", start, end, depth))
            start = end
        phases[-1] = dataclasses.replace(phases[-1], end=total_steps)
        lrs, moms = _schedule_arrays(config.schedule, total_steps, steps_per_epoch, momentum)
    multipliers = {f"unit_{i}": float(s.lr_decay) ** -(num_units - i) for i in range(num_units)}
    multipliers["head"] = 1.0
    wd = float(opt.weight_decay) if s.regularizer == "weight_decay" else 0.0
    l2sp = (float(s.l2sp_alpha), float(s.l2sp_beta)) if s.regularizer == "l2_sp" else None
    return Plan(phases, lrs, moms, multipliers, wd, l2sp, s.bn == "update")


def l2_sp_penalty(params: dict, anchor: dict, alpha: float, beta: float):
    """alpha/2 * sum ||w - w0||^2 over the transferred parameters given (those in `anchor`), plus
    beta/2 * sum ||w||^2 over the head's (Li, Grandvalet & Davoine 2018, arXiv 1802.01483, eq. 3)."""
    sp = sum(jnp.sum(jnp.square(v - anchor[k])) for k, v in params.items() if k in anchor)
    head = sum(jnp.sum(jnp.square(v)) for k, v in params.items() if k.startswith("head."))
    return 0.5 * alpha * sp + 0.5 * beta * head
