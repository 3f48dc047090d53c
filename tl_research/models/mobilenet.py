"""MobileNetV2 (Sandler et al. 2018, arXiv 1801.04381) at any width multiplier (`model.width_multiplier`:
Keras publishes alpha 0.35, 0.5, 0.75, 1.0, 1.3 and 1.4, torchvision 1.0).

Depth units: the stem (3x3 stride-2 conv + BN + ReLU6), each of the 17 inverted-residual blocks, and the
final 1x1 conv to 1280 channels (1280 x alpha above 1) (+ BN + ReLU6): 19 units. Channel counts at a
multiplier are rounded to multiples of 8 as both libraries do (`make_divisible`).

Two layouts, as published:
- `mobilenet_v2` (torchvision): symmetric padding k//2, BatchNorm epsilon 1e-5.
- `mobilenet_v2_keras` (keras.applications.MobileNetV2): TensorFlow "SAME" padding (a stride-2 conv on an
  even-sized input pads one pixel at the bottom/right only; Keras' ZeroPadding2D(correct_pad) + "valid" is
  the same thing), BatchNorm epsilon 1e-3.
"""
from __future__ import annotations

import functools

import jax
from flax import nnx

from tl_research.models.base import ModelMeta, UnitModel, make_head
from tl_research.models.conv import Conv

# (expansion t, output channels c, repeats n, first stride s): Table 2 of the paper.
SETTINGS = ((1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1), (6, 160, 3, 2),
            (6, 320, 1, 1))
PUBLISHED_WIDTHS = (0.35, 0.5, 0.75, 1.0, 1.3, 1.4)  # keras.applications.MobileNetV2's alpha values
_BN = {"torch": dict(epsilon=1e-5, momentum=0.9), "keras": dict(epsilon=1e-3, momentum=0.999)}


def make_divisible(v: float, divisor: int = 8) -> int:
    """The nearest multiple of `divisor` to v, never below 90% of v (the paper's reference code)."""
    new = max(divisor, int(v + divisor / 2) // divisor * divisor)
    return new + divisor if new < 0.9 * v else new


def _padding(layout: str, k: int):
    return "SAME" if layout == "keras" else ((k // 2, k // 2), (k // 2, k // 2))


def relu6(x: jax.Array) -> jax.Array:
    return jax.numpy.clip(x, 0.0, 6.0)


class ConvBN(nnx.Module):
    """conv (no bias) -> BatchNorm; `groups == channels` makes it depthwise."""

    def __init__(self, c_in: int, c_out: int, k: int, stride: int, layout: str, *, groups: int = 1,
                 rngs: nnx.Rngs):
        self.conv = Conv(c_in, c_out, (k, k), strides=stride, padding=_padding(layout, k),
                         feature_group_count=groups, use_bias=False, rngs=rngs)
        self.bn = nnx.BatchNorm(c_out, **_BN[layout], rngs=rngs)

    def __call__(self, x: jax.Array) -> jax.Array:
        return self.bn(self.conv(x))


class Stem(ConvBN):
    def __init__(self, in_channels: int, c_out: int, layout: str, *, rngs: nnx.Rngs):
        super().__init__(in_channels, c_out, 3, 2, layout, rngs=rngs)

    def __call__(self, x):
        return relu6(super().__call__(x))


class InvertedResidual(nnx.Module):
    def __init__(self, c_in: int, c_out: int, stride: int, expansion: int, layout: str, *, rngs: nnx.Rngs):
        hidden = c_in * expansion
        self.expand = ConvBN(c_in, hidden, 1, 1, layout, rngs=rngs) if expansion != 1 else None
        self.depthwise = ConvBN(hidden, hidden, 3, stride, layout, groups=hidden, rngs=rngs)
        self.project = ConvBN(hidden, c_out, 1, 1, layout, rngs=rngs)
        self.residual = stride == 1 and c_in == c_out

    def __call__(self, x):
        y = x if self.expand is None else relu6(self.expand(x))
        y = self.project(relu6(self.depthwise(y)))
        return x + y if self.residual else y


class Top(ConvBN):
    def __init__(self, c_in: int, c_out: int, layout: str, *, rngs: nnx.Rngs):
        super().__init__(c_in, c_out, 1, 1, layout, rngs=rngs)

    def __call__(self, x):
        return relu6(super().__call__(x))


def channels(width: float, layout: str) -> tuple[int, list[int], int]:
    """(stem, [each block's output], top) channels at width multiplier `width`. Keras truncates c * alpha
    to an integer before rounding (keras/src/applications/mobilenet_v2.py), torchvision does not; the two
    agree at every published width but are kept apart to follow each file exactly."""
    scale = (lambda c: int(c * width)) if layout == "keras" else (lambda c: c * width)
    blocks = [make_divisible(scale(c)) for _, c, n, _ in SETTINGS for _ in range(n)]
    return make_divisible(32 * width), blocks, make_divisible(1280 * max(1.0, width))


def build(cfg, num_classes: int, in_channels: int, rngs: nnx.Rngs, *, layout: str,
          meta: ModelMeta | None = None) -> UnitModel:
    from tl_research.core.errors import ConfigError
    width = float(cfg.get("width_multiplier", 1.0))
    if width <= 0:
        raise ConfigError("model.width_multiplier", width, "a positive multiplier, e.g. "
                          + ", ".join(map(str, PUBLISHED_WIDTHS)))
    stem, outs, top = channels(width, layout)
    units: list[nnx.Module] = [Stem(in_channels, stem, layout, rngs=rngs)]
    c_in, i = stem, 0
    for t, _, n, s in SETTINGS:
        for j in range(n):
            units.append(InvertedResidual(c_in, outs[i], s if j == 0 else 1, t, layout, rngs=rngs))
            c_in, i = outs[i], i + 1
    units.append(Top(c_in, top, layout, rngs=rngs))
    head = make_head(cfg, top, num_classes, rngs=rngs)
    return UnitModel(units, head, meta)


META: dict[str, ModelMeta] = {
    # keras.applications.mobilenet_v2.preprocess_input ("tf" mode): x / 127.5 - 1 on 0..255 pixels, which is
    # (x/255 - 0.5) / 0.5.
    "mobilenet_v2_keras": ModelMeta(
        input_size=(224, 224, 3), value_range=(0.0, 1.0), mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5),
        interpolation="bilinear", crop_pct=0.875, num_classes=1000, first_conv="units.0.conv",
        classifier="head.classifier",
        source="keras.applications.MobileNetV2 (mobilenet_v2_weights_tf_dim_ordering_tf_kernels_{alpha}_{size}[_no_top].h5)",
        license="Apache-2.0 (TensorFlow models)"),
    "mobilenet_v2": ModelMeta(
        input_size=(224, 224, 3), value_range=(0.0, 1.0), mean=(0.485, 0.456, 0.406),
        std=(0.229, 0.224, 0.225), interpolation="bilinear", crop_pct=0.875, num_classes=1000,
        first_conv="units.0.conv", classifier="head.classifier",
        source="torchvision mobilenet_v2 IMAGENET1K_V1", license="BSD-3-Clause (torchvision)"),
}

BUILDERS = {
    "mobilenet_v2_keras": functools.partial(build, layout="keras", meta=META["mobilenet_v2_keras"]),
    "mobilenet_v2": functools.partial(build, layout="torch", meta=META["mobilenet_v2"]),
}
