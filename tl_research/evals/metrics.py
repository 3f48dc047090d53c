"""Classification metrics from predicted and true class ids, computed by scikit-learn.

Accuracy alone hides what class imbalance does: balanced accuracy (mean per-class recall) and macro F1 give
every class the same say, and the confusion matrix shows which classes are confused.
"""
from __future__ import annotations

import warnings

import numpy as np
from sklearn import metrics as skm


def _class_ids(preds, labels, num_classes: int) -> tuple[np.ndarray, np.ndarray]:
    """Flat int64 arrays, checked: scikit-learn would silently drop ids outside labels=range(num_classes)."""
    preds, labels = np.asarray(preds, dtype=np.int64).ravel(), np.asarray(labels, dtype=np.int64).ravel()
    if preds.shape != labels.shape:
        raise ValueError(f"preds {preds.shape} and labels {labels.shape} differ in length")
    bad = (preds < 0) | (preds >= num_classes) | (labels < 0) | (labels >= num_classes)
    if bad.any():
        raise ValueError(f"class ids must lie in 0..{num_classes - 1}")
    return preds, labels


def classification_metrics(preds: np.ndarray, labels: np.ndarray, num_classes: int) -> dict:
    """accuracy, balanced_accuracy, macro_f1, per_class_recall (a list; None for a class with no true
    examples) and confusion (a list of lists, rows = true class, columns = predicted class).

    balanced_accuracy averages recall over the classes present in `labels`; macro_f1 averages F1 over the
    classes present in `labels` or `preds` (F1 = 0 for a class predicted but never true): scikit-learn's
    own conventions when it is not given the full label list.
    """
    preds, labels = _class_ids(preds, labels, num_classes)
    if not labels.size:  # scikit-learn refuses empty input; no examples score 0.0 and recall nothing
        return {"accuracy": 0.0, "balanced_accuracy": 0.0, "macro_f1": 0.0,
                "per_class_recall": [None] * num_classes, "confusion": [[0] * num_classes for _ in range(num_classes)]}
    classes = list(range(num_classes))
    with warnings.catch_warnings():
        # Both are the conventions above, not problems: a class predicted but never true has no recall and
        # is left out of balanced accuracy; a one-class task has a 1x1 confusion matrix.
        warnings.filterwarnings("ignore", message="y_pred contains classes not in y_true")
        warnings.filterwarnings("ignore", message="A single label was found")
        cm = skm.confusion_matrix(labels, preds, labels=classes)
        recall = skm.recall_score(labels, preds, labels=classes, average=None, zero_division=0.0)
        return {
            "accuracy": float(skm.accuracy_score(labels, preds)),
            "balanced_accuracy": float(skm.balanced_accuracy_score(labels, preds)),
            "macro_f1": float(skm.f1_score(labels, preds, average="macro", zero_division=0.0)),
            "per_class_recall": [float(r) if t > 0 else None for r, t in zip(recall, cm.sum(axis=1))],
            "confusion": cm.tolist(),
        }
