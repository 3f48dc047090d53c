"""Segmentation decoders on a backbone's depth units: the "head" of a segmentation model.

    model.decoder = "fcn"    a 1x1 conv classifier on the deepest unit's feature map, its logits upsampled
                             bilinearly to the input size (FCN-32s-style; Long et al. 2015, arXiv 1411.4038)
    model.decoder = "unet"   U-Net-style (Ronneberger et al. 2015, arXiv 1505.04597): from the deepest map,
                             one stage per skip unit, deepest first: upsample bilinearly to the skip's
                             size, concatenate the skip's map, 3x3 conv + ReLU; then the 1x1 classifier and
                             the bilinear upsampling to the input size
    model.skips            the units the U-Net reads (indices into the depth units, any order); () picks the
                             last unit of each resolution above the deepest map's, the usual U-Net wiring
                             (for a ViT, whose maps all share one resolution, that is none)
    model.decoder_width    channels of the U-Net's stages (the deepest map is first reduced to it by a 1x1 conv)

"The deepest map" is the output of the last unit that has a feature map (models/feature_maps.py): VGG's
fc6/fc7 unit has none, so its decoders read the last conv block and leave fc6/fc7 unused. Classifying before
the final upsampling is exact: a 1x1 conv and bilinear resizing are both linear per pixel, so they commute.
The classifier starts at zero, as the classification head does (base.Head): training begins from uniform
predictions. The decoders hold no BatchNorm, so they have no mode and no statistics.
"""
from __future__ import annotations

from typing import Sequence

import jax
import jax.numpy as jnp
import ml_collections
from flax import nnx

from tl_research.core.errors import ConfigError
from tl_research.models.conv import Conv
from tl_research.models.feature_maps import as_map, resize

DECODERS = ("fcn", "unet")
Shapes = Sequence[tuple[int, int, int] | None]


def default_config() -> ml_collections.ConfigDict:
    """The decoder keys of `config.model` (merged into it by the segmentation task)."""
    return ml_collections.ConfigDict(dict(decoder="fcn", skips=(), decoder_width=64))


def deepest(shapes: Shapes) -> int:
    """The last unit with a feature map."""
    with_map = [i for i, s in enumerate(shapes) if s is not None]
    if not with_map:
        raise ValueError("the backbone has no depth unit with a feature map for a dense head to read")
    return with_map[-1]


def auto_skips(shapes: Shapes) -> tuple[int, ...]:
    """The last unit of each resolution finer than the deepest map's."""
    bottom = deepest(shapes)
    last_of: dict[tuple[int, int], int] = {}
    for i, s in enumerate(shapes[:bottom]):
        if s is not None and s[:2] != shapes[bottom][:2]:
            last_of[s[:2]] = i
    return tuple(sorted(last_of.values()))


def check(model_cfg, shapes: Shapes) -> tuple[int, ...]:
    """Validates model.decoder / model.skips / model.decoder_width against the backbone's unit maps; returns
    the skips the decoder will read, deepest first."""
    if model_cfg.decoder not in DECODERS:
        raise ConfigError("model.decoder", model_cfg.decoder, ", ".join(DECODERS))
    width = model_cfg.get("decoder_width", 64)
    if isinstance(width, bool) or not isinstance(width, int) or width < 1:
        raise ConfigError("model.decoder_width", width, "a positive number of channels")
    skips = tuple(model_cfg.get("skips", ()) or ())
    if model_cfg.decoder == "fcn":
        return ()
    bottom = deepest(shapes)
    allowed = [i for i, s in enumerate(shapes[:bottom]) if s is not None]
    for k in skips:
        if isinstance(k, bool) or not isinstance(k, int) or k not in allowed:
            raise ConfigError("model.skips", tuple(model_cfg.skips), f"unit indices among {allowed} (the "
                              f"units with a feature map before the deepest, unit {bottom}), or () for one per "
                              "resolution")
    return tuple(sorted(set(skips or auto_skips(shapes)), reverse=True))


class FCN(nnx.Module):
    def __init__(self, shapes: Shapes, num_classes: int, *, rngs: nnx.Rngs):
        self.source = deepest(shapes)
        self.classifier = Conv(shapes[self.source][2], num_classes, (1, 1),
                               kernel_init=nnx.initializers.zeros, rngs=rngs)

    @property
    def units_read(self) -> tuple[int, ...]:
        return (self.source,)

    def __call__(self, outs: Sequence[jax.Array], image_hw: tuple[int, int], **_) -> jax.Array:
        """Per-unit outputs (UnitModel.features(..., return_units=True)) -> logits (B, H, W, K)."""
        return resize(self.classifier(as_map(outs[self.source], image_hw)), image_hw)


class UNet(nnx.Module):
    def __init__(self, shapes: Shapes, num_classes: int, skips: Sequence[int], width: int = 64, *,
                 rngs: nnx.Rngs):
        self.source = deepest(shapes)
        self.skips = tuple(sorted(skips, reverse=True))
        self.reduce = Conv(shapes[self.source][2], width, (1, 1), rngs=rngs)
        self.stages = nnx.List([Conv(width + shapes[k][2], width, (3, 3), rngs=rngs) for k in self.skips])
        self.classifier = Conv(width, num_classes, (1, 1), kernel_init=nnx.initializers.zeros, rngs=rngs)

    @property
    def units_read(self) -> tuple[int, ...]:
        return (self.source,) + self.skips

    def __call__(self, outs: Sequence[jax.Array], image_hw: tuple[int, int], **_) -> jax.Array:
        x = nnx.relu(self.reduce(as_map(outs[self.source], image_hw)))
        for k, conv in zip(self.skips, self.stages):
            skip = as_map(outs[k], image_hw)
            x = resize(x, skip.shape[1:3]).astype(skip.dtype)
            x = nnx.relu(conv(jnp.concatenate([x, skip], axis=-1)))
        return resize(self.classifier(x), image_hw)


def build(model_cfg, shapes: Shapes, num_classes: int, rngs: nnx.Rngs) -> nnx.Module:
    """The decoder `model.decoder` names, for a backbone whose units have the maps `shapes`
    (feature_maps.unit_map_shapes)."""
    skips = check(model_cfg, shapes)
    if model_cfg.decoder == "fcn":
        return FCN(shapes, num_classes, rngs=rngs)
    return UNet(shapes, num_classes, skips, int(model_cfg.get("decoder_width", 64)), rngs=rngs)
