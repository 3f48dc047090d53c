"""ImageNet ResNets (He et al. 2016, arXiv 1512.03385) in the two layouts whose weights are published.

- torchvision / timm layout (`resnet18` ... `resnet152`): no conv biases, the stride of a bottleneck sits in
  its 3x3 conv ("ResNet v1.5"), BatchNorm epsilon 1e-5.
- Keras layout (`resnet50_keras`, keras.applications.ResNet50): every conv has a bias, the stride sits in
  the first 1x1 conv of the bottleneck (the original Caffe model), BatchNorm epsilon 1.001e-5.

Depth units: the stem (7x7 conv + BN + ReLU + 3x3 max-pool), then every residual block in order, so
ResNet-50 has 1 + 16 = 17 units. Paddings are explicit so the numbers match both sources exactly (Flax's
"SAME" pads a stride-2 conv asymmetrically, torchvision symmetrically). `model.drop_path` drops each block's
residual branch in training (stochastic depth, linear over the blocks as in timm: models.base.drop_path_rates).
"""
from __future__ import annotations

import functools

import jax
from flax import nnx

from tl_research.models.base import DropPathBlock, ModelMeta, UnitModel, drop_path_rates, make_head
from tl_research.models.conv import Conv

# (block kind, blocks per stage)
DEPTHS = {
    18: ("basic", (2, 2, 2, 2)),
    34: ("basic", (3, 4, 6, 3)),
    50: ("bottleneck", (3, 4, 6, 3)),
    101: ("bottleneck", (3, 4, 23, 3)),
    152: ("bottleneck", (3, 8, 36, 3)),
}
# epsilon; momentum in Flax's convention (weight of the old running value): torch 0.1 -> 0.9, Keras 0.99.
_BN = {"torch": dict(epsilon=1e-5, momentum=0.9), "keras": dict(epsilon=1.001e-5, momentum=0.99)}


def _pad(k: int):
    return ((k // 2, k // 2), (k // 2, k // 2))


class Stem(nnx.Module):
    def __init__(self, in_channels: int, layout: str, *, rngs: nnx.Rngs):
        self.conv = Conv(in_channels, 64, (7, 7), strides=2, padding=_pad(7), use_bias=layout == "keras",
                         rngs=rngs)
        self.bn = nnx.BatchNorm(64, **_BN[layout], rngs=rngs)

    def __call__(self, x: jax.Array) -> jax.Array:
        x = nnx.relu(self.bn(self.conv(x)))
        # -inf padding; Keras pads with zeros, which is the same after a ReLU.
        return nnx.max_pool(x, (3, 3), strides=(2, 2), padding=_pad(3))


class BasicBlock(DropPathBlock):
    expansion = 1

    def __init__(self, in_channels: int, width: int, stride: int, layout: str, *, rngs: nnx.Rngs,
                 drop_path_rate: float = 0.0):
        self.drop_path_rate, self.deterministic = float(drop_path_rate), True
        out = width
        self.conv1 = Conv(in_channels, width, (3, 3), strides=stride, padding=_pad(3), use_bias=False,
                          rngs=rngs)
        self.bn1 = nnx.BatchNorm(width, **_BN[layout], rngs=rngs)
        self.conv2 = Conv(width, out, (3, 3), padding=_pad(3), use_bias=False, rngs=rngs)
        self.bn2 = nnx.BatchNorm(out, **_BN[layout], rngs=rngs)
        if stride != 1 or in_channels != out:
            self.proj = Conv(in_channels, out, (1, 1), strides=stride, padding=0, use_bias=False, rngs=rngs)
            self.proj_bn = nnx.BatchNorm(out, **_BN[layout], rngs=rngs)
        else:
            self.proj = self.proj_bn = None

    def __call__(self, x: jax.Array, drop_key: jax.Array | None = None) -> jax.Array:
        y = nnx.relu(self.bn1(self.conv1(x)))
        y = self.branch(self.bn2(self.conv2(y)), drop_key)
        shortcut = x if self.proj is None else self.proj_bn(self.proj(x))
        return nnx.relu(y + shortcut)


class Bottleneck(DropPathBlock):
    expansion = 4

    def __init__(self, in_channels: int, width: int, stride: int, layout: str, *, rngs: nnx.Rngs,
                 drop_path_rate: float = 0.0):
        self.drop_path_rate, self.deterministic = float(drop_path_rate), True
        out = width * 4
        bias = layout == "keras"
        s1, s2 = (stride, 1) if layout == "keras" else (1, stride)
        self.conv1 = Conv(in_channels, width, (1, 1), strides=s1, padding=0, use_bias=bias, rngs=rngs)
        self.bn1 = nnx.BatchNorm(width, **_BN[layout], rngs=rngs)
        self.conv2 = Conv(width, width, (3, 3), strides=s2, padding=_pad(3), use_bias=bias, rngs=rngs)
        self.bn2 = nnx.BatchNorm(width, **_BN[layout], rngs=rngs)
        self.conv3 = Conv(width, out, (1, 1), padding=0, use_bias=bias, rngs=rngs)
        self.bn3 = nnx.BatchNorm(out, **_BN[layout], rngs=rngs)
        if stride != 1 or in_channels != out:
            self.proj = Conv(in_channels, out, (1, 1), strides=stride, padding=0, use_bias=bias, rngs=rngs)
            self.proj_bn = nnx.BatchNorm(out, **_BN[layout], rngs=rngs)
        else:
            self.proj = self.proj_bn = None

    def __call__(self, x: jax.Array, drop_key: jax.Array | None = None) -> jax.Array:
        y = nnx.relu(self.bn1(self.conv1(x)))
        y = nnx.relu(self.bn2(self.conv2(y)))
        y = self.branch(self.bn3(self.conv3(y)), drop_key)
        shortcut = x if self.proj is None else self.proj_bn(self.proj(x))
        return nnx.relu(y + shortcut)


def build(cfg, num_classes: int, in_channels: int, rngs: nnx.Rngs, *, depth: int, layout: str,
          meta: ModelMeta | None = None) -> UnitModel:
    kind, stages = DEPTHS[depth]
    block = BasicBlock if kind == "basic" else Bottleneck
    units: list[nnx.Module] = [Stem(in_channels, layout, rngs=rngs)]
    channels = 64
    rates = iter(drop_path_rates(cfg, sum(stages)))
    for stage, size in enumerate(stages):
        width = 64 * 2**stage
        for b in range(size):
            stride = 2 if (stage > 0 and b == 0) else 1
            units.append(block(channels, width, stride, layout, rngs=rngs, drop_path_rate=next(rates)))
            channels = width * block.expansion
    head = make_head(cfg, channels, num_classes, rngs=rngs)
    return UnitModel(units, head, meta)


_TORCHVISION = dict(input_size=(224, 224, 3), value_range=(0.0, 1.0), mean=(0.485, 0.456, 0.406),
                    std=(0.229, 0.224, 0.225), interpolation="bilinear", crop_pct=0.875, num_classes=1000,
                    first_conv="units.0.conv", classifier="head.classifier",
                    license="BSD-3-Clause (torchvision); timm weights: Apache-2.0")

META: dict[str, ModelMeta] = {
    # keras.applications.ResNet50: "caffe" preprocessing, i.e. BGR pixels in 0..255 minus the ImageNet BGR
    # mean, no scaling. The Keras converter reverses the first conv's input channels, so the converted
    # network takes RGB and the mean below is in RGB order.
    "resnet50_keras": ModelMeta(
        input_size=(224, 224, 3), value_range=(0.0, 255.0), mean=(123.68, 116.779, 103.939),
        std=(1.0, 1.0, 1.0), interpolation="bilinear", crop_pct=0.875, num_classes=1000,
        first_conv="units.0.conv", classifier="head.classifier",
        source="keras.applications.ResNet50 (resnet50_weights_tf_dim_ordering_tf_kernels[_notop].h5)",
        license="MIT (Keras weights, from Kaiming He's Caffe release)"),
    **{f"resnet{d}": ModelMeta(**_TORCHVISION, source=f"torchvision resnet{d} IMAGENET1K_V1 / timm resnet{d}")
       for d in DEPTHS},
}

BUILDERS = {
    "resnet50_keras": functools.partial(build, depth=50, layout="keras", meta=META["resnet50_keras"]),
    **{f"resnet{d}": functools.partial(build, depth=d, layout="torch", meta=META[f"resnet{d}"]) for d in DEPTHS},
}
