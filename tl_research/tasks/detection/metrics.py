"""COCO box mAP (Lin et al. 2014, arXiv 1405.0312) computed by pycocotools, from in-memory boxes.

`coco_map` turns the ground truth and the decoded detections of a split into COCO objects and runs COCOeval
on them, so the numbers are those of the reference implementation the field reports:

    map     mAP@[.5:.95]  AP averaged over IoU thresholds .50, .55, ..., .95   (COCOeval stats[0])
    map50   mAP@.5                                                             (stats[1])
    map75   mAP@.75                                                            (stats[2])

each averaged over the categories that have ground truth, with COCO's 101-point interpolated precision and at
most 100 detections per image (the highest scoring; `maxDets=100`). What a shifted box costs: a box moved by a
fraction f of its width along x has IoU (1 - f) / (1 + f) with its ground truth, so a lone, otherwise perfect
detection counts at IoU thresholds up to that value: f = 0.1 (IoU .82) keeps mAP@.5 and mAP@.75 at 1 and gives
mAP 0.7 (7 of the 10 thresholds); f = 0.2 (IoU .67) keeps mAP@.5 at 1 and drops mAP@.75 to 0; f > 1/3 drops
mAP@.5 too.

Boxes are [ymin, xmin, ymax, xmax] (the data's and the decoder's order), normalised to [0, 1] by default and
scaled to pixels with `image_size`; pixel boxes pass with `normalized=False`. Class ids are 0-based (-1 marks
padding); COCO ids (images, categories and annotations) start at 1, since pycocotools reads an annotation id
of 0 as "unmatched". Every ground-truth box has iscrowd = 0 and its box area.
"""
from __future__ import annotations

import contextlib
import io
from typing import Sequence

import numpy as np
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

KEYS = ("map", "map50", "map75")


def _per_image(arrays, n: int | None = None) -> list[np.ndarray]:
    """A (B, ...) array or a sequence of per-image arrays -> a list of numpy arrays."""
    out = [np.asarray(a) for a in arrays]
    if n is not None and len(out) != n:
        raise ValueError(f"{len(out)} images of detections for {n} images of ground truth")
    return out


def _xywh(boxes: np.ndarray, height: float, width: float) -> np.ndarray:
    """[ymin, xmin, ymax, xmax] -> COCO's [x, y, width, height], scaled by the image size."""
    b = np.asarray(boxes, np.float64).reshape(-1, 4) * np.array([height, width, height, width])
    return np.stack([b[:, 1], b[:, 0], b[:, 3] - b[:, 1], b[:, 2] - b[:, 0]], axis=1)


def to_coco(gt_boxes, gt_classes, num_classes: int, image_size=(1.0, 1.0), scale=None) -> COCO:
    """The ground truth as an indexed pycocotools COCO object (image i -> id i + 1; class c -> category c + 1).
    Boxes are multiplied by `scale` (height, width), by default the image size (for normalised boxes)."""
    height, width = image_size
    scale = image_size if scale is None else scale
    images, anns = [], []
    for i, (boxes, classes) in enumerate(zip(_per_image(gt_boxes), _per_image(gt_classes))):
        images.append({"id": i + 1, "height": height, "width": width})
        keep = classes.reshape(-1) >= 0
        for box, c in zip(_xywh(boxes, *scale)[keep], classes.reshape(-1)[keep]):
            anns.append({"id": len(anns) + 1, "image_id": i + 1, "category_id": int(c) + 1,
                         "bbox": [float(v) for v in box], "area": float(box[2] * box[3]), "iscrowd": 0})
    gt = COCO()
    gt.dataset = {"images": images, "annotations": anns,
                  "categories": [{"id": c + 1, "name": str(c)} for c in range(num_classes)]}
    with contextlib.redirect_stdout(io.StringIO()):  # pycocotools prints progress
        gt.createIndex()
    return gt


def detections_to_results(det_boxes, det_scores, det_classes, scale=(1.0, 1.0)) -> list[dict]:
    """Decoded detections -> COCO result dicts (image_id, category_id, bbox, score); class -1 rows dropped.
    Boxes are multiplied by `scale` (height, width)."""
    height, width = scale
    out = []
    scores_per_image = _per_image(det_scores)
    for i, (boxes, scores, classes) in enumerate(zip(_per_image(det_boxes), scores_per_image,
                                                     _per_image(det_classes, len(scores_per_image)))):
        keep = classes.reshape(-1) >= 0
        for box, s, c in zip(_xywh(boxes, height, width)[keep], scores.reshape(-1)[keep],
                             classes.reshape(-1)[keep]):
            out.append({"image_id": i + 1, "category_id": int(c) + 1, "bbox": [float(v) for v in box],
                        "score": float(s)})
    return out


def evaluate(gt: COCO, results: Sequence[dict]) -> dict[str, float]:
    """COCOeval (bbox) of result dicts against `gt`: {"map", "map50", "map75"}. No ground truth at all gives
    NaN (COCOeval's -1); ground truth and no detection gives 0."""
    if not gt.dataset["annotations"]:
        return {k: float("nan") for k in KEYS}
    if not results:  # loadRes cannot take an empty list
        return {k: 0.0 for k in KEYS}
    with contextlib.redirect_stdout(io.StringIO()):
        dt = gt.loadRes(list(results))
        ev = COCOeval(gt, dt, iouType="bbox")
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    return {k: float(v) if v >= 0 else float("nan") for k, v in zip(KEYS, ev.stats[:3])}


def coco_map(gt_boxes, gt_classes, det_boxes, det_scores, det_classes, *, num_classes: int,
             image_size: tuple[float, float] = (1.0, 1.0), normalized: bool = True) -> dict[str, float]:
    """{"map", "map50", "map75"} of the detections of a split against its ground truth.

    gt_boxes (B, N, 4) and gt_classes (B, N) (-1 = padding), or per-image sequences; det_boxes (B, M, 4),
    det_scores (B, M), det_classes (B, M) likewise. `image_size` (height, width) in pixels scales normalised
    boxes (IoU does not depend on it; it makes areas, and so a later per-size breakdown, mean pixels).
    """
    if len(det_boxes) != len(gt_boxes):
        raise ValueError(f"detections of {len(det_boxes)} images for ground truth of {len(gt_boxes)}")
    size = tuple(float(s) for s in image_size)
    scale = size if normalized else (1.0, 1.0)
    gt = to_coco(gt_boxes, gt_classes, num_classes, size, scale)
    return evaluate(gt, detections_to_results(det_boxes, det_scores, det_classes, scale))
