"""How an image of any size becomes the model's (h, w): resize its shorter side to size / crop_pct, then take
the centre crop. One definition, applied alike to the image, its segmentation mask (nearest neighbour, so
class ids stay class ids) and its boxes (the same affine map), so targets stay aligned with the pixels."""
from __future__ import annotations

import dataclasses

import numpy as np
from PIL import Image


@dataclasses.dataclass(frozen=True)
class Window:
    """An (in_h, in_w) array resized to (new_h, new_w), of which rows top..top+h, columns left..left+w are
    kept."""

    new_h: int
    new_w: int
    top: int
    left: int
    h: int
    w: int


def window(in_h: int, in_w: int, h: int, w: int, crop_pct: float) -> Window:
    scale = max(h, w) / crop_pct / min(in_h, in_w)
    new_w, new_h = max(w, round(in_w * scale)), max(h, round(in_h * scale))
    return Window(new_h, new_w, (new_h - h) // 2, (new_w - w) // 2, h, w)


def fit(array: np.ndarray, h: int, w: int, crop_pct: float, resample) -> np.ndarray:
    """(H, W, C) uint8 -> (h, w, C) uint8 through `window` with a PIL resampling filter; unchanged when
    it already has the size."""
    if array.shape[:2] == (h, w):
        return array
    win = window(array.shape[0], array.shape[1], h, w, crop_pct)
    pil = Image.fromarray(array[..., 0] if array.shape[-1] == 1 else array)
    pil = pil.resize((win.new_w, win.new_h), resample)
    out = np.asarray(pil.crop((win.left, win.top, win.left + w, win.top + h)))
    return out[..., None] if out.ndim == 2 else out


def fit_boxes(boxes: np.ndarray, in_h: int, in_w: int, h: int, w: int, crop_pct: float) -> tuple[np.ndarray,
                                                                                                   np.ndarray]:
    """Normalised [ymin, xmin, ymax, xmax] boxes of an (in_h, in_w) image -> the same boxes in the fitted
    (h, w) image, clipped to it, and which boxes keep a positive area (those cropped away entirely do not).

    PIL's resize maps pixel edges linearly (corner to corner), so a normalised coordinate y lands at
    y * new_h in the resized image and at (y * new_h - top) / h in the crop."""
    boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    if (in_h, in_w) != (h, w):
        win = window(in_h, in_w, h, w, crop_pct)
        boxes = np.stack([(boxes[:, 0] * win.new_h - win.top) / h, (boxes[:, 1] * win.new_w - win.left) / w,
                          (boxes[:, 2] * win.new_h - win.top) / h, (boxes[:, 3] * win.new_w - win.left) / w], 1)
    boxes = np.clip(boxes, 0.0, 1.0)
    keep = (boxes[:, 2] > boxes[:, 0]) & (boxes[:, 3] > boxes[:, 1])
    return boxes.astype(np.float32), keep
