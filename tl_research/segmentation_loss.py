"""The segmentation loss: per-pixel softmax cross-entropy that skips ignore pixels and padded examples."""
from __future__ import annotations

import jax
import jax.numpy as jnp
import optax

from tl_research.segmentation_metrics import IGNORE


def pixel_cross_entropy(logits: jax.Array, labels: jax.Array, example_mask: jax.Array | None = None,
                        ignore_index: int = IGNORE) -> tuple[jax.Array, jax.Array]:
    """(sum of the cross-entropy over counted pixels, number of counted pixels), both float32 scalars.

    logits (B, H, W, K), labels (B, H, W). The caller divides (`loss = total / max(count, 1)`), so a mean over
    the pixels of a whole batch sharded across devices, or over several eval batches, stays exact.
    """
    num_classes = logits.shape[-1]
    labels = labels.astype(jnp.int32)
    valid = (labels != ignore_index) & (labels >= 0) & (labels < num_classes)
    if example_mask is not None:
        valid &= example_mask.reshape((-1,) + (1,) * (labels.ndim - 1)).astype(bool)
    ce = optax.softmax_cross_entropy_with_integer_labels(logits.astype(jnp.float32), jnp.where(valid, labels, 0))
    return jnp.sum(jnp.where(valid, ce, 0.0)), jnp.sum(valid).astype(jnp.float32)
