"""Learning-rate schedules (step -> learning rate), built from optax where optax has the schedule.

The trainer precomputes every schedule on the host, once per run, over ``np.arange(total_steps)``
(``strategies.base.schedule_arrays``) and feeds each step its float32 value. So a schedule here is a host
function: it accepts a Python/NumPy/JAX scalar step or an array of steps and returns NumPy float64 of the
same shape, evaluating optax's formulas in float64 (``jax.enable_x64``). Double precision is what keeps
the small values near the end of a cosine (1 + cos(~pi)) and the restarts of long SGDR runs exact, with
no precision tricks. Steps before 0 are treated as 0. Each formula cites the paper it follows.

Only Smith's cyclical schedule is written by hand (optax has no triangular / triangular2 / exp_range).
The 1cycle LR and momentum are optax anneals joined at PyTorch's phase ends, and SGDR is optax's cosine
per period with the periods located on the host (see ``cosine_restarts`` for why not ``sgdr_schedule``).

The trainer uses only the config-facing part: ``NAMES``, ``default_config()``, ``build()`` and
``build_momentum()``. ``build`` validates the ``config.schedule`` block and raises
``tl_research.core.errors.ConfigError`` (naming the ``schedule.*`` key) before any work starts.
"""

from __future__ import annotations

import json
import math
import numbers
import os
from typing import Callable, Sequence

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
from ml_collections import config_dict

from tl_research.core.errors import ConfigError

__all__ = [
    "NAMES", "MODES", "ANNEALS", "RANGE_TEST_NAMES", "Schedule",
    "constant", "cosine", "step", "cyclical", "one_cycle", "one_cycle_momentum", "slanted_triangular",
    "cosine_restarts", "with_warmup", "default_config", "build", "build_momentum",
]

NAMES = ("constant", "cosine", "step", "cyclical", "one_cycle", "slanted_triangular", "cosine_restarts")
MODES = ("triangular", "triangular2", "exp_range")
ANNEALS = ("cos", "linear")
# Schedules whose bounds (lower and upper LR) can come from an LR range test.
RANGE_TEST_NAMES = ("cyclical", "one_cycle", "slanted_triangular")

# step (scalar or array) -> value, float64 NumPy of the step's shape.
Schedule = Callable[..., np.ndarray]


def _steps(count) -> np.ndarray:
    """The step(s) as float64, clipped below at 0 (a negative step reads as step 0)."""
    return np.maximum(np.asarray(count, dtype=np.float64), 0.0)


def _on_host(fn: optax.Schedule) -> Schedule:
    """An optax schedule evaluated in float64 on the host, shaped like its step (optax's constant
    returns a scalar for any step)."""

    def schedule(count):
        t = _steps(count)
        with jax.enable_x64(True):
            out = np.asarray(fn(jnp.asarray(t)), dtype=np.float64)
        return np.broadcast_to(out, t.shape).copy()

    return schedule


# ----------------------------------------------------------------------------------------------------
# The schedules.
# ----------------------------------------------------------------------------------------------------


def constant(lr: float) -> Schedule:
    """Constant learning rate: ``lr(t) = lr`` (``optax.constant_schedule``, shaped like the step)."""
    return _on_host(optax.constant_schedule(lr))


def cosine(total_steps: int, lr: float, alpha: float = 0.0) -> Schedule:
    """Cosine annealing without restarts (Loshchilov & Hutter 2017, SGDR, arXiv 1608.03983, eq. 5).

    ``lr(t) = lr * (alpha + (1 - alpha) * (1 + cos(pi * min(t, T) / T)) / 2)`` with ``T = total_steps``:
    ``lr`` at t = 0, decaying to ``alpha * lr`` at t = T and staying there
    (``optax.cosine_decay_schedule``).
    """
    if total_steps < 1:
        raise ValueError(f"cosine: total_steps must be >= 1, got {total_steps}")
    return _on_host(optax.cosine_decay_schedule(lr, total_steps, alpha))


def step(lr: float, milestones: Sequence[int], factor: float = 0.1) -> Schedule:
    """Step decay (as in He et al. 2016, ResNet, arXiv 1512.03385: divide the LR by 10 at fixed steps).

    ``lr(t) = lr * factor^k`` where ``k = #{m in milestones : t >= m}``: the LR is multiplied by
    ``factor`` at each milestone step (the milestone step itself already uses the new LR, as PyTorch's
    MultiStepLR and ``optax.piecewise_constant_schedule``). ``milestones`` are strictly increasing step
    indices.
    """
    milestones = tuple(milestones)
    if any(b <= a for a, b in zip(milestones, milestones[1:])):
        raise ValueError(f"step: milestones must be strictly increasing, got {milestones}")
    return _on_host(optax.piecewise_constant_schedule(lr, {m: factor for m in milestones}))


def cyclical(base_lr: float, max_lr: float, step_size: float, mode: str = "triangular",
             gamma: float = 1.0) -> Schedule:
    """Cyclical learning rate (Smith 2017, "Cyclical Learning Rates for Training Neural Networks",
    arXiv 1506.01186). Written by hand: optax has no cyclical schedule.

    With half-cycle length ``s = step_size`` (in steps)::

        cycle = floor(1 + t / (2 s))
        x     = |t / s - 2 cycle + 1|
        lr    = base_lr + (max_lr - base_lr) * max(0, 1 - x) * scale

    where ``scale`` is 1 (``"triangular"``), ``1 / 2^(cycle - 1)`` (``"triangular2"``) or ``gamma^t``
    (``"exp_range"``). So lr = base_lr at t = 0, max_lr at t = s, base_lr at t = 2s; triangular2's
    second peak (t = 3s) is base_lr + (max_lr - base_lr) / 2.
    """
    if mode not in MODES:
        raise ValueError(f"cyclical: mode must be one of {MODES}, got {mode!r}")
    if step_size <= 0:
        raise ValueError(f"cyclical: step_size must be > 0, got {step_size}")
    scales = {"triangular": lambda t, cycle: 1.0,
              "triangular2": lambda t, cycle: 0.5 ** (cycle - 1.0),
              "exp_range": lambda t, cycle: np.power(gamma, t)}

    def schedule(count):
        t = _steps(count)
        cycle = np.floor(1.0 + t / (2.0 * step_size))
        x = np.abs(t / step_size - 2.0 * cycle + 1.0)
        return base_lr + (max_lr - base_lr) * np.maximum(0.0, 1.0 - x) * scales[mode](t, cycle)

    return schedule


def _anneal(start: float, end: float, length: float, anneal: str) -> optax.Schedule:
    """PyTorch OneCycleLR's interpolation from ``start`` (step 0) to ``end`` (step ``length``, then held):
    cos: ``end + (start - end) / 2 * (cos(pi pct) + 1)``; linear: ``(end - start) * pct + start``,
    ``pct = t / length``. Both are optax schedules (``cosine_decay_schedule`` of ``start - end`` shifted
    by ``end``, which allows either direction and a zero end; ``linear_schedule``)."""
    if anneal == "cos":
        decay = optax.cosine_decay_schedule(start - end, length)
        return lambda count: end + decay(count)
    if anneal == "linear":
        return optax.linear_schedule(start, end, length)
    raise ValueError(f"anneal must be one of {ANNEALS}, got {anneal!r}")


def _one_cycle_two_phase(total_steps: int, pct_start: float, start: float, middle: float, end: float,
                         anneal: str) -> Schedule:
    """PyTorch OneCycleLR's two phases: start -> middle over [0, e1], middle -> end over [e1, e2], with
    e1 = float(pct_start * total_steps) - 1 and e2 = total_steps - 1 (PyTorch's step arithmetic).

    Not ``optax.cosine_onecycle_schedule`` / ``linear_onecycle_schedule``: their phase ends are
    ``int(pct_start * total_steps)`` and ``total_steps`` (and the linear one has three phases), one step
    or a fraction of one later than PyTorch's, so the same optax anneals are joined at PyTorch's ends.
    """
    if anneal not in ANNEALS:
        raise ValueError(f"anneal must be one of {ANNEALS}, got {anneal!r}")
    if not 0.0 < pct_start < 1.0:
        raise ValueError(f"one_cycle: pct_start must be in (0, 1), got {pct_start}")
    end1 = float(pct_start * total_steps) - 1.0
    end2 = float(total_steps - 1)
    if not 0.0 < end1 < end2:
        raise ValueError(
            f"one_cycle: both phases need a positive length; got phase ends {end1} and {end2} "
            f"(pct_start * total_steps must be > 1 and total_steps >= 2)")
    # PyTorch refuses steps past the end; here the final value is held (each anneal holds its end).
    return _on_host(optax.join_schedules(
        [_anneal(start, middle, end1, anneal), _anneal(middle, end, end2 - end1, anneal)], [end1]))


def one_cycle(total_steps: int, max_lr: float, pct_start: float = 0.3, div_factor: float = 25.0,
              final_div_factor: float = 1e4, anneal: str = "cos") -> Schedule:
    """The 1cycle policy (Smith & Topin 2017, "Super-Convergence", arXiv 1708.07120), exactly as
    PyTorch's ``OneCycleLR`` with ``three_phase=False``.

    ``initial_lr = max_lr / div_factor``, ``min_lr = initial_lr / final_div_factor``. Phase 1 anneals
    initial_lr -> max_lr over steps [0, e1], phase 2 max_lr -> min_lr over [e1, e2], where
    ``e1 = float(pct_start * total_steps) - 1`` and ``e2 = total_steps - 1``. Within a phase from ``a`` to
    ``b`` with ``pct = (t - phase_start) / (phase_end - phase_start)``:

    * ``"cos"``:    ``lr = b + (a - b) / 2 * (cos(pi * pct) + 1)``
    * ``"linear"``: ``lr = (b - a) * pct + a``

    Steps past ``total_steps - 1`` hold the final value (PyTorch raises there).
    """
    initial_lr = max_lr / div_factor
    min_lr = initial_lr / final_div_factor
    return _one_cycle_two_phase(total_steps, pct_start, initial_lr, max_lr, min_lr, anneal)


def one_cycle_momentum(total_steps: int, pct_start: float = 0.3, base_momentum: float = 0.85,
                       max_momentum: float = 0.95, anneal: str = "cos") -> Schedule:
    """The momentum half of the 1cycle policy (Smith & Topin 2017, arXiv 1708.07120; PyTorch OneCycleLR
    with ``cycle_momentum=True``): cycled inversely to the LR, ``max_momentum`` at step 0,
    ``base_momentum`` at the LR peak ``e1 = float(pct_start * total_steps) - 1``, back to
    ``max_momentum`` at ``total_steps - 1``, with the same phases and anneal formulas as ``one_cycle``.
    """
    return _one_cycle_two_phase(total_steps, pct_start, max_momentum, base_momentum, max_momentum, anneal)


def slanted_triangular(total_steps: int, max_lr: float, cut_frac: float = 0.1,
                       ratio: float = 32) -> Schedule:
    """Slanted triangular learning rate (Howard & Ruder 2018, ULMFiT, arXiv 1801.06146, eq. 3).

    For ``T = total_steps``::

        cut = floor(T * cut_frac)
        p   = t / cut                                      if t < cut
              1 - (t - cut) / (cut * (1 / cut_frac - 1))   otherwise
        lr  = max_lr * (1 + p * (ratio - 1)) / ratio

    So lr = max_lr / ratio at t = 0 and max_lr at t = cut: two linear pieces (``optax.linear_schedule``
    joined at ``cut``). One deviation: ``p`` is clipped at 0. The formula reaches p = 0 at
    ``t = cut / cut_frac`` (= T when T * cut_frac is whole) and would go below ``max_lr / ratio`` (even
    negative) after it, which happens before T when T * cut_frac is fractional; the clip holds
    ``max_lr / ratio`` instead (the second linear piece holds its end).
    """
    if not 0.0 < cut_frac < 1.0:
        raise ValueError(f"slanted_triangular: cut_frac must be in (0, 1), got {cut_frac}")
    cut = math.floor(total_steps * cut_frac)
    if cut < 1:
        raise ValueError(f"slanted_triangular: floor(total_steps * cut_frac) must be >= 1, got {cut}")
    floor = max_lr / ratio
    return _on_host(optax.join_schedules(
        [optax.linear_schedule(floor, max_lr, cut),
         optax.linear_schedule(max_lr, floor, cut * (1.0 / cut_frac - 1.0))], [cut]))


def cosine_restarts(lr: float, first_period: float, period_mult: float = 1.0, peak_decay: float = 1.0,
                    alpha: float = 0.0) -> Schedule:
    """Cosine annealing with warm restarts (Loshchilov & Hutter 2017, SGDR, arXiv 1608.03983, eq. 5).

    Period ``i`` (i = 0, 1, ...) has length ``P_i = first_period * period_mult^i`` (the paper's T_i with
    T_mult = period_mult) and starts at ``S_i = sum_{j<i} P_j``; its peak is ``peak_i = lr * peak_decay^i``.
    Within it, with ``t_cur = t - S_i``::

        lr(t) = peak_i * (alpha + (1 - alpha) * (1 + cos(pi * t_cur / P_i)) / 2)

    i.e. the paper's ``eta_min + (eta_max - eta_min)(1 + cos(pi T_cur / T_i)) / 2`` with
    ``eta_max = peak_i``, ``eta_min = alpha * peak_i``. At each restart ``t = S_i`` the value is exactly
    ``peak_i``; just before it, about ``alpha * peak_{i-1}``.

    The cosine is optax's (``cosine_decay_schedule`` over one unit, at ``t_cur / P_i``). The periods are
    enumerated up to the largest step asked for and each step's period found by binary search:
    ``optax.sgdr_schedule`` joins one schedule per period and evaluates every one at every step, which
    costs periods x steps (10^12 for the 10^6-step validation run of a 1-step period). ``first_period`` must be >= 1 (a period shorter than
    a step means nothing for a per-step schedule).
    """
    if first_period < 1:
        raise ValueError(f"cosine_restarts: first_period must be >= 1, got {first_period}")
    if period_mult < 1.0:
        raise ValueError(f"cosine_restarts: period_mult must be >= 1, got {period_mult}")
    m = float(period_mult)
    anneal = _on_host(optax.cosine_decay_schedule(1.0, 1.0, alpha))

    def schedule(count):
        t = _steps(count)
        last = float(t.max(initial=0.0))
        # Enough periods to pass the last step: S_k = P_0 (m^k - 1) / (m - 1) (P_0 k when m = 1).
        k = last / first_period if m == 1.0 else math.log1p(last * (m - 1.0) / first_period) / math.log(m)
        lengths = first_period * m ** np.arange(math.floor(k) + 2)
        starts = np.concatenate([[0.0], np.cumsum(lengths)])
        # A start that should be a whole step but has rounded just above it (periods 125 * 2.2^i sum to
        # 1005.0000000000001 for 1005) is put back on it: else that step would end the previous period.
        whole = np.round(starts)
        starts = np.where(np.abs(starts - whole) < 1e-9 * np.maximum(whole, 1.0), whole, starts)
        i = np.minimum(np.searchsorted(starts, t, side="right") - 1, len(lengths) - 1)
        return lr * peak_decay ** i * anneal((t - starts[i]) / lengths[i])

    return schedule


def with_warmup(schedule: Schedule, warmup_steps: int, init_lr: float = 0.0) -> Schedule:
    """Linear warmup (Goyal et al. 2017, arXiv 1706.02677) in front of any schedule.

    Convention (that of ``optax.join_schedules``, which joins ``optax.linear_schedule`` to the schedule):
    the wrapped schedule starts after the warmup and is shifted by it. For ``W = warmup_steps``::

        lr(t) = init_lr + (schedule(0) - init_lr) * t / W    for t < W
        lr(t) = schedule(t - W)                                for t >= W

    so lr(0) = init_lr and lr(W) = schedule(0): the warmup ends at the wrapped schedule's starting value.
    With W = 0 the schedule is returned unchanged. Training for N steps in total, build the wrapped
    schedule over N - W steps.
    """
    if warmup_steps < 0:
        raise ValueError(f"with_warmup: warmup_steps must be >= 0, got {warmup_steps}")
    if warmup_steps == 0:
        return schedule
    ramp = optax.linear_schedule(init_lr, float(schedule(0)), warmup_steps)
    return _on_host(optax.join_schedules([ramp, schedule], [warmup_steps]))


def _hold_then(schedule: Schedule, delay: int) -> Schedule:
    """``schedule(0)`` for t < delay, then ``schedule(t - delay)`` (momentum during an LR warmup)."""
    if delay == 0:
        return schedule
    return lambda count: schedule(_steps(count) - delay)


# ----------------------------------------------------------------------------------------------------
# Config-facing API.
# ----------------------------------------------------------------------------------------------------


def default_config() -> ml_collections.ConfigDict:
    """The ``config.schedule`` block: every field any schedule reads, with its default.

    Fields used by a schedule other than the chosen ``name`` are ignored (string choices such as ``mode``
    and ``anneal`` are still checked, so a typo never passes silently).
    """
    return ml_collections.ConfigDict(dict(
        name="constant",            # one of NAMES
        lr=0.05,                    # peak / base LR of every schedule (cyclical: max_lr)
        # Linear warmup before any schedule: warmup_steps > 0 wins, else warmup_epochs * steps_per_epoch
        # (rounded). The main schedule then runs over total_steps - warmup steps.
        warmup_steps=0,
        warmup_epochs=0.0,
        warmup_init_lr=0.0,         # LR at step 0 of the warmup
        # cosine, cosine_restarts: final LR of a (each) cosine = alpha * peak.
        alpha=0.0,
        # step: each milestone < 1 is a fraction of the post-warmup length (post-warmup step
        # round(f * (total_steps - warmup))); each milestone >= 1 is an absolute (global) training step,
        # which must come after the warmup (one past the end never fires).
        milestones=(0.5, 0.75),
        factor=0.1,
        # cyclical (Smith 2017). base_lr None -> lr / 4 (Smith: base = max / 3 to 4).
        base_lr=config_dict.placeholder(float),
        step_size=0,                # half cycle in steps; > 0 wins, else step_size_epochs * steps_per_epoch
        step_size_epochs=2.0,       # Smith: 2 to 10 epochs
        mode="triangular",          # triangular | triangular2 | exp_range
        gamma=1.0,                  # exp_range: scale = gamma^t
        # one_cycle (Smith & Topin 2017; PyTorch OneCycleLR).
        pct_start=0.3,
        div_factor=25.0,
        final_div_factor=1e4,
        anneal="cos",               # cos | linear
        cycle_momentum=False,       # also cycle momentum (see build_momentum)
        base_momentum=0.85,
        max_momentum=0.95,
        # slanted_triangular (Howard & Ruder 2018).
        cut_frac=0.1,
        ratio=32.0,
        # cosine_restarts (SGDR). first_period > 0 wins, else first_period_epochs * steps_per_epoch.
        first_period=0,
        first_period_epochs=1.0,
        period_mult=1.0,
        peak_decay=1.0,
        # Path to a JSON {"base_lr": ..., "max_lr": ...} from an LR range test. When set, cyclical uses
        # (base_lr, max_lr) as its bounds, one_cycle max_lr and div_factor = max_lr / base_lr,
        # slanted_triangular max_lr and ratio = max_lr / base_lr (lr and base_lr are then ignored).
        range_test="",
    ))


_DEFAULTS = default_config()


def _get(cfg, key):
    """cfg[key], or its default where the block lacks the field (a config written before it existed)."""
    try:
        return cfg[key]
    except KeyError:
        return _DEFAULTS[key]


def _fail(key: str, value, allowed: str, why: str = "") -> ConfigError:
    return ConfigError(f"schedule.{key}", value, allowed, why)


def _number(cfg, key, allowed: str, ok: Callable[[float], bool]) -> float:
    value = _get(cfg, key)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) \
            or not ok(value):
        raise _fail(key, value, allowed)
    return value


def _resolve_steps(cfg, steps_key: str, epochs_key: str, steps_per_epoch: int, minimum: int) -> tuple[int, str]:
    """A length given in steps (wins when > 0) or in epochs; returns (steps, the key it came from)."""
    steps = _get(cfg, steps_key)
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 0:
        raise _fail(steps_key, steps, "an integer >= 0 (0: use " + epochs_key + ")")
    if steps > 0:
        return steps, steps_key
    epochs = _number(cfg, epochs_key, "a number >= 0", lambda v: v >= 0)
    resolved = int(round(epochs * steps_per_epoch))
    if resolved < minimum:
        raise _fail(epochs_key, epochs, f"a value giving >= {minimum} step(s) with {steps_per_epoch} "
                    f"steps per epoch (or set schedule.{steps_key} > 0)",
                    f"resolves to {resolved} step(s)")
    return resolved, epochs_key


def _read_range_test(path: str) -> tuple[float, float]:
    allowed = 'a readable JSON file {"base_lr": b, "max_lr": m} with 0 < b <= m, or "" for none'
    if not os.path.isfile(path):
        raise _fail("range_test", path, allowed, "no such file")
    try:
        with open(path) as f:
            data = json.load(f)
        base, top = data["base_lr"], data["max_lr"]
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise _fail("range_test", path, allowed, f"{type(e).__name__}: {e}") from None
    for v in (base, top):
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
            raise _fail("range_test", path, allowed, f"non-numeric bounds {base!r}, {top!r}")
    if not 0 < base <= top:
        raise _fail("range_test", path, allowed, f"bounds base_lr={base}, max_lr={top}")
    return float(base), float(top)


def _check_choices(cfg) -> str:
    name = _get(cfg, "name")
    if name not in NAMES:
        raise _fail("name", name, ", ".join(NAMES))
    if _get(cfg, "mode") not in MODES:
        raise _fail("mode", _get(cfg, "mode"), ", ".join(MODES))
    if _get(cfg, "anneal") not in ANNEALS:
        raise _fail("anneal", _get(cfg, "anneal"), ", ".join(ANNEALS))
    return name


def _check_lengths(total_steps: int, steps_per_epoch: int) -> None:
    for arg, value in (("total_steps", total_steps), ("steps_per_epoch", steps_per_epoch)):
        if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
            raise ValueError(f"schedules.build: {arg} must be an integer >= 1, got {value!r}")


def _warmup(cfg, total_steps: int, steps_per_epoch: int) -> int:
    warmup, key = _resolve_steps(cfg, "warmup_steps", "warmup_epochs", steps_per_epoch, minimum=0)
    if warmup >= total_steps:
        raise _fail(key, _get(cfg, key), f"fewer than total_steps={total_steps} warmup steps",
                    f"resolves to {warmup} warmup steps")
    return warmup


def _one_cycle_phases_ok(pct_start: float, main_steps: int) -> None:
    if not float(pct_start * main_steps) - 1.0 > 0.0:
        raise _fail("pct_start", pct_start, f"a value in (0, 1) with pct_start * {main_steps} > 1",
                    f"the warm-up phase over {main_steps} post-warmup steps would be empty")


def build(cfg, total_steps: int, steps_per_epoch: int) -> Schedule:
    """Validate the ``config.schedule`` block and build its schedule over ``total_steps`` training steps.

    Warmup (``warmup_steps``, else ``warmup_epochs * steps_per_epoch``) composes with any schedule through
    ``with_warmup``; the main schedule then runs over ``total_steps - warmup`` steps. Lengths given in
    epochs are converted with ``steps_per_epoch`` and rounded to whole steps. Raises ConfigError naming
    the ``schedule.*`` key on bad input, before anything is built.
    """
    _check_lengths(total_steps, steps_per_epoch)
    total_steps, steps_per_epoch = int(total_steps), int(steps_per_epoch)
    name = _check_choices(cfg)
    lr = _number(cfg, "lr", "a number > 0", lambda v: v > 0)
    warmup = _warmup(cfg, total_steps, steps_per_epoch)
    init_lr = _number(cfg, "warmup_init_lr", "a number >= 0", lambda v: v >= 0)
    main_steps = total_steps - warmup

    range_test = _get(cfg, "range_test")
    bounds = None
    if range_test:
        if name not in RANGE_TEST_NAMES:
            raise _fail("range_test", range_test,
                        f'"" unless schedule.name is one of {", ".join(RANGE_TEST_NAMES)}',
                        f"schedule {name!r} takes no range-test bounds")
        bounds = _read_range_test(range_test)

    if name == "constant":
        main = constant(lr)
    elif name == "cosine":
        alpha = _number(cfg, "alpha", "a number in [0, 1]", lambda v: 0 <= v <= 1)
        main = cosine(main_steps, lr, alpha)
    elif name == "step":
        main = step(lr, _milestones(cfg, warmup, total_steps),
                    _number(cfg, "factor", "a number in (0, 1]", lambda v: 0 < v <= 1))
    elif name == "cyclical":
        if bounds is not None:
            base_lr, max_lr = bounds
        else:
            max_lr = lr
            if _get(cfg, "base_lr") is None:
                base_lr = lr / 4.0  # Smith 2017: base = max / 3 to 4.
            else:
                base_lr = _number(cfg, "base_lr", f"None (lr / 4) or a number in (0, lr={lr}]",
                                  lambda v: 0 < v <= lr)
        step_size, _ = _resolve_steps(cfg, "step_size", "step_size_epochs", steps_per_epoch, minimum=1)
        mode = _get(cfg, "mode")
        gamma = _number(cfg, "gamma", "a number in (0, 1]", lambda v: 0 < v <= 1)
        main = cyclical(base_lr, max_lr, step_size, mode, gamma)
    elif name == "one_cycle":
        pct_start = _number(cfg, "pct_start", "a number in (0, 1)", lambda v: 0 < v < 1)
        _one_cycle_phases_ok(pct_start, main_steps)
        if bounds is not None:
            max_lr, div_factor = bounds[1], bounds[1] / bounds[0]
        else:
            max_lr = lr
            div_factor = _number(cfg, "div_factor", "a number >= 1", lambda v: v >= 1)
        final_div = _number(cfg, "final_div_factor", "a number > 0", lambda v: v > 0)
        main = one_cycle(main_steps, max_lr, pct_start, div_factor, final_div, _get(cfg, "anneal"))
    elif name == "slanted_triangular":
        cut_frac = _number(cfg, "cut_frac", "a number in (0, 1)", lambda v: 0 < v < 1)
        if math.floor(main_steps * cut_frac) < 1:
            raise _fail("cut_frac", cut_frac, f"a number in (0, 1) with floor({main_steps} * cut_frac) >= 1",
                        "the warm-up part would be empty")
        if bounds is not None:
            max_lr, ratio = bounds[1], bounds[1] / bounds[0]
        else:
            max_lr = lr
            ratio = _number(cfg, "ratio", "a number >= 1", lambda v: v >= 1)
        main = slanted_triangular(main_steps, max_lr, cut_frac, ratio)
    else:  # cosine_restarts
        first_period, _ = _resolve_steps(cfg, "first_period", "first_period_epochs", steps_per_epoch,
                                         minimum=1)
        main = cosine_restarts(
            lr, first_period,
            _number(cfg, "period_mult", "a number >= 1", lambda v: v >= 1),
            _number(cfg, "peak_decay", "a number in (0, 1]", lambda v: 0 < v <= 1),
            _number(cfg, "alpha", "a number in [0, 1]", lambda v: 0 <= v <= 1))
    return with_warmup(main, warmup, init_lr)


def _milestones(cfg, warmup: int, total_steps: int) -> tuple[int, ...]:
    """Milestones as post-warmup step indices (what ``step`` receives)."""
    raw = _get(cfg, "milestones")
    allowed = (f"strictly increasing numbers, each a fraction in (0, 1) of the post-warmup length or an "
               f"absolute step > warmup ({warmup})")
    if isinstance(raw, (int, float)):
        raw = (raw,)
    if not isinstance(raw, (tuple, list)):
        raise _fail("milestones", raw, allowed)
    main_steps = total_steps - warmup
    out = []
    for v in raw:
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) or v <= 0:
            raise _fail("milestones", tuple(raw), allowed, f"bad entry {v!r}")
        post = int(round(v * main_steps)) if v < 1 else int(round(v)) - warmup
        # An absolute milestone past the end is allowed (it never fires): config validation may build
        # with a stand-in run length.
        if post <= 0:
            raise _fail("milestones", tuple(raw), allowed,
                        f"{v!r} falls at post-warmup step {post}, not after the warmup")
        out.append(post)
    if any(b <= a for a, b in zip(out, out[1:])):
        raise _fail("milestones", tuple(raw), allowed,
                    f"not strictly increasing as post-warmup steps {tuple(out)}")
    return tuple(out)


def build_momentum(cfg, total_steps: int, steps_per_epoch: int) -> Schedule | None:
    """The one-cycle momentum schedule (``one_cycle_momentum``) when ``name == "one_cycle"`` and
    ``cycle_momentum`` is set, else None. It is aligned with ``build``'s LR schedule: during an LR warmup
    it holds ``max_momentum``, then cycles over the same ``total_steps - warmup`` steps.
    """
    _check_lengths(total_steps, steps_per_epoch)
    total_steps, steps_per_epoch = int(total_steps), int(steps_per_epoch)
    name = _check_choices(cfg)
    if name != "one_cycle" or not _get(cfg, "cycle_momentum"):
        return None
    warmup = _warmup(cfg, total_steps, steps_per_epoch)
    main_steps = total_steps - warmup
    pct_start = _number(cfg, "pct_start", "a number in (0, 1)", lambda v: 0 < v < 1)
    _one_cycle_phases_ok(pct_start, main_steps)
    max_m = _number(cfg, "max_momentum", "a number in [0, 1)", lambda v: 0 <= v < 1)
    base_m = _number(cfg, "base_momentum", f"a number in [0, max_momentum={max_m}]",
                     lambda v: 0 <= v <= max_m)
    return _hold_then(one_cycle_momentum(main_steps, pct_start, base_m, max_m, _get(cfg, "anneal")),
                      warmup)
