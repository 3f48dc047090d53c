"""ResNet-50 v2: pre-activation bottlenecks (He et al. 2016, arXiv 1603.05027), in the two layouts whose
weights are published.

- `resnetv2_50x1_bit` (Big Transfer, Kolesnikov et al. 2020, arXiv 1912.11370: BiT-M-R50x1 trained on
  ImageNet-21k, BiT-S-R50x1 on ImageNet): weight-standardised convolutions (Qiao et al. 2019, arXiv
  1903.10520: each output filter's kernel is shifted to zero mean and scaled to unit variance before the
  convolution) followed by GroupNorm with 32 groups (Wu & He 2018, arXiv 1803.08494) instead of BatchNorm, no
  conv biases; the stride of a stage sits in the 3x3 conv of its first block, whose shortcut is a strided
  1x1 projection of the pre-activated input.
- `resnet50_v2_keras` (keras.applications.ResNet50V2): BatchNorm (epsilon 1.001e-5); the stem conv, the
  projection and every block's last 1x1 conv have biases; the stride of a stage sits in its LAST block,
  whose shortcut is the input subsampled (a 1x1 max-pool of stride 2); the first block's projection has
  stride 1.

Both: 7x7 stride-2 stem conv, then the map zero-padded by one pixel and 3x3 stride-2 max-pooled (zeros, not
-inf: the stem has no activation before the pool, so the padding value matters), stages of 3, 4, 6, 3
bottlenecks of widths 64..512 (outputs x4), and a final normalisation + ReLU before the pooled classifier
(pre-activation blocks leave the last block's output un-normalised).

Depth units: the stem, then the four stages (5 units); the final normalisation + ReLU ends the last stage, so
`frozen_depth=4` (or `all`) keeps only the head trainable on normalised features.
"""
from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
from flax import nnx

from tl_research.models.base import ModelMeta, UnitModel, make_head
from tl_research.models.conv import Conv

STAGES = (3, 4, 6, 3)
WIDTHS = (64, 128, 256, 512)
WS_EPS = 1e-10  # big_transfer's bit_pytorch StdConv2d
GN = dict(num_groups=32, epsilon=1e-5)
_KERAS_BN = dict(epsilon=1.001e-5, momentum=0.99)


def _pad(k: int):
    return ((k // 2, k // 2), (k // 2, k // 2))


class StdConv(nnx.Module):
    """A bias-free convolution whose HWIO kernel is standardised per output filter at every call."""

    def __init__(self, c_in: int, c_out: int, k: int, stride: int = 1, *, rngs: nnx.Rngs):
        init = nnx.initializers.he_normal()
        self.kernel = nnx.Param(init(rngs.params(), (k, k, c_in, c_out), jnp.float32))
        self.stride, self.padding = stride, _pad(k)

    def __call__(self, x: jax.Array) -> jax.Array:
        w = self.kernel[...]
        mean = w.mean(axis=(0, 1, 2), keepdims=True)
        var = w.var(axis=(0, 1, 2), keepdims=True)
        w = (w - mean) / jnp.sqrt(var + WS_EPS)
        return jax.lax.conv_general_dilated(x, w.astype(x.dtype), (self.stride, self.stride), self.padding,
                                            dimension_numbers=("NHWC", "HWIO", "NHWC"))


def _conv(layout: str, c_in: int, c_out: int, k: int, stride: int = 1, *, bias: bool = False,
          rngs: nnx.Rngs):
    if layout == "bit":
        return StdConv(c_in, c_out, k, stride, rngs=rngs)
    return Conv(c_in, c_out, (k, k), strides=stride, padding=_pad(k), use_bias=bias, rngs=rngs)


def _norm(layout: str, c: int, *, rngs: nnx.Rngs):
    if layout == "bit":
        return nnx.GroupNorm(c, **GN, rngs=rngs)
    return nnx.BatchNorm(c, **_KERAS_BN, rngs=rngs)


class Stem(nnx.Module):
    def __init__(self, in_channels: int, layout: str, *, rngs: nnx.Rngs):
        self.conv = _conv(layout, in_channels, 64, 7, 2, bias=True, rngs=rngs)

    def __call__(self, x: jax.Array) -> jax.Array:
        x = jnp.pad(self.conv(x), ((0, 0), (1, 1), (1, 1), (0, 0)))
        return nnx.max_pool(x, (3, 3), strides=(2, 2), padding="VALID")


class PreActBottleneck(nnx.Module):
    """norm+ReLU (pre-activation) -> 1x1 -> norm+ReLU -> 3x3 (stride) -> norm+ReLU -> 1x1, plus the shortcut:
    a 1x1 projection of the pre-activated input (`proj`), the input subsampled (Keras: stride without
    projection), or the input itself."""

    def __init__(self, c_in: int, width: int, stride: int, project: bool, layout: str, *, rngs: nnx.Rngs):
        keras = layout == "keras"
        self.norm1 = _norm(layout, c_in, rngs=rngs)
        self.conv1 = _conv(layout, c_in, width, 1, rngs=rngs)
        self.norm2 = _norm(layout, width, rngs=rngs)
        self.conv2 = _conv(layout, width, width, 3, stride, rngs=rngs)
        self.norm3 = _norm(layout, width, rngs=rngs)
        self.conv3 = _conv(layout, width, 4 * width, 1, bias=keras, rngs=rngs)
        # Keras projects with stride 1 in a stage's first block and strides (subsampling) in its last.
        self.proj = _conv(layout, c_in, 4 * width, 1, 1 if keras else stride, bias=keras, rngs=rngs) \
            if project else None
        self.stride = stride

    def __call__(self, x: jax.Array) -> jax.Array:
        pre = nnx.relu(self.norm1(x))
        if self.proj is not None:
            shortcut = self.proj(pre)
        else:
            shortcut = x[:, ::self.stride, ::self.stride] if self.stride > 1 else x
        y = self.conv1(pre)
        y = self.conv2(nnx.relu(self.norm2(y)))
        y = self.conv3(nnx.relu(self.norm3(y)))
        return y + shortcut


class Stage(nnx.Module):
    """A stage's bottlenecks; the last stage ends with the final norm + ReLU (`final_norm`)."""

    def __init__(self, c_in: int, index: int, layout: str, *, rngs: nnx.Rngs):
        width, n = WIDTHS[index], STAGES[index]
        # BiT: stages 2-4 halve the map; Keras: stages 1-3 do (at their end), the last keeps it.
        stride = (1 if index == len(STAGES) - 1 else 2) if layout == "keras" else (1 if index == 0 else 2)
        blocks = []
        for b in range(n):
            if layout == "keras":  # the stride in the last block, the projection in the first
                s, project = (stride if b == n - 1 else 1), b == 0
            else:
                s, project = (stride if b == 0 else 1), b == 0
            blocks.append(PreActBottleneck(c_in, width, s, project, layout, rngs=rngs))
            c_in = 4 * width
        self.blocks = nnx.List(blocks)
        self.final_norm = _norm(layout, c_in, rngs=rngs) if index == len(STAGES) - 1 else None

    def __call__(self, x: jax.Array) -> jax.Array:
        for block in self.blocks:
            x = block(x)
        return x if self.final_norm is None else nnx.relu(self.final_norm(x))


def build(cfg, num_classes: int, in_channels: int, rngs: nnx.Rngs, *, layout: str,
          meta: ModelMeta | None = None) -> UnitModel:
    units: list[nnx.Module] = [Stem(in_channels, layout, rngs=rngs)]
    c_in = 64
    for i in range(len(STAGES)):
        units.append(Stage(c_in, i, layout, rngs=rngs))
        c_in = 4 * WIDTHS[i]
    head = make_head(cfg, c_in, num_classes, rngs=rngs)
    return UnitModel(units, head, meta)


META: dict[str, ModelMeta] = {
    # BiT: inputs in [-1, 1] (big_transfer's preprocessing, x / 127.5 - 1); upstream training at 224px.
    "resnetv2_50x1_bit": ModelMeta(
        input_size=(224, 224, 3), value_range=(0.0, 1.0), mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5),
        interpolation="bilinear", crop_pct=0.875, num_classes=21843, first_conv="units.0.conv",
        classifier="head.classifier",
        source="big_transfer BiT-M-R50x1.npz / BiT-S-R50x1.npz (https://storage.googleapis.com/bit_models/)",
        license="Apache-2.0"),
    # keras.applications.resnet_v2.preprocess_input ("tf" mode): x / 127.5 - 1.
    "resnet50_v2_keras": ModelMeta(
        input_size=(224, 224, 3), value_range=(0.0, 1.0), mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5),
        interpolation="bilinear", crop_pct=0.875, num_classes=1000, first_conv="units.0.conv",
        classifier="head.classifier",
        source="keras.applications.ResNet50V2 (resnet50v2_weights_tf_dim_ordering_tf_kernels[_notop].h5)",
        license="MIT (Keras)"),
}

BUILDERS = {
    "resnetv2_50x1_bit": functools.partial(build, layout="bit", meta=META["resnetv2_50x1_bit"]),
    "resnet50_v2_keras": functools.partial(build, layout="keras", meta=META["resnet50_v2_keras"]),
}
