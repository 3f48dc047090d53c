"""Detection's record reader (data.targets = "detection"): the record's `data.objects_key` (default
"objects") Sequence with `bbox` (TFDS BBoxFeature, normalised [ymin, xmin, ymax, xmax]) and `label`
(ClassLabel), as `voc` and `coco/2017` have them; boxes move with the image's resize and centre crop, are
clipped to it, and those cropped away are dropped; COCO's crowd annotations (`is_crowd`) are dropped too, as
detectors train without them. Batches carry `"boxes"`: float32 (B, max_boxes, 4) normalised [ymin, xmin,
ymax, xmax] of the fitted image, zeros where padded, and `"classes"`: int32 (B, max_boxes), -1 where padded.
An image with more than `data.max_boxes` (default 10) objects keeps the max_boxes largest (by area), in
record order; evaluate a dataset with a max_boxes at least its largest object count."""
from __future__ import annotations

import numpy as np
import tensorflow_datasets as tfds

from tl_research.core.errors import ConfigError
from tl_research.data import geometry
from tl_research.data.targets import TargetSpec, Targets


def _resolve(cfg, b, shape, crop_pct) -> TargetSpec:
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

    return TargetSpec(TARGETS.name, list(inner["label"].names), read)


TARGETS = Targets("detection", {"boxes": 0.0, "classes": -1}, resolve=_resolve,
                  bytes_per_example=lambda shape: 64 * 20)  # boxes: a bound
