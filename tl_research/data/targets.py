"""What a record holds besides its image for segmentation and detection, read into fixed-shape arrays.

`data.targets` chooses (`TARGETS`):
- "label" (default): an image-level class label, `data.label_key` (classification).
- "segmentation": the record's mask `data.mask_key` (default "segmentation_mask", an Image feature) mapped
  through the dataset's `MaskFormat` to class ids 0..C-1, with `IGNORE` (255) for pixels no class is scored
  on, fitted to the image's (h, w) by nearest neighbour. Batches carry
  `"segmentation_mask"`: uint8 (B, h, w).
- "detection": the record's `data.objects_key` (default "objects") Sequence with `bbox` (TFDS BBoxFeature,
  normalised [ymin, xmin, ymax, xmax]) and `label` (ClassLabel), as `voc` and `coco/2017` have them; boxes
  move with the image's resize and centre crop, are clipped to it, and those cropped away are dropped; COCO's
  crowd annotations (`is_crowd`) are dropped too, as detectors train without them. Batches carry
  `"boxes"`: float32 (B, max_boxes, 4) normalised [ymin, xmin, ymax, xmax] of the fitted image, zeros where
  padded, and `"classes"`: int32 (B, max_boxes), -1 where padded. An image with more than `data.max_boxes`
  (default 10) objects keeps the max_boxes largest (by area), in record order; evaluate a dataset with a
  max_boxes at least its largest object count.

The mask formats: the built-in digit scenes (`DIGIT_MASK`: 0 background, d + 1 for digit d, 11 classes), and
`oxford_iiit_pet`'s trimaps (`PET_TRIMAP`: 1 pet -> 1, 2 background -> 0, 3 border -> 255 ignored, the usual
protocol, as the border is the ambiguous outline). A builder declares its own as `MASK_FORMAT`; any other
dataset is added to `KNOWN_MASKS`.
"""
from __future__ import annotations

import dataclasses
from typing import Callable

import numpy as np
import tensorflow_datasets as tfds
from PIL import Image

from tl_research.data import geometry
from tl_research.core.errors import ConfigError

TARGETS = ("label", "segmentation", "detection")
IGNORE = 255
# The batch keys each target type adds next to "image", and the value of a padded eval row.
KEYS = {"label": {"label": 0}, "segmentation": {"segmentation_mask": IGNORE},
        "detection": {"boxes": 0.0, "classes": -1}}


@dataclasses.dataclass(frozen=True)
class MaskFormat:
    """Class names (index = class id in the yielded mask) and the raw mask value of each class id's pixels;
    raw values not listed become IGNORE."""

    names: tuple[str, ...]
    values: dict[int, int]  # raw value in the record -> class id (or IGNORE)

    def table(self) -> np.ndarray:
        lut = np.full(256, IGNORE, dtype=np.uint8)
        for raw, cls in self.values.items():
            lut[raw] = cls
        return lut


DIGIT_MASK = MaskFormat(("background", *(str(d) for d in range(10))), {v: v for v in range(11)})
PET_TRIMAP = MaskFormat(("background", "pet"), {1: 1, 2: 0, 3: IGNORE})
KNOWN_MASKS = {"oxford_iiit_pet": PET_TRIMAP}


@dataclasses.dataclass(frozen=True)
class TargetSpec:
    """The task targets of one dataset: their classes and how a record becomes the arrays of one example."""

    kind: str  # one of TARGETS other than "label"
    names: list[str]
    read: Callable[[dict], dict[str, np.ndarray]]  # record -> that example's target arrays


def _segmentation(cfg, b, shape, crop_pct) -> TargetSpec:
    features = b.info.features
    fmt = getattr(b, "MASK_FORMAT", None) or KNOWN_MASKS.get(b.name)
    if cfg.mask_key not in features or not isinstance(features[cfg.mask_key], tfds.features.Image):
        images = [k for k, f in features.items() if isinstance(f, tfds.features.Image) and k != cfg.image_key]
        raise ConfigError("data.mask_key", cfg.mask_key, ", ".join(images) or "(no mask feature)",
                          why=f"data.targets=segmentation reads a mask image of {cfg.name}")
    if fmt is None:
        raise ConfigError("data.name", cfg.name, f"a dataset whose mask values are known: the built-in "
                          f"scenes, {', '.join(KNOWN_MASKS)}", why="data.targets=segmentation needs their classes")
    lut, (h, w), key = fmt.table(), shape[:2], cfg.mask_key

    def read(record: dict) -> dict[str, np.ndarray]:
        raw = np.asarray(record[key])
        mask = lut[raw.reshape(raw.shape[0], raw.shape[1], 1)]
        return {"segmentation_mask": geometry.fit(mask, h, w, crop_pct, Image.NEAREST)[..., 0]}

    return TargetSpec("segmentation", list(fmt.names), read)


def _detection(cfg, b, shape, crop_pct) -> TargetSpec:
    features = b.info.features
    objects = features[cfg.objects_key] if cfg.objects_key in features else None
    inner = getattr(objects, "feature", None)
    if not isinstance(inner, tfds.features.FeaturesDict) or "bbox" not in inner or "label" not in inner:
        seqs = [k for k, f in features.items() if isinstance(f, tfds.features.Sequence)]
        raise ConfigError("data.objects_key", cfg.objects_key, ", ".join(seqs) or "(no Sequence feature)",
                          why="data.targets=detection reads a Sequence of bbox and label")
    (h, w), key, image_key, max_boxes = shape[:2], cfg.objects_key, cfg.image_key, int(cfg.max_boxes)

    def read(record: dict) -> dict[str, np.ndarray]:
        obj, (in_h, in_w) = record[key], np.shape(record[image_key])[:2]
        boxes, keep = geometry.fit_boxes(obj["bbox"], in_h, in_w, h, w, crop_pct)
        classes = np.asarray(obj["label"], dtype=np.int64).reshape(-1)
        if "is_crowd" in obj:
            keep &= ~np.asarray(obj["is_crowd"], dtype=bool).reshape(-1)
        boxes, classes = boxes[keep], classes[keep]
        if len(boxes) > max_boxes:
            area = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
            largest = np.sort(np.argsort(-area, kind="stable")[:max_boxes])
            boxes, classes = boxes[largest], classes[largest]
        out_boxes = np.zeros((max_boxes, 4), dtype=np.float32)
        out_classes = np.full(max_boxes, -1, dtype=np.int32)
        out_boxes[:len(boxes)], out_classes[:len(boxes)] = boxes, classes
        return {"boxes": out_boxes, "classes": out_classes}

    return TargetSpec("detection", list(inner["label"].names), read)


def spec(cfg, b, shape: tuple[int, int, int] = (1, 1, 3), crop_pct: float = 1.0) -> TargetSpec | None:
    """The targets `cfg` (data config) reads from builder `b` for images fitted to `shape` (which only
    `read` uses: the classes need none); None for "label" (the pipeline reads image-level labels itself)."""
    if cfg.targets == "segmentation":
        return _segmentation(cfg, b, shape, crop_pct)
    if cfg.targets == "detection":
        return _detection(cfg, b, shape, crop_pct)
    return None


def check(cfg) -> None:
    """ConfigError for a targets field, or a classification-only field set with segmentation or detection."""
    if cfg.targets not in TARGETS:
        raise ConfigError("data.targets", cfg.targets, ", ".join(TARGETS))
    if not isinstance(cfg.max_boxes, (int, np.integer)) or cfg.max_boxes < 1:
        raise ConfigError("data.max_boxes", cfg.max_boxes, "a whole number >= 1")
    if cfg.targets == "label":
        return
    # these select or reweight by an image-level label, which segmentation and detection data lack
    for key, off in (("classes", ()), ("per_class", 0), ("imbalance_ratio", 1.0), ("balance", "none"),
                     ("vtab", "")):
        if (tuple(cfg[key]) if key == "classes" else cfg[key]) != off:
            raise ConfigError(f"data.{key}", cfg[key], f"{off!r} with data.targets={cfg.targets}",
                              why="it selects by an image-level label")
