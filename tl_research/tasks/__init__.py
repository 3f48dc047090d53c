"""Tasks: what a run learns to predict, as a small object the trainer is handed (`config.task`).

    classification   an image-level class (data.targets = label); metric accuracy
    segmentation     a class per pixel (data.targets = segmentation); a decoder head; metric mean IoU
    detection        boxes and their classes (data.targets = detection); a CenterNet head; metric COCO mAP

A task differs from another in its head, its loss, the targets its batches carry and how a split is scored;
freezing, strategies, schedules, sharding, checkpoints and resume are shared, so the trainer asks the task
for those pieces and never branches on its name. Each task (one file per task) provides:

    name, targets, metric    the config.task value, the data.targets it reads, the selection metric's name
                             (the trainer selects on `val_<metric>` by default)
    check(config)            ConfigError for settings the task cannot honour, before any work
    build_model(config, data, weights) -> (model, transfer report): fresh, or the units from `weights`
                             with a freshly initialised head
    objective(config, data)  a hashable object with the jittable pieces of the steps:
                               prepare(batch, images, key) -> (images, targets)   augmentation and targets
                               loss(outputs, targets, hp) -> (loss, {name: train metric})
                               reduce(outputs, batch) -> arrays summed (or gathered) over the batch's
                                                         real examples, on the devices
    evaluator(eval_step, data, split, put, batch_size, threads) -> an object whose
                             `counts(params, stats)` returns a Score of the split

A Score has `metric` (the selection value), `loss`, `values()` ({name: value}, logged at every eval as
val_NAME / test_NAME), `summary()` (the test_NAME columns of results.csv) and `detail()` (test_metrics.json).
"""
from __future__ import annotations

import copy

from tl_research.core.errors import ConfigError
from tl_research.tasks import classification, detection, segmentation

TASKS = {t.name: t for t in (classification.TASK, segmentation.TASK, detection.TASK)}
NAMES = tuple(TASKS)


def get(name: str):
    if name not in TASKS:
        raise ConfigError("task", name, ", ".join(NAMES))
    return TASKS[name]


def of(config):
    """The task `config.task` names (classification for a config without the key)."""
    return get(config.get("task", "classification"))


def check_targets(config) -> None:
    """data.targets is left at its default ("label", which the task then sets) or names the task's own."""
    task = of(config)
    if config.data.targets not in ("label", task.targets):
        raise ConfigError("data.targets", config.data.targets, f"{task.targets} (or leave it at 'label': "
                          "config.task sets it)", why=f"config.task={task.name} reads {task.targets} targets")


def resolve_targets(config) -> None:
    """Sets data.targets to what config.task reads (in place; config.json then shows what ran): the one place
    data.targets is derived (config.apply_overrides calls it for every run, `resolved` for a config that
    skipped it)."""
    check_targets(config)
    config.data.targets = of(config).targets


def resolved(config):
    """`config` with the data.targets its task reads: itself when they are set, else a copy with them set by
    `resolve_targets` (a config that skipped config.apply_overrides, e.g. one built by hand)."""
    if config.data.targets == of(config).targets:
        return config
    config = copy.deepcopy(config)  # as config.copy_config: every field keeps its declared type
    resolve_targets(config)
    return config


def check(config) -> None:
    """ConfigError for a bad config.task, targets that do not fit it, or settings the task cannot honour."""
    check_targets(config)
    task = of(config)
    weight = config.train.get("background_weight", 1.0)
    if task.name != "segmentation" and weight != 1.0:
        raise ConfigError("train.background_weight", weight, "1.0", why=f"config.task={task.name} has no "
                          "background pixels (a segmentation loss option)")
    task.check(config)


def selection_metric(config) -> str:
    """The validation metric the run selects its best step by: train.early_stopping_metric, or with it
    empty the task's own (val_accuracy, val_miou, val_map)."""
    task = of(config)
    name = config.train.early_stopping_metric or f"val_{task.metric}"
    allowed = (f"val_{task.metric}", "val_loss")
    if name not in allowed:
        raise ConfigError("train.early_stopping_metric", name, ", ".join(allowed) + " ('' = the first)",
                          why=f"for config.task={task.name}" if task.name != "classification" else "")
    return name
