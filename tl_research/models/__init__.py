"""Model registry: a name in `config.model.name` -> a family's builder.

A builder is `build(model_cfg, num_classes, in_channels, rngs) -> UnitModel` (see models/base.py). Families
register here with the metadata their weights expect.
"""
from __future__ import annotations

import functools
import json
from typing import Callable

import jax
import numpy as np
from flax import nnx
import ml_collections

from tl_research.models import efficientnet, mobilenet, resnet, resnet_cifar, vgg, vit
from tl_research.models import mobilenet_v3, resnet_v2
from tl_research.models import densenet, inception
from tl_research.core.errors import ConfigError
from tl_research.models.base import HIDDEN_INIT, DropPathBlock, ModelMeta, UnitModel

Builder = Callable[..., UnitModel]

_REGISTRY: dict[str, Builder] = {
    "resnet_cifar": resnet_cifar.build,
}
# ImageNet families, one registry name per published weight layout (see docs/pretrained.md).
for _family in (resnet, vgg, mobilenet, efficientnet, vit):
    _REGISTRY.update(_family.BUILDERS)
# What each name's published weights expect of their input (the converters return it with the weights).
META: dict[str, ModelMeta] = {name: meta for _family in (resnet, vgg, mobilenet, efficientnet, vit)
                              for name, meta in _family.META.items()}
# MobileNetV3, ResNetV2 / BiT (one registry name per published layout, as above), Inception-v3 and DenseNet-121
for _family in (mobilenet_v3, resnet_v2, inception, densenet):
    _REGISTRY.update(_family.BUILDERS)
    META.update(_family.META)


def register(name: str, builder: Builder) -> None:
    _REGISTRY[name] = builder


def names() -> list[str]:
    return sorted(_REGISTRY)


def default_config() -> ml_collections.ConfigDict:
    return ml_collections.ConfigDict(dict(
        name="resnet_cifar",
        stage_sizes=(1, 1, 1),  # resnet_cifar: residual blocks per stage
        width=16,  # resnet_cifar: channels of the first stage (doubled per stage)
        stem_stride=1,  # resnet_cifar: stride of the 3x3 stem (2 halves every map, for inputs above CIFAR's 32x32)
        # The head (models/base.py: Head), re-initialised on transfer and trained whole by frozen_depth=all:
        head="linear",  # linear: one dense classifier; mlp: dense + ReLU per head_hidden width, then it
        head_hidden=(256,),  # mlp: widths of the hidden dense layers
        pool="",  # "" = the family's own (avg; vit_*: the class token), or avg | max | flatten (vit_*: avg, max)
        flatten_grid=7,  # pool=flatten: the final map is average-pooled to this grid, then flattened
        dropout=0.0,  # head dropout, right before the classifier
        fc_units=4096,  # vgg*: width of fc6/fc7, kept as the last depth unit; 0 drops them ("no top")
        # (mobilenet_v3_*: 0 drops the pre-logits unit, absent from Keras' "no top" files; its width is fixed)
        width_multiplier=1.0,  # mobilenet_v2*: alpha (Keras publishes 0.35, 0.5, 0.75, 1.0, 1.3, 1.4)
        image_size=224,  # vit_*: input size the position embedding is laid out for (others resample it)
        # stochastic depth (resnet*, resnet_cifar, vit_*): in training, each residual branch of block i of n is
        # dropped per example with probability drop_path * i / (n - 1); 0 = off (models.base.drop_path_rates)
        drop_path=0.0,
    ))


def build(model_cfg, num_classes: int, in_channels: int, seed: int = 0) -> UnitModel:
    if model_cfg.name not in _REGISTRY:
        raise ConfigError("model.name", model_cfg.name, ", ".join(names()))
    graphdef, state = _initialiser(model_cfg.name, model_cfg.to_json(), num_classes, in_channels)(
        jax.random.key(seed))
    return _check_drop_path(model_cfg, nnx.merge(graphdef, state))


@functools.lru_cache(maxsize=32)
def _initialiser(name: str, cfg_json: str, num_classes: int, in_channels: int):
    """One compiled initialiser per architecture (the seed is an input), instead of one eager dispatch and
    compilation per parameter: runs of a sweep, and with the persistent cache later processes, reuse it."""
    cfg = ml_collections.ConfigDict(json.loads(cfg_json))
    builder = _REGISTRY[name]
    # Initialisation runs once: XLA's cheapest optimisation level compiles it several times faster.
    return jax.jit(lambda key: nnx.split(builder(cfg, num_classes, in_channels, nnx.Rngs(params=key))),
                   compiler_options={"xla_backend_optimization_level": 0})


def abstract(model_cfg, num_classes: int, in_channels: int) -> UnitModel:
    """The model with shapes only (no arrays allocated): for counting units and validating configs."""
    if model_cfg.name not in _REGISTRY:
        raise ConfigError("model.name", model_cfg.name, ", ".join(names()))
    builder = _REGISTRY[model_cfg.name]
    return _check_drop_path(model_cfg, nnx.eval_shape(
        lambda: builder(model_cfg, num_classes, in_channels, nnx.Rngs(params=0))))


def _check_drop_path(model_cfg, model: UnitModel) -> UnitModel:
    """ConfigError for model.drop_path > 0 on a family without residual blocks that drop paths."""
    rate = model_cfg.get("drop_path", 0.0)
    if rate and not any(isinstance(unit, DropPathBlock) for unit in model.units):
        raise ConfigError("model.drop_path", rate, "0.0 for this model",
                          why=f"{model_cfg.name} has no blocks that drop paths (resnet*, resnet_cifar and vit_* do)")
    return model


def zeros(model_cfg, num_classes: int, in_channels: int, seed: int = 0) -> UnitModel:
    """The model to load a checkpoint into: every array zero, allocated without running the units'
    initialisers, since transfer overwrites all of them but the head's. The linear head starts at zero
    anyway (base.Head); an mlp head's hidden layers get their random initialisation (from `seed`), since
    zero hidden layers behind a zero classifier would never receive a gradient."""
    graphdef, state = nnx.split(abstract(model_cfg, num_classes, in_channels))
    # device_put of host zeros: jnp.zeros would compile one broadcast per distinct shape (JAX 0.10), about
    # 70 compilations for DenseNet-121
    model = nnx.merge(graphdef, jax.tree.map(lambda s: jax.device_put(np.zeros(s.shape, s.dtype)), state))
    if len(model.head.hidden):
        rngs = nnx.Rngs(params=jax.random.fold_in(jax.random.key(seed), 1))
        for layer in model.head.hidden:
            layer.kernel.set_value(HIDDEN_INIT(rngs.params(), layer.kernel.shape, layer.kernel.dtype))
    return model


__all__ = ["ModelMeta", "UnitModel", "build", "abstract", "zeros", "register", "names", "default_config"]
