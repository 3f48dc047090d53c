"""Inception-v3 (Szegedy et al. 2016, arXiv 1512.00567), as torchvision, timm and keras.applications build it.

Depth units (12), what `frozen_depth` counts:
- 0 the stem: Conv2d_1a_3x3 (stride 2), Conv2d_2a_3x3, Conv2d_2b_3x3, 3x3 stride-2 max-pool, Conv2d_3b_1x1,
  Conv2d_4a_3x3, 3x3 stride-2 max-pool (192 channels at stride 8);
- 1-3 Mixed_5b, Mixed_5c, Mixed_5d (InceptionA; Keras mixed0-2), 256, 288, 288 channels;
- 4 Mixed_6a (InceptionB, grid reduction to stride 16; mixed3), 768;
- 5-8 Mixed_6b ... Mixed_6e (InceptionC, factorised 7x7; mixed4-7), 768;
- 9 Mixed_7a (InceptionD, grid reduction to stride 32; mixed8), 1280;
- 10-11 Mixed_7b, Mixed_7c (InceptionE, expanded filter banks; mixed9-10), 2048.
The head average-pools the 2048-channel map. The auxiliary classifier (torchvision's `AuxLogits`, on
Mixed_6e) is a training-time loss only and not part of this network; converters set it aside by name.

Every conv is conv (no bias) -> BatchNorm (epsilon 1e-3) -> ReLU. Two layouts, as published:
- `inception_v3` (torchvision `inception_v3_google-0cc3c7bd.pth`, timm `inception_v3.tv_in1k`): BatchNorm
  with a scale, the 3x3 average pools of the branches count their zero padding (torch's default).
- `inception_v3_keras` (keras.applications.InceptionV3): BatchNorm without a scale (`scale=False`), the
  average pools ("same" padding) divide by the number of real pixels only.
Both pad "same" convs symmetrically (odd kernels at stride 1) and every strided conv or pool is unpadded, so
the maps have the same sizes in both. The smallest input is 75 pixels.
"""
from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
from flax import nnx

from tl_research.models.base import ModelMeta, UnitModel, make_head
from tl_research.models.conv import Conv
from tl_research.models.norm import batch_norm

_MOMENTUM = {"torch": 0.9, "keras": 0.99}  # Flax's convention: the weight of the old running value


class BasicConv(nnx.Module):
    """conv (no bias) -> BatchNorm -> ReLU; `same` pads k//2 on each side (stride 1, odd kernels)."""

    def __init__(self, c_in: int, c_out: int, k, layout: str, *, stride: int = 1, same: bool = False,
                 rngs: nnx.Rngs):
        kh, kw = (k, k) if isinstance(k, int) else k
        pad = ((kh // 2, kh // 2), (kw // 2, kw // 2)) if same else ((0, 0), (0, 0))
        self.conv = Conv(c_in, c_out, (kh, kw), strides=stride, padding=pad, use_bias=False, rngs=rngs)
        self.bn = batch_norm(c_out, epsilon=1e-3, momentum=_MOMENTUM[layout], use_scale=layout == "torch",
                             rngs=rngs)

    def __call__(self, x: jax.Array) -> jax.Array:
        return nnx.relu(self.bn(self.conv(x)))


def _avg_pool_3x3(x: jax.Array, layout: str) -> jax.Array:
    # torch's avg_pool2d(padding=1) divides by 9 at the border too; Keras' "same" pooling by the pixels inside.
    return nnx.avg_pool(x, (3, 3), strides=(1, 1), padding=((1, 1), (1, 1)), count_include_pad=layout == "torch")


def _max_pool_3x3_s2(x: jax.Array) -> jax.Array:
    return nnx.max_pool(x, (3, 3), strides=(2, 2), padding="VALID")


class Stem(nnx.Module):
    CONVS = ("conv2d_1a_3x3", "conv2d_2a_3x3", "conv2d_2b_3x3", "conv2d_3b_1x1", "conv2d_4a_3x3")

    def __init__(self, in_channels: int, layout: str, *, rngs: nnx.Rngs):
        self.conv2d_1a_3x3 = BasicConv(in_channels, 32, 3, layout, stride=2, rngs=rngs)
        self.conv2d_2a_3x3 = BasicConv(32, 32, 3, layout, rngs=rngs)
        self.conv2d_2b_3x3 = BasicConv(32, 64, 3, layout, same=True, rngs=rngs)
        self.conv2d_3b_1x1 = BasicConv(64, 80, 1, layout, rngs=rngs)
        self.conv2d_4a_3x3 = BasicConv(80, 192, 3, layout, rngs=rngs)

    def __call__(self, x):
        x = _max_pool_3x3_s2(self.conv2d_2b_3x3(self.conv2d_2a_3x3(self.conv2d_1a_3x3(x))))
        return _max_pool_3x3_s2(self.conv2d_4a_3x3(self.conv2d_3b_1x1(x)))


# Each block's convs in the order both libraries create them (torchvision's attribute order, the order of the
# conv2d_bn calls in keras.applications): the Keras table numbers its unnamed layers by it.

class InceptionA(nnx.Module):
    CONVS = ("branch1x1", "branch5x5_1", "branch5x5_2", "branch3x3dbl_1", "branch3x3dbl_2", "branch3x3dbl_3",
             "branch_pool")

    def __init__(self, c_in: int, pool_features: int, layout: str, *, rngs: nnx.Rngs):
        conv = functools.partial(BasicConv, layout=layout, same=True, rngs=rngs)
        self.layout = layout
        self.branch1x1 = conv(c_in, 64, 1)
        self.branch5x5_1, self.branch5x5_2 = conv(c_in, 48, 1), conv(48, 64, 5)
        self.branch3x3dbl_1 = conv(c_in, 64, 1)
        self.branch3x3dbl_2, self.branch3x3dbl_3 = conv(64, 96, 3), conv(96, 96, 3)
        self.branch_pool = conv(c_in, pool_features, 1)

    def __call__(self, x):
        return jnp.concatenate([
            self.branch1x1(x), self.branch5x5_2(self.branch5x5_1(x)),
            self.branch3x3dbl_3(self.branch3x3dbl_2(self.branch3x3dbl_1(x))),
            self.branch_pool(_avg_pool_3x3(x, self.layout))], axis=-1)


class InceptionB(nnx.Module):
    CONVS = ("branch3x3", "branch3x3dbl_1", "branch3x3dbl_2", "branch3x3dbl_3")

    def __init__(self, c_in: int, layout: str, *, rngs: nnx.Rngs):
        conv = functools.partial(BasicConv, layout=layout, rngs=rngs)
        self.branch3x3 = conv(c_in, 384, 3, stride=2)
        self.branch3x3dbl_1 = conv(c_in, 64, 1)
        self.branch3x3dbl_2 = conv(64, 96, 3, same=True)
        self.branch3x3dbl_3 = conv(96, 96, 3, stride=2)

    def __call__(self, x):
        return jnp.concatenate([
            self.branch3x3(x), self.branch3x3dbl_3(self.branch3x3dbl_2(self.branch3x3dbl_1(x))),
            _max_pool_3x3_s2(x)], axis=-1)


class InceptionC(nnx.Module):
    CONVS = ("branch1x1", "branch7x7_1", "branch7x7_2", "branch7x7_3", "branch7x7dbl_1", "branch7x7dbl_2",
             "branch7x7dbl_3", "branch7x7dbl_4", "branch7x7dbl_5", "branch_pool")

    def __init__(self, c_in: int, c7: int, layout: str, *, rngs: nnx.Rngs):
        conv = functools.partial(BasicConv, layout=layout, same=True, rngs=rngs)
        self.layout = layout
        self.branch1x1 = conv(c_in, 192, 1)
        self.branch7x7_1 = conv(c_in, c7, 1)
        self.branch7x7_2, self.branch7x7_3 = conv(c7, c7, (1, 7)), conv(c7, 192, (7, 1))
        self.branch7x7dbl_1 = conv(c_in, c7, 1)
        self.branch7x7dbl_2, self.branch7x7dbl_3 = conv(c7, c7, (7, 1)), conv(c7, c7, (1, 7))
        self.branch7x7dbl_4, self.branch7x7dbl_5 = conv(c7, c7, (7, 1)), conv(c7, 192, (1, 7))
        self.branch_pool = conv(c_in, 192, 1)

    def __call__(self, x):
        b7 = self.branch7x7_3(self.branch7x7_2(self.branch7x7_1(x)))
        d = self.branch7x7dbl_1(x)
        for layer in (self.branch7x7dbl_2, self.branch7x7dbl_3, self.branch7x7dbl_4, self.branch7x7dbl_5):
            d = layer(d)
        return jnp.concatenate([self.branch1x1(x), b7, d, self.branch_pool(_avg_pool_3x3(x, self.layout))],
                               axis=-1)


class InceptionD(nnx.Module):
    CONVS = ("branch3x3_1", "branch3x3_2", "branch7x7x3_1", "branch7x7x3_2", "branch7x7x3_3", "branch7x7x3_4")

    def __init__(self, c_in: int, layout: str, *, rngs: nnx.Rngs):
        conv = functools.partial(BasicConv, layout=layout, rngs=rngs)
        self.branch3x3_1, self.branch3x3_2 = conv(c_in, 192, 1), conv(192, 320, 3, stride=2)
        self.branch7x7x3_1 = conv(c_in, 192, 1)
        self.branch7x7x3_2 = conv(192, 192, (1, 7), same=True)
        self.branch7x7x3_3 = conv(192, 192, (7, 1), same=True)
        self.branch7x7x3_4 = conv(192, 192, 3, stride=2)

    def __call__(self, x):
        b7 = self.branch7x7x3_4(self.branch7x7x3_3(self.branch7x7x3_2(self.branch7x7x3_1(x))))
        return jnp.concatenate([self.branch3x3_2(self.branch3x3_1(x)), b7, _max_pool_3x3_s2(x)], axis=-1)


class InceptionE(nnx.Module):
    CONVS = ("branch1x1", "branch3x3_1", "branch3x3_2a", "branch3x3_2b", "branch3x3dbl_1", "branch3x3dbl_2",
             "branch3x3dbl_3a", "branch3x3dbl_3b", "branch_pool")

    def __init__(self, c_in: int, layout: str, *, rngs: nnx.Rngs):
        conv = functools.partial(BasicConv, layout=layout, same=True, rngs=rngs)
        self.layout = layout
        self.branch1x1 = conv(c_in, 320, 1)
        self.branch3x3_1 = conv(c_in, 384, 1)
        self.branch3x3_2a, self.branch3x3_2b = conv(384, 384, (1, 3)), conv(384, 384, (3, 1))
        self.branch3x3dbl_1, self.branch3x3dbl_2 = conv(c_in, 448, 1), conv(448, 384, 3)
        self.branch3x3dbl_3a, self.branch3x3dbl_3b = conv(384, 384, (1, 3)), conv(384, 384, (3, 1))
        self.branch_pool = conv(c_in, 192, 1)

    def __call__(self, x):
        b3 = self.branch3x3_1(x)
        d = self.branch3x3dbl_2(self.branch3x3dbl_1(x))
        return jnp.concatenate([
            self.branch1x1(x), self.branch3x3_2a(b3), self.branch3x3_2b(b3), self.branch3x3dbl_3a(d),
            self.branch3x3dbl_3b(d), self.branch_pool(_avg_pool_3x3(x, self.layout))], axis=-1)


# (torchvision / timm module name, block class, its arguments after the input channels, output channels)
MIXED = (("Mixed_5b", InceptionA, (32,), 256), ("Mixed_5c", InceptionA, (64,), 288),
         ("Mixed_5d", InceptionA, (64,), 288), ("Mixed_6a", InceptionB, (), 768),
         ("Mixed_6b", InceptionC, (128,), 768), ("Mixed_6c", InceptionC, (160,), 768),
         ("Mixed_6d", InceptionC, (160,), 768), ("Mixed_6e", InceptionC, (192,), 768),
         ("Mixed_7a", InceptionD, (), 1280), ("Mixed_7b", InceptionE, (), 2048), ("Mixed_7c", InceptionE, (), 2048))
STEM_CHANNELS = 192


def build(cfg, num_classes: int, in_channels: int, rngs: nnx.Rngs, *, layout: str,
          meta: ModelMeta | None = None) -> UnitModel:
    units: list[nnx.Module] = [Stem(in_channels, layout, rngs=rngs)]
    c_in = STEM_CHANNELS
    for _, block, args, c_out in MIXED:
        units.append(block(c_in, *args, layout, rngs=rngs))
        c_in = c_out
    return UnitModel(units, make_head(cfg, c_in, num_classes, rngs=rngs), meta)


# Both take pixels scaled to [-1, 1]: Keras' "tf" preprocessing (x / 127.5 - 1), and for torchvision the
# published weights' transform_input=True, which turns ImageNet-normalised input back into (x - 0.5) / 0.5
# before the first conv (the weights are Google's TensorFlow ones); timm's tv_in1k says 0.5 / 0.5 directly.
_HALF = dict(input_size=(299, 299, 3), value_range=(0.0, 1.0), mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5),
             crop_pct=0.875, num_classes=1000, first_conv="units.0.conv2d_1a_3x3.conv",
             classifier="head.classifier")
META: dict[str, ModelMeta] = {
    "inception_v3": ModelMeta(
        **_HALF, interpolation="bilinear",
        source="torchvision inception_v3 IMAGENET1K_V1 (inception_v3_google-0cc3c7bd.pth) / timm inception_v3.tv_in1k",
        license="Apache-2.0 (ported from TensorFlow's Inception-v3); torchvision code BSD-3-Clause"),
    "inception_v3_keras": ModelMeta(
        **_HALF, interpolation="bilinear",
        source="keras.applications.InceptionV3 (inception_v3_weights_tf_dim_ordering_tf_kernels[_notop].h5)",
        license="Apache-2.0 (TensorFlow models)"),
}

BUILDERS = {name: functools.partial(build, layout="keras" if name.endswith("_keras") else "torch",
                                    meta=META[name]) for name in META}
