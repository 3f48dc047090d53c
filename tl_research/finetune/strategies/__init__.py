"""Fine-tuning strategies: the `strategy` block of a config turned into a plan the one training loop follows.

A strategy never changes the loop. Each is an object registered under its `strategy.name` (the contract and the
registry: strategies/base.py; one module per strategy beside it). It decides, as pure functions of the config:

    phases        which parameters train during which steps (Phase.trainable(path); by default the depth
                  rule: the head and the units >= the phase's frozen depth)
                  fine_tune           one phase at `frozen_depth` (0 = full fine-tuning)
                  feature_extraction  one phase with every unit frozen (a new head on fixed features)
                  two_phase           head only, then units frozen_depth.. also train (LP-FT, Kumar et al.
                                      2022, arXiv 2202.10054); each phase has its own schedule
                  gradual_unfreezing  head only, then one more unit from the top every E epochs (or steps)
                                      down to `frozen_depth` (ULMFiT, Howard & Ruder 2018, arXiv 1801.06146)
                  bitfit              the units' biases and the head (Ben Zaken et al. 2021, arXiv 2106.10199)
                  norm_only           the normalisation scales and biases and the head
                  lora                low-rank factors beside the units' dense kernels (optionally their 1x1
                                      convolutions) and the head (Hu et al. 2021, arXiv 2106.09685)
                  ssf                 a per-channel scale and shift after every op of the units, and the head
                                      (Lian et al. 2022, arXiv 2210.08823)
                  adapter             bottleneck adapters added to the model (strategy.adapter: houlsby, in
                                      ViT blocks and after ResNet blocks, Houlsby et al. 2019, arXiv 1902.00751;
                                      parallel, AdaptFormer, Chen et al. 2022, arXiv 2205.13535) and the head,
                                      plus the normalisation layers for houlsby
                  vpt_shallow         prompt tokens at the first ViT block's input, and the head (VPT, Jia et
                                      al. 2022, arXiv 2203.12119; strategy.vpt)
                  vpt_deep            a block's own prompt tokens at every ViT block's input, and the head
                  a run with several phases selects its best validation step in the last (the result's
                  best_any_phase_* hold the whole run's); phases the run ends before (a Shortfall) are refused
                  when the config is validated (check_plan)
    what trains   on top of any strategy's phases: strategy.trainable_units (those units and the head) and
                  strategy.trainable (first-match (regex, train|freeze) rules over parameter paths), both
                  restricting what a phase trains (selection.py)
    LR per step   the schedule(s), precomputed for every step
    LR per unit   discriminative fine-tuning (ULMFiT): lr(unit i) = lr(unit i + 1) / lr_decay, the head at the
                  schedule's LR, so unit i gets lr / lr_decay ** (num_units - i)
    regulariser   decoupled weight decay (optimizer.weight_decay), L2-SP (Li et al. 2018, arXiv 1802.01483:
                  alpha/2 ||w - w0||^2 on transferred weights + beta/2 ||w_head||^2), none, or one of the
                  transfer literature's: delta, bss, stochnorm, co_tuning (tl_research.finetune.regularizers)
    BatchNorm     'update': trainable units use batch statistics and update their running ones (frozen units
                  never do); 'source': every unit keeps the statistics it started with

    adding one    subclass StrategyBase, implement `phases` (and `schedule`, `lr_multipliers`, `check`,
                  `extend` where it differs), `register(MyStrategy())`; inside the package: one module here
                  plus its import below. `extend(model, config)` adds a strategy's own parameters (adapters,
                  prompts) under a unit or the head, so they are checkpointed, resumed and exported as the rest;
                  `merge(params, config)` folds them into the plain architecture's weights where that is exact
                  (lora, ssf): with strategy.merge the run exports that plain model under weights/ (`merged`).
                  a run started from such weights loads them when its strategy adds the same ones (added.py).
"""
from __future__ import annotations

import math

import ml_collections

from tl_research.core.errors import ConfigError
from tl_research.finetune import regularizers, schedules
from tl_research.finetune.regularizers.l2_sp import l2_sp_penalty
from tl_research.finetune.strategies.base import (Context, Phase, Plan, Shortfall, Strategy, StrategyBase,
                                                  check_tiling, get, names, register, run_length, unregister)
# the built-in strategies, registered in this order (the order `strategy.name`'s error lists them in)
from tl_research.finetune.strategies import fine_tune, feature_extraction, two_phase, gradual_unfreezing  # noqa: F401
from tl_research.finetune.strategies import bitfit, norm_only  # noqa: F401
from tl_research.finetune.strategies import lora, ssf, adapter, vpt  # noqa: F401
from tl_research.finetune.strategies import added, selection

__all__ = ["BN_POLICIES", "Context", "NAMES", "Phase", "Plan", "REGULARIZERS", "Shortfall", "Strategy",
           "StrategyBase", "check", "check_plan", "default_config", "extend", "get", "l2_sp_penalty", "merged",
           "names", "plan", "register", "run_length", "unregister"]

REGULARIZERS = regularizers.NAMES  # weight_decay, l2_sp, none, delta, bss, stochnorm, co_tuning
BN_POLICIES = ("update", "source")


def __getattr__(attr: str):
    """`NAMES`: the registered strategy names, read when asked (a strategy registered later is in it)."""
    if attr == "NAMES":
        return names()
    raise AttributeError(f"module {__name__!r} has no attribute {attr!r}")


def default_config() -> ml_collections.ConfigDict:
    """The `config.strategy` block."""
    head_schedule = schedules.default_config()
    head_schedule.lr = 0.1  # the head alone takes a much larger LR than the fine-tuning phase
    return ml_collections.ConfigDict(dict(
        name="fine_tune",  # a registered strategy (names()): fine_tune | feature_extraction | two_phase | ...
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
        # weight_decay (optimizer.weight_decay) | l2_sp | none | delta | bss | stochnorm | co_tuning (the last
        # three keep optimizer.weight_decay beside them; finetune/regularizers/)
        regularizer="weight_decay",
        l2sp_alpha=0.01,  # L2-SP: pull towards the starting weights
        l2sp_beta=0.01,  # L2-SP: plain L2 on the new head
        # DELTA: alpha/2 * the attention-weighted squared distance between the chosen units' outputs and the
        # source network's (a mean over examples: TLlib's 0.01 summed over its batch of 48), beta/2 ||w_head||^2
        delta_alpha=0.48,
        delta_beta=0.01,
        delta_units=(),  # the units compared; () = each unit before a spatial downsampling, and the last
        delta_attention=True,  # the paper's supervised channel attention; False: every channel weighs 1
        delta_attention_examples=320,  # training examples the attention is measured on (TLlib: 10 x 32)
        bss_eta=0.001,  # BSS: eta * the k smallest squared singular values of the batch's features
        bss_k=1,
        stochnorm_p=0.5,  # StochNorm: per channel, the probability of the batch statistics (else the moving)
        co_tuning_lambda=2.3,  # Co-Tuning: weight of the source head's loss (TLlib's trade-off)
        # Co-Tuning's category relationship p(y_s | y_t): calibrated (the paper's: learnt on the training split,
        # chosen and calibrated on the held-out validation split) | direct (TLlib's: per-class mean source softmax)
        co_tuning_relationship="calibrated",
        co_tuning_source_scale=1.0,  # Co-Tuning: the source logits' scale before its softmax (1 / temperature)
        bn="update",  # BatchNorm statistics of trainable units: update | source
        # on top of the strategy's phases (selection.py): only these depth units (and the head) train, e.g.
        # (0,) the first block only; () = every unit the strategy trains
        trainable_units=(),
        # ordered (regex, "train" | "freeze") rules over dotted parameter paths, the first match winning and
        # every parameter matched, e.g. (("units\\.0\\.", "train"), ("head\\.", "train"), (".*", "freeze"));
        # () = none
        trainable=(),
        # lora: W + (alpha / rank) A B beside each dense kernel of the units whose module path (units.3.attn.query)
        # the regex `targets` matches (re.search; ".*": every one; "attn\\.(query|value)$": Hu et al.'s), and
        # beside the 1x1 convolutions it matches with convs=True
        lora=dict(rank=8, alpha=8.0, convs=False, targets=".*"),
        # a strategy that adds parameters it can fold into the plain architecture's weights (lora, ssf): the run's
        # weights/ hold the merged plain model (init=<run dir> then works for any run); False: the added
        # parameters as trained. Checkpoints and best/ always keep them unmerged.
        merge=True,
        # adapter (strategies/adapter.py): bottleneck adapters; what trains follows the placement's paper
        adapter=ml_collections.ConfigDict(dict(
            dim=8,  # the bottleneck width
            # houlsby (ViT blocks: after the attention and the MLP; ResNets: after each block) | parallel (ViTs)
            placement="houlsby",
            scale=0.0,  # the factor on the adapter's output; 0 = the paper's: 1 (houlsby), 0.1 (parallel)
        )),
        # vpt_shallow / vpt_deep (strategies/vpt.py): prompt tokens for the ViT family
        vpt=ml_collections.ConfigDict(dict(
            prompts=10,  # prompt tokens per prompted block (VPT: 1 .. 200)
            dropout=0.0,  # dropout on the prompts in training (VPT's code: MODEL.PROMPT.DROPOUT)
        )),
    ))


def _err(key, value, allowed, why=""):
    return ConfigError(f"strategy.{key}", value, allowed, why)


def check(config) -> None:
    """The checks that need no model or data: the keys every strategy shares, then the named strategy's own."""
    s = config.strategy
    strategy = get(s.name)  # ConfigError listing the registered names
    if s.regularizer not in regularizers.NAMES:
        raise _err("regularizer", s.regularizer, ", ".join(regularizers.NAMES))
    if s.bn not in BN_POLICIES:
        raise _err("bn", s.bn, ", ".join(BN_POLICIES))
    decay = s.lr_decay
    if isinstance(decay, bool) or not isinstance(decay, (int, float)) or not math.isfinite(decay) or decay < 1:
        raise _err("lr_decay", decay, "a number >= 1 (1: the same LR for every unit; ULMFiT: 2.6)")
    for key in ("l2sp_alpha", "l2sp_beta"):
        v = s[key]
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) or v < 0:
            raise _err(key, v, "a number >= 0")
    if not isinstance(s.merge, bool):
        raise _err("merge", s.merge, "True or False")
    regularizers.check(config)  # their keys; l2_sp, delta and co_tuning need transferred weights
    selection.check(config)
    strategy.check(config)


def plan(config, *, num_units: int, frozen_depth: int, total_steps: int, steps_per_epoch: int,
         paths=()) -> Plan:
    """The phases, per-step LRs and momenta, LR multipliers, regulariser and BN policy of one run. `paths`: the
    model's dotted parameter paths, for a strategy whose phases depend on them. After `check` (config.validate
    runs it): what raises here needs the run's length (e.g. a two_phase boundary past the last step)."""
    s = config.strategy
    strategy = get(s.name)
    ctx = Context(num_units, frozen_depth, total_steps, steps_per_epoch, tuple(paths))
    phases = strategy.phases(config, ctx)
    check_tiling(strategy.name, phases, total_steps)
    phases = selection.restrict(config, phases, num_units, paths)  # strategy.trainable_units / trainable
    lrs, moms = strategy.schedule(config, ctx, phases)
    multipliers = strategy.lr_multipliers(config, ctx)
    wd = float(config.optimizer.weight_decay) if regularizers.weight_decay_applies(s.regularizer) else 0.0
    l2sp = (float(s.l2sp_alpha), float(s.l2sp_beta)) if s.regularizer == "l2_sp" else None
    return Plan(phases, lrs, moms, multipliers, wd, l2sp, s.bn == "update", regularizers.term(config),
                shortfall=_shortfall(strategy, config, ctx, phases))


def _shortfall(strategy, config, ctx: Context, phases: list[Phase]) -> Shortfall | None:
    check = getattr(strategy, "shortfall", None)  # optional for a strategy that implements the protocol whole
    return check(config, ctx, phases) if check is not None else None


def check_plan(config, *, num_units: int, frozen_depth: int, total_steps: int, steps_per_epoch: int) -> None:
    """The plan's checks that need the run's length but not the model's parameter paths, for config validation:
    the strategy's phases (a two_phase boundary past the last step), their schedules over their real lengths
    (warmup longer than a phase) and a Shortfall (gradual unfreezing the run ends before frozen_depth), each a
    ConfigError naming its key."""
    strategy = get(config.strategy.name)
    ctx = Context(num_units, frozen_depth, total_steps, steps_per_epoch)
    phases = strategy.phases(config, ctx)
    check_tiling(strategy.name, phases, total_steps)
    strategy.schedule(config, ctx, phases)
    shortfall = _shortfall(strategy, config, ctx, phases)
    if shortfall is not None:
        raise shortfall.error()


def extend(model, config):
    """The model with the parameters the config's strategy adds (the model itself for the built-in ones)."""
    return get(config.strategy.name).extend(model, config)


def merged(config, weights: dict) -> dict:
    """The weights ({"params", "batch_stats"} flat dicts) a run exports under weights/: with strategy.merge, the
    params with its strategy's added parameters folded into the plain architecture's (the strategy's `merge`);
    `weights` itself where nothing merges."""
    merge = getattr(get(config.strategy.name), "merge", None)
    if not config.strategy.merge or merge is None:
        return weights
    params = merge(weights["params"], config)
    return weights if params is weights["params"] else {**weights, "params": params}

