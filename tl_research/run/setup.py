"""A run's setup, before anything compiles: the initial weights, the data, the model with its head, the
parameters its strategy adds and its regulariser's change, the strategy's plan, the schedule's length and the
class weights (`setup`), and the device mesh.

Also the input normalisation a model's weights expect (`normaliser`) and the metadata a run exports with its
weights (`run_meta`), which the compiled steps and the feature extractor read.
"""
from __future__ import annotations

import contextlib
import dataclasses
import logging
from typing import Any

import jax
import numpy as np

from tl_research import models
from tl_research import tasks as tasks_lib
from tl_research.checkpoints import weights as weights_lib
from tl_research.checkpoints.initial import init_weights
from tl_research.core import sharding, timing
from tl_research.data import pipeline, sampling
from tl_research.finetune import freezing, regularizers, strategies
from tl_research.models.base import ModelMeta

log = logging.getLogger(__name__)


def mesh(config=None) -> jax.sharding.Mesh:
    """The run's device mesh (config.mesh; without a config every device on one 'data' axis)."""
    return sharding.make_mesh(config.mesh if config is not None else sharding.DEFAULT_MESH)


def _host_memory():
    """A context that builds arrays in host memory (the CPU backend), not on an accelerator: the whole model
    is assembled there and each device then receives only its shard (sharding.place)."""
    try:
        return jax.default_device(jax.local_devices(backend="cpu")[0])
    except RuntimeError:  # JAX_PLATFORMS without cpu
        return contextlib.nullcontext()


def model_meta(model_name: str) -> ModelMeta | None:
    return getattr(models, "META", {}).get(model_name)


def _channel_stats(meta: ModelMeta, channels: int) -> tuple[np.ndarray, np.ndarray]:
    mean, std = np.asarray(meta.mean, np.float64), np.asarray(meta.std, np.float64)
    if mean.size != channels:  # e.g. an RGB checkpoint's statistics on grey data
        mean, std = np.full(channels, mean.mean()), np.full(channels, std.mean())
    return mean, std


def normaliser(meta: ModelMeta | None, channels: int) -> tuple[tuple, np.ndarray, np.ndarray]:
    meta = meta or ModelMeta()
    mean, std = _channel_stats(meta, channels)
    return tuple(meta.value_range), mean.astype(np.float32), std.astype(np.float32)


def run_meta(meta: ModelMeta, data: pipeline.Dataset) -> ModelMeta:
    """The metadata of the weights a run exports: the input it trained on, the normalisation it applied
    and its classes, so that a later run started from them (init=<run dir>) reads the same data the same
    way. Names and provenance stay the starting checkpoint's."""
    mean, std = _channel_stats(meta, data.image_shape[2])
    return dataclasses.replace(
        meta, input_size=tuple(int(d) for d in data.image_shape), value_range=tuple(map(float, meta.value_range)),
        mean=tuple(map(float, mean)), std=tuple(map(float, std)), interpolation=data.interpolation,
        crop_pct=float(data.crop_pct), num_classes=int(data.num_classes))


@dataclasses.dataclass
class Setup:
    data: pipeline.Dataset
    model: models.UnitModel
    meta: ModelMeta  # the run's: what it feeds the model (run_meta), exported with its weights
    frozen_depth: int  # of the run's last phase: the lowest unit that trains in it (Setup.depth)
    param_names: list[str]
    plan: strategies.Plan
    total_steps: int
    steps_per_epoch: int
    class_weights: np.ndarray
    transfer_report: str
    task: Any  # its tasks.Task: the model's head, the loss, the evaluators

    def labels(self, phase: strategies.Phase) -> dict[str, str]:
        """Parameter path -> optimizer label ('frozen', 'unit_i', 'head', '/no_decay'): the phase's rule."""
        return phase.labels(self.param_names)

    def depth(self, phase: strategies.Phase) -> int:
        """The lowest unit with a parameter that trains in `phase`: its step runs the units below it in inference
        mode with no backward pass (the depth rule's frozen_depth), and the feature cache starts there."""
        return phase.lowest_trainable_unit(self.param_names)


def _phase(timer, name: str):
    """`timer.phase(name)` (tl_research.core.timing), or nothing without a timer."""
    return timer.phase(name) if timer is not None else contextlib.nullcontext()


def setup(config, init_path: str | None = None, timer: timing.RunTimer | None = None) -> Setup:
    """Everything a run needs before anything compiles. After config.validate (trainer.run validates each
    config once per process), which checked the strategy's phases over the run's length: the plan is made
    again here with the built model's parameter paths (a phase rule over them), and a Shortfall only such a
    plan shows is warned in one line."""
    task = tasks_lib.of(config)
    with _phase(timer, "checkpoints"):
        weights, meta = init_weights(config.init, config.model, init_path)
    meta = meta or model_meta(config.model.name)
    with _phase(timer, "data"):  # the task's targets, whether or not data.targets was resolved
        data = pipeline.load(config.data, meta, seed=config.seed, targets=task.target_spec)
    weights, added = strategies.added.split(weights, config.model)  # tensors the saving run's strategy added
    with _host_memory():
        model, report = task.build_model(config, data, weights)  # a transferred model's head starts fresh
        model = strategies.extend(model, config)  # the strategy's own parameters (adapters, prompts), if any
        report += strategies.added.load(model, added, config)  # into the same ones, or one line why not
        # the regulariser's model change: StochNorm layers, Co-Tuning's source classifier beside the head
        model = regularizers.extend(model, config, weights)
    names = list(weights_lib.flat_state(model)["params"])
    total, steps_per_epoch = strategies.run_length(config.train, config.data.batch_size, len(data.train))
    plan = strategies.plan(config, num_units=model.num_units, total_steps=total, steps_per_epoch=steps_per_epoch,
                           frozen_depth=freezing.resolve_frozen_depth(config.frozen_depth, model.num_units),
                           paths=names)
    if plan.shortfall is not None:  # validation refuses what it can plan; this plan needed the model's paths
        log.warning("%s", plan.shortfall.warning())  # the result records frozen_depth_reached and plan_shortfall
    counts = np.bincount(data.train.labels, minlength=data.num_classes)
    class_w = sampling.class_weights(counts, config.train.class_weights, config.train.class_weights_beta,
                                     key="train.class_weights", norm=config.train.class_weights_norm)
    return Setup(data, model, run_meta(meta or ModelMeta(), data), plan.phases[-1].lowest_trainable_unit(names),
                 names, plan, total, steps_per_epoch, np.asarray(class_w, np.float32), report, task)
