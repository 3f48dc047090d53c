"""MobileNetV3 Small and Large (Howard et al. 2019, arXiv 1905.02244) at width 1.0: inverted residuals with
hard-swish and squeeze-and-excitation gated by a hard sigmoid.

Depth units, the stages as timm groups its blocks (`blocks.S`), so a frozen prefix ends where the resolution
or the block type changes:
- Large (9 units): stem (3x3 stride-2 conv to 16 + BN + hard-swish); 6 stages of 1, 2, 3, 4, 2, 3 inverted
  residuals (16, 24, 40, 80, 112, 160 channels); the last conv (1x1 to 960 + BN + hard-swish); pre-logits
  (global average pool, dense to 1280, hard-swish).
- Small (8 units): stem; 5 stages of 1, 2, 3, 2, 3 blocks (16, 24, 40, 48, 96 channels); the last conv (1x1 to
  576); pre-logits (dense to 1024).
`model.fc_units=0` drops the pre-logits unit (Keras' "no top" files lack it); the head then pools the last
conv's map.

Three layouts, as published:
- `mobilenet_v3_{small,large}` (torchvision): symmetric padding k//2, BatchNorm epsilon 1e-3.
- `mobilenet_v3_{small,large}_timm` (timm `mobilenetv3_{small,large}_100`): the same network with BatchNorm
  epsilon 1e-5, which no change of the statistics can turn into 1e-3 exactly, hence its own name.
- `mobilenet_v3_{small,large}_keras` (keras.applications.MobileNetV3Small/Large): TensorFlow "SAME" padding
  (ZeroPadding2D(correct_pad) + "valid" before a stride-2 depthwise conv is the same), epsilon 1e-3; Keras
  rescales its input inside the model (Rescaling(1/127.5, offset=-1), include_preprocessing): that is the
  metadata's mean/std 0.5 here.
Dropout before the classifier (0.2 in all three) is the head's `model.dropout`.
"""
from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
from flax import nnx

from tl_research.models.base import POOLS, ModelMeta, UnitModel, make_head
from tl_research.models.conv import Conv

# Per stage, its blocks as (kernel, expanded channels, output channels, squeeze-excite, hard-swish, stride):
# torchvision's _mobilenet_v3_conf at width 1.0, grouped into timm's stages.
LARGE = (
    ((3, 16, 16, False, False, 1),),
    ((3, 64, 24, False, False, 2), (3, 72, 24, False, False, 1)),
    ((5, 72, 40, True, False, 2), (5, 120, 40, True, False, 1), (5, 120, 40, True, False, 1)),
    ((3, 240, 80, False, True, 2), (3, 200, 80, False, True, 1), (3, 184, 80, False, True, 1),
     (3, 184, 80, False, True, 1)),
    ((3, 480, 112, True, True, 1), (3, 672, 112, True, True, 1)),
    ((5, 672, 160, True, True, 2), (5, 960, 160, True, True, 1), (5, 960, 160, True, True, 1)),
)
SMALL = (
    ((3, 16, 16, True, False, 2),),
    ((3, 72, 24, False, False, 2), (3, 88, 24, False, False, 1)),
    ((5, 96, 40, True, True, 2), (5, 240, 40, True, True, 1), (5, 240, 40, True, True, 1)),
    ((5, 120, 48, True, True, 1), (5, 144, 48, True, True, 1)),
    ((5, 288, 96, True, True, 2), (5, 576, 96, True, True, 1), (5, 576, 96, True, True, 1)),
)
VARIANTS = {"large": (LARGE, 1280), "small": (SMALL, 1024)}  # stages, pre-logits width
STEM = 16
_BN = {"torch": dict(epsilon=1e-3, momentum=0.99), "timm": dict(epsilon=1e-5, momentum=0.9),
       "keras": dict(epsilon=1e-3, momentum=0.999)}


def make_divisible(v: float, divisor: int = 8) -> int:
    """The nearest multiple of `divisor` to v, never below 90% of v (the paper's reference code)."""
    new = max(divisor, int(v + divisor / 2) // divisor * divisor)
    return new + divisor if new < 0.9 * v else new


def hard_sigmoid(x: jax.Array) -> jax.Array:
    """relu6(x + 3) / 6, the piecewise-linear sigmoid of the paper (Section 5.2)."""
    return jnp.clip(x + 3.0, 0.0, 6.0) / 6.0


def hard_swish(x: jax.Array) -> jax.Array:
    return x * hard_sigmoid(x)


def _padding(layout: str, k: int):
    return "SAME" if layout == "keras" else ((k // 2, k // 2), (k // 2, k // 2))


class ConvBN(nnx.Module):
    """conv (no bias) -> BatchNorm [-> activation]; `groups == channels` makes it depthwise."""

    def __init__(self, c_in: int, c_out: int, k: int, stride: int, layout: str, *, groups: int = 1,
                 act=None, rngs: nnx.Rngs):
        self.conv = Conv(c_in, c_out, (k, k), strides=stride, padding=_padding(layout, k),
                         feature_group_count=groups, use_bias=False, rngs=rngs)
        self.bn = nnx.BatchNorm(c_out, **_BN[layout], rngs=rngs)
        self.act = act

    def __call__(self, x: jax.Array) -> jax.Array:
        x = self.bn(self.conv(x))
        return x if self.act is None else self.act(x)


class SqueezeExcite(nnx.Module):
    """Channel gates from the pooled map: 1x1 conv to make_divisible(C / 4), ReLU, 1x1 conv, hard sigmoid."""

    def __init__(self, channels: int, *, rngs: nnx.Rngs):
        squeeze = make_divisible(channels / 4)
        self.reduce = Conv(channels, squeeze, (1, 1), rngs=rngs)
        self.expand = Conv(squeeze, channels, (1, 1), rngs=rngs)

    def __call__(self, x: jax.Array) -> jax.Array:
        s = jnp.mean(x, axis=(1, 2), keepdims=True)
        return x * hard_sigmoid(self.expand(nnx.relu(self.reduce(s))))


class InvertedResidual(nnx.Module):
    def __init__(self, c_in: int, spec, layout: str, *, rngs: nnx.Rngs):
        k, hidden, c_out, se, hs, stride = spec
        act = hard_swish if hs else nnx.relu
        self.expand = ConvBN(c_in, hidden, 1, 1, layout, act=act, rngs=rngs) if hidden != c_in else None
        self.depthwise = ConvBN(hidden, hidden, k, stride, layout, groups=hidden, act=act, rngs=rngs)
        self.se = SqueezeExcite(hidden, rngs=rngs) if se else None
        self.project = ConvBN(hidden, c_out, 1, 1, layout, rngs=rngs)
        self.residual = stride == 1 and c_in == c_out

    def __call__(self, x: jax.Array) -> jax.Array:
        y = x if self.expand is None else self.expand(x)
        y = self.depthwise(y)
        y = y if self.se is None else self.se(y)
        y = self.project(y)
        return x + y if self.residual else y


class Stage(nnx.Module):
    def __init__(self, c_in: int, specs, layout: str, *, rngs: nnx.Rngs):
        blocks = []
        for spec in specs:
            blocks.append(InvertedResidual(c_in, spec, layout, rngs=rngs))
            c_in = spec[2]
        self.blocks = nnx.List(blocks)

    def __call__(self, x: jax.Array) -> jax.Array:
        for block in self.blocks:
            x = block(x)
        return x


class PreLogits(nnx.Module):
    """Global average pool -> dense -> hard-swish: the layer between the last conv and the classifier
    (torchvision's classifier.0, timm's conv_head, Keras' conv_2, the latter two 1x1 convs on the pooled map)."""

    def __init__(self, c_in: int, width: int, *, rngs: nnx.Rngs):
        self.dense = nnx.Linear(c_in, width, rngs=rngs)

    def __call__(self, x: jax.Array) -> jax.Array:
        return hard_swish(self.dense(x.mean(axis=(1, 2))))


def build(cfg, num_classes: int, in_channels: int, rngs: nnx.Rngs, *, variant: str, layout: str,
          meta: ModelMeta | None = None) -> UnitModel:
    stages, width = VARIANTS[variant]
    units: list[nnx.Module] = [ConvBN(in_channels, STEM, 3, 2, layout, act=hard_swish, rngs=rngs)]
    c_in = STEM
    for specs in stages:
        units.append(Stage(c_in, specs, layout, rngs=rngs))
        c_in = specs[-1][2]
    last = 6 * c_in
    units.append(ConvBN(c_in, last, 1, 1, layout, act=hard_swish, rngs=rngs))
    pre_logits = int(cfg.get("fc_units", 4096)) != 0
    if pre_logits:
        units.append(PreLogits(last, width, rngs=rngs))
    head = make_head(cfg, width if pre_logits else last, num_classes, rngs=rngs,
                     pools=() if pre_logits else POOLS)  # the pre-logits output is a vector: nothing to pool
    return UnitModel(units, head, meta)


def num_blocks(variant: str) -> list[int]:
    return [len(s) for s in VARIANTS[variant][0]]


_IMAGENET = dict(mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225))
_SOURCES = {
    "torch": ("torchvision mobilenet_v3_{v} IMAGENET1K_V1", "BSD-3-Clause (torchvision)", _IMAGENET, "bilinear"),
    "timm": ("timm mobilenetv3_{v}_100 (e.g. mobilenetv3_{v}_100.lamb_in1k)", "Apache-2.0 (timm)", _IMAGENET,
             "bicubic"),
    # keras.applications.MobileNetV3: Rescaling(1/127.5, offset=-1) of 0..255 pixels = (x/255 - 0.5) / 0.5.
    "keras": ("keras.applications.MobileNetV3{V} (weights_mobilenet_v3_{v}_224_1.0_float[_no_top_v2].h5)",
              "Apache-2.0 (TensorFlow models)", dict(mean=(0.5,) * 3, std=(0.5,) * 3), "bilinear"),
}
_SUFFIX = {"torch": "", "timm": "_timm", "keras": "_keras"}


def _meta(variant: str, layout: str) -> ModelMeta:
    source, license_, norm, interpolation = _SOURCES[layout]
    return ModelMeta(input_size=(224, 224, 3), value_range=(0.0, 1.0), **norm, interpolation=interpolation,
                     crop_pct=0.875, num_classes=1000, first_conv="units.0.conv", classifier="head.classifier",
                     source=source.format(v=variant, V=variant.capitalize()), license=license_)


NAMES = {f"mobilenet_v3_{v}{_SUFFIX[layout]}": (v, layout) for v in VARIANTS for layout in _SUFFIX}
META: dict[str, ModelMeta] = {name: _meta(v, layout) for name, (v, layout) in NAMES.items()}
BUILDERS = {name: functools.partial(build, variant=v, layout=layout, meta=META[name])
            for name, (v, layout) in NAMES.items()}
