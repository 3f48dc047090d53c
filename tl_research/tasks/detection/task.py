"""Object detection: a CenterNet head on the depth units (tasks/detection/head.py), its targets rendered from
the batch's boxes and its loss on the devices (loss.py), COCO mAP of the decoded detections by
pycocotools on the host (metrics.py).

Evaluation is the one place per-example outputs leave the devices: each eval batch returns its top-k
decoded detections and its ground truth, replicated (gathered across devices and processes), and the host
runs COCOeval on the whole split. Every process runs the same COCOeval on the same arrays, so all of them
select the same best step without a broadcast (process 0 alone writes the results)."""
from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np

from tl_research.tasks.detection import loss as centernet_targets, metrics as detection_metrics
from tl_research.tasks import split_eval
from tl_research.tasks.dense import augment as dense_augment, common as dense_common
from tl_research.tasks.detection import targets as targets_lib


@dataclasses.dataclass(frozen=True)
class Objective:
    num_classes: int
    augment_ops: tuple = ()
    max_detections: int = 100

    def for_eval(self) -> "Objective":
        """What the eval step depends on (no augmentation, no smoothing)."""
        return Objective(self.num_classes, (), self.max_detections)

    def prepare(self, batch: dict, images: jax.Array, key: jax.Array):
        boxes, classes = batch["boxes"], batch["classes"]
        if self.augment_ops:  # boxes move with the image; those moved out are dropped (class -1)
            images, boxes, classes = dense_augment.apply_detection(self.augment_ops, images, boxes, classes, key)
        return images, {"boxes": boxes, "classes": classes}

    def _loss(self, outputs: dict, boxes, classes, example_mask=None):
        grid = tuple(outputs["heatmap"].shape[1:3])  # the head's map: static at trace time
        targets = centernet_targets.render(boxes, classes, grid, self.num_classes)
        return centernet_targets.loss(outputs, targets, example_mask)

    def loss(self, outputs: dict, targets: dict, hp: dict):
        total, parts = self._loss(outputs, targets["boxes"], targets["classes"])
        return total, {"heatmap_loss": parts["heatmap"], "size_loss": parts["size"],
                       "offset_loss": parts["offset"]}

    def reduce(self, outputs: dict, batch: dict) -> dict:
        """The batch's loss (times its object count, so that a split's loss is its sum over objects divided
        once), its decoded detections and its ground truth (the host keeps the rows batch["mask"] marks)."""
        from tl_research.tasks.detection import head as centernet
        total, parts = self._loss(outputs, batch["boxes"], batch["classes"], batch["mask"])
        boxes, scores, classes = centernet.decode(outputs, self.max_detections)
        return {"loss": total * parts["objects"], "objects": parts["objects"], "det_boxes": boxes,
                "det_scores": scores, "det_classes": classes, "gt_boxes": batch["boxes"],
                "gt_classes": batch["classes"], "mask": batch["mask"]}


@dataclasses.dataclass
class Score:
    maps: dict  # detection_metrics.KEYS -> value
    loss_sum: float
    objects: float

    @property
    def metric(self) -> float:
        return self.maps["map"]

    @property
    def loss(self) -> float:
        return self.loss_sum / max(self.objects, 1.0)

    def values(self) -> dict:
        return {**self.maps, "loss": self.loss}

    def summary(self) -> dict:
        return self.values()

    def detail(self) -> dict:
        return self.values()


def scorer(num_classes: int, image_hw: tuple[int, int]):
    """The host side of the evaluation: every batch's outputs -> the split's Score (COCOeval)."""
    def score(batches: list[dict]) -> Score:
        cat = {k: np.concatenate([np.atleast_1d(np.asarray(b[k])) for b in batches]) for k in batches[0]}
        keep = cat["mask"].astype(bool)
        maps = detection_metrics.coco_map(cat["gt_boxes"][keep], cat["gt_classes"][keep], cat["det_boxes"][keep],
                                          cat["det_scores"][keep], cat["det_classes"][keep],
                                          num_classes=num_classes, image_size=image_hw)
        # no ground truth at all reads NaN in COCOeval: scored 0 here, so selection still compares numbers
        maps = {k: (0.0 if np.isnan(v) else float(v)) for k, v in maps.items()}
        return Score(maps, float(np.sum(cat["loss"])), float(np.sum(cat["objects"])))
    return score


class Detection(dense_common.DenseTask):
    name = "detection"
    target_spec = targets_lib.TARGETS
    targets = target_spec.name
    metric = "map"
    result_columns = ("val_map", "test_map", "test_map50", "test_map75")
    augment_allowed = dense_augment.DETECTION_OPS

    def head_builder(self):
        from tl_research.tasks.detection import head as centernet
        return centernet.build

    def objective(self, config, data, augment_ops: tuple = (), normaliser=None) -> Objective:
        k = int(config.model.get("max_detections", 100))
        return Objective(data.num_classes, tuple(augment_ops), k)

    def evaluator(self, eval_step, data, split, put, *, batch_size: int, threads: int = 2):
        return split_eval.SplitEval(eval_step, data, split, put, batch_size=batch_size, threads=threads,
                                    combine=split_eval.append,
                                    score=scorer(data.num_classes, tuple(data.image_shape[:2])))


TASK = Detection()
