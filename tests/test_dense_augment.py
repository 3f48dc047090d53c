"""Masks and boxes move with the image: a bright rectangle whose mask and box are known, after each op."""
import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from tl_research.data import augment
from tl_research.tasks.dense import augment as dense_augment
from tl_research.core.errors import ConfigError

H = W = 32
B = 6


def _rectangles():
    """B images (H, W, 1) of a bright rectangle on black, its mask (1 inside, 0 outside), its box."""
    rng = np.random.default_rng(0)
    images, masks, boxes = np.zeros((B, H, W, 1), np.float32), np.zeros((B, H, W), np.uint8), []
    for i in range(B):
        r0, c0 = rng.integers(0, H - 10, 2)
        r1, c1 = r0 + rng.integers(5, 10), c0 + rng.integers(5, 10)  # exclusive ends
        images[i, r0:r1, c0:c1], masks[i, r0:r1, c0:c1] = 1.0, 1
        boxes.append([[r0 / H, c0 / W, r1 / H, c1 / W], [0, 0, 0, 0]])
    classes = np.array([[i % 3, -1] for i in range(B)], np.int32)
    return images, masks, np.array(boxes, np.float32), classes


OPS = [("flip(1)",), ("crop(6)",), ("zoom(0.3)",), ("rrc(0.3)",), ("translate(0.2)",), ("rotate(20)",),
       ("flip", "zoom(0.2)", "crop(4)")]


@functools.cache
def _augmented():
    """Every op list's segmentation and detection output, in one compiled call (one compilation, not 14)."""
    def run(images, masks, boxes, classes, key):
        out = {}
        for ops in OPS:
            seg = dense_augment.apply_segmentation(ops, images, masks, key)
            det = None if "rotate" in ops[0] else dense_augment.apply_detection(ops, images, boxes, classes, key)
            out[ops] = (*seg, det)
        return out
    return jax.device_get(jax.jit(run)(*_rectangles(), jax.random.key(3)))


@pytest.mark.parametrize("ops", OPS)
def test_mask_and_box_stay_on_the_rectangle(ops):
    images, masks, boxes, classes = _rectangles()
    out_images, out_masks, det = _augmented()[ops]
    img, mask = np.asarray(out_images[..., 0]), np.asarray(out_masks)
    assert not np.array_equal(mask, masks)  # the op moved something, so the checks below can fail
    # the mask labels a pixel with the class of the source pixel nearest to where it samples, which carries
    # the largest bilinear weight: a pixel mostly rectangle is labelled rectangle, a labelled one is >= 1/4 it
    assert np.all(mask[img > 0.5 + 1e-4] == 1)
    assert np.all(img[mask == 1] >= 0.25 - 1e-4)
    assert np.all(img[mask == dense_augment.IGNORE] == 0.0)  # ignore only where no content came from
    if det is None:
        return
    det_images, det_boxes, det_classes = map(np.asarray, det)
    np.testing.assert_array_equal(det_images, np.asarray(out_images))  # the same draws, the same image
    for i in range(B):
        rows, cols = np.nonzero(img[i] > 0.5 + 1e-4)
        if det_classes[i, 0] < 0:  # dropped only when the rectangle left the image
            assert rows.size == 0
            continue
        assert det_classes[i, 0] == classes[i, 0] and det_classes[i, 1] == -1
        y0, x0, y1, x1 = det_boxes[i, 0] * np.array([H, W, H, W])
        # encloses the centre of every pixel that is mostly rectangle, and is tight: no edge beyond the centre
        # of the first pixel outside those holding any of it (they sample nothing of the rectangle)
        assert rows.min() + 0.5 >= y0 - 1e-3 and rows.max() + 0.5 <= y1 + 1e-3
        assert cols.min() + 0.5 >= x0 - 1e-3 and cols.max() + 0.5 <= x1 + 1e-3
        any_rows, any_cols = np.nonzero(img[i] > 1e-4)
        assert y0 >= any_rows.min() - 0.5 - 1e-3 and y1 <= any_rows.max() + 1.5 + 1e-3
        assert x0 >= any_cols.min() - 0.5 - 1e-3 and x1 <= any_cols.max() + 1.5 + 1e-3


def test_boxes_moved_out_of_the_image_are_dropped_and_partial_ones_clipped():
    boxes = jnp.array([[0.1, 0.1, 0.3, 0.3], [0.1, 0.6, 0.3, 0.9], [0.5, 0.5, 0.6, 0.6]])
    classes = jnp.array([4, 5, -1])
    move = jax.jit(dense_augment.move_boxes, static_argnums=(3, 4))
    # content moves right by 16 px (half the width): box 0 moves, box 1 leaves the image, padding stays
    moved, kept = move(boxes, classes, augment.shift_matrix(0.0, 16.0), H, W)
    np.testing.assert_allclose(moved, [[0.1, 0.6, 0.3, 0.8], [0, 0, 0, 0], [0, 0, 0, 0]], atol=1e-6)
    assert kept.tolist() == [4, -1, -1]
    moved, kept = move(boxes, classes, augment.shift_matrix(0.0, 8.0), H, W)  # box 1 is cut at the edge
    np.testing.assert_allclose(moved[1], [0.1, 0.85, 0.3, 1.0], atol=1e-6)
    assert kept.tolist() == [4, 5, -1]


def test_ops_that_cannot_move_the_labels_are_refused():
    with pytest.raises(ConfigError, match="config.augment"):
        dense_augment.parse(("flip", "rotate(10)"), dense_augment.DETECTION_OPS, "detection")
    with pytest.raises(ConfigError, match="mixup"):
        dense_augment.parse(("mixup(0.2)",), dense_augment.SEGMENTATION_OPS, "segmentation")
    parsed = dense_augment.parse(("flip", "rotate(10)"), dense_augment.SEGMENTATION_OPS, "segmentation")
    assert [op.name for op in parsed] == ["flip", "rotate"]
