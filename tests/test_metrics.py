import numpy as np
import pytest

from tl_research.evals.metrics import classification_metrics


def test_hand_computed_example():
    # true:  0 0 0 0 1 1 2 2 2 2   pred: 0 0 0 1 1 1 2 2 0 1
    labels = np.array([0, 0, 0, 0, 1, 1, 2, 2, 2, 2])
    preds = np.array([0, 0, 0, 1, 1, 1, 2, 2, 0, 1])
    m = classification_metrics(preds, labels, num_classes=3)
    assert m["confusion"] == [[3, 1, 0], [0, 2, 0], [1, 1, 2]]
    assert m["accuracy"] == pytest.approx(7 / 10)
    assert m["per_class_recall"] == pytest.approx([3 / 4, 1.0, 2 / 4])
    assert m["balanced_accuracy"] == pytest.approx((3 / 4 + 1 + 1 / 2) / 3)
    # precision: 3/4, 2/4, 2/2 -> F1: 3/4, 2/3, 2/3
    assert m["macro_f1"] == pytest.approx((3 / 4 + 2 / 3 + 2 / 3) / 3)


def test_absent_class_has_no_recall_and_a_zero_f1_when_predicted():
    labels = np.array([0, 0, 1, 1])
    preds = np.array([0, 2, 1, 1])
    m = classification_metrics(preds, labels, num_classes=4)
    assert m["per_class_recall"] == [0.5, 1.0, None, None]
    assert m["balanced_accuracy"] == pytest.approx(0.75)
    # classes 0, 1, 2 take part (2 was predicted); class 3 neither true nor predicted
    assert m["macro_f1"] == pytest.approx((2 / 3 + 1.0 + 0.0) / 3)


def test_agrees_with_scikit_learn():
    from sklearn import metrics as skm
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 5, 300)
    preds = np.where(rng.random(300) < 0.6, labels, rng.integers(0, 5, 300))
    m = classification_metrics(preds, labels, 5)
    assert m["accuracy"] == pytest.approx(skm.accuracy_score(labels, preds))
    assert m["balanced_accuracy"] == pytest.approx(skm.balanced_accuracy_score(labels, preds))
    assert m["macro_f1"] == pytest.approx(skm.f1_score(labels, preds, average="macro"))
    assert m["confusion"] == skm.confusion_matrix(labels, preds, labels=range(5)).tolist()


def test_ids_outside_the_classes_and_empty_input():
    # scikit-learn would silently drop an id outside labels=range(num_classes); here it is an error
    with pytest.raises(ValueError, match="class ids must lie in 0..2"):
        classification_metrics(np.array([0, 3]), np.array([0, 1]), num_classes=3)
    m = classification_metrics(np.array([], int), np.array([], int), num_classes=2)
    assert m == {"accuracy": 0.0, "balanced_accuracy": 0.0, "macro_f1": 0.0, "per_class_recall": [None, None],
                 "confusion": [[0, 0], [0, 0]]}
