"""What the dense tasks (segmentation, detection) share: the model (a registry backbone under a dense head,
tasks/dense/model.py), the options they refuse, and the evaluator that runs a split through the eval step."""
from __future__ import annotations

from typing import Callable

import jax

from tl_research.core import sharding
from tl_research.checkpoints import weights as weights_lib
from tl_research.data import pipeline
from tl_research.core.errors import ConfigError


def add(total, out):
    """Sums on the devices, batch by batch (a confusion matrix, loss sums)."""
    return out if total is None else jax.tree.map(lambda a, b: a + b, total, out)


def append(total, out):
    """Keeps every batch's outputs (decoded detections), still on the devices until the one transfer."""
    return [out] if total is None else [*total, out]


class SplitEval:
    """One split through `eval_step(params, stats, batch)` (the task objective's `reduce`, replicated across
    devices and processes), its outputs folded by `combine` and turned into a Score by `score` on the host."""

    def __init__(self, eval_step: Callable, data: pipeline.Dataset, split: pipeline.Split, put: Callable, *,
                 batch_size: int, threads: int = 2, combine: Callable = add, score: Callable):
        self.eval_step, self.data, self.split, self.put = eval_step, data, split, put
        self.batch_size, self.threads, self.combine, self.score = batch_size, threads, combine, score

    def counts(self, params, stats):
        total = None
        for batch in pipeline.eval_batches(self.data, self.split, self.batch_size, self.threads):
            total = self.combine(total, self.eval_step(params, stats, self.put(batch)))
        # one transfer after every batch is queued; replicated, so every process reads the same numbers
        # (and selects the same best step)
        return self.score(sharding.to_host(total))


class DenseTask:
    """A task whose model is `models.dense.build(config.model, head_builder(), ...)`."""

    name = targets = metric = ""
    augment_allowed: tuple[str, ...] = ()  # the config.augment ops the task's labels move through
    # the head reads several units' outputs: no frozen-prefix feature cache
    cacheable, cache_reason = False, "its head reads several units' outputs"

    def head_builder(self) -> Callable:
        raise NotImplementedError

    def check(self, config) -> None:
        """Options that assume image-level labels are refused; the head's keys are checked against the
        backbone's unit maps at the data's image size."""
        if len(config.evals) or tuple(config.data.get("extra_test_sets", ())):
            raise ConfigError("evals", tuple(config.evals.keys()) or tuple(config.data.extra_test_sets),
                              "none (config.evals and data.extra_test_sets are classification evaluators)",
                              why=f"config.task={self.name}")
        if config.train.class_weights != "none":
            raise ConfigError("train.class_weights", config.train.class_weights, "none",
                              why=f"config.task={self.name} has no image-level class")
        if config.train.label_smoothing:
            raise ConfigError("train.label_smoothing", config.train.label_smoothing, "0.0",
                              why=f"config.task={self.name}")
        if config.data.balance != "none":
            raise ConfigError("data.balance", config.data.balance, "none", why=f"config.task={self.name} has no "
                                                                                "image-level class to balance")
        self.parse_augment(config.augment)
        self._check_head(config)

    def _check_head(self, config) -> None:
        from tl_research.tasks.dense import model as dense
        b = pipeline.builder(config.data)
        native = b.info.features[config.data.image_key].shape
        shape, _, _ = pipeline.resolve_image_shape(config.data, native, None)
        dense.abstract(config.model, self.head_builder(), 2, shape[2], shape)

    def parse_augment(self, ops) -> tuple:
        from tl_research.tasks.dense import augment as dense_augment
        return dense_augment.parse(tuple(ops), self.augment_allowed, self.name) if ops else ()

    def build_model(self, config, data, weights):
        """Fresh (backbone and head from config.seed), or the units from `weights` under a fresh head."""
        from tl_research.tasks.dense import model as dense
        model = dense.build(config.model, self.head_builder(), data.num_classes, data.image_shape[2],
                            data.image_shape, seed=config.seed)
        if weights is None:
            return model, "scratch"
        return model, weights_lib.transfer(model, weights).summary()
