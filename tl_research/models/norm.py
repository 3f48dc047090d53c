"""BatchNorm layers built without drawing random keys, for networks with hundreds of them; and StochNorm, the
BatchNorm that normalises some channels by the moving statistics in training (strategy.regularizer=stochnorm).

`nnx.BatchNorm` takes a key from `rngs` for its scale and bias although their initialisers (ones, zeros) are
constant. Each draw advances the Rngs counter, and inside a trace (the abstract model every config check and
conversion builds, the jitted initialiser) JAX 0.10 answers the counter update's `sharding` lookup with an
error message that walks every equation traced so far: building is quadratic in the number of draws.
Building the layer without scale and bias and adding them as constant parameters leaves the same module (the
same parameter names, shapes, values and arithmetic) at a third of the draws for a conv + BN network:
DenseNet-121 builds abstractly in 1.3 s instead of 3.5 s on two CPU cores.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx


def batch_norm(num_features: int, *, use_scale: bool = True, rngs: nnx.Rngs, **kwargs) -> nnx.BatchNorm:
    """`nnx.BatchNorm(num_features, use_scale=use_scale, rngs=rngs, **kwargs)` with the default (ones / zeros)
    scale and bias initialisers, created without drawing from `rngs`."""
    bn = nnx.BatchNorm(num_features, use_scale=False, use_bias=False, rngs=rngs, **kwargs)
    bn.bias, bn.use_bias = nnx.Param(jnp.zeros((num_features,), jnp.float32)), True
    if use_scale:
        bn.scale, bn.use_scale = nnx.Param(jnp.ones((num_features,), jnp.float32)), True
    return bn


# ---------------------------------------------------------------------------------------------- StochNorm

# a unit's StochNorm draws come from fold_in(step key, STOCH_STREAM + unit index): far above the indices drop-path
# folds into the step key (models.base.call_unit: the unit index), so the two never draw from one key
STOCH_STREAM = 1 << 20


class StochNorm(nnx.BatchNorm):
    """BatchNorm whose training mode normalises each channel, drawn per step with probability `stoch_p`, by the
    batch's statistics, the others by the moving (running) statistics, which it updates as BatchNorm does
    (Kou et al., "Stochastic Normalization", NeurIPS 2020; TLlib's StochNorm, whose `p` is the same probability
    of the batch-statistics branch). Inference mode is plain BatchNorm. The same parameters and statistics as
    the BatchNorm it replaces (`to_stochnorm`), under the same paths. Channel c takes the batch's statistics
    where `stoch_draw[stoch_offset + c] < stoch_p`: `stoch_draw` holds uniform draws for every StochNorm
    channel of its unit, one draw per unit and step (`seed_stochnorm`, which models.base.call_unit calls)."""

    stoch_p: float = 0.5
    stoch_offset: int = 0
    stoch_draw = None

    def __call__(self, x, use_running_average=None, *, mask=None):
        running = self.use_running_average if use_running_average is None else use_running_average
        if running:
            return super().__call__(x, use_running_average=True, mask=mask)
        if self.stoch_draw is None:
            raise ValueError("StochNorm in training needs its unit's draws (seed_stochnorm)")
        moving = super().__call__(x, use_running_average=True, mask=mask)  # the statistics before this batch
        batch = super().__call__(x, use_running_average=False, mask=mask)  # updates the running statistics
        axes = sorted(a % x.ndim for a in ((self.axis,) if isinstance(self.axis, int) else self.axis))
        shape = tuple(x.shape[a] if a in axes else 1 for a in range(x.ndim))
        size = self.num_features
        take = self.stoch_draw[self.stoch_offset:self.stoch_offset + size] < self.stoch_p
        return jnp.where(take.reshape(shape), batch, moving)


def to_stochnorm(units, p: float) -> int:
    """Turns every BatchNorm inside `units` (a model's depth units) into a StochNorm with probability `p`, in
    place (the same objects, parameters and statistics); a unit holding any gets `stochastic_norm` = the number
    of their channels. Returns how many layers it turned."""
    count = 0
    for unit in units:
        channels = 0
        for _, module in nnx.iter_modules(unit):
            if type(module) is nnx.BatchNorm:
                object.__setattr__(module, "__class__", StochNorm)
                module.stoch_p, module.stoch_offset = float(p), channels
                channels, count = channels + module.num_features, count + 1
        if channels:
            unit.stochastic_norm = channels
    return count


def has_stochnorm(unit) -> bool:
    """Whether `unit` holds StochNorm layers (to_stochnorm marked it)."""
    return bool(getattr(unit, "stochastic_norm", 0))


def seed_stochnorm(unit, key, index: int) -> None:
    """This step's draws for the StochNorm layers of unit `index`, from the step's key `key`: one uniform per
    channel of all of them (one draw per unit, not per layer: each draw is a random-bits computation the step
    compiles)."""
    draw = jax.random.uniform(jax.random.fold_in(key, STOCH_STREAM + index), (unit.stochastic_norm,))
    unit.set_attributes(stoch_draw=draw, raise_if_not_found=False)
