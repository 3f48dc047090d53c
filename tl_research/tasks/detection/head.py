"""A CenterNet detection head (Zhou et al. 2019, "Objects as Points", arXiv 1904.07850) on the depth units,
and the decoding of its outputs into boxes.

    model.detect_unit   the unit whose feature map the head reads (-1: the deepest unit with a map)
    model.fpn_units     () or several units: a small FPN (Lin et al. 2017, arXiv 1612.03144) merges them
                        top-down (1x1 lateral convs to head_width channels, each coarser sum upsampled
                        bilinearly and added, a 3x3 conv on the finest) and the head reads the result, at the
                        finest of their resolutions; detect_unit is then unused
    model.head_width    channels of the FPN and of each branch's hidden 3x3 conv
    model.max_detections  the top-k of the decoding (COCO counts at most 100 per image)

Three branches, each 3x3 conv + ReLU + 1x1 conv, on the map of stride R (input / map size):
heatmap (K class logits per cell; the sigmoid gives the centre probability), size (height, width of the box)
and offset (the centre's sub-cell position lost by flooring it to a cell), the last two in map cells. The
heatmap bias starts at -log((1 - 0.1) / 0.1) = -2.19, a prior of 0.1 on every cell (the paper's
initialisation, from RetinaNet: Lin et al. 2017, arXiv 1708.02002).

Decoding (section 4 of the paper): peaks are the cells equal to the maximum of their 3x3 neighbourhood, the
k best peaks over all classes are kept, no NMS; a peak at cell (i, j) with offset (oy, ox) and size (h, w)
is the box centred at (i + oy, j + ox) with that size, returned normalised to [0, 1] and clipped to the image.
"""
from __future__ import annotations

import math
from typing import Sequence

import jax
import jax.numpy as jnp
import ml_collections
from flax import nnx

from tl_research.core.errors import ConfigError
from tl_research.models.conv import Conv
from tl_research.models.feature_maps import as_map, resize

PRIOR = 0.1
Shapes = Sequence[tuple[int, int, int] | None]


def default_config() -> ml_collections.ConfigDict:
    """The detection keys of `config.model` (merged into it by the detection task)."""
    return ml_collections.ConfigDict(dict(detect_unit=-1, fpn_units=(), head_width=64, max_detections=100))


def check(model_cfg, shapes: Shapes) -> tuple[int, ...]:
    """Validates the detection keys against the backbone's unit maps; returns the units the head reads."""
    with_map = [i for i, s in enumerate(shapes) if s is not None]
    for key in ("head_width", "max_detections"):
        v = model_cfg.get(key, default_config()[key])
        if isinstance(v, bool) or not isinstance(v, int) or v < 1:
            raise ConfigError(f"model.{key}", v, "a positive integer")
    fpn = tuple(model_cfg.get("fpn_units", ()) or ())
    if fpn:
        if len(fpn) < 2 or any(isinstance(k, bool) or k not in with_map for k in fpn) or len(set(fpn)) < len(fpn):
            raise ConfigError("model.fpn_units", fpn, f"() or two or more distinct units among {with_map} (those "
                                                      "with a feature map)")
        return tuple(sorted(fpn))
    unit = model_cfg.get("detect_unit", -1)
    if unit == -1:
        return (with_map[-1],)
    if isinstance(unit, bool) or unit not in with_map:
        raise ConfigError("model.detect_unit", unit, f"-1 (the deepest) or a unit with a feature map: {with_map}")
    return (unit,)


class Branch(nnx.Module):
    def __init__(self, in_channels: int, width: int, out: int, *, bias: float = 0.0, rngs: nnx.Rngs):
        self.hidden = Conv(in_channels, width, (3, 3), rngs=rngs)
        self.out = Conv(width, out, (1, 1), bias_init=nnx.initializers.constant(bias), rngs=rngs)

    def __call__(self, x: jax.Array) -> jax.Array:
        return self.out(nnx.relu(self.hidden(x)))


class FPN(nnx.Module):
    def __init__(self, channels: Sequence[int], width: int, *, rngs: nnx.Rngs):
        self.lateral = nnx.List([Conv(c, width, (1, 1), rngs=rngs) for c in channels])
        self.smooth = Conv(width, width, (3, 3), rngs=rngs)

    def __call__(self, maps: Sequence[jax.Array]) -> jax.Array:
        """maps shallow to deep -> one map at the resolution of the finest."""
        x = None
        for m, lateral in reversed(list(zip(maps, self.lateral))):
            y = lateral(m)
            x = y if x is None else y + resize(x, y.shape[1:3])
        finest = max(maps, key=lambda m: m.shape[1] * m.shape[2])
        return nnx.relu(self.smooth(resize(x, finest.shape[1:3])))


class CenterNetHead(nnx.Module):
    """Per-unit outputs -> {"heatmap": (B, h, w, K) logits, "size": (B, h, w, 2), "offset": (B, h, w, 2)}."""

    def __init__(self, shapes: Shapes, num_classes: int, units: Sequence[int], width: int = 64, *,
                 rngs: nnx.Rngs):
        self.units = tuple(units)
        self.fpn = FPN([shapes[k][2] for k in self.units], width, rngs=rngs) if len(self.units) > 1 else None
        in_channels = width if self.fpn is not None else shapes[self.units[0]][2]
        self.heatmap = Branch(in_channels, width, num_classes, bias=-math.log((1 - PRIOR) / PRIOR), rngs=rngs)
        self.size = Branch(in_channels, width, 2, rngs=rngs)
        self.offset = Branch(in_channels, width, 2, rngs=rngs)

    @property
    def units_read(self) -> tuple[int, ...]:
        return self.units

    def __call__(self, outs: Sequence[jax.Array], image_hw: tuple[int, int], **_) -> dict[str, jax.Array]:
        maps = [as_map(outs[k], image_hw) for k in self.units]
        x = maps[0] if self.fpn is None else self.fpn(maps)
        return {"heatmap": self.heatmap(x), "size": self.size(x), "offset": self.offset(x)}


def build(model_cfg, shapes: Shapes, num_classes: int, rngs: nnx.Rngs) -> CenterNetHead:
    units = check(model_cfg, shapes)
    return CenterNetHead(shapes, num_classes, units, int(model_cfg.get("head_width", 64)), rngs=rngs)


def decode(outputs: dict[str, jax.Array], k: int = 100) -> tuple[jax.Array, jax.Array, jax.Array]:
    """Head outputs -> (boxes (B, k, 4) [ymin, xmin, ymax, xmax] in [0, 1], scores (B, k), classes (B, k)
    int32), best first. Jittable."""
    heat = jax.nn.sigmoid(outputs["heatmap"].astype(jnp.float32))
    b, h, w, c = heat.shape
    peak = nnx.max_pool(heat, (3, 3), strides=(1, 1), padding="SAME") == heat
    scores, flat = jax.lax.top_k(jnp.where(peak, heat, 0.0).reshape(b, -1), min(k, h * w * c))
    cell, classes = flat // c, (flat % c).astype(jnp.int32)
    row, col = cell // w, cell % w
    take = lambda m: jnp.take_along_axis(m.reshape(b, h * w, 2), cell[..., None], axis=1)
    offset, size = take(outputs["offset"].astype(jnp.float32)), take(outputs["size"].astype(jnp.float32))
    cy, cx = row + offset[..., 0], col + offset[..., 1]
    half_h, half_w = size[..., 0] / 2, size[..., 1] / 2
    boxes = jnp.stack([(cy - half_h) / h, (cx - half_w) / w, (cy + half_h) / h, (cx + half_w) / w], axis=-1)
    return jnp.clip(boxes, 0.0, 1.0), scores, classes
