"""The interface every architecture family implements: ordered depth units and a replaceable head.

A network is `UnitModel(units, head)`. `units` is an ordered `nnx.List` (stem first, then each block) and
`head` pools, applies dropout and ends in one dense `classifier`. `frozen_depth = k` then means the same for
every family: units 0..k-1 are frozen; `k = len(units)` leaves only the classifier trainable (a linear probe).

Units are plain callables `unit(x) -> x`. Their mode (BatchNorm statistics, internal dropout) is set through
module attributes (`use_running_average`, `deterministic`) before each call, so a family needs no `train`
argument threaded through every layer.
"""
from __future__ import annotations

import dataclasses
from typing import Sequence

import jax
import jax.numpy as jnp
from flax import nnx


@dataclasses.dataclass(frozen=True)
class ModelMeta:
    """What a network (or a checkpoint of it) expects of its input and how its parameters are named.

    Mirrors the metadata timm attaches to every pretrained checkpoint, so that preprocessing follows the
    weights rather than the user's memory.
    """

    input_size: tuple[int, int, int] | None = None  # (height, width, channels); None = the dataset's own
    value_range: tuple[float, float] = (0.0, 1.0)  # range of pixel values before mean/std normalisation
    mean: tuple[float, ...] = (0.5,)
    std: tuple[float, ...] = (0.5,)
    interpolation: str = "bilinear"
    crop_pct: float = 1.0
    num_classes: int | None = None  # classes of the source task the weights were trained on
    first_conv: str = "units.0"
    classifier: str = "head.classifier"
    source: str = ""
    license: str = ""

    def to_json(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_json(cls, d: dict) -> "ModelMeta":
        fields = {f.name for f in dataclasses.fields(cls)}
        kw = {k: (tuple(v) if isinstance(v, list) else v) for k, v in d.items() if k in fields}
        return cls(**kw)


def global_pool(x: jax.Array, pool: str) -> jax.Array:
    if pool == "avg":  # mean over every axis between batch and features (spatial, or tokens)
        return x.mean(axis=tuple(range(1, x.ndim - 1))) if x.ndim > 2 else x
    if pool == "token":  # class token
        return x[:, 0]
    if pool == "none":
        return x
    raise ValueError(f"unknown pool {pool!r}; allowed: avg, token, none")


class Head(nnx.Module):
    """Global pooling -> dropout -> dense classifier. The part that is re-initialised on transfer.

    The classifier starts at zero (as in BiT): a new task begins from uniform predictions and the
    transferred features are not disturbed by a random projection in the first steps.
    """

    def __init__(self, in_features: int, num_classes: int, *, dropout: float = 0.0, pool: str = "avg",
                 rngs: nnx.Rngs):
        self.pool = pool
        self.dropout_rate = float(dropout)
        self.classifier = nnx.Linear(in_features, num_classes, kernel_init=nnx.initializers.zeros,
                                     rngs=rngs)

    def __call__(self, x: jax.Array, *, train: bool = False, dropout_key: jax.Array | None = None):
        x = global_pool(x, self.pool)
        if train and self.dropout_rate > 0.0:
            if dropout_key is None:
                raise ValueError("head dropout in training needs a dropout_key")
            keep = 1.0 - self.dropout_rate
            mask = jax.random.bernoulli(dropout_key, keep, x.shape)
            x = jnp.where(mask, x / keep, 0.0)
        return self.classifier(x)


def set_unit_mode(unit: nnx.Module, *, train: bool, update_stats: bool = True) -> None:
    """Training mode for one depth unit: BatchNorm uses batch statistics (and updates its running ones)
    only when the unit trains and the BatchNorm policy allows it; internal dropout runs only in training."""
    unit.set_attributes(use_running_average=not (train and update_stats), deterministic=not train,
                        raise_if_not_found=False)


class UnitModel(nnx.Module):
    """units[0] -> ... -> units[-1] -> head."""

    def __init__(self, units: Sequence[nnx.Module], head: Head, meta: ModelMeta | None = None):
        self.units = nnx.List(list(units))
        self.head = head
        self.meta = meta or ModelMeta()

    @property
    def num_units(self) -> int:
        return len(self.units)

    def features(self, x: jax.Array, *, train: bool = False, frozen_depth: int = 0,
                 update_stats: bool = True, return_units: bool = False):
        """Runs the depth units. Units below `frozen_depth` run in inference mode and the gradient stops at
        their output, so no backward pass goes through a frozen prefix."""
        outs = []
        for i, unit in enumerate(self.units):
            set_unit_mode(unit, train=train and i >= frozen_depth, update_stats=update_stats)
            x = unit(x)
            if i + 1 == frozen_depth:
                x = jax.lax.stop_gradient(x)
            if return_units:
                outs.append(x)
        return (x, outs) if return_units else x

    def __call__(self, x: jax.Array, *, train: bool = False, frozen_depth: int = 0,
                 update_stats: bool = True, dropout_key: jax.Array | None = None,
                 return_units: bool = False):
        feats = self.features(x, train=train, frozen_depth=frozen_depth, update_stats=update_stats,
                              return_units=return_units)
        if return_units:
            feats, outs = feats
            return self.head(feats, train=train, dropout_key=dropout_key), outs
        return self.head(feats, train=train, dropout_key=dropout_key)
