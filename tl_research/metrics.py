"""Classification metrics from predicted and true class ids (numpy only).

Accuracy alone hides what class imbalance does: balanced accuracy (mean per-class recall) and macro F1 give
every class the same say, and the confusion matrix shows which classes are confused.
"""
from __future__ import annotations

import numpy as np


def confusion_matrix(preds: np.ndarray, labels: np.ndarray, num_classes: int) -> np.ndarray:
    """(num_classes, num_classes) counts; rows are true classes, columns predicted classes."""
    preds, labels = np.asarray(preds, dtype=np.int64).ravel(), np.asarray(labels, dtype=np.int64).ravel()
    if preds.shape != labels.shape:
        raise ValueError(f"preds {preds.shape} and labels {labels.shape} differ in length")
    bad = (preds < 0) | (preds >= num_classes) | (labels < 0) | (labels >= num_classes)
    if bad.any():
        raise ValueError(f"class ids must lie in 0..{num_classes - 1}")
    return np.bincount(labels * num_classes + preds, minlength=num_classes ** 2).reshape(num_classes, -1)


def classification_metrics(preds: np.ndarray, labels: np.ndarray, num_classes: int) -> dict:
    """accuracy, balanced_accuracy, macro_f1, per_class_recall (a list; None for a class with no true
    examples) and confusion (a list of lists, rows = true class).

    balanced_accuracy averages recall over the classes present in `labels`; macro_f1 averages F1 over the
    classes present in `labels` or `preds` (F1 = 0 for a class predicted but never true), as scikit-learn
    does.
    """
    cm = confusion_matrix(preds, labels, num_classes)
    true = cm.sum(axis=1)
    predicted = cm.sum(axis=0)
    tp = np.diag(cm)
    n = int(cm.sum())
    recall = np.divide(tp, true, out=np.zeros(num_classes), where=true > 0)
    precision = np.divide(tp, predicted, out=np.zeros(num_classes), where=predicted > 0)
    denom = precision + recall
    f1 = np.divide(2 * precision * recall, denom, out=np.zeros(num_classes), where=denom > 0)
    seen = (true > 0) | (predicted > 0)
    return {
        "accuracy": float(tp.sum() / n) if n else 0.0,
        "balanced_accuracy": float(recall[true > 0].mean()) if (true > 0).any() else 0.0,
        "macro_f1": float(f1[seen].mean()) if seen.any() else 0.0,
        "per_class_recall": [float(r) if t > 0 else None for r, t in zip(recall, true)],
        "confusion": cm.tolist(),
    }
