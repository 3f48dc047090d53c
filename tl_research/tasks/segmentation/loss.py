"""The segmentation loss: per-pixel softmax cross-entropy that skips ignore pixels and padded examples, with an
optional lower weight for background pixels (class 0), which outnumber every object class's pixels."""
from __future__ import annotations

import jax
import jax.numpy as jnp
import optax

from tl_research.tasks.segmentation.metrics import IGNORE


def pixel_cross_entropy(logits: jax.Array, labels: jax.Array, example_mask: jax.Array | None = None,
                        ignore_index: int = IGNORE, background_weight: float = 1.0) -> tuple[jax.Array, jax.Array]:
    """(sum of the cross-entropy over counted pixels, number of counted pixels), both float32 scalars.

    logits (B, H, W, K), labels (B, H, W). The caller divides (`loss = total / max(count, 1)`), so a mean over
    the pixels of a whole batch sharded across devices, or over several eval batches, stays exact.
    `background_weight` w weighs each counted class-0 pixel w (in the sum and in the count) and every other
    pixel 1: the result is then the weighted mean's numerator and denominator (w = 1: the plain ones).
    """
    num_classes = logits.shape[-1]
    labels = labels.astype(jnp.int32)
    valid = (labels != ignore_index) & (labels >= 0) & (labels < num_classes)
    if example_mask is not None:
        valid &= example_mask.reshape((-1,) + (1,) * (labels.ndim - 1)).astype(bool)
    ce = optax.softmax_cross_entropy_with_integer_labels(logits.astype(jnp.float32), jnp.where(valid, labels, 0))
    weight = jnp.where(valid, jnp.where(labels == 0, jnp.float32(background_weight), 1.0), 0.0)
    return jnp.sum(weight * ce), jnp.sum(weight)
