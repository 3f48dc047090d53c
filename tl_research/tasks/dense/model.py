"""A backbone with a dense head: the depth units of a registry model, and a decoder (segmentation) or a
detection head in place of its classification head.

The head reads several units' outputs and the input size, so `DenseModel.__call__` hands it the per-unit
outputs instead of the last unit's alone. Everything else is the backbone's: the units keep their names
(`units.N...`) and the head is still called `head`, so freezing labels, strategies, checkpoints and
converters apply unchanged, and `frozen_depth = all` trains the head alone. Units after the deepest one the
head reads are not run (their parameters stay, untrained: VGG's fc6/fc7 under a decoder).
"""
from __future__ import annotations

from typing import Callable, Sequence

import jax
from flax import nnx

from tl_research import models
from tl_research.models import feature_maps
from tl_research.models.base import UnitModel, call_unit, set_unit_mode

# (model_cfg, unit map shapes, num_classes, rngs) -> head: decoders.build, centernet.build
HeadBuilder = Callable[..., nnx.Module]


class DenseModel(UnitModel):
    """units[0] -> ... -> units[d] -> head(every unit's output, input size), d = the deepest unit the head
    reads (`head.units_read`)."""

    def unit_outputs(self, x: jax.Array, *, train: bool = False, frozen_depth: int = 0,
                     update_stats: bool = True, drop_key: jax.Array | None = None,
                     frozen_units: frozenset = frozenset()) -> list[jax.Array]:
        """The outputs of units 0..d, with UnitModel.features' freezing: units below `frozen_depth` run in
        inference mode and the gradient stops at each of their outputs (a skip read from the frozen prefix
        must not open a backward path into it, as UnitModel.features' single stop at the end of the prefix
        would let it). `frozen_units` above the prefix run in inference mode too (UnitModel.features).
        `drop_key`: the training units' drop-path draws (models.base.call_unit)."""
        outs, depth = [], max(self.head.units_read) + 1
        for i in range(depth):
            set_unit_mode(self.units[i], train=train and i >= frozen_depth and i not in frozen_units,
                          update_stats=update_stats)
            x = call_unit(self.units[i], x, i, drop_key)
            if i < frozen_depth:
                x = jax.lax.stop_gradient(x)
            outs.append(x)
        return outs

    def __call__(self, x: jax.Array, *, train: bool = False, frozen_depth: int = 0,
                 update_stats: bool = True, dropout_key: jax.Array | None = None,
                 frozen_units: frozenset = frozenset()):
        outs = self.unit_outputs(x, train=train, frozen_depth=frozen_depth, update_stats=update_stats,
                                 drop_key=dropout_key, frozen_units=frozen_units)
        return self.head(outs, tuple(x.shape[1:3]), train=train)


def attach(backbone: UnitModel, head: nnx.Module) -> DenseModel:
    """The backbone's units (and metadata) under `head`; the backbone's classification head is dropped."""
    return DenseModel(list(backbone.units), head, backbone.meta)


def build(model_cfg, head_builder: HeadBuilder, num_classes: int, in_channels: int,
          image_shape: Sequence[int], seed: int = 0) -> DenseModel:
    """The registry backbone `model_cfg.name` (models.build) under `head_builder`'s head for inputs of
    `image_shape` (H, W, C). The head's settings are checked against the backbone's unit maps before anything
    is initialised; the head is initialised in one compiled call (eager initialisation would dispatch, and
    compile, every initialiser on its own)."""
    shapes = feature_maps.unit_map_shapes(models.abstract(model_cfg, num_classes, in_channels), image_shape)
    nnx.eval_shape(lambda: head_builder(model_cfg, shapes, num_classes, nnx.Rngs(0)))  # ConfigError, before work
    backbone = models.build(model_cfg, num_classes, in_channels, seed=seed)
    key = jax.random.fold_in(jax.random.key(seed), 1)  # not the backbone's key
    init = jax.jit(lambda k: nnx.split(head_builder(model_cfg, shapes, num_classes, nnx.Rngs(params=k))),
                   compiler_options={"xla_backend_optimization_level": 0})
    return attach(backbone, nnx.merge(*init(key)))


def abstract(model_cfg, head_builder: HeadBuilder, num_classes: int, in_channels: int,
             image_shape: Sequence[int]) -> DenseModel:
    """The dense model with shapes only (nothing allocated): for validating its config and counting units."""
    backbone = models.abstract(model_cfg, num_classes, in_channels)
    shapes = feature_maps.unit_map_shapes(backbone, image_shape)
    return attach(backbone, nnx.eval_shape(lambda: head_builder(model_cfg, shapes, num_classes, nnx.Rngs(0))))
