"""DenseNet-121 (Huang et al. 2017, arXiv 1608.06993), as torchvision and keras.applications build it.

Depth units (5), what `frozen_depth` counts:
- 0 the stem: 7x7 stride-2 conv (64) + BN + ReLU + 3x3 stride-2 max-pool;
- 1 dense block 1 (6 layers) + transition 1 (BN, ReLU, 1x1 conv halving the channels, 2x2 average pool);
- 2 dense block 2 (12 layers) + transition 2;
- 3 dense block 3 (24 layers) + transition 3;
- 4 dense block 4 (16 layers) + the final BN + ReLU (torchvision's norm5, Keras' `bn`), 1024 channels.
A dense layer is BN, ReLU, 1x1 conv (128 = 4 x growth) then BN, ReLU, 3x3 conv (growth 32), its output
concatenated after its input. A unit ends at the transition's pooling so that each frozen prefix ends on a
downsampled map.

Two layouts, as published, with the same arithmetic up to BatchNorm's epsilon: `densenet121` (torchvision,
epsilon 1e-5) and `densenet121_keras` (keras.applications.DenseNet121, epsilon 1.001e-5).
"""
from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
from flax import nnx

from tl_research.models.base import ModelMeta, UnitModel, make_head
from tl_research.models.conv import Conv
from tl_research.models.norm import batch_norm

BLOCKS = (6, 12, 24, 16)  # dense layers per block (DenseNet-121)
GROWTH, BOTTLENECK, STEM = 32, 4, 64
_BN = {"torch": dict(epsilon=1e-5, momentum=0.9), "keras": dict(epsilon=1.001e-5, momentum=0.99)}


def _pad(k: int):
    return ((k // 2, k // 2), (k // 2, k // 2))


class Stem(nnx.Module):
    def __init__(self, in_channels: int, layout: str, *, rngs: nnx.Rngs):
        self.conv = Conv(in_channels, STEM, (7, 7), strides=2, padding=_pad(7), use_bias=False, rngs=rngs)
        self.bn = batch_norm(STEM, **_BN[layout], rngs=rngs)

    def __call__(self, x: jax.Array) -> jax.Array:
        x = nnx.relu(self.bn(self.conv(x)))
        # -inf padding; Keras pads with zeros, which is the same after a ReLU.
        return nnx.max_pool(x, (3, 3), strides=(2, 2), padding=_pad(3))


class DenseLayer(nnx.Module):
    def __init__(self, c_in: int, layout: str, *, rngs: nnx.Rngs):
        width = BOTTLENECK * GROWTH
        self.norm1 = batch_norm(c_in, **_BN[layout], rngs=rngs)
        self.conv1 = Conv(c_in, width, (1, 1), padding=0, use_bias=False, rngs=rngs)
        self.norm2 = batch_norm(width, **_BN[layout], rngs=rngs)
        self.conv2 = Conv(width, GROWTH, (3, 3), padding=_pad(3), use_bias=False, rngs=rngs)

    def __call__(self, x: jax.Array) -> jax.Array:
        y = self.conv1(nnx.relu(self.norm1(x)))
        y = self.conv2(nnx.relu(self.norm2(y)))
        return jnp.concatenate([x, y], axis=-1)


class Transition(nnx.Module):
    def __init__(self, c_in: int, layout: str, *, rngs: nnx.Rngs):
        self.norm = batch_norm(c_in, **_BN[layout], rngs=rngs)
        self.conv = Conv(c_in, c_in // 2, (1, 1), padding=0, use_bias=False, rngs=rngs)

    def __call__(self, x: jax.Array) -> jax.Array:
        x = self.conv(nnx.relu(self.norm(x)))
        return nnx.avg_pool(x, (2, 2), strides=(2, 2), padding="VALID")


class FinalNorm(nnx.Module):
    def __init__(self, c_in: int, layout: str, *, rngs: nnx.Rngs):
        self.norm = batch_norm(c_in, **_BN[layout], rngs=rngs)

    def __call__(self, x: jax.Array) -> jax.Array:
        return nnx.relu(self.norm(x))


class DenseStage(nnx.Module):
    """One depth unit: a dense block, then its transition (the last block: the final BN + ReLU)."""

    def __init__(self, c_in: int, n_layers: int, last: bool, layout: str, *, rngs: nnx.Rngs):
        self.layers = nnx.List([DenseLayer(c_in + i * GROWTH, layout, rngs=rngs) for i in range(n_layers)])
        c = c_in + n_layers * GROWTH
        self.transition = (FinalNorm if last else Transition)(c, layout, rngs=rngs)
        self.out_channels = c if last else c // 2

    def __call__(self, x: jax.Array) -> jax.Array:
        for layer in self.layers:
            x = layer(x)
        return self.transition(x)


def build(cfg, num_classes: int, in_channels: int, rngs: nnx.Rngs, *, layout: str,
          meta: ModelMeta | None = None) -> UnitModel:
    units: list[nnx.Module] = [Stem(in_channels, layout, rngs=rngs)]
    c = STEM
    for i, n in enumerate(BLOCKS):
        units.append(DenseStage(c, n, i == len(BLOCKS) - 1, layout, rngs=rngs))
        c = units[-1].out_channels
    return UnitModel(units, make_head(cfg, c, num_classes, rngs=rngs), meta)


# Both are ImageNet mean/std on [0, 1] pixels: torchvision's transforms and Keras' "torch" preprocessing mode.
_IMAGENET = dict(input_size=(224, 224, 3), value_range=(0.0, 1.0), mean=(0.485, 0.456, 0.406),
                 std=(0.229, 0.224, 0.225), interpolation="bilinear", crop_pct=0.875, num_classes=1000,
                 first_conv="units.0.conv", classifier="head.classifier")
META: dict[str, ModelMeta] = {
    "densenet121": ModelMeta(**_IMAGENET, source="torchvision densenet121 IMAGENET1K_V1 (densenet121-a639ec97.pth)",
                             license="BSD-3-Clause (torchvision)"),
    "densenet121_keras": ModelMeta(
        **_IMAGENET,
        source="keras.applications.DenseNet121 (densenet121_weights_tf_dim_ordering_tf_kernels[_notop].h5)",
        license="BSD-3-Clause (the authors' weights, ported to Keras)"),
}

BUILDERS = {name: functools.partial(build, layout="keras" if name.endswith("_keras") else "torch",
                                    meta=META[name]) for name in META}
