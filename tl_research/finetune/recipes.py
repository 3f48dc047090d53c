"""Optimisation recipes the train step applies around its optimizer (tl_research.run.steps): a moving average
of the weights (`Ema`) and sharpness-aware minimisation (`Sam`), their config checks (`check`) and their
pure pieces, which the tests check against hand-computed values.

Weight EMA (Polyak averaging; timm's ModelEmaV2 and, with `train.ema_warmup`, ModelEmaV3's decay warmup):
after update t of the optimizer, ema <- ema + (1 - d_t) (w - ema) for the parameters that train in any phase
of the run and for every BatchNorm statistic (timm averages the whole state dict, buffers included: its
default exclude_buffers=False); the EMA starts at the run's initial weights. d_t = train.ema_decay, or with
the warmup min(decay, 1 - t^(-2/3)) (timm's warmup_gamma 1, warmup_power 2/3; 0 at t = 1, so the first update
copies the weights). A parameter frozen in the current phase keeps its EMA exactly (the lerp form moves
nothing where w = ema), so frozen parameters need no EMA copy: the EMA weights are the raw ones there.

SAM (Foret et al. 2021, arXiv 2010.01412) with p = 2: the gradient g at w, the ascent to w + eps with eps =
rho g / ||g|| over the trainable parameters only (frozen ones are never perturbed), the gradient there, which
the base optimizer applies at w. Adaptive SAM (ASAM, Kwon et al. 2021, arXiv 2102.11600), as the reference
implementation (davda54/sam): eps = rho w^2 g / ||w g|| (elementwise |w| as the normalisation operator). The
norm is over the whole (global) batch's gradient: the paper's m-sharpness with m = the batch.
"""
from __future__ import annotations

import dataclasses
import math

import jax
import jax.numpy as jnp
import optax

from tl_research.core.errors import ConfigError

EMA_SELECT = ("raw", "ema")  # which weights select the best step, are tested and exported
WARMUP_POWER = 2.0 / 3.0  # timm ModelEmaV3's warmup_power (warmup_gamma 1)
SAM_EPS = 1e-12  # added to the gradient norm (the reference implementation's)


@dataclasses.dataclass(frozen=True)
class Ema:
    """A run's weight EMA: its decay, whether the decay warms up (timm ModelEmaV3) and the parameters it
    averages (those that train in some phase; BatchNorm statistics are all averaged). Hashable: part of a
    train step's spec."""

    decay: float
    warmup: bool = False
    names: tuple = ()

    def __post_init__(self):
        object.__setattr__(self, "names", tuple(sorted(self.names)))


@dataclasses.dataclass(frozen=True)
class Sam:
    """SAM's radius and whether it is adaptive (ASAM). Hashable: part of a train step's spec."""

    rho: float
    adaptive: bool = False


def ema_of(config, trainable_names) -> Ema | None:
    """The run's Ema (None: train.ema_decay = 0, no EMA), averaging `trainable_names`."""
    decay = float(config.train.get("ema_decay", 0.0))
    if decay == 0:
        return None
    return Ema(decay, bool(config.train.get("ema_warmup", False)), tuple(trainable_names))


def selects_ema(config) -> bool:
    """Whether the run selects, tests and exports its EMA weights (train.ema_select = 'ema' with an EMA on)."""
    return float(config.train.get("ema_decay", 0.0)) > 0 and config.train.get("ema_select", "raw") == "ema"


def sam_of(config) -> Sam | None:
    rho = float(config.optimizer.get("sam_rho", 0.0))
    return Sam(rho, bool(config.optimizer.get("sam_adaptive", False))) if rho > 0 else None


def ema_decay(t, decay: float, warmup: bool):
    """The decay of update t (1, 2, ...; traced or not): `decay`, or with the warmup min(decay, 1 - t^(-2/3))
    (timm ModelEmaV3.get_decay with update_after_step 0: its step - 1 is t - 1, so (1 + step) is t)."""
    if not warmup:
        return jnp.float32(decay)
    t = jnp.maximum(jnp.asarray(t, jnp.float32), 1.0)
    return jnp.minimum(jnp.float32(decay), 1.0 - t ** -WARMUP_POWER)


def _lerp(e, x, weight):
    """e + weight (x - e) in e's dtype: exactly e where x == e (a frozen parameter's EMA never drifts)."""
    return (e + weight * (x.astype(e.dtype) - e)).astype(e.dtype)


def ema_update(ema: dict, params: dict, stats: dict, decay) -> dict:
    """{"params", "batch_stats"} moved towards `params` (all the run's, the EMA's names read) and `stats` by
    1 - decay (timm's lerp)."""
    weight = 1.0 - jnp.asarray(decay, jnp.float32)
    return {"params": {k: _lerp(e, params[k], weight) for k, e in ema["params"].items()},
            "batch_stats": {k: _lerp(e, stats[k], weight) for k, e in ema["batch_stats"].items()}}


def ema_weights(params: dict, ema: dict) -> tuple[dict, dict]:
    """(params, batch stats) of the EMA model: the averaged parameters over the raw ones (the others never
    train, so their average is themselves), and the averaged statistics."""
    return {**params, **ema["params"]}, ema["batch_stats"]


def sam_perturbation(grads: dict, params: dict, rho: float, adaptive: bool = False) -> dict:
    """SAM's eps for the trainable `params` (a dict like `grads`): rho g / ||g|| (Foret et al. eq. 2, p = 2),
    or adaptive rho w^2 g / ||w g|| (ASAM as davda54/sam), norms over every tensor together, in float32."""
    g = {k: v.astype(jnp.float32) for k, v in grads.items()}
    if adaptive:
        scaled = {k: jnp.abs(params[k].astype(jnp.float32)) * v for k, v in g.items()}
        scale = rho / (optax.global_norm(scaled) + SAM_EPS)
        return {k: jnp.abs(params[k].astype(jnp.float32)) * v * scale for k, v in scaled.items()}
    scale = rho / (optax.global_norm(g) + SAM_EPS)
    return {k: v * scale for k, v in g.items()}


def sam_ascent(params: dict, grads: dict, sam: Sam) -> dict:
    """The trainable `params` at w + eps, where SAM takes its second gradient."""
    eps = sam_perturbation(grads, params, sam.rho, sam.adaptive)
    return {k: (v + eps[k]).astype(v.dtype) for k, v in params.items()}


def _number(value) -> bool:
    return not isinstance(value, bool) and isinstance(value, (int, float)) and math.isfinite(value)


def check(config) -> None:
    """ConfigError for a bad train.ema_decay / ema_warmup / ema_select or optimizer.sam_rho / sam_adaptive."""
    train, opt = config.train, config.optimizer
    decay = train.get("ema_decay", 0.0)
    if not _number(decay) or not 0 <= decay < 1:
        raise ConfigError("train.ema_decay", decay, "0 (no weight EMA) or a decay in (0, 1), e.g. 0.999 or 0.9999")
    for key, block in (("train.ema_warmup", train), ("optimizer.sam_adaptive", opt)):
        value = block.get(key.split(".")[1], False)
        if not isinstance(value, bool):
            raise ConfigError(key, value, "True or False")
    select = train.get("ema_select", "raw")
    if select not in EMA_SELECT:
        raise ConfigError("train.ema_select", select, " | ".join(EMA_SELECT),
                          why="which weights select the best step, are tested and exported")
    rho = opt.get("sam_rho", 0.0)
    if not _number(rho) or rho < 0:
        raise ConfigError("optimizer.sam_rho", rho, "0 (no SAM) or a radius > 0, e.g. 0.05 (SAM) or 0.5 (ASAM)")
