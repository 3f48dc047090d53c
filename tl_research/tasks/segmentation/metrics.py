"""Segmentation metrics: a confusion matrix accumulated on the devices, and IoU / pixel accuracy from it.

Only the (K, K) matrix crosses to the host (it sums over batches, devices and processes), never the masks.
Conventions (those of the PASCAL VOC and Cityscapes benchmarks, and of scikit-learn's `jaccard_score`):

- rows are true classes, columns predicted ones; ignore pixels (255) and padded examples count nowhere;
- IoU_c = TP_c / (TP_c + FP_c + FN_c) (Everingham et al. 2010, "The PASCAL VOC Challenge", IJCV 88);
- a class that is neither in the labels nor in the predictions has no IoU (None / NaN), and mean IoU
  averages over the classes that have one: the classes present in the labels or the predictions, the set
  `jaccard_score(average="macro")` uses when not given `labels`;
- pixel accuracy = correctly labelled pixels / labelled pixels.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

IGNORE = 255  # the label of pixels no class is asked for (object borders, padding, "void")


def confusion(labels: jax.Array, preds: jax.Array, num_classes: int, example_mask: jax.Array | None = None,
              ignore_index: int = IGNORE) -> jax.Array:
    """(K, K) int32 counts of (true, predicted) class pairs over a batch of dense labels. Jittable.

    labels, preds: (B, H, W) integer class ids (labels may hold `ignore_index`); example_mask: (B,) bool, False
    for the padding examples of a last, partial batch. A label outside 0..K-1 other than `ignore_index` is
    skipped too, so it can never be counted in a neighbouring cell.
    """
    labels, preds = labels.astype(jnp.int32), preds.astype(jnp.int32)
    valid = (labels != ignore_index) & (labels >= 0) & (labels < num_classes)
    if example_mask is not None:
        valid &= example_mask.reshape((-1,) + (1,) * (labels.ndim - 1)).astype(bool)
    cell = jnp.where(valid, labels * num_classes + jnp.clip(preds, 0, num_classes - 1), 0)
    # scatter-add in int32: a one-hot matmul in float32 would lose counts past 2^24 pixels per batch
    counts = jnp.zeros((num_classes * num_classes,), jnp.int32).at[cell.ravel()].add(
        valid.ravel().astype(jnp.int32))
    return counts.reshape(num_classes, num_classes)


def per_class_iou(confusion_matrix) -> np.ndarray:
    """(K,) float64 IoU per class; NaN for a class absent from both labels and predictions."""
    cm = np.asarray(confusion_matrix, np.float64)
    tp = np.diag(cm)
    union = cm.sum(axis=0) + cm.sum(axis=1) - tp  # TP + FP + FN
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(union > 0, tp / union, np.nan)


def mean_iou(confusion_matrix) -> float:
    """Mean of the per-class IoUs over the classes present in labels or predictions; 0.0 when none is."""
    iou = per_class_iou(confusion_matrix)
    return float(np.nanmean(iou)) if np.isfinite(iou).any() else 0.0


def pixel_accuracy(confusion_matrix) -> float:
    cm = np.asarray(confusion_matrix, np.float64)
    total = cm.sum()
    return float(np.trace(cm) / total) if total > 0 else 0.0


def segmentation_metrics(confusion_matrix) -> dict:
    """{"miou", "pixel_accuracy", "per_class_iou" (a list, None for a class with no IoU)}."""
    iou = per_class_iou(confusion_matrix)
    return {"miou": mean_iou(confusion_matrix), "pixel_accuracy": pixel_accuracy(confusion_matrix),
            "per_class_iou": [None if np.isnan(v) else float(v) for v in iou]}
