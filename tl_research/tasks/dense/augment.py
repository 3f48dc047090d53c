"""On-device augmentation that moves segmentation masks and detection boxes with the image.

The ops and their grammar are those of data/augment.py (`config.augment`), applied in the same order with the
same per-example random numbers; the image is resampled exactly as there (bilinear, zeros outside). What the
geometric ops do to the image they do to its labels, through the same composed affine map:

- masks are resampled by nearest neighbour (a class id is never blended), and pixels that come from outside
  the image (crop padding, zoom out) are ignore pixels (255): no class is asked for where there is no
  content. A pixel takes the label of the source pixel whose centre is nearest, which is the pixel whose
  value dominates the bilinear image there, so a mask edge stays on the image's edge to within half a pixel.
- boxes ([ymin, xmin, ymax, xmax] in [0, 1], classes -1 for padding) are mapped corner by corner, clipped to
  the image, and a box left with no height or width inside it (moved out by a crop or a zoom) is dropped:
  class -1, box zeros.

Segmentation takes flip, crop, zoom (the scale op), translate, rrc, rotate and jitter; detection the same
but rotate (a rotated box is no longer a box; its enclosing box would grow around the object). mixup is for
neither (a blend of two images has no single mask or set of boxes).
"""
from __future__ import annotations

import jax
import jax.numpy as jnp

from tl_research.data import augment
from tl_research.core.errors import ConfigError
from tl_research.data.targets import IGNORE

SEGMENTATION_OPS = ("flip", "crop", "zoom", "translate", "rrc", "rotate", "jitter")
DETECTION_OPS = ("flip", "crop", "zoom", "translate", "rrc", "jitter")


def parse(ops, allowed: tuple[str, ...], task: str) -> tuple[augment.Op, ...]:
    """augment.parse, then ConfigError("augment", ...) for an op not in `allowed`, the ops `task` can move its
    labels through (SEGMENTATION_OPS, DETECTION_OPS)."""
    parsed = augment.parse(ops)
    for op in parsed:
        if op.name not in allowed:
            raise ConfigError("augment", str(op), ", ".join(allowed), why=f"{op.name} cannot move {task} labels")
    return parsed


def _image_and_map(ops, image: jax.Array, u: jax.Array) -> tuple[jax.Array, jax.Array]:
    """augment's per-example pipeline, returning also the composed map of every geometric op (output pixel
    -> pixel of the original image)."""
    h, w = image.shape[:2]
    pending, total = None, jnp.eye(3, dtype=jnp.float32)
    for op in ops:
        mine, u = u[:augment.draws(op)], u[augment.draws(op):]
        if op.name in augment.GEOMETRIC:
            m = augment.matrix(op, mine, h, w)
            pending = m if pending is None else pending @ m
            total = total @ m
        else:
            if pending is not None:
                image, pending = augment.warp(image, pending), None
            image = augment.recolour(op, mine, image)
    return (image if pending is None else augment.warp(image, pending)), total


def warp_nearest(mask: jax.Array, matrix: jax.Array, fill: int = IGNORE) -> jax.Array:
    """out[i, j] = mask at the source pixel nearest to matrix @ (i, j, 1); `fill` outside the image."""
    h, w = mask.shape[:2]
    rows, cols = jnp.meshgrid(jnp.arange(h, dtype=jnp.float32), jnp.arange(w, dtype=jnp.float32), indexing="ij")
    # floor(x + 0.5): the pixel whose extent [k - 0.5, k + 0.5) holds the source point
    r = jnp.floor(matrix[0, 0] * rows + matrix[0, 1] * cols + matrix[0, 2] + 0.5).astype(jnp.int32)
    c = jnp.floor(matrix[1, 0] * rows + matrix[1, 1] * cols + matrix[1, 2] + 0.5).astype(jnp.int32)
    inside = (r >= 0) & (r < h) & (c >= 0) & (c < w)
    return jnp.where(inside, mask[jnp.clip(r, 0, h - 1), jnp.clip(c, 0, w - 1)], jnp.asarray(fill, mask.dtype))


def move_boxes(boxes: jax.Array, classes: jax.Array, matrix: jax.Array, h: int, w: int):
    """Boxes (N, 4) normalised, of an image that `matrix` (output -> source pixel) resamples -> the boxes of
    the output image, clipped; boxes with nothing left inside it get class -1 and zeros."""
    forward = jnp.linalg.inv(matrix)  # source pixel -> output pixel
    # edges in pixel-centre coordinates: a box from row-extent y0 to y1 spans centres y0 * H - 0.5 ...
    y0, x0, y1, x1 = (boxes[:, 0] * h - 0.5, boxes[:, 1] * w - 0.5, boxes[:, 2] * h - 0.5, boxes[:, 3] * w - 0.5)
    corners = jnp.stack([jnp.stack([y0, x0]), jnp.stack([y0, x1]), jnp.stack([y1, x0]), jnp.stack([y1, x1])])
    moved = jnp.einsum("ij,kjn->kin", forward[:2, :2], corners) + forward[:2, 2][None, :, None]  # (4, 2, N)
    lo, hi = moved.min(axis=0), moved.max(axis=0)
    scale = jnp.array([h, w], jnp.float32)[:, None]
    lo, hi = jnp.clip((lo + 0.5) / scale, 0.0, 1.0), jnp.clip((hi + 0.5) / scale, 0.0, 1.0)
    keep = (classes >= 0) & (hi[0] > lo[0]) & (hi[1] > lo[1])
    out = jnp.stack([lo[0], lo[1], hi[0], hi[1]], axis=-1)
    return jnp.where(keep[:, None], out, 0.0), jnp.where(keep, classes, -1)


def _uniforms(ops, batch: int, key: jax.Array) -> jax.Array:
    """Every random number each example needs, from its own key (the same key on any number of devices
    gives the same draws; see augment)."""
    n = max(sum(augment.draws(op) for op in ops), 1)
    return jax.vmap(lambda k: jax.random.uniform(k, (n,)))(jax.random.split(key, batch))


def apply_segmentation(ops, images: jax.Array, masks: jax.Array, key: jax.Array,
                       ignore_index: int = IGNORE) -> tuple[jax.Array, jax.Array]:
    """images (B, H, W, C) float (normalised), masks (B, H, W) class ids -> both augmented. Jittable; `ops`
    are strings or parsed Ops, static."""
    ops = parse(ops, SEGMENTATION_OPS, "segmentation")
    images = jnp.asarray(images, jnp.float32)
    if not ops:
        return images, masks

    def one(image, mask, u):
        image, m = _image_and_map(ops, image, u)
        return image, warp_nearest(mask, m, ignore_index)

    return jax.vmap(one)(images, masks, _uniforms(ops, images.shape[0], key))


def apply_detection(ops, images: jax.Array, boxes: jax.Array, classes: jax.Array, key: jax.Array):
    """images (B, H, W, C) float, boxes (B, N, 4), classes (B, N) -> (images, boxes, classes) augmented."""
    ops = parse(ops, DETECTION_OPS, "detection")
    images = jnp.asarray(images, jnp.float32)
    boxes, classes = jnp.asarray(boxes, jnp.float32), jnp.asarray(classes, jnp.int32)
    if not ops:
        return images, boxes, classes
    h, w = images.shape[1:3]

    def one(image, b, c, u):
        image, m = _image_and_map(ops, image, u)
        return (image, *move_boxes(b, c, m, h, w))

    return jax.vmap(one)(images, boxes, classes, _uniforms(ops, images.shape[0], key))
