"""CenterNet's training objective (Zhou et al. 2019, arXiv 1904.07850): targets rendered from the batch's
boxes on the device, and the loss of the head's outputs (tasks/detection/head.py) against them.

Boxes are the data's: (B, N, 4) [ymin, xmin, ymax, xmax] normalised to [0, 1], classes (B, N) int32 with -1
for padding. On a map of h x w cells a box's centre is c = ((ymin + ymax) h / 2, (xmin + xmax) w / 2) in cell
units (cell i covers [i, i + 1)); its cell is p = floor(c), its offset target c - p, its size target its
height and width in cells.

The class heatmap (section 3 of the paper) is, per class, the maximum over that class's boxes of
exp(-|q - p|^2 / (2 sigma^2)) over the cells q within the Gaussian radius r of p (and 0 elsewhere), with
sigma = (2r + 1) / 6 and r from the box size as in CornerNet (Law & Deng 2018, arXiv 1808.01244) and
CenterNet's released code (`gaussian_radius`, min_overlap 0.7, floored to whole cells). So it is exactly 1.0
at every box's centre cell.

Loss (eq. 1-3): L = L_k + 0.1 L_size + 1 L_off, where
  L_k   = -1/N sum_cells { (1 - P)^a log P           where Y = 1
                         { (1 - Y)^b P^a log(1 - P)  elsewhere,        a = 2, b = 4 (penalty-reduced focal loss)
  L_size = 1/N sum_objects |S_p - s|_1,  L_off = 1/N sum_objects |O_p - (c - p)|_1
with N the number of objects in the batch (at least 1), P = sigmoid(heatmap logit). Sums run over the whole
batch and are divided once, so the loss of a batch sharded over devices is that of the batch.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp

ALPHA, BETA = 2.0, 4.0
SIZE_WEIGHT, OFFSET_WEIGHT = 0.1, 1.0
MIN_OVERLAP = 0.7


def gaussian_radius(height: jax.Array, width: jax.Array, min_overlap: float = MIN_OVERLAP) -> jax.Array:
    """The radius r (in cells) within which a corner may move while the box keeps IoU >= min_overlap with
    the original: the smallest of CornerNet's three cases, with the quadratics' roots as in the released
    CornerNet / CenterNet code (which is what the published models were trained with)."""
    h, w, m = height, width, min_overlap
    b1, c1 = h + w, w * h * (1 - m) / (1 + m)
    r1 = (b1 + jnp.sqrt(jnp.maximum(b1 ** 2 - 4 * c1, 0.0))) / 2
    b2, c2 = 2 * (h + w), (1 - m) * w * h
    r2 = (b2 + jnp.sqrt(jnp.maximum(b2 ** 2 - 16 * c2, 0.0))) / 2
    a3, b3, c3 = 4 * m, -2 * m * (h + w), (m - 1) * w * h
    r3 = (b3 + jnp.sqrt(jnp.maximum(b3 ** 2 - 4 * a3 * c3, 0.0))) / 2
    return jnp.minimum(jnp.minimum(r1, r2), r3)


def _render_one(boxes: jax.Array, classes: jax.Array, grid: tuple[int, int], num_classes: int) -> dict:
    h, w = grid
    valid = classes >= 0
    size = jnp.stack([(boxes[:, 2] - boxes[:, 0]) * h, (boxes[:, 3] - boxes[:, 1]) * w], axis=-1)
    centre = jnp.stack([(boxes[:, 0] + boxes[:, 2]) * h / 2, (boxes[:, 1] + boxes[:, 3]) * w / 2], axis=-1)
    cell = jnp.clip(jnp.floor(centre), 0, jnp.array([h - 1, w - 1])).astype(jnp.int32)
    radius = jnp.maximum(jnp.floor(gaussian_radius(size[:, 0], size[:, 1])), 0.0)
    sigma = (2 * radius + 1) / 6
    dy = jnp.arange(h)[None, :, None] - cell[:, 0, None, None]  # (N, h, 1)
    dx = jnp.arange(w)[None, None, :] - cell[:, 1, None, None]  # (N, 1, w)
    r = radius[:, None, None]
    blob = jnp.exp(-(dy ** 2 + dx ** 2) / (2 * sigma[:, None, None] ** 2))
    blob = jnp.where((jnp.abs(dy) <= r) & (jnp.abs(dx) <= r), blob, 0.0)
    # one (h, w) map per box, max-reduced into its class's channel; padding boxes go to an index past the end
    channel = jnp.where(valid, classes, num_classes)
    heat = jnp.zeros((num_classes, h, w), jnp.float32).at[channel].max(blob, mode="drop")
    return {"heatmap": jnp.moveaxis(heat, 0, -1), "index": cell[:, 0] * w + cell[:, 1],
            "size": size, "offset": centre - cell, "valid": valid}


def render(boxes: jax.Array, classes: jax.Array, grid: tuple[int, int], num_classes: int) -> dict:
    """Targets on an h x w map: {"heatmap" (B, h, w, K), "index" (B, N) int32 (the centre cell, row-major),
    "size" (B, N, 2) and "offset" (B, N, 2) in cells, "valid" (B, N) bool}. Jittable; `grid` is static."""
    boxes, classes = jnp.asarray(boxes, jnp.float32), jnp.asarray(classes, jnp.int32)
    return jax.vmap(lambda b, c: _render_one(b, c, tuple(grid), num_classes))(boxes, classes)


def focal_loss_terms(logits: jax.Array, heatmap: jax.Array) -> jax.Array:
    """Eq. 1's penalty-reduced focal loss of every cell and class (before summing and dividing by N)."""
    logits = logits.astype(jnp.float32)
    log_p, log_not_p = jax.nn.log_sigmoid(logits), jax.nn.log_sigmoid(-logits)
    p = jnp.exp(log_p)
    pos = (1 - p) ** ALPHA * log_p
    neg = (1 - heatmap) ** BETA * p ** ALPHA * log_not_p
    return -jnp.where(heatmap >= 1.0, pos, neg)


def _at_centres(dense: jax.Array, index: jax.Array) -> jax.Array:
    """(B, h, w, 2) head output read at (B, N) row-major cells -> (B, N, 2)."""
    b, h, w, d = dense.shape
    return jnp.take_along_axis(dense.reshape(b, h * w, d), index[..., None], axis=1)


def loss(outputs: dict, targets: dict, example_mask: jax.Array | None = None) -> tuple[jax.Array, dict]:
    """(L, {"heatmap", "size", "offset", "objects"}) of head outputs against `render`ed targets, the loss
    terms already divided by N. example_mask (B,) False drops a padding example entirely."""
    valid = targets["valid"]
    if example_mask is not None:
        valid = valid & example_mask[:, None].astype(bool)
    objects = jnp.sum(valid).astype(jnp.float32)
    n = jnp.maximum(objects, 1.0)
    heat_terms = focal_loss_terms(outputs["heatmap"], targets["heatmap"])
    if example_mask is not None:
        heat_terms = jnp.where(example_mask[:, None, None, None].astype(bool), heat_terms, 0.0)
    l1 = lambda pred, target: jnp.sum(jnp.where(valid[..., None], jnp.abs(pred - target), 0.0))
    parts = {"heatmap": jnp.sum(heat_terms) / n,
             "size": l1(_at_centres(outputs["size"].astype(jnp.float32), targets["index"]), targets["size"]) / n,
             "offset": l1(_at_centres(outputs["offset"].astype(jnp.float32), targets["index"]),
                          targets["offset"]) / n,
             "objects": objects}
    return parts["heatmap"] + SIZE_WEIGHT * parts["size"] + OFFSET_WEIGHT * parts["offset"], parts
