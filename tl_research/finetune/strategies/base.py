"""The strategy contract: a Phase decides per parameter what trains, a Strategy turns the config into phases,
and a registry maps `strategy.name` to the strategy object.

A parameter is named by its dotted path in the model's parameter tree, as the trainer and the checkpoints name
it (`units.3.conv1.kernel`, `units.0.bn.bias`, `head.classifier.bias`): every path lies under `units.<i>.` (a
depth unit) or `head.`. A strategy that adds parameters (adapters, prompts) adds them inside a unit or the head
in `extend`, so they are part of the same tree: labelled, checkpointed, resumed and exported like the rest.
One whose additions can be folded into the plain architecture's weights (LoRA, SSF) says how in `merge`, a pure
function over the flat params dict: with `strategy.merge` (the default) the run exports the merged plain model
under weights/ (any later run can start from it), while its checkpoints and best/ keep the tree it trained.

    Phase           steps [start, end); `trainable(path)` says whether a parameter trains in it (by default the
                    depth rule: the head and units >= frozen_depth); `lowest_trainable_unit(paths)` is the unit
                    below which the step needs no backward pass (the depth rule: frozen_depth); `frozen_units`
                    the units that run in inference mode; `labels(paths)` the optimizer's labels
    Context         what a strategy's phases may depend on besides the config: the model's number of units, the
                    resolved frozen depth, the run's length, steps per epoch, and the parameter paths (when known)
    Strategy        name; check(config); phases(config, ctx); schedule(config, ctx, phases) -> (lrs, momenta);
                    lr_multipliers(config, ctx); extend(model, config) -> model; optionally merge(params, config)
                    -> params (StrategyBase's: nothing to merge) and shortfall(config, ctx, phases) -> Shortfall
                    | None (StrategyBase's: None)
    StrategyBase    the defaults a strategy inherits: no extra checks, one schedule (config.schedule) over the
                    whole run, discriminative LR multipliers (strategy.lr_decay), no added parameters, nothing
                    to merge, no shortfall
    Shortfall       a plan whose phases end before the config's request is met (gradual unfreezing that the run
                    ends before it reaches frozen_depth): refused in config validation where the run's length is
                    known from the config, else warned in one line at setup and recorded in the run's result
    run_length      (total steps, steps per epoch) of a run from its config and training-set size: the one
                    formula config validation and the run's setup share
    register/get    the registry; `names()` lists it in registration order

A new strategy subclasses StrategyBase (or implements the protocol whole), overrides `phases` (and whatever else
it changes), and calls `register(MyStrategy())`: the config then accepts `strategy.name=<its name>`.
"""
from __future__ import annotations

import dataclasses
import math
from typing import Protocol, Sequence, runtime_checkable

import numpy as np

from tl_research.core.errors import ConfigError
from tl_research.finetune import freezing, schedules


@dataclasses.dataclass(frozen=True)
class Phase:
    """Steps [start, end) of a run and what trains in them. The four fields are what the run records (its
    resolved config lists `dataclasses.asdict` of each phase); a phase with another rule subclasses Phase and
    overrides `trainable` (its own fields, if any, must be JSON values)."""

    name: str
    start: int  # first step index (0-based) of the phase
    end: int  # one past its last step index
    frozen_depth: int  # the depth rule's k: units 0..k-1 frozen whole

    def trainable(self, path: str) -> bool:
        """Whether the parameter at dotted `path` trains in this phase. The depth rule: the head and the units
        >= frozen_depth."""
        return freezing.trains_at_depth(path, self.frozen_depth)

    def lowest_trainable_unit(self, paths: Sequence[str]) -> int:
        """The lowest depth unit with a parameter that trains: the step needs no backward pass below it, and
        units below it run in inference mode (the frozen-prefix feature cache starts there). The depth rule's
        is frozen_depth; a phase that overrides `trainable` gets it from its rule over `paths` (one past the
        deepest unit when only the head trains)."""
        if type(self).trainable is Phase.trainable:
            return self.frozen_depth
        return freezing.lowest_trainable_unit(paths, self.trainable)

    def frozen_units(self, paths: Sequence[str]) -> frozenset[int]:
        """The depth units none of whose parameters train: they run in inference mode (BatchNorm on its running
        statistics, never updated) wherever they lie. The depth rule's: units 0..frozen_depth-1."""
        if type(self).trainable is Phase.trainable:
            return frozenset(range(self.frozen_depth))
        return freezing.frozen_units(paths, self.trainable)

    def labels(self, paths: Sequence[str]) -> dict[str, str]:
        """path -> optimizer label ('frozen', 'unit_i', 'head', with '/no_decay'): freezing.labels_where with
        this phase's rule."""
        return freezing.labels_where(paths, self.trainable)


@dataclasses.dataclass
class Plan:
    phases: list[Phase]
    lrs: np.ndarray  # (total_steps,) learning rate of each step
    momenta: np.ndarray  # (total_steps,) momentum (SGD) or b1 (Adam) of each step
    lr_multipliers: dict[str, float]  # group ('unit_i' | 'head') -> LR factor
    weight_decay: float  # decoupled weight decay the optimizer applies
    l2sp: tuple[float, float] | None  # (alpha, beta) when L2-SP is on
    update_stats: bool
    # the regulariser term the train step computes (finetune.regularizers.Term; None: weight_decay or none)
    regularizer: object = None
    shortfall: "Shortfall | None" = None  # the phases end before the config's request is met (see Shortfall)

    def phase_index(self, step_index: int) -> int:
        """The phase of 0-based step index t (the step that makes `t + 1` steps done)."""
        for i, p in enumerate(self.phases):
            if step_index < p.end:
                return i
        return len(self.phases) - 1


@dataclasses.dataclass(frozen=True)
class Context:
    """What a strategy plans from besides the config."""

    num_units: int
    frozen_depth: int  # config.frozen_depth resolved against num_units
    total_steps: int
    steps_per_epoch: int
    paths: tuple[str, ...] = ()  # the model's dotted parameter paths (after `extend`); () where not known


@dataclasses.dataclass(frozen=True)
class Shortfall:
    """What a strategy's phases leave undone because the run ends first (gradual unfreezing that stops above
    frozen_depth): the key whose value causes it, what would be allowed, and one line saying why. Config
    validation raises `error()` where the run's length is known from the config; a plan that only the run's
    setup can make (phases that depend on the model's parameter paths) warns with `warning()` and the run's
    result records `frozen_depth_reached` and `plan_shortfall`."""

    key: str  # e.g. strategy.unfreeze_every_steps
    value: object
    allowed: str
    why: str  # one line: what the run reaches, and what the config asked for
    frozen_depth_reached: int  # the frozen depth of the run's final phase

    def error(self) -> ConfigError:
        return ConfigError(self.key, self.value, self.allowed, why=self.why)

    def warning(self) -> str:
        return f"config.{self.key}={self.value!r}: {self.why} (allowed: {self.allowed})"


def run_length(train_cfg, batch_size: int, train_examples: int) -> tuple[int, int]:
    """(total steps, steps per epoch) of a run: train.steps, or train.epochs of ceil(examples / batch) steps."""
    steps_per_epoch = max(1, math.ceil(train_examples / batch_size))
    return train_cfg.steps or math.ceil(train_cfg.epochs * steps_per_epoch), steps_per_epoch


@runtime_checkable
class Strategy(Protocol):
    """What a registered strategy provides (StrategyBase gives defaults for all but `name` and `phases`)."""

    name: str

    def check(self, config) -> None:
        """This strategy's own checks that need no model or data; raises ConfigError."""

    def phases(self, config, ctx: Context) -> list[Phase]:
        """Phases tiling steps [0, ctx.total_steps) in order; ConfigError where the config cannot be planned."""

    def schedule(self, config, ctx: Context, phases: list[Phase]) -> tuple[np.ndarray, np.ndarray]:
        """(lrs, momenta): float32 arrays of length ctx.total_steps."""

    def lr_multipliers(self, config, ctx: Context) -> dict[str, float]:
        """Optimizer group ('unit_i' | 'head') -> LR factor."""

    def extend(self, model, config):
        """The model with the parameters this strategy adds (initialised from config.seed, so a resumed run
        rebuilds the same tree); the model itself where it adds none."""


class StrategyBase:
    """Defaults for a strategy: subclass it, set `name`, implement `phases`."""

    name: str = ""

    def check(self, config) -> None:
        pass

    def phases(self, config, ctx: Context) -> list[Phase]:
        raise NotImplementedError

    def schedule(self, config, ctx: Context, phases: list[Phase]) -> tuple[np.ndarray, np.ndarray]:
        return schedule_arrays(config.schedule, ctx.total_steps, ctx.steps_per_epoch, default_momentum(config))

    def lr_multipliers(self, config, ctx: Context) -> dict[str, float]:
        """Discriminative fine-tuning (ULMFiT): unit i at lr / lr_decay ** (num_units - i), the head at lr."""
        decay = float(config.strategy.lr_decay)
        out = {f"unit_{i}": decay ** -(ctx.num_units - i) for i in range(ctx.num_units)}
        out["head"] = 1.0
        return out

    def extend(self, model, config):
        return model

    def shortfall(self, config, ctx: Context, phases: list[Phase]) -> Shortfall | None:
        """What `phases` leave undone of the config's request because the run ends first; None when nothing
        (a strategy whose phases cannot fall short)."""
        return None

    def merge(self, params: dict, config) -> dict:
        """The flat params ({dotted path: array}) of a model this strategy extended, with what `extend` added
        folded into the plain architecture's weights and the added paths gone: what the run exports under
        weights/ with strategy.merge. A pure function; the params themselves where nothing merges."""
        return params


# ---------------------------------------------------------------------------------------------- registry

_REGISTRY: dict[str, Strategy] = {}


def register(strategy: Strategy, *, replace: bool = False) -> Strategy:
    """Makes `strategy.name=<strategy.name>` a valid config value. A second strategy under a taken name is an
    error unless `replace`. Returns the strategy (so a module can write `X = register(MyStrategy())`)."""
    name = getattr(strategy, "name", None)
    if not isinstance(name, str) or not name.isidentifier():
        raise ValueError(f"a strategy's name must be an identifier, got {name!r}")
    if not isinstance(strategy, Strategy):
        missing = [m for m in ("check", "phases", "schedule", "lr_multipliers", "extend")
                   if not callable(getattr(strategy, m, None))]
        raise TypeError(f"strategy {name!r} lacks {', '.join(missing)} (subclass strategies.StrategyBase)")
    if name in _REGISTRY and _REGISTRY[name] is not strategy and not replace:
        raise ValueError(f"a strategy named {name!r} is already registered ({type(_REGISTRY[name]).__name__})")
    _REGISTRY[name] = strategy
    return strategy


def unregister(name: str) -> None:
    _REGISTRY.pop(name, None)


def names() -> tuple[str, ...]:
    return tuple(_REGISTRY)


def get(name: str) -> Strategy:
    """The registered strategy; ConfigError (strategy.name) listing the registered names otherwise."""
    if not isinstance(name, str) or name not in _REGISTRY:
        raise err("name", name, ", ".join(_REGISTRY))
    return _REGISTRY[name]


# ---------------------------------------------------------------------------------------------- helpers

def err(key, value, allowed, why="") -> ConfigError:
    return ConfigError(f"strategy.{key}", value, allowed, why)


def default_momentum(config) -> float:
    """The optimizer's momentum (SGD) or b1 (Adam): what a step gets where its schedule sets none."""
    opt = config.optimizer
    return float(opt.momentum if opt.name == "sgd" else opt.b1)


def span(cfg, steps_key: str, epochs_key: str, steps_per_epoch: int) -> int:
    """A span in steps from a pair of keys: `steps_key` > 0 wins, else `epochs_key` * steps per epoch."""
    steps = cfg[steps_key]
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 0:
        raise err(steps_key, steps, f"an integer >= 0 (0: use strategy.{epochs_key})")
    if steps:
        return steps
    epochs = cfg[epochs_key]
    if isinstance(epochs, bool) or not isinstance(epochs, (int, float)) or not epochs > 0:
        raise err(epochs_key, epochs, "a number > 0")
    return max(1, int(round(epochs * steps_per_epoch)))


def schedule_arrays(sched_cfg, steps: int, steps_per_epoch: int, momentum: float, key_prefix: str = ""):
    """(lrs, momenta) of `steps` steps under one schedule config; `key_prefix` renames its errors' keys
    (e.g. 'strategy.head_schedule.' for a schedule that is not config.schedule)."""
    try:
        lr_fn = schedules.build(sched_cfg, steps, steps_per_epoch)
        mom_fn = schedules.build_momentum(sched_cfg, steps, steps_per_epoch)
    except ConfigError as e:
        if key_prefix:  # errors of the head schedule name it, not config.schedule
            raise ConfigError(key_prefix + e.key.removeprefix("schedule."), e.value, e.allowed) from None
        raise
    # Schedules are host functions evaluated in float64; each step is fed its value as float32.
    t = np.arange(steps)
    lrs = np.asarray(lr_fn(t), np.float32)
    moms = np.asarray(mom_fn(t), np.float32) if mom_fn is not None else np.full(steps, momentum, np.float32)
    return lrs, moms


def check_tiling(name: str, phases: list[Phase], total_steps: int) -> None:
    """A strategy's phases must cover steps [0, total_steps) in order, back to back (a bug in the strategy,
    not in the config: ValueError)."""
    ok = bool(phases) and phases[0].start == 0 and phases[-1].end == total_steps and all(
        isinstance(p, Phase) and p.start <= p.end for p in phases) and all(
        a.end == b.start for a, b in zip(phases, phases[1:]))
    if not ok:
        spans = [(getattr(p, "start", None), getattr(p, "end", None)) for p in phases]
        raise ValueError(f"strategy {name!r} planned phases {spans}, which do not tile steps [0, {total_steps})")
