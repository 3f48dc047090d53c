"""Semantic segmentation: a class per pixel from a decoder on the depth units (tasks/segmentation/head.py), per-pixel
cross-entropy (loss.py), mean IoU and pixel accuracy from a confusion matrix summed on the
devices (metrics.py). Ignore pixels (255) and padded eval examples count nowhere."""
from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np

from tl_research.tasks.segmentation import loss as segmentation_loss, metrics as segmentation_metrics
from tl_research.core.errors import ConfigError
from tl_research.tasks import split_eval
from tl_research.tasks.dense import augment as dense_augment, common as dense_common
from tl_research.tasks.segmentation import targets as targets_lib


@dataclasses.dataclass(frozen=True)
class Objective:
    num_classes: int
    augment_ops: tuple = ()
    background_weight: float = 1.0  # of class-0 pixels in the training loss (train.background_weight)

    def for_eval(self) -> "Objective":
        """What the eval step depends on (no augmentation, no loss weights: the eval loss is the plain mean)."""
        return Objective(self.num_classes)

    def prepare(self, batch: dict, images: jax.Array, key: jax.Array):
        masks = batch["segmentation_mask"]
        if self.augment_ops:  # the mask moves with the image (nearest neighbour; outside: ignore)
            images, masks = dense_augment.apply_segmentation(self.augment_ops, images, masks, key)
        return images, {"mask": masks}

    def loss(self, logits: jax.Array, targets: dict, hp: dict):
        """The (background-weighted) mean cross-entropy over the batch's counted pixels; its pixel accuracy as
        the train metric."""
        logits = logits.astype(jnp.float32)
        total, weight = segmentation_loss.pixel_cross_entropy(logits, targets["mask"],
                                                              background_weight=self.background_weight)
        cm = segmentation_metrics.confusion(targets["mask"], jnp.argmax(logits, -1), self.num_classes)
        pixels = jnp.maximum(jnp.sum(cm).astype(jnp.float32), 1.0)
        return total / jnp.maximum(weight, 1e-12), {"pixel_accuracy": jnp.trace(cm).astype(jnp.float32) / pixels}

    def reduce(self, logits: jax.Array, batch: dict) -> dict:
        logits = logits.astype(jnp.float32)
        total, count = segmentation_loss.pixel_cross_entropy(logits, batch["segmentation_mask"], batch["mask"])
        cm = segmentation_metrics.confusion(batch["segmentation_mask"], jnp.argmax(logits, -1), self.num_classes,
                                            batch["mask"])
        return {"confusion": cm, "loss": total, "pixels": count}


@dataclasses.dataclass
class Score:
    """A split's confusion matrix (rows = true class) and summed pixel cross-entropy."""

    confusion: np.ndarray
    loss_sum: float
    pixels: float

    @property
    def metric(self) -> float:
        return segmentation_metrics.mean_iou(self.confusion)

    @property
    def loss(self) -> float:
        return self.loss_sum / max(self.pixels, 1.0)

    def values(self) -> dict:
        return {"miou": self.metric, "pixel_accuracy": segmentation_metrics.pixel_accuracy(self.confusion),
                "loss": self.loss}

    def summary(self) -> dict:
        return self.values()

    def detail(self) -> dict:
        return {**segmentation_metrics.segmentation_metrics(self.confusion),
                "confusion": np.asarray(self.confusion).tolist()}


def _score(sums: dict) -> Score:
    return Score(np.asarray(sums["confusion"], np.int64), float(sums["loss"]), float(sums["pixels"]))


class Segmentation(dense_common.DenseTask):
    name = "segmentation"
    target_spec = targets_lib.TARGETS
    targets = target_spec.name
    metric = "miou"
    result_columns = ("val_miou", "test_miou", "test_pixel_accuracy")
    augment_allowed = dense_augment.SEGMENTATION_OPS
    # train keys only this task honours: (their neutral value, why another task refuses them)
    options = {"train.background_weight": (1.0, "has no background pixels (a segmentation loss option)")}

    def head_builder(self):
        from tl_research.tasks.segmentation import head as decoders
        return decoders.build

    def check(self, config) -> None:
        super().check(config)
        w = config.train.background_weight
        if isinstance(w, bool) or not isinstance(w, (int, float)) or not 0.0 < w <= 1e6:
            raise ConfigError("train.background_weight", w, "a weight > 0 (1.0: every pixel weighs the same)")

    def objective(self, config, data, augment_ops: tuple = (), normaliser=None) -> Objective:
        return Objective(data.num_classes, tuple(augment_ops), float(config.train.background_weight))

    def evaluator(self, eval_step, data, split, put, *, batch_size: int, threads: int = 2):
        # summed on the devices batch by batch: one (K, K) matrix alive, never the masks
        return split_eval.SplitEval(eval_step, data, split, put, batch_size=batch_size, threads=threads,
                                    combine=split_eval.add, score=_score)


TASK = Segmentation()
