"""Tasks: what a run learns to predict, as a small object the trainer is handed (`config.task`), one folder
per task, each registered here through the contract in tasks/base.py (`Task`, `register`):

    classification/  an image-level class (data.targets = label); metric accuracy
    segmentation/    a class per pixel (data.targets = segmentation); a decoder head; metric mean IoU
    detection/       boxes and their classes (data.targets = detection); a CenterNet head; metric COCO mAP
    dense/           what segmentation and detection share: the backbone-under-a-head model, the augmentation
                     that moves masks and boxes with the image, the options they refuse
    base.py          the contract (`Task`) and the registry; split_eval.py: an evaluator any task may use

A task folder holds task.py (the task object), and as they apply head.py, loss.py, metrics.py, targets.py
(its record reader: the `Targets` the data pipeline is handed). Adding a task = a folder (or a module
outside the package) with an object that meets `base.Task`, passed to `register`, and a dataset builder.
`NAMES` is the registered tasks' names (live: a task registered later is in it).
"""
from __future__ import annotations

import copy

from tl_research.core.errors import ConfigError
from tl_research.tasks import base
from tl_research.tasks.base import Task, get, names, of, register, result_columns  # noqa: F401 - the public face
from tl_research.tasks.classification import task as classification
from tl_research.tasks.detection import task as detection
from tl_research.tasks.segmentation import task as segmentation

for _task in (classification.TASK, segmentation.TASK, detection.TASK):
    register(_task)


def __getattr__(name: str):
    if name == "NAMES":  # the registry's names now (a task registered from outside included)
        return names()
    if name == "TASKS":
        return dict(base._TASKS)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


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
    for other in base._TASKS.values():  # a task's own options (e.g. train.background_weight) stay neutral
        for key, (neutral, why) in getattr(other, "options", {}).items():
            value = _value(config, key, neutral)
            if other is not task and key not in getattr(task, "options", {}) and value != neutral:
                raise ConfigError(key, value, repr(neutral), why=f"config.task={task.name} {why}")
    task.check(config)


def _value(config, key: str, default):
    """config's value at the dotted `key` (`default` where it is missing)."""
    *parents, leaf = key.split(".")
    for p in parents:
        config = config.get(p, {})
    return config.get(leaf, default)


def selection_metric(config) -> str:
    """The validation metric the run selects its best step by: train.early_stopping_metric, or with it
    empty the task's own (val_accuracy, val_miou, val_map)."""
    task = of(config)
    name = config.train.early_stopping_metric or f"val_{task.metric}"
    allowed = (f"val_{task.metric}", "val_loss")
    if name not in allowed:
        raise ConfigError("train.early_stopping_metric", name, ", ".join(allowed) + " ('' = the first)",
                          why=f"for config.task={task.name}" if task.name != base.DEFAULT else "")
    return name
