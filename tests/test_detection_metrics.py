import contextlib
import io
import json

import numpy as np
import pytest

from tl_research.tasks.detection import metrics as dm

# two images, padded to 3 boxes: image 0 has a class-0 and a class-2 box, image 1 one class-1 box
GT_BOXES = np.array([[[0.1, 0.1, 0.4, 0.5], [0.5, 0.5, 0.9, 0.8], [0, 0, 0, 0]],
                     [[0.2, 0.3, 0.6, 0.7], [0, 0, 0, 0], [0, 0, 0, 0]]], np.float32)
GT_CLASSES = np.array([[0, 2, -1], [1, -1, -1]], np.int32)


def _shifted(boxes, f):
    """Every box moved right by f of its width."""
    w = boxes[..., 3] - boxes[..., 1]
    return boxes + np.stack([0 * w, f * w, 0 * w, f * w], axis=-1)


def _map(det_boxes, scores=None, classes=GT_CLASSES):
    scores = np.where(classes >= 0, 0.9, 0.0) if scores is None else scores
    return dm.coco_map(GT_BOXES, GT_CLASSES, det_boxes, scores, classes, num_classes=3, image_size=(96, 96))


def test_perfect_detections_score_one():
    assert _map(GT_BOXES) == pytest.approx({"map": 1.0, "map50": 1.0, "map75": 1.0})


def test_shifted_boxes_lose_map75_before_map50_as_documented():
    assert _map(_shifted(GT_BOXES, 0.1)) == pytest.approx({"map": 0.7, "map50": 1.0, "map75": 1.0})
    small = _map(_shifted(GT_BOXES, 0.2))  # IoU 2/3
    assert small["map50"] == pytest.approx(1.0) and small["map75"] == 0.0 and small["map"] == pytest.approx(0.4)
    assert _map(_shifted(GT_BOXES, 0.4))["map50"] == 0.0  # IoU 3/7


def test_no_detections_score_zero():
    assert _map(GT_BOXES, classes=np.full_like(GT_CLASSES, -1)) == {"map": 0.0, "map50": 0.0, "map75": 0.0}


def test_agrees_with_pycocotools_on_a_coco_json_file(tmp_path):
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval
    # per image: a perfect box, a shifted one, a false positive, a wrong class, ranked by mixed scores
    det_boxes = np.array([[GT_BOXES[0, 0], _shifted(GT_BOXES, 0.25)[0, 1], [0.6, 0.0, 0.9, 0.3]],
                          [_shifted(GT_BOXES, 0.05)[1, 0], GT_BOXES[1, 0], [0.1, 0.1, 0.3, 0.3]]], np.float32)
    det_scores = np.array([[0.9, 0.8, 0.95], [0.7, 0.6, 0.99]], np.float32)
    det_classes = np.array([[0, 2, 0], [1, 0, 1]], np.int32)
    ours = dm.coco_map(GT_BOXES, GT_CLASSES, det_boxes, det_scores, det_classes, num_classes=3,
                       image_size=(96, 96))

    def xywh(b):  # normalised [ymin, xmin, ymax, xmax] -> pixels [x, y, w, h], written out by hand
        return [float(b[1]) * 96, float(b[0]) * 96, float(b[3] - b[1]) * 96, float(b[2] - b[0]) * 96]
    gt = {"images": [{"id": 1, "height": 96, "width": 96}, {"id": 2, "height": 96, "width": 96}],
          "categories": [{"id": 1, "name": "a"}, {"id": 2, "name": "b"}, {"id": 3, "name": "c"}],
          "annotations": [{"id": 1, "image_id": 1, "category_id": 1, "bbox": xywh(GT_BOXES[0, 0]), "iscrowd": 0},
                          {"id": 2, "image_id": 1, "category_id": 3, "bbox": xywh(GT_BOXES[0, 1]), "iscrowd": 0},
                          {"id": 3, "image_id": 2, "category_id": 2, "bbox": xywh(GT_BOXES[1, 0]), "iscrowd": 0}]}
    for a in gt["annotations"]:
        a["area"] = a["bbox"][2] * a["bbox"][3]
    res = [{"image_id": i + 1, "category_id": int(det_classes[i, j]) + 1, "bbox": xywh(det_boxes[i, j]),
            "score": float(det_scores[i, j])} for i in range(2) for j in range(3)]
    (tmp_path / "gt.json").write_text(json.dumps(gt))
    (tmp_path / "res.json").write_text(json.dumps(res))
    with contextlib.redirect_stdout(io.StringIO()):
        coco = COCO(str(tmp_path / "gt.json"))
        ev = COCOeval(coco, coco.loadRes(str(tmp_path / "res.json")), "bbox")
        ev.evaluate(), ev.accumulate(), ev.summarize()
    assert [ours[k] for k in dm.KEYS] == pytest.approx(list(ev.stats[:3]), abs=1e-9)
    assert 0.0 < ours["map"] < ours["map50"] < 1.0  # the example is not degenerate
