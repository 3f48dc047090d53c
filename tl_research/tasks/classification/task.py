"""Classification: one class per image, softmax cross-entropy, accuracy (the registry models as they are)."""
from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import optax

from tl_research.evals import evaluators

from tl_research import models
from tl_research.checkpoints import weights as weights_lib
from tl_research.data import targets as targets_lib


@dataclasses.dataclass(frozen=True)
class Objective:
    """Label-smoothed one-hot targets (mixed by mixup or cutmix when config.augment has them), per-class loss
    weights."""

    num_classes: int
    label_smoothing: float = 0.0
    augment_ops: tuple = ()
    # (zero, full): the normalised values of pixel values 0 and 255 per channel, from the run's normalisation
    # (augment.pixel_values), which randaugment works in; () without one
    pixels: tuple = ()

    def for_eval(self) -> "Objective":
        """What the eval step depends on (no augmentation, no smoothing)."""
        return Objective(0)  # reduce reads the classes from the logits

    def prepare(self, batch: dict, images: jax.Array, key: jax.Array):
        targets = optax.smooth_labels(jax.nn.one_hot(batch["label"], self.num_classes), self.label_smoothing)
        if self.augment_ops:
            from tl_research.data import augment
            # (augmentation always trains on images, never on cached activations)
            images, targets = augment.apply(self.augment_ops, images, targets, key, self.pixels or None)
        return images, {"soft": targets, "label": batch["label"]}

    def loss(self, logits: jax.Array, targets: dict, hp: dict):
        logits = logits.astype(jnp.float32)  # the loss in float32, whatever computes
        soft = targets["soft"]
        # per-example weight from the class weights (mixup targets weigh their classes pro rata)
        loss = (optax.softmax_cross_entropy(logits, soft) * (soft @ hp["class_weights"])).mean()
        return loss, {"accuracy": jnp.mean(jnp.argmax(logits, -1) == targets["label"])}

    def reduce(self, logits: jax.Array, batch: dict) -> dict:
        """The batch's correct predictions, summed cross-entropy and (C, C) confusion matrix (rows = true
        class) over the examples batch["mask"] marks."""
        logits = logits.astype(jnp.float32)
        loss = optax.softmax_cross_entropy_with_integer_labels(logits, batch["label"])
        preds, labels, mask = jnp.argmax(logits, -1), batch["label"], batch["mask"]
        n = logits.shape[-1]
        confusion = jnp.zeros((n, n), jnp.int32).at[labels, preds].add(mask.astype(jnp.int32))
        return {"correct": jnp.sum(mask & (preds == labels)), "loss": jnp.sum(jnp.where(mask, loss, 0.0)),
                "confusion": confusion}


class Classification:
    """The image-level label read by the pipeline itself (data.targets = label); the registry models with their
    own head; cacheable (the head reads the last unit's output only)."""

    name = "classification"
    target_spec = targets_lib.LABEL
    targets = target_spec.name
    metric = "accuracy"
    result_columns = ("val_accuracy", "test_accuracy")
    cacheable, cache_reason = True, ""

    def check(self, config) -> None:
        pass  # every option applies

    def build_model(self, config, data, weights):
        if weights is None:
            return models.build(config.model, data.num_classes, data.image_shape[2], seed=config.seed), "scratch"
        # every array comes from the checkpoint but the head, which starts at zero either way, and the units
        # from config.transfer_depth up, which start from config.seed as a run from scratch does
        n = config.get("transfer_depth", -1)
        build = models.zeros if n == -1 else models.build
        model = build(config.model, data.num_classes, data.image_shape[2], seed=config.seed)
        return model, weights_lib.transfer(model, weights, fresh_from_unit=n).summary()

    def objective(self, config, data, augment_ops: tuple = (), normaliser=None) -> Objective:
        pixels = ()
        if normaliser is not None:
            from tl_research.data import augment
            pixels = augment.pixel_values(*normaliser)
        return Objective(data.num_classes, float(config.train.label_smoothing), tuple(augment_ops), pixels)

    def parse_augment(self, ops) -> tuple:
        from tl_research.data import augment
        return augment.parse(tuple(ops)) if ops else ()

    def evaluator(self, eval_step, data, split, put, *, batch_size: int, threads: int = 2):
        return evaluators.Classification(eval_step, data, split, put, batch_size=batch_size, threads=threads)


TASK = Classification()
