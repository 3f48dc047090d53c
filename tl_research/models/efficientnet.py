"""EfficientNet-B0 (Tan & Le 2019, arXiv 1905.11946).

Depth units: the stem (3x3 stride-2 conv + BN + SiLU), each of the 16 MBConv blocks (expand 1x1 -> depthwise
-> squeeze-and-excitation -> project 1x1, residual when shapes allow), and the top 1x1 conv to 1280 channels
(+ BN + SiLU): 18 units.

Two layouts, as published:
- `efficientnet_b0` (torchvision, whose weights are ported from timm; timm's own `efficientnet_b0` has the
  same numerics): symmetric padding k//2, BatchNorm epsilon 1e-5.
- `efficientnet_b0_keras` (keras.applications.EfficientNetB0): TensorFlow "SAME" padding, BatchNorm epsilon
  1e-3. The Keras model normalises its input inside the network (Rescaling + Normalization layers); here
  that normalisation is the checkpoint's metadata (mean/std), applied by the input pipeline.

Stochastic depth (drop-connect, 0.2 in the source training recipes) is not applied; in inference mode it is
the identity, so converted networks match exactly.
"""
from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
from flax import nnx

from tl_research.models.base import ModelMeta, UnitModel, make_head
from tl_research.models.conv import Conv

# (expand ratio, kernel, first stride, input channels, output channels, repeats): Table 1 of the paper.
B0 = ((1, 3, 1, 32, 16, 1), (6, 3, 2, 16, 24, 2), (6, 5, 2, 24, 40, 2), (6, 3, 2, 40, 80, 3),
      (6, 5, 1, 80, 112, 3), (6, 5, 2, 112, 192, 4), (6, 3, 1, 192, 320, 1))
_BN = {"torch": dict(epsilon=1e-5, momentum=0.9), "keras": dict(epsilon=1e-3, momentum=0.99)}


def _padding(layout: str, k: int):
    return "SAME" if layout == "keras" else ((k // 2, k // 2), (k // 2, k // 2))


class ConvBN(nnx.Module):
    """conv (no bias) -> BatchNorm [-> SiLU]; `groups == channels` makes it depthwise."""

    def __init__(self, c_in: int, c_out: int, k: int, stride: int, layout: str, *, groups: int = 1,
                 act: bool = True, rngs: nnx.Rngs):
        self.conv = Conv(c_in, c_out, (k, k), strides=stride, padding=_padding(layout, k),
                         feature_group_count=groups, use_bias=False, rngs=rngs)
        self.bn = nnx.BatchNorm(c_out, **_BN[layout], rngs=rngs)
        self.act = act

    def __call__(self, x: jax.Array) -> jax.Array:
        x = self.bn(self.conv(x))
        return nnx.silu(x) if self.act else x


class SqueezeExcite(nnx.Module):
    """Channel gates from the globally pooled map (Hu et al. 2018, arXiv 1709.01507)."""

    def __init__(self, channels: int, squeeze: int, *, rngs: nnx.Rngs):
        self.reduce = Conv(channels, squeeze, (1, 1), rngs=rngs)
        self.expand = Conv(squeeze, channels, (1, 1), rngs=rngs)

    def __call__(self, x: jax.Array) -> jax.Array:
        s = jnp.mean(x, axis=(1, 2), keepdims=True)
        return x * nnx.sigmoid(self.expand(nnx.silu(self.reduce(s))))


class MBConv(nnx.Module):
    def __init__(self, c_in: int, c_out: int, k: int, stride: int, expand: int, layout: str, *,
                 rngs: nnx.Rngs):
        hidden = c_in * expand
        self.expand = ConvBN(c_in, hidden, 1, 1, layout, rngs=rngs) if expand != 1 else None
        self.depthwise = ConvBN(hidden, hidden, k, stride, layout, groups=hidden, rngs=rngs)
        self.se = SqueezeExcite(hidden, max(1, c_in // 4), rngs=rngs)
        self.project = ConvBN(hidden, c_out, 1, 1, layout, act=False, rngs=rngs)
        self.residual = stride == 1 and c_in == c_out

    def __call__(self, x: jax.Array) -> jax.Array:
        y = x if self.expand is None else self.expand(x)
        y = self.project(self.se(self.depthwise(y)))
        return x + y if self.residual else y


def blocks(settings=B0):
    """(c_in, c_out, kernel, stride, expand) of every block, in order."""
    out = []
    for e, k, s, c_in, c_out, n in settings:
        for i in range(n):
            out.append((c_in if i == 0 else c_out, c_out, k, s if i == 0 else 1, e))
    return out


def build(cfg, num_classes: int, in_channels: int, rngs: nnx.Rngs, *, layout: str,
          meta: ModelMeta | None = None) -> UnitModel:
    units: list[nnx.Module] = [ConvBN(in_channels, 32, 3, 2, layout, rngs=rngs)]
    for c_in, c_out, k, s, e in blocks():
        units.append(MBConv(c_in, c_out, k, s, e, layout, rngs=rngs))
    units.append(ConvBN(B0[-1][4], 1280, 1, 1, layout, rngs=rngs))
    head = make_head(cfg, 1280, num_classes, rngs=rngs)
    return UnitModel(units, head, meta)


META: dict[str, ModelMeta] = {
    # Keras' published weights normalise inside the network: x/255, minus the ImageNet mean, divided by the
    # ImageNet std (see keras.applications.efficientnet). The Keras converter reads the mean and variance
    # stored in the file's Normalization layer and records them here; these are the values of the
    # published files.
    "efficientnet_b0_keras": ModelMeta(
        input_size=(224, 224, 3), value_range=(0.0, 1.0), mean=(0.485, 0.456, 0.406),
        std=(0.229, 0.224, 0.225), interpolation="bicubic", crop_pct=0.875, num_classes=1000,
        first_conv="units.0.conv", classifier="head.classifier",
        source="keras.applications.EfficientNetB0 (efficientnetb0[_notop].h5)",
        license="Apache-2.0 (TensorFlow TPU models)"),
    "efficientnet_b0": ModelMeta(
        input_size=(224, 224, 3), value_range=(0.0, 1.0), mean=(0.485, 0.456, 0.406),
        std=(0.229, 0.224, 0.225), interpolation="bicubic", crop_pct=0.875, num_classes=1000,
        first_conv="units.0.conv", classifier="head.classifier",
        source="torchvision efficientnet_b0 IMAGENET1K_V1 (ported from timm)",
        license="BSD-3-Clause (torchvision); Apache-2.0 (timm)"),
}

BUILDERS = {
    "efficientnet_b0_keras": functools.partial(build, layout="keras", meta=META["efficientnet_b0_keras"]),
    "efficientnet_b0": functools.partial(build, layout="torch", meta=META["efficientnet_b0"]),
}
