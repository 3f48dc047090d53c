"""What the dense tasks (segmentation, detection) share: the model (a registry backbone under a dense head,
tasks/dense/model.py), the options they refuse, the augmentation that moves their labels (tasks/dense/augment.py).
Their evaluator is tasks/split_eval.py's."""
from __future__ import annotations

from typing import Callable

from tl_research.checkpoints import weights as weights_lib
from tl_research.data import pipeline
from tl_research.core.errors import ConfigError


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
        return model, weights_lib.transfer(model, weights,
                                           fresh_from_unit=config.get("transfer_depth", -1)).summary()
