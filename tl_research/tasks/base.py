"""The Task contract (`Task`) and the registry of tasks (`register`, `get`, `of`, `names`).

A task is what a run learns to predict (`config.task` names it). It differs from another in its head, its
loss, the targets its batches carry and how a split is scored; freezing, strategies, schedules, sharding,
checkpoints and resume are shared, so generic code (the trainer, the data pipeline, results.csv, the feature
cache) asks the task for those pieces and never branches on its name. A task registered with `register`,
from inside the package or outside it, is one `config.task` value like the built-in ones.

A Score (what an evaluator's `counts` returns) has `metric` (the selection value), `loss`, `values()`
({name: value}, logged at every eval as val_NAME / test_NAME), `summary()` (the test_NAME columns of
results.csv) and `detail()` (test_metrics.json).
"""
from __future__ import annotations

from typing import Any, Callable, Protocol, runtime_checkable

from tl_research.core.errors import ConfigError
from tl_research.data import targets as targets_lib


@runtime_checkable
class Task(Protocol):
    """What the trainer, the data pipeline and the analysis ask a task for."""

    name: str  # the config.task value
    targets: str  # the data.targets value it reads (its target_spec's name)
    target_spec: targets_lib.Targets  # what the pipeline reads from a record and the batch arrays it carries
    metric: str  # the progress and selection metric: val_<metric> selects the best step by default
    result_columns: tuple[str, ...]  # the headline columns results.csv leads with (val_<metric> first)
    cacheable: bool  # the frozen-prefix feature cache applies (the head reads only the last unit's output)
    cache_reason: str  # why it does not, when not cacheable ("" when it is)

    def check(self, config) -> None:
        """ConfigError for settings the task cannot honour, before any work."""

    def parse_augment(self, ops) -> tuple:
        """config.augment -> the ops its objective applies (ConfigError for an op it cannot apply)."""

    def build_model(self, config, data, weights) -> tuple[Any, str]:
        """(model, transfer report): fresh, or the units from `weights` with a freshly initialised head."""

    def objective(self, config, data, augment_ops: tuple = (), normaliser=None) -> Any:
        """A hashable object with the jittable pieces of the steps, given the run's input normalisation
        `normaliser` = (value_range, mean, std) (run.setup.normaliser: uint8 pixels scaled to the value range,
        then (x - mean) / std per channel), which pixel-space augmentation needs:
            prepare(batch, images, key) -> (images, targets)   augmentation and targets
            loss(outputs, targets, hp) -> (loss, {name: train metric})
            reduce(outputs, batch) -> arrays summed (or gathered) over the batch's real examples
            for_eval() -> the objective the eval step depends on"""

    def evaluator(self, eval_step: Callable, data, split, put: Callable, *, batch_size: int,
                  threads: int = 2) -> Any:
        """An object whose `counts(params, stats)` returns a Score of the split."""


_TASKS: dict[str, Task] = {}
DEFAULT = "classification"  # the task of a config without config.task


def register(task: Task) -> Task:
    """Makes `task` the one `config.task = task.name` runs, and its target spec the one `data.targets =
    task.targets` reads. Checks the contract's attributes; returns the task (usable as a decorator on an
    instance factory's result)."""
    missing = [a for a in Task.__annotations__ if not hasattr(task, a)]
    missing += [m for m in ("check", "parse_augment", "build_model", "objective", "evaluator")
                if not callable(getattr(task, m, None))]
    if missing:
        raise TypeError(f"task {getattr(task, 'name', task)!r} lacks {', '.join(missing)} (tasks.base.Task)")
    if task.target_spec.name != task.targets:
        raise TypeError(f"task {task.name!r}: targets {task.targets!r} is not its target_spec's name "
                        f"{task.target_spec.name!r}")
    _TASKS[task.name] = task
    targets_lib.register(task.target_spec)
    return task


def names() -> tuple[str, ...]:
    """The registered tasks' names, in registration order (the built-in ones first)."""
    return tuple(_TASKS)


def get(name: str) -> Task:
    if name not in _TASKS:
        raise ConfigError("task", name, ", ".join(_TASKS))
    return _TASKS[name]


def of(config) -> Task:
    """The task `config.task` names (classification for a config without the key)."""
    return get(config.get("task", DEFAULT))


def result_columns() -> list[str]:
    """Every registered task's headline columns, in registration order (results.csv's leading columns)."""
    return [c for t in _TASKS.values() for c in t.result_columns]
