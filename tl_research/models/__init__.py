"""Model registry: a name in `config.model.name` -> a family's builder.

A builder is `build(model_cfg, num_classes, in_channels, rngs) -> UnitModel` (see models/base.py). Families
register here with the metadata their weights expect.
"""
from __future__ import annotations

from typing import Callable

import jax
from flax import nnx
import ml_collections

from tl_research.models import resnet_cifar
from tl_research.models.base import ModelMeta, UnitModel

Builder = Callable[..., UnitModel]

_REGISTRY: dict[str, Builder] = {
    "resnet_cifar": resnet_cifar.build,
}


def register(name: str, builder: Builder) -> None:
    _REGISTRY[name] = builder


def names() -> list[str]:
    return sorted(_REGISTRY)


def default_config() -> ml_collections.ConfigDict:
    return ml_collections.ConfigDict(dict(
        name="resnet_cifar",
        stage_sizes=(1, 1, 1),  # resnet_cifar: residual blocks per stage
        width=16,  # resnet_cifar: channels of the first stage (doubled per stage)
        dropout=0.0,  # head dropout
    ))


def build(model_cfg, num_classes: int, in_channels: int, seed: int = 0) -> UnitModel:
    if model_cfg.name not in _REGISTRY:
        from tl_research.errors import ConfigError
        raise ConfigError("model.name", model_cfg.name, ", ".join(names()))
    return _REGISTRY[model_cfg.name](model_cfg, num_classes, in_channels, nnx.Rngs(params=seed))


def abstract(model_cfg, num_classes: int, in_channels: int) -> UnitModel:
    """The model with shapes only (no arrays allocated): for counting units and validating configs."""
    return nnx.eval_shape(lambda: build(model_cfg, num_classes, in_channels))


__all__ = ["ModelMeta", "UnitModel", "build", "abstract", "register", "names", "default_config"]
