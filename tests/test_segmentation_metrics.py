import jax
import jax.numpy as jnp
import numpy as np
import pytest

from tl_research.tasks.segmentation import loss as segmentation_loss
from tl_research.tasks.segmentation import metrics as sm


def test_hand_computed_example_skips_ignore_pixels_and_padded_examples():
    # example 0 (counted):  labels 0 0 1 1 / 2 255 2 2   preds 0 1 1 1 / 2 0 0 2
    # example 1 (padding):  everything wrong, must not count
    labels = np.array([[[0, 0, 1, 1], [2, 255, 2, 2]], [[1, 1, 1, 1], [1, 1, 1, 1]]], np.uint8)
    preds = np.array([[[0, 1, 1, 1], [2, 0, 0, 2]], [[0, 0, 0, 0], [0, 0, 0, 0]]])
    cm = jax.jit(sm.confusion, static_argnums=2)(labels, preds, 3, jnp.array([True, False]))
    assert cm.tolist() == [[1, 1, 0], [0, 2, 0], [1, 0, 2]]
    m = sm.segmentation_metrics(cm)
    # IoU: class 0: 1 / (1 + 1 + 1); class 1: 2 / (2 + 1 + 0); class 2: 2 / (2 + 0 + 1)
    assert m["per_class_iou"] == pytest.approx([1 / 3, 2 / 3, 2 / 3])
    assert m["miou"] == pytest.approx(5 / 9)
    assert m["pixel_accuracy"] == pytest.approx(5 / 7)


def test_a_class_in_neither_labels_nor_predictions_has_no_iou():
    labels = np.array([[[0, 0, 1, 1]]])
    preds = np.array([[[0, 3, 1, 1]]])  # class 3 predicted, never true: IoU 0 and counted; class 2 absent
    m = sm.segmentation_metrics(sm.confusion(labels, preds, 4))
    assert m["per_class_iou"] == pytest.approx([0.5, 1.0, None, 0.0])
    assert m["miou"] == pytest.approx(0.5)


def test_agrees_with_scikit_learn_jaccard_score():
    from sklearn.metrics import jaccard_score
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 6, (3, 16, 16))
    preds = np.where(rng.random(labels.shape) < 0.7, labels, rng.integers(0, 5, labels.shape))  # 5: rarer
    labels[0, :4] = sm.IGNORE
    cm = sm.confusion(labels, preds, 7)  # class 6 in neither: left out, as scikit-learn leaves it out
    keep = labels.ravel() != sm.IGNORE
    y, p = labels.ravel()[keep], preds.ravel()[keep]
    present = sorted(set(y) | set(p))
    iou = sm.per_class_iou(cm)
    np.testing.assert_allclose(iou[present], jaccard_score(y, p, labels=present, average=None))
    assert np.isnan(iou[6])
    assert sm.mean_iou(cm) == pytest.approx(jaccard_score(y, p, average="macro"))
    assert sm.pixel_accuracy(cm) == pytest.approx(np.mean(y == p))


def test_pixel_cross_entropy_counts_only_labelled_pixels_of_real_examples():
    logits = jnp.zeros((2, 2, 2, 4))  # uniform: every counted pixel costs log(4)
    labels = jnp.array([[[0, 1], [255, 3]], [[0, 0], [0, 0]]], jnp.uint8)
    total, count = jax.jit(segmentation_loss.pixel_cross_entropy)(logits, labels, jnp.array([True, False]))
    assert float(count) == 3
    assert float(total) == pytest.approx(3 * np.log(4), rel=1e-6)


def test_background_weight_scales_background_pixels_in_the_sum_and_the_count():
    logits = jnp.array([[[[2.0, 0.0], [0.0, 1.0]], [[0.5, 0.0], [0.0, 0.0]]]])  # (1, 2, 2, 2)
    labels = jnp.array([[[0, 1], [0, 255]]], jnp.uint8)  # two background pixels, one digit, one ignore
    ce = -jax.nn.log_softmax(logits, -1)
    bg, fg = float(ce[0, 0, 0, 0] + ce[0, 1, 0, 0]), float(ce[0, 0, 1, 1])
    total, weight = segmentation_loss.pixel_cross_entropy(logits, labels, background_weight=0.25)
    assert float(weight) == pytest.approx(2 * 0.25 + 1)
    assert float(total) == pytest.approx(0.25 * bg + fg, rel=1e-6)
    assert float(segmentation_loss.pixel_cross_entropy(logits, labels)[0]) == pytest.approx(bg + fg, rel=1e-6)
