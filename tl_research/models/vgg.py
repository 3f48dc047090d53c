"""VGG16 (Simonyan & Zisserman 2015, arXiv 1409.1556), configuration D.

Depth units: the five conv blocks, each ending with its 2x2 max-pool, then (when `model.fc_units > 0`,
the default 4096) one more unit holding the pretrained fully-connected layers fc6 and fc7. Keeping fc6/fc7
is what makes the converted network reproduce the source's logits, and their 4096-d output is the feature
most transfer studies of VGG use; `model.fc_units = 0` drops them (5 units, the head average-pools the last
conv block) and is what a "no top" checkpoint loads into.

The fc unit first average-pools the feature map to 7x7 exactly as torchvision's AdaptiveAvgPool2d((7, 7))
does (the identity at 224x224 input, the only size Keras' VGG16-with-top accepts), then flattens it in
(height, width, channel) order; the torch converter permutes fc6's input rows from torchvision's
(channel, height, width) order. Dropout between fc6 and fc7 (torchvision trains with 0.5) is not part of the
unit; `model.dropout` is the dropout before the classifier.
"""
from __future__ import annotations

import functools

import jax
from flax import nnx

from tl_research.models.base import POOLS, ModelMeta, UnitModel, adaptive_avg_pool, make_head
from tl_research.models.conv import Conv

CONFIG_D = ((64, 64), (128, 128), (256, 256, 256), (512, 512, 512), (512, 512, 512))
POOL_GRID = 7
NO_TOP_HINT = ("a checkpoint without fc6/fc7 ('no top') loads into model.fc_units=0; one with them into "
               "model.fc_units=4096")


class ConvBlock(nnx.Module):
    def __init__(self, in_channels: int, widths: tuple[int, ...], *, rngs: nnx.Rngs):
        self.convs = nnx.List([Conv(c_in, c_out, (3, 3), padding=((1, 1), (1, 1)), rngs=rngs)
                               for c_in, c_out in zip((in_channels,) + widths[:-1], widths)])

    def __call__(self, x: jax.Array) -> jax.Array:
        for conv in self.convs:
            x = nnx.relu(conv(x))
        return nnx.max_pool(x, (2, 2), strides=(2, 2))


class FullyConnected(nnx.Module):
    """fc6 -> ReLU -> fc7 -> ReLU on the flattened 7x7 pooled map."""

    def __init__(self, in_channels: int, units: int, *, rngs: nnx.Rngs):
        self.fc6 = nnx.Linear(in_channels * POOL_GRID * POOL_GRID, units, rngs=rngs)
        self.fc7 = nnx.Linear(units, units, rngs=rngs)

    def __call__(self, x: jax.Array) -> jax.Array:
        x = adaptive_avg_pool(x, POOL_GRID).reshape(x.shape[0], -1)
        return nnx.relu(self.fc7(nnx.relu(self.fc6(x))))


def build(cfg, num_classes: int, in_channels: int, rngs: nnx.Rngs, *, meta: ModelMeta | None = None
          ) -> UnitModel:
    units: list[nnx.Module] = []
    channels = in_channels
    for widths in CONFIG_D:
        units.append(ConvBlock(channels, widths, rngs=rngs))
        channels = widths[-1]
    fc_units = int(cfg.get("fc_units", 4096))
    if fc_units > 0:
        units.append(FullyConnected(channels, fc_units, rngs=rngs))
        channels = fc_units
    head = make_head(cfg, channels, num_classes, rngs=rngs,
                pools=POOLS if fc_units == 0 else ())  # fc7 is a vector: nothing to pool
    return UnitModel(units, head, meta)


META: dict[str, ModelMeta] = {
    # keras.applications.VGG16: "caffe" preprocessing (BGR, 0..255, minus the BGR mean, no scaling). The
    # Keras converter reverses the first conv's input channels, so the mean below is in RGB order.
    "vgg16_keras": ModelMeta(
        input_size=(224, 224, 3), value_range=(0.0, 255.0), mean=(123.68, 116.779, 103.939),
        std=(1.0, 1.0, 1.0), interpolation="bilinear", crop_pct=0.875, num_classes=1000,
        first_conv="units.0.convs.0", classifier="head.classifier",
        source="keras.applications.VGG16 (vgg16_weights_tf_dim_ordering_tf_kernels[_notop].h5)",
        license="CC-BY-4.0 (VGG weights, Oxford VGG)"),
    "vgg16": ModelMeta(
        input_size=(224, 224, 3), value_range=(0.0, 1.0), mean=(0.485, 0.456, 0.406),
        std=(0.229, 0.224, 0.225), interpolation="bilinear", crop_pct=0.875, num_classes=1000,
        first_conv="units.0.convs.0", classifier="head.classifier",
        source="torchvision vgg16 IMAGENET1K_V1", license="BSD-3-Clause (torchvision)"),
}

BUILDERS = {name: functools.partial(build, meta=m) for name, m in META.items()}
