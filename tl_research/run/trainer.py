"""The training loop: one run of one config, read top to bottom in stages (`_run`, class `Training`).

    setup      data -> model -> initial weights -> labels/optimizer -> schedule -> mesh -> compiled steps
               -> evaluators (val, test, config.evals)
    restore    fresh state, or the run's last orbax checkpoint (arrays + the typed HostState record)
    loop       sharded jitted train step; logging; evaluation and selection (best step, early stopping;
               the best weights kept in memory); phase switches; checkpoints (asynchronous orbax saves, the
               best weights to best/ with them)
    finish     test metrics at the selected step, exported weights, config.evals there, the result row

There is one loop for every strategy: strategies change the labels, the optimizer or the phases, never this
file's structure. A run is a function of its config and seed: batch k, the dropout key of step k and the LR
of step k are pure functions of k, so a resumed run ends where the uninterrupted one would have.
"""
from __future__ import annotations

import contextlib
import copy
import dataclasses
import functools
import logging
import math
import os
import pathlib
import time
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np
import optax
import orbax.checkpoint as ocp
from flax import nnx
from jax.sharding import NamedSharding, PartitionSpec as P

from tl_research.core import distributed, durable, sharding

from tl_research.evals import evaluators

from tl_research.run import feature_cache

from tl_research.finetune import freezing, strategies

from tl_research import models
from tl_research.core import runtime as runtime_lib, timing
from tl_research import tasks as tasks_lib
from tl_research.checkpoints import weights as weights_lib
from tl_research.data import pipeline, sampling
from tl_research.core.errors import ConfigError
from tl_research.models.base import ModelMeta, global_pool
from tl_research.tasks.classification import task as classification
from tl_research.core.tracking import RunTracker

RESULT_FILE = "result.json"
# A cross-entropy this large (logits off by thousands; log(C) at chance) has exploded even while finite
# (e.g. 1e30 at LR 1e30): reported as diverged, like NaN.
DIVERGED_LOSS = 1e4
log = logging.getLogger(__name__)


class TrainingFailed(RuntimeError):
    """The run cannot go on (e.g. the loss became NaN); the message is the one-line reason."""


@dataclasses.dataclass
class RunResult:
    status: str  # "done" | "failed"
    reason: str = ""
    metrics: dict[str, Any] = dataclasses.field(default_factory=dict)
    runtime: dict[str, Any] = dataclasses.field(default_factory=dict)  # platform, devices, processes, mesh


# ---------------------------------------------------------------------------------------------- setup

def enable_compilation_cache(directory=None) -> None:
    """JAX's persistent compilation cache: a process that compiles a step another process already
    compiled (a relaunched sweep, a resumed run) loads it from disk."""
    directory = directory or os.environ.get("TL_RESEARCH_CACHE") or pathlib.Path.home() / ".cache/tl_research"
    jax.config.update("jax_compilation_cache_dir", str(pathlib.Path(directory) / "jax"))
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.2)
    jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)


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


def init_weights(init: str, model_cfg, init_path: str | None = None):
    """(weights, meta) to start from, or (None, None) for scratch."""
    if init == "scratch":
        return None, None
    if init == "source":
        if not init_path:
            raise ConfigError("init", init, "'source' only inside a sweep that trains config.source")
        init = init_path
    fmt, sep, path = init.partition(":")
    if sep and fmt in ("keras", "torch", "npz"):
        from tl_research.checkpoints import convert
        return convert.convert(fmt, path, model_cfg.name, model_cfg=model_cfg)
    d = pathlib.Path(init)
    for candidate in (d, d / "weights"):
        if weights_lib.is_weights_dir(candidate):
            return weights_lib.load_weights(candidate)
    raise ConfigError("init", init, "scratch, source, a weights or run directory, keras:PATH, torch:PATH, "
                                    "npz:PATH", why="no weights found there")


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
    frozen_depth: int  # of the run's last phase
    param_names: list[str]
    plan: strategies.Plan
    total_steps: int
    steps_per_epoch: int
    class_weights: np.ndarray
    transfer_report: str
    task: Any = classification.TASK  # tl_research.tasks: the model's head, the loss, the evaluators


    def labels(self, phase: strategies.Phase) -> dict[str, str]:
        return freezing.labels(self.param_names, phase.frozen_depth)


def _phase(timer, name: str):
    """`timer.phase(name)` (tl_research.core.timing), or nothing without a timer."""
    return timer.phase(name) if timer is not None else contextlib.nullcontext()


def setup(config, init_path: str | None = None, timer: timing.RunTimer | None = None) -> Setup:
    sharding.check(config)  # mesh, precision, accumulation and batch sizes against the devices, before any data
    task = tasks_lib.of(config)
    tasks_lib.check(config)
    with _phase(timer, "checkpoints"):
        weights, meta = init_weights(config.init, config.model, init_path)
    meta = meta or model_meta(config.model.name)
    with _phase(timer, "data"):
        data = pipeline.load(_task_data(config, task), meta, seed=config.seed)
    with _host_memory():
        model, report = task.build_model(config, data, weights)  # a transferred model's head starts fresh
    frozen_depth = freezing.resolve_frozen_depth(config.frozen_depth, model.num_units)
    names = list(weights_lib.flat_state(model)["params"])
    steps_per_epoch = max(1, math.ceil(len(data.train) / config.data.batch_size))
    total = config.train.steps or math.ceil(config.train.epochs * steps_per_epoch)
    if total <= 0:
        raise ConfigError("train.steps", config.train.steps, "a positive number (or train.epochs > 0)")
    plan = strategies.plan(config, num_units=model.num_units, frozen_depth=frozen_depth, total_steps=total,
                           steps_per_epoch=steps_per_epoch)
    counts = np.bincount(data.train.labels, minlength=data.num_classes)
    class_w = sampling.class_weights(counts, config.train.class_weights, key="train.class_weights")
    return Setup(data, model, run_meta(meta or ModelMeta(), data), plan.phases[-1].frozen_depth, names, plan,
                 total, steps_per_epoch, np.asarray(class_w, np.float32), report, task)


def _task_data(config, task):
    """config.data with the targets the task reads (a config that skipped tasks.resolve_targets)."""
    if config.data.targets == task.targets:
        return config.data
    data_cfg = copy.deepcopy(config.data)
    data_cfg.targets = task.targets
    return data_cfg


# ---------------------------------------------------------------------------------------------- steps

class StepCache:
    """Compiled steps shared by the runs of a sweep (and the phases of a run): steps with the same structure
    (model, frozen depth, labels, optimizer, regulariser, augmentation) reuse one jitted function and its
    compilations. The learning rate and momentum are step inputs, so schedules never cause a recompile."""

    def __init__(self):
        self._steps: dict[Any, Any] = {}

    def get(self, key, build: Callable[[], Any]):
        if key not in self._steps:
            self._steps[key] = build()
        return self._steps[key]


@dataclasses.dataclass
class Steps:
    tx: optax.GradientTransformation
    train: Callable  # (state, batch, hp, anchor) -> (state, metrics)
    evaluate: Callable  # (params, stats, batch) -> the batch's reduced counts (build_eval)


def _dotted(path) -> str:
    return ".".join(str(p) for p in path)


@dataclasses.dataclass(frozen=True)
class Placement:
    """Where a run's arrays live on the mesh: parameters by the config.sharding rules (sharding.py), their
    optimizer state like them, BatchNorm statistics, step and key replicated, batches over the batch axes."""

    mesh: jax.sharding.Mesh
    params: dict  # dotted name -> NamedSharding
    shapes: dict  # dotted name -> jax.ShapeDtypeStruct of the parameter

    @classmethod
    def of(cls, mesh_: jax.sharding.Mesh, params: dict, rules=sharding.DEFAULT_RULES) -> "Placement":
        # arrays or jax.ShapeDtypeStruct (benchmarks/sharding_memory.py places a model it never allocates)
        shapes = {k: jax.ShapeDtypeStruct(v.shape, v.dtype) for k, v in params.items()}
        return cls(mesh_, sharding.param_shardings({k: s.shape for k, s in shapes.items()}, rules, mesh_), shapes)

    @property
    def repl(self) -> NamedSharding:
        return sharding.replicated(self.mesh)

    @property
    def batch(self) -> NamedSharding:
        return sharding.batch_sharding(self.mesh)

    def opt_state(self, tx: optax.GradientTransformation):
        return sharding.like_params(jax.eval_shape(tx.init, self.shapes), self.shapes, self.params, self.mesh)

    def state(self, tx: optax.GradientTransformation) -> dict:
        repl = self.repl
        return {"params": self.params, "batch_stats": repl, "opt_state": self.opt_state(tx), "step": repl,
                "key": repl}

    def anchor(self, l2sp) -> dict:
        """L2-SP's anchor (the starting weights of the units) is placed like the parameters."""
        return {k: s for k, s in self.params.items() if not k.startswith("head.")} if l2sp else {}


def _replicated_shardings(mesh_: jax.sharding.Mesh):
    """(params, state, anchor) shardings when a step is built without a Placement: everything replicated."""
    repl = sharding.replicated(mesh_)
    return repl, repl, repl


def _merger(graphdef, param_paths: dict, stat_paths: dict, precision: str = "float32"):
    compute = jnp.bfloat16 if precision == "bfloat16" else None

    def model_of(params, stats):
        p = nnx.from_flat_state([(param_paths[k], v) for k, v in params.items()])
        s = nnx.from_flat_state([(stat_paths[k], v) for k, v in stats.items()])
        model = nnx.merge(graphdef, p, s)
        if compute is not None:  # mixed precision: every layer computes in bfloat16 on float32 parameters
            # (flax casts them per call); BatchNorm reduces its statistics in float32 and keeps them so
            model.set_attributes(dtype=compute, raise_if_not_found=False)
        return model
    return model_of


def preprocessor(value_range, mean, std):
    """uint8 images -> the model's input: scaled to the value range, then normalised by mean and std."""
    mean, std = jnp.asarray(mean), jnp.asarray(std)
    lo, hi = value_range

    def preprocess(images):
        x = lo + images.astype(jnp.float32) * ((hi - lo) / 255.0)
        return (x - mean) / std
    return preprocess


def build_eval(graphdef, param_paths: dict, stat_paths: dict, *, value_range, mean, std,
               mesh_: jax.sharding.Mesh, placement: Placement | None = None, precision: str = "float32",
               objective=None, start_unit: int = 0) -> Callable:
    """jitted (params, stats, batch) -> the task objective's `reduce` of the model's outputs over the examples
    batch["mask"] marks, reduced across devices (and processes) inside the step. Classification (the
    default): {"correct", "loss", "confusion"}, the batch's correct predictions, summed cross-entropy and
    (C, C) confusion matrix (rows = true class), which evaluators.Classification sums over batches.
    `start_unit = k > 0`: batch["image"] holds unit k-1's cached activations (tl_research.run.feature_cache)."""
    model_of = _merger(graphdef, param_paths, stat_paths, precision)
    preprocess = preprocessor(value_range, mean, std)
    objective = objective or classification.Objective(num_classes=0)  # its reduce reads C from the logits

    def eval_step(params, stats, batch):
        model = model_of(params, stats)
        if start_unit:
            return objective.reduce(model(batch["image"], train=False, start=start_unit), batch)
        return objective.reduce(model(preprocess(batch["image"]), train=False), batch)

    params_sh = placement.params if placement else sharding.replicated(mesh_)
    repl, batch = sharding.replicated(mesh_), sharding.batch_sharding(mesh_)
    return jax.jit(eval_step, in_shardings=(params_sh, repl, batch), out_shardings=repl)


def build_features(graphdef, param_paths: dict, stat_paths: dict, *, value_range, mean, std, pool: str,
                   mesh_: jax.sharding.Mesh, placement: Placement | None = None,
                   precision: str = "float32") -> Callable:
    """jitted (params, stats, batch) -> (B, D) penultimate features of batch["image"]: the depth units in
    inference mode and the head's global pooling. Replicated on the way out: the host-side probe reads them."""
    model_of = _merger(graphdef, param_paths, stat_paths, precision)
    preprocess = preprocessor(value_range, mean, std)

    def features(params, stats, batch):
        model = model_of(params, stats)
        return global_pool(model.features(preprocess(batch["image"]), train=False), pool).astype(jnp.float32)

    params_sh = placement.params if placement else sharding.replicated(mesh_)
    repl, batch = sharding.replicated(mesh_), sharding.batch_sharding(mesh_)
    return jax.jit(features, in_shardings=(params_sh, repl, batch), out_shardings=repl)


def _accumulated(grad_fn: Callable, k: int, batch_sharding: NamedSharding) -> Callable:
    """grad_fn(train_params, stats, images, targets, drop_key) -> (grads, loss, metrics, stats), over `k`
    micro-batches: micro-batch i holds examples i, i+k, i+2k, ... of the images and of every array of the
    targets (so each one stays spread over all the devices), their gradients, losses and train metrics
    averaged, BatchNorm's running statistics carried through them in order. The mean of equal-sized
    micro-batches' mean gradients is the batch's mean gradient."""
    if k == 1:
        return grad_fn
    spec = P(None, *batch_sharding.spec)
    micro_sharding = NamedSharding(batch_sharding.mesh, spec)

    def split(x):
        x = jnp.swapaxes(x.reshape(x.shape[0] // k, k, *x.shape[1:]), 0, 1)
        return jax.lax.with_sharding_constraint(x, micro_sharding)

    def accumulated(train_params, stats, images, targets, drop_key):
        def body(carry, xs):
            g_sum, stats, loss_sum, metric_sum = carry
            i, im, tg = xs
            g, loss, metrics, stats = grad_fn(train_params, stats, im, tg, jax.random.fold_in(drop_key, i))
            return (jax.tree.map(jnp.add, g_sum, g), stats, loss_sum + loss,
                    jax.tree.map(jnp.add, metric_sum, metrics)), None

        metric_shapes = jax.eval_shape(lambda *a: grad_fn(*a)[2], train_params, stats,
                                       jax.tree.map(lambda x: x[:x.shape[0] // k], images),
                                       jax.tree.map(lambda x: x[:x.shape[0] // k], targets), drop_key)
        zero = (jax.tree.map(jnp.zeros_like, train_params), stats, jnp.zeros(()),
                jax.tree.map(lambda m: jnp.zeros(m.shape, jnp.float32), metric_shapes))
        (g, stats, loss, metrics), _ = jax.lax.scan(
            body, zero, (jnp.arange(k), split(images), jax.tree.map(split, targets)))
        return jax.tree.map(lambda x: x / k, g), loss / k, jax.tree.map(lambda m: m / k, metrics), stats
    return accumulated


def build_train(graphdef, param_paths: dict, stat_paths: dict, *, frozen_depth: int, label_map: dict,
                opt_cfg, num_classes: int, label_smoothing: float, value_range, mean, std,
                augment_ops: tuple, mesh_: jax.sharding.Mesh, lr_multipliers: dict | None = None,
                weight_decay: float | None = None, l2sp: tuple[float, float] | None = None,
                update_stats: bool = True, placement: Placement | None = None, precision: str = "float32",
                accumulate: int = 1, objective=None,
                start_unit: int = 0) -> tuple[optax.GradientTransformation, Callable]:
    """(optimizer, jitted train step) for one phase: units below `frozen_depth` get no gradient and no
    update; `l2sp = (alpha, beta)` adds the L2-SP penalty against the `anchor` weights given to each step;
    `accumulate = k` averages the gradients of k micro-batches before the one update (_accumulated).
    `objective` (tl_research.tasks) makes the targets and the loss; by default classification's, from
    num_classes, label_smoothing and augment_ops. `start_unit = k > 0` (k = frozen_depth, no augmentation):
    batch["image"] holds unit k-1's cached activations and the step runs units k.. only (feature_cache)."""
    objective = objective or classification.Objective(num_classes, label_smoothing, tuple(augment_ops))
    tx = freezing.build_optimizer(opt_cfg, label_map, lr_multipliers, weight_decay)
    trainable = freezing.trainable(label_map)
    trainable_set = set(trainable)
    model_of = _merger(graphdef, param_paths, stat_paths, precision)
    preprocess = preprocessor(value_range, mean, std)
    repl, batch_sh = sharding.replicated(mesh_), sharding.batch_sharding(mesh_)

    def train_step(state, batch, hp, anchor):
        key = jax.random.fold_in(state["key"], state["step"])
        k_aug, k_drop = jax.random.split(key)
        inputs = batch["image"] if start_unit else preprocess(batch["image"])
        images, targets = objective.prepare(batch, inputs, k_aug)
        params = state["params"]
        frozen = {k: v for k, v in params.items() if k not in trainable_set}

        def loss_fn(train_params, stats, images, targets, drop_key):
            model = model_of({**frozen, **train_params}, stats)
            outputs = model(images, train=True, frozen_depth=frozen_depth, update_stats=update_stats,
                            dropout_key=drop_key, **({"start": start_unit} if start_unit else {}))
            loss, metrics = objective.loss(outputs, targets, hp)  # in float32, whatever computes
            total = loss
            if l2sp is not None:
                total = loss + strategies.l2_sp_penalty(train_params, anchor, *l2sp)
            new_stats = {_dotted(q): v.get_value() for q, v in nnx.to_flat_state(nnx.state(model, nnx.BatchStat))}
            return total, (loss, metrics, new_stats)

        def grad_fn(train_params, stats, images, targets, drop_key):
            (_, (loss, metrics, stats)), g = jax.value_and_grad(loss_fn, has_aux=True)(
                train_params, stats, images, targets, drop_key)
            return g, loss, metrics, stats

        grads, loss, metrics, stats = _accumulated(grad_fn, accumulate, batch_sh)(
            {k: params[k] for k in trainable}, state["batch_stats"], images, targets, k_drop)
        grads = {**{k: jnp.zeros_like(v) for k, v in frozen.items()}, **grads}
        opt_state = state["opt_state"]
        opt_state.hyperparams["learning_rate"] = hp["lr"]
        opt_state.hyperparams["momentum"] = hp["momentum"]
        updates, opt_state = tx.update(grads, opt_state, params)
        # frozen parameters are passed through untouched: bitwise unchanged, whatever the optimizer does
        new_params = {k: (optax.apply_updates(v, updates[k]) if k in trainable_set else v)
                      for k, v in params.items()}
        new_state = dict(state, params=new_params, batch_stats=stats, opt_state=opt_state,
                         step=state["step"] + 1)
        return new_state, {"loss": loss, **metrics}

    _, state_sh, anchor_sh = ((None, placement.state(tx), placement.anchor(l2sp)) if placement
                              else _replicated_shardings(mesh_))
    train = jax.jit(train_step, in_shardings=(state_sh, batch_sh, repl, anchor_sh), out_shardings=(state_sh, repl),
                    donate_argnums=(0,))
    return tx, train


def carry_over(old, new):
    """The optimizer state for a new phase: groups that trained before keep their state (momentum, Adam
    moments and step count); groups just unfrozen start from the fresh state in `new`."""
    if isinstance(new, optax.MultiTransformState):
        return new._replace(inner_states={
            g: (old.inner_states[g] if g in old.inner_states and g != freezing.FROZEN else s)
            for g, s in new.inner_states.items()})
    if isinstance(new, tuple) and hasattr(new, "_fields"):
        return type(new)(*(carry_over(o, n) for o, n in zip(old, new)))
    if isinstance(new, (tuple, list)):
        return type(new)(carry_over(o, n) for o, n in zip(old, new))
    if isinstance(new, dict):
        return {k: carry_over(old[k], v) for k, v in new.items()}
    return old


def to_device(batch: dict, sharding) -> dict:
    return {k: jax.make_array_from_process_local_data(sharding, v) for k, v in batch.items()}


def split_model(model: nnx.Module):
    """(graphdef, param paths, stat paths, params, batch stats): the model as flat dicts keyed by dotted
    names, the form the compiled steps take."""
    graphdef, params_state, stats_state = nnx.split(model, nnx.Param, nnx.BatchStat)
    param_paths = {_dotted(p): p for p, _ in nnx.to_flat_state(params_state)}
    stat_paths = {_dotted(p): p for p, _ in nnx.to_flat_state(stats_state)}
    params = {_dotted(p): v.get_value() for p, v in nnx.to_flat_state(params_state)}
    stats = {_dotted(p): v.get_value() for p, v in nnx.to_flat_state(stats_state)}
    return graphdef, param_paths, stat_paths, params, stats


class Program:
    """What a run executes: the model split into flat dicts, the eval step, one train step per phase (from
    the cache, so phases and runs of the same structure share compilations) and L2-SP's anchor."""

    def __init__(self, s: Setup, config, mesh_: jax.sharding.Mesh, cache: StepCache):
        self.s, self.config, self.mesh, self.cache = s, config, mesh_, cache
        self.graphdef, self.param_paths, self.stat_paths, params, stats = split_model(s.model)
        # host copies (the same on every process): the state is placed from them shard by shard
        self.params, self.stats = jax.tree.map(np.asarray, (params, stats))
        self.placement = Placement.of(mesh_, self.params, config.sharding)
        self.precision = config.precision
        self.sizes = {k: int(np.size(v)) for k, v in self.params.items()}
        self.value_range, self.mean, self.std = normaliser(s.meta, s.data.image_shape[2])
        self.augment_ops = s.task.parse_augment(tuple(config.augment))
        # the task's pieces of the steps (targets, loss, eval reduction): hashable, part of the cache keys
        self.objective = s.task.objective(config, s.data, self.augment_ops)
        # what decides where arrays live and how steps compute: part of every compiled step's cache key
        self.devices = (tuple(mesh_.devices.flat), tuple(mesh_.shape.items()), _frozen(config.sharding),
                        self.precision)
        self.repl = sharding.replicated(mesh_)
        place = dict(mesh_=mesh_, placement=self.placement, precision=self.precision)
        evaluation = self.objective.for_eval()  # without what only training uses: runs share eval steps
        self.evaluate = cache.get(
            ("eval", self.graphdef, self.value_range, tuple(self.mean), tuple(self.std), self.devices, evaluation),
            lambda: build_eval(self.graphdef, self.param_paths, self.stat_paths, value_range=self.value_range,
                               mean=self.mean, std=self.std, objective=evaluation, **place))
        pool = getattr(s.model.head, "pool", None)  # a dense head has no pooled features
        self.features = None if pool is None else cache.get(
            ("features", self.graphdef, self.value_range, tuple(self.mean), tuple(self.std), pool, self.devices),
            lambda: build_features(self.graphdef, self.param_paths, self.stat_paths, value_range=self.value_range,
                                   mean=self.mean, std=self.std, pool=pool, **place))
        # L2-SP's anchor: the starting (transferred) weights of the units, a pure function of the config,
        # placed apart from the state (which is donated to the train step)
        self.anchor = sharding.place({k: self.params[k] for k in self.placement.anchor(s.plan.l2sp)},
                                     self.placement.anchor(s.plan.l2sp))

    def steps(self, phase: strategies.Phase, start_unit: int = 0) -> Steps:
        """The phase's optimizer and train step; `start_unit = k`: the step on cached unit k-1 activations."""
        s, plan, cfg = self.s, self.s.plan, self.config
        labels = s.labels(phase)
        key = ("train", self.graphdef, phase.frozen_depth, tuple(sorted(labels.items())), cfg.optimizer.to_json(),
               tuple(sorted(plan.lr_multipliers.items())), plan.weight_decay, plan.l2sp, plan.update_stats,
               s.data.num_classes, float(cfg.train.label_smoothing), self.value_range, tuple(self.mean),
               tuple(self.std), self.augment_ops, self.devices, cfg.train.accumulate, self.objective, start_unit)
        tx, train = self.cache.get(key, lambda: build_train(
            self.graphdef, self.param_paths, self.stat_paths, frozen_depth=phase.frozen_depth, label_map=labels,
            opt_cfg=cfg.optimizer, num_classes=s.data.num_classes, label_smoothing=float(cfg.train.label_smoothing),
            value_range=self.value_range, mean=self.mean, std=self.std, augment_ops=self.augment_ops,
            mesh_=self.mesh, lr_multipliers=plan.lr_multipliers, weight_decay=plan.weight_decay, l2sp=plan.l2sp,
            update_stats=plan.update_stats, placement=self.placement, precision=self.precision,
            accumulate=int(cfg.train.accumulate), objective=self.objective, start_unit=start_unit))
        return Steps(tx, train, self.evaluate)

    def evaluate_from(self, start_unit: int) -> Callable:
        """The eval step on cached unit start_unit-1 activations (the normal one at 0)."""
        if not start_unit:
            return self.evaluate
        return self.cache.get(
            ("eval", self.graphdef, self.devices, self.objective.for_eval(), start_unit),
            lambda: build_eval(self.graphdef, self.param_paths, self.stat_paths, value_range=self.value_range,
                               mean=self.mean, std=self.std, objective=self.objective.for_eval(), mesh_=self.mesh,
                               placement=self.placement, precision=self.precision, start_unit=start_unit))

    def place_weights(self, weights: dict) -> dict:
        """{"params", "batch_stats"} host arrays -> device arrays placed as the run places them."""
        p = self.placement
        return {"params": sharding.place(weights["params"], p.params),
                "batch_stats": sharding.place(weights["batch_stats"], {k: p.repl for k in weights["batch_stats"]})}

    def init_opt(self, tx: optax.GradientTransformation, params: dict):
        """tx.init(params) created where it will live (each device computes only its shard)."""
        return jax.jit(tx.init, out_shardings=self.placement.opt_state(tx))(params)

    def copy_weights(self, params: dict, stats: dict) -> dict:
        """A device copy of the weights, placed like them (the state's own arrays are donated to each step);
        one jitted copy per model and placement, shared by the runs of a sweep."""
        p = self.placement
        copy = self.cache.get(("copy", self.graphdef, self.devices), lambda: jax.jit(
            lambda t: jax.tree.map(jnp.copy, t), out_shardings={"params": p.params, "batch_stats": p.repl}))
        return copy({"params": params, "batch_stats": stats})

    def fresh_state(self, tx: optax.GradientTransformation) -> dict:
        """The state at step 0, created sharded: parameters shard by shard from the host, the optimizer
        state by a jitted init whose outputs are the shards (no device holds the whole of a sharded tensor)."""
        weights = self.place_weights({"params": self.params, "batch_stats": self.stats})
        repl = self.repl
        return {**weights, "opt_state": self.init_opt(tx, weights["params"]),
                "step": sharding.place(np.zeros((), np.int32), repl),
                "key": sharding.place(np.asarray(jax.random.key_data(jax.random.key(self.config.seed))), repl)}

    def trainable_count(self, phase: strategies.Phase) -> int:
        return sum(self.sizes[k] for k in freezing.trainable(self.s.labels(phase)))


def _frozen(value):
    """A (nested) list or tuple as nested tuples: hashable, for a cache key."""
    return tuple(_frozen(v) for v in value) if isinstance(value, (list, tuple)) else value


# ---------------------------------------------------------------------------------------------- run

def run(config, run_dir, *, init_path: str | None = None, cache: StepCache | None = None,
        wandb_dir=None, group: str = "", name: str = "", run_id: str = "run", progress: bool = True,
        stop_at_step: int | None = None) -> RunResult:
    """Trains one run into `run_dir` (resuming from its checkpoint if there is one).

    `stop_at_step` ends the process's work after that step's checkpoint without finishing the run, as a
    kill would (used to test resuming)."""
    run_dir = pathlib.Path(run_dir).absolute()
    done = run_dir / RESULT_FILE
    recorded = durable.read_json(done)  # torn by a crash: absent, the run finishes (again) from its checkpoint
    if isinstance(recorded, dict) and recorded.get("status") in ("done", "failed"):
        return RunResult(**recorded)
    t0 = time.time()
    timer = timing.RunTimer()
    cache = cache or StepCache()
    try:
        return _run(config, run_dir, init_path, cache, wandb_dir or run_dir.parent / "wandb", group or
                    config.name, name or run_id, run_id, progress, stop_at_step, t0, timer)
    except (TrainingFailed, weights_lib.CheckpointMismatch) as e:
        result = RunResult("failed", str(e).splitlines()[0], {"wall_time": round(time.time() - t0, 2)},
                           runtime=timer.runtime)
        if distributed.is_writer():
            timer.write(run_dir)
            durable.write_json(done, dataclasses.asdict(result))
        return result



def _run(config, run_dir, init_path, cache, wandb_dir, group, name, run_id, progress, stop_at_step, t0, timer):
    t = Training(config, run_dir, init_path, cache, timer)  # setup
    with timer.phase("checkpoints"):
        t.restore()  # fresh state, or the last checkpoint
    with timer.phase("reporting"):
        t.open_tracker(wandb_dir, group, name, run_id)
    step = t.loop(progress, name, stop_at_step)  # training, evaluation and selection, phase switches
    with timer.phase("checkpoints"):
        t.manager.close()  # every checkpoint committed before anything marks the run's progress
    if stop_at_step is not None and stop_at_step <= step < t.s.total_steps and not t.host.stopped_early:
        t.tracker.finish({}, failed=False)
        if distributed.is_writer():
            timer.write(run_dir)
        return RunResult("interrupted", f"stopped at step {step}")
    return t.finish(step, t0)


# ---------------------------------------------------------------------------------------------- host state

@dataclasses.dataclass
class HostState:
    """What the loop has decided so far, checkpointed as JSON next to the arrays so that a resumed run
    selects, stops and reports as the uninterrupted one would."""

    best_metric: float | None = None  # the selection metric of the best eval (higher is better)
    best_step: int = 0
    evals_since_best: int = 0  # in the last phase: early stopping's count
    stopped_early: bool = False
    # the task's metric (accuracy, mIoU or mAP; these names are the checkpoints' JSON keys) and loss at the best
    # eval, and with train.eval_test the best test value of that metric at any eval
    best_val_accuracy: float | None = None
    best_val_loss: float | None = None
    best_seen_test_accuracy: float | None = None
    phases: list[dict] = dataclasses.field(default_factory=list)  # metrics at the end of each finished phase
    pending: list[dict] = dataclasses.field(default_factory=list)  # train metrics of steps not logged yet
    metrics_lines: int | None = None  # rows of metrics.jsonl when the checkpoint was saved (resume cuts back)

    def to_json(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_json(cls, saved) -> "HostState":
        return cls(**{f.name: saved[f.name] for f in dataclasses.fields(cls) if f.name in saved})

    def observe(self, step: int, value: float, val, *, last_phase: bool, patience: int) -> bool:
        """Records the validation eval of `step` (`value`: its selection metric); True if it is the new best.
        Patience runs out only in the last phase: earlier phases always finish."""
        if self.best_metric is None or value > self.best_metric:
            self.best_metric, self.best_step, self.evals_since_best = value, step, 0
            self.best_val_accuracy, self.best_val_loss = val.metric, val.loss  # val: a task's Score
            return True
        if last_phase:
            self.evals_since_best += 1
            if patience and self.evals_since_best >= patience:
                self.stopped_early = True
        return False

    def saw_test(self, accuracy: float) -> None:
        seen = self.best_seen_test_accuracy
        self.best_seen_test_accuracy = accuracy if seen is None else max(seen, accuracy)


# ---------------------------------------------------------------------------------------------- the run

class Training:
    """One run in progress, in the stages `_run` calls in order: setup (here), restore, loop (each step:
    train, log, evaluate and select, switch phase, checkpoint) and finish."""

    def __init__(self, config, run_dir: pathlib.Path, init_path: str | None, cache: StepCache,
                 timer: timing.RunTimer | None = None):
        self.config, self.run_dir, self.init_path = config, run_dir, init_path
        self.timer = timer or timing.RunTimer()
        self.s = s = setup(config, init_path, self.timer)
        self.plan = s.plan
        self.mesh = mesh(config)
        self.timer.runtime = self.runtime = runtime_lib.describe(self.mesh)
        self.repl, self.data_sharding = sharding.replicated(self.mesh), sharding.batch_sharding(self.mesh)
        self.prog = Program(s, config, self.mesh, cache)
        self.task = s.task
        self.metric = s.task.metric  # accuracy | miou | map: the val_/test_ metric selection and tables use
        self.metric_name = tasks_lib.selection_metric(config)  # val_<metric> or val_loss
        self.eval_every = config.train.eval_every or s.steps_per_epoch
        self.ckpt_every = config.train.checkpoint_every  # 0: at evals, train.checkpoint_seconds apart
        self.last_save = None  # time.monotonic() of this process's last state checkpoint
        self.patience = config.train.early_stopping_patience
        self.track_best = config.train.restore_best or self.patience > 0
        self.eval_test = bool(config.train.eval_test)
        put = functools.partial(to_device, sharding=self.data_sharding)
        # any eval batch size on any device count: rounded up to split evenly, the extra rows masked
        eval_bs = sharding.padded(config.data.eval_batch_size, self.data_sharding.num_devices)
        # val and test in batches no larger than the larger split: a small split is not padded to a batch
        # many times its size at every evaluation
        split_bs = sharding.padded(min(config.data.eval_batch_size, max(len(s.data.val), len(s.data.test), 1)),
                                   self.data_sharding.num_devices)
        common = dict(put=put, batch_size=split_bs, threads=config.data.threads)
        # the frozen prefix's activations, cached where that is exact (tl_research.run.feature_cache); computing
        # them counts as data preparation in timing.json
        with self.timer.phase("data"):
            self.feats = feature_cache.for_program(self.prog, config, merger=_merger, preprocessor=preprocessor,
                                                   put=put, batch_size=eval_bs,
                                                   directory=run_dir.parent / feature_cache.FOLDER)
            d = self.feats.eval_depth
            evaluate = self.prog.evaluate_from(d)
            self.val, self.test = (
                s.task.evaluator(evaluate, s.data, self.feats.split(r, d) if d else getattr(s.data, r), **common)
                for r in ("val", "test"))
        self.extras = evaluators.build(config.get("evals", {}), data=s.data, data_cfg=config.data,
                                       eval_step=self.prog.evaluate, features=self.prog.features, put=put,
                                       batch_size=eval_bs)
        # asynchronous: a save copies the state to host memory and returns; the files are written while the
        # next steps train. The loop waits for the last save before the run's result is written.
        self.manager = ocp.CheckpointManager(run_dir / "checkpoints", options=ocp.CheckpointManagerOptions(
            max_to_keep=1, enable_async_checkpointing=True), item_names=("state", "host"))
        self.best_dir = run_dir / "best"
        self.best_written = True  # whether best/ holds self.best (written at checkpoints and at the end)
        self.trainable_params = self.prog.trainable_count(self.plan.phases[-1])
        self.val_now = self.test_now = None  # the evals of the step just run, if it evaluated

    def restore(self) -> None:
        """The state to start from: fresh, or the last readable checkpoint's (an unreadable one, e.g. cut
        short by a disk that lost data, is deleted and the one before it, or a fresh start, used instead, with
        a warning). The state saved after step t has the optimizer structure of the phase of step index t
        (phase switches happen before the checkpoint of a phase's last step)."""
        self.host, self.best = HostState(), None
        for step in sorted(self.manager.all_steps(), reverse=True):
            if self._restore_step(int(step)):
                break
        else:
            self._fresh(0)
        if self.start and self.host.best_step and self.config.train.restore_best:
            self._restore_best()

    def _restore_best(self) -> None:
        """The best weights the checkpoint's host state points to (best/, written just before the first
        checkpoint after its step, and at the run's end). Unreadable (a crash while a later best overwrote it,
        or a disk that lost it): the run restarts from scratch, which reproduces them."""
        try:
            self.best = self.prog.place_weights(weights_lib.load_weights(self.best_dir)[0])
        except Exception as e:  # noqa: BLE001 - any unreadable best/: redo the run rather than report other weights
            log.warning("%s: the best weights (step %d) are unreadable (%s); restarting the run from scratch",
                        self.run_dir, self.host.best_step, str(e).splitlines()[0][:160] if str(e) else type(e).__name__)
            for step in self.manager.all_steps():
                self.manager.delete(step)
            self.host, self.best = HostState(), None
            self._fresh(0)

    def _fresh(self, step: int) -> None:
        self.start, self.phase_i = step, self.plan.phase_index(step)
        phase = self.plan.phases[self.phase_i]
        self.steps = self.prog.steps(phase, self.feats.start(phase))
        self.state = self.prog.fresh_state(self.steps.tx)

    def _restore_step(self, step: int) -> bool:
        self._fresh(step)
        abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct, self.state)
        try:
            restored = self.manager.restore(step, args=ocp.args.Composite(
                state=ocp.args.StandardRestore(abstract), host=ocp.args.JsonRestore()))
            self.state, self.host = restored.state, HostState.from_json(restored.host)
            return True
        except Exception as e:  # noqa: BLE001 - any unreadable checkpoint: fall back, and say so
            log.warning("%s: the checkpoint of step %d is unreadable (%s: %s); deleting it and starting from "
                        "the one before it, or from scratch", self.run_dir, step, type(e).__name__,
                        str(e).splitlines()[0][:160] if str(e) else "")
            self.manager.delete(step)
            return False

    def open_tracker(self, wandb_dir, group: str, name: str, run_id: str) -> None:
        s, plan = self.s, self.plan
        resolved = self.config.to_dict()
        resolved.update(frozen_depth_resolved=s.frozen_depth, num_units=s.model.num_units,
                        total_steps=s.total_steps, trainable_params=self.trainable_params,
                        init_resolved=self.init_path or self.config.init,
                        phases=[dataclasses.asdict(p) for p in plan.phases], runtime=self.runtime)
        # multi-host: one process writes metrics.jsonl and W&B
        self.tracker = RunTracker(self.run_dir, wandb_cfg=self.config.wandb, group=group, name=name, run_id=run_id,
                                  config=resolved, wandb_dir=wandb_dir, resume_step=self.start,
                                  keep_lines=self.host.metrics_lines if self.start else 0) \
            if distributed.is_writer() else _NoTracker()
        if self.start == 0:
            self.tracker.log({"step": 0, "event": "start", "transfer": s.transfer_report,
                              "trainable_params": self.trainable_params, "total_steps": s.total_steps,
                              **self.feats.summary()})
            self._log_phase_start(0)

    def _log_phase_start(self, step: int) -> None:
        phase = self.plan.phases[self.phase_i]
        self.tracker.log({"step": step, "event": "phase_start", "phase": self.phase_i + 1, "phase_name": phase.name,
                          "frozen_depth": phase.frozen_depth, "trainable_params": self.prog.trainable_count(phase),
                          "feature_path": self.feats.path(phase)})

    # ---- the step loop

    def loop(self, progress: bool, name: str, stop_at_step: int | None) -> int:
        """Trains from the restored step to the end (or to an early stop, or `stop_at_step`); the last step run."""
        s, timer = self.s, self.timer
        with timer.phase("data"):
            self.batches = self._train_batches(self.start)
        if s.data.train_ids is not None and distributed.is_writer():
            np.save(self.run_dir / "train_ids.npy", s.data.train_ids)  # the drawn training examples (TFDS ids)
        bar = _progress(progress, s.total_steps, self.start, name)
        # the train metrics of steps after the last log row, as the checkpoint kept them (float32, as the
        # device returned them), so the first row after a resume averages the same steps
        pending = [{k: np.float32(v) for k, v in m.items()} for m in self.host.pending]
        step = self.start
        try:
            for step in range(self.start + 1, s.total_steps + 1):
                with timer.phase("data"):  # waiting for the batch (the loaders prepare them ahead)
                    batch = to_device(next(self.batches), self.data_sharding)
                pending = self._step(step, batch, pending, bar)
                if bar:
                    bar.update(1)
                if self.host.stopped_early or (stop_at_step is not None and step >= stop_at_step):
                    break
        finally:
            if bar:
                bar.close()
            with timer.phase("checkpoints"):
                self.manager.wait_until_finished()
        return step

    def _train_batches(self, start: int):
        """Batches for step indices start.. (the same examples on either path: the sampler is the run's),
        read from the current phase's cached activations on the cached path."""
        s, config = self.s, self.config
        data = self.feats.train_data(self.plan.phases[self.phase_i])
        return pipeline.train_batches(data, config.data.batch_size, config.seed, start, s.total_steps,
                                      config.data.threads, config.data.prefetch, workers=config.data.workers,
                                      sampler=pipeline.train_sampler(config.data, s.data, config.seed))

    def _step(self, step: int, batch: dict, pending: list, bar) -> list:
        """One step: train, then what falls due at it; returns the train metrics not logged yet."""
        phase, timer = self.plan.phases[self.phase_i], self.timer
        last_phase = self.phase_i == len(self.plan.phases) - 1
        last = step == self.s.total_steps
        boundary = last or step == phase.end
        hp = {"lr": self.plan.lrs[step - 1], "momentum": self.plan.momenta[step - 1],
              "class_weights": self.s.class_weights}
        logged = step % self.config.train.log_every == 0 or boundary
        evaluated = step % self.eval_every == 0 or boundary
        with timer.phase("training"):
            self.state, m = self.steps.train(self.state, batch, hp, self.prog.anchor)
            if logged or evaluated:  # the step's work ends here, not in the logging or evaluation after it
                jax.block_until_ready(m)
        pending.append(m)
        if logged:
            with timer.phase("reporting"):
                self._log_train(step, pending, hp, bar)
            pending = []
        self.val_now = self.test_now = None
        with timer.phase("evaluation"):
            if evaluated:
                self._evaluate(step, last_phase)
            self._run_extras(step, evaluated)
        if step == phase.end and not last_phase:
            with timer.phase("training"):
                self._switch_phase(step)
        if self._checkpoint_due(step, evaluated, last):
            with timer.phase("checkpoints"):
                self._checkpoint(step, pending)
        return pending

    def _checkpoint_due(self, step: int, evaluated: bool, last: bool) -> bool:
        """At train.checkpoint_every's cadence (0: at evals, the first one and then at most one per
        train.checkpoint_seconds), never at the run's last step or an early stop: the run's result follows at
        once, and a crash before it resumes from the checkpoint before."""
        if last or self.host.stopped_early:
            return False
        if self.ckpt_every:
            return step % self.ckpt_every == 0
        if not evaluated:
            return False
        wait = self.config.train.checkpoint_seconds  # after the first: at most one per `wait` seconds
        # multi-host: process 0's clock decides for all (a checkpoint is a collective)
        return distributed.agree(self.last_save is None or time.monotonic() - self.last_save >= wait)

    def _checkpoint(self, step: int, pending: list) -> None:
        """The best weights (if they changed since last written), then the state and host record of `step`,
        saved asynchronously (orbax writes the files while the next steps train)."""
        self._write_best()  # before the checkpoint whose host state points to them
        self.host.pending = [{k: float(v) for k, v in m.items()} for m in jax.device_get(pending)]
        self.host.metrics_lines = self.tracker.sync()  # the rows this checkpoint's resume keeps
        self.last_save = time.monotonic()
        self.manager.save(step, args=ocp.args.Composite(state=ocp.args.StandardSave(self.state),
                                                        host=ocp.args.JsonSave(self.host.to_json())), force=True)

    def _write_best(self) -> None:
        if self.best is not None and not self.best_written:
            weights_lib.save_weights(self.best_dir, self.best, self.s.meta, {"step": self.host.best_step})
            self.best_written = True

    def _log_train(self, step: int, pending: list, hp: dict, bar) -> None:
        vals = sharding.to_host(pending)
        loss = float(np.mean([v["loss"] for v in vals]))
        if not math.isfinite(loss) or loss > DIVERGED_LOSS:
            raise TrainingFailed(f"loss became {loss:.4g} by step {step} (diverged; learning rate "
                                 f"{float(hp['lr']):.3g})")
        self.tracker.log({"step": step, "train_loss": loss,  # and the task's train metrics (train_accuracy)
                          **{f"train_{k}": float(np.mean([v[k] for v in vals])) for k in vals[0] if k != "loss"},
                          "learning_rate": float(hp["lr"]), "momentum": float(hp["momentum"]),
                          "phase": self.phase_i + 1})
        if bar:
            bar.set_postfix(loss=f"{loss:.3f}")

    # ---- evaluation and selection

    def _weights(self) -> tuple:
        return self.state["params"], self.state["batch_stats"]

    def _evaluate(self, step: int, last_phase: bool) -> None:
        """Validation (and with train.eval_test, test: a curve, never used for selection), then the best step
        and early stopping; the best weights are kept in memory (best/ gets them at the next checkpoint and
        at the end)."""
        val = self.val_now = self.val.counts(*self._weights())
        record = {"step": step, **{f"val_{k}": v for k, v in val.values().items()}}  # val_accuracy, val_loss
        if self.eval_test:
            test = self.test_now = self.test.counts(*self._weights())
            record.update({f"test_{k}": v for k, v in test.values().items()})
            self.host.saw_test(test.metric)
        self.tracker.log(record)
        value = -val.loss if self.metric_name == "val_loss" else val.metric
        if self.host.observe(step, value, val, last_phase=last_phase, patience=self.patience) and self.track_best:
            self.best = self.prog.copy_weights(*self._weights())
            self.best_written = False

    def _run_extras(self, step: int, evaluated: bool) -> None:
        """config.evals' evaluators due at `step` (every 0: with validation; k: every k steps), one row."""
        row = {"step": step}
        for name, ev in self.extras.items():
            if (ev.every == 0 and evaluated) or (ev.every > 0 and step % ev.every == 0):
                row.update({f"{name}/{k}": v for k, v in ev.run(*self._weights())})
        if len(row) > 1:
            self.tracker.log(row)

    def _switch_phase(self, step: int) -> None:
        """The end of a phase: its metrics, then the next phase's steps and optimizer state."""
        phase, val = self.plan.phases[self.phase_i], self.val_now  # phase ends are always evaluated
        test = self.test_now = self.test_now or self.test.counts(*self._weights())
        m = self.metric
        ended = {"phase": self.phase_i + 1, "name": phase.name, "step": step, f"val_{m}": val.metric,
                 "val_loss": val.loss, f"test_{m}": test.metric}
        self.host.phases = list(self.host.phases) + [ended]
        self.tracker.log({"step": step, "event": "phase_end", **{f"phase_{k}": v for k, v in ended.items()}})
        self.phase_i += 1
        start = self.feats.start(phase)
        phase = self.plan.phases[self.phase_i]
        self.steps = self.prog.steps(phase, self.feats.start(phase))
        if self.feats.start(phase) != start:  # the next phase reads other inputs (e.g. images after a cached one)
            self.batches = self._train_batches(step)
        self.state["opt_state"] = carry_over(self.state["opt_state"],
                                             self.prog.init_opt(self.steps.tx, self.state["params"]))
        self.host.evals_since_best = 0
        self._log_phase_start(step)

    # ---- finish

    def finish(self, step: int, t0: float) -> RunResult:
        """Test metrics at the selected step (the best validation step with train.restore_best, else the last),
        the exported weights, config.evals at those weights, and the result."""
        host, timer = self.host, self.timer
        use_best = self.config.train.restore_best and self.best is not None
        final = {"params": self.state["params"], "batch_stats": self.state["batch_stats"]}
        selected = self.best if use_best else final  # device arrays, sharded as trained: never gathered
        sel_weights = (selected["params"], selected["batch_stats"])
        with timer.phase("evaluation"):
            if use_best and host.best_step == step and self.test_now is not None:
                tested = self.test_now  # the best step is the last one, evaluated already
            else:
                tested = self.test.counts(*sel_weights)
            if use_best:
                val_acc, val_loss, best_step = host.best_val_accuracy, host.best_val_loss, host.best_step
            else:  # the last step's eval already measured these weights, unless nothing ran here
                val = self.val_now if self.val_now is not None else self.val.counts(*sel_weights)
                val_acc, val_loss, best_step = val.metric, val.loss, step
        with timer.phase("checkpoints"):
            weights_lib.save_weights(self.run_dir / "weights", selected, self.s.meta, {"step": best_step})
            if use_best and not self.best_written:  # the same weights: best/ becomes a copy of weights/
                weights_lib.copy_weights_dir(self.run_dir / "weights", self.best_dir)
                self.best_written = True
            self._write_best()
        with timer.phase("reporting"):
            if distributed.is_writer():
                durable.write_json(self.run_dir / "test_metrics.json",  # incl. the confusion matrix
                                   {**tested.detail(), "class_names": self.s.data.class_names})
        with timer.phase("evaluation"):
            extras = {f"{name}_{k}": v for name, ev in self.extras.items() for k, v in ev.run(*sel_weights)}
        m = self.metric
        metrics = {
            f"val_{m}": val_acc, "val_loss": val_loss,
            # test_accuracy, test_loss, test_balanced_accuracy, test_macro_f1 | test_miou, ... | test_map, ...
            **{f"test_{k}": v for k, v in tested.summary().items()},
            "best_step": best_step, "steps": step,
            "stopped_early": host.stopped_early, "trainable_params": self.trainable_params,
            "frozen_depth_resolved": self.s.frozen_depth, "num_units": self.s.model.num_units,
            # the strategy in one cell (its keys are columns of their own only where a sweep varies them)
            "strategy_resolved": _strategy_summary(self.config.strategy, self.plan),
            "feature_path": self.feats.summary()["feature_path"],  # per phase: cached@k | input
            "wall_time": round(time.time() - t0 - self.tracker.init_seconds, 2),  # training, not W&B's start
        }
        if self.eval_test:
            with timer.phase("evaluation"):
                final_test = self.test_now if self.test_now is not None else self.test.counts(*self._weights())
            metrics.update({f"final_test_{m}": final_test.metric,
                            f"best_seen_test_{m}": max(host.best_seen_test_accuracy or 0.0, final_test.metric)})
        for ended in host.phases:  # e.g. two_phase: the head-only phase's metrics next to the final ones
            for k in (f"val_{m}", f"test_{m}", "step"):
                metrics[f"phase{ended['phase']}_{k}"] = ended[k]
        metrics.update(extras)
        with timer.phase("reporting"):
            self.tracker.log({"step": step, "event": "end", **{f"final_{k}": v for k, v in metrics.items()}})
            self.tracker.finish(metrics)
        result = RunResult("done", "", metrics, runtime=self.runtime)
        if distributed.is_writer():
            timer.write(self.run_dir)  # before result.json: a finished run always has its timing
            durable.write_json(self.run_dir / RESULT_FILE, dataclasses.asdict(result))
        return result


class _NoTracker:
    """The tracker of the processes that do not write (multi-host: process 0 writes metrics and W&B; the
    checkpoint's host state, metrics_lines included, is the one process 0 saves)."""

    init_seconds = 0.0

    def log(self, metrics: dict) -> None:
        pass

    def sync(self) -> int:
        return 0

    def finish(self, summary: dict, failed: bool = False) -> None:
        pass


def _strategy_summary(cfg, plan: strategies.Plan) -> str:
    parts = [cfg.name]
    if len(plan.phases) > 1:
        parts.append("phases at " + "/".join(str(p.start) for p in plan.phases[1:]))
    if cfg.lr_decay != 1:
        parts.append(f"lr_decay {cfg.lr_decay:g}")
    parts.append(f"l2_sp {plan.l2sp[0]:g}/{plan.l2sp[1]:g}" if plan.l2sp else
                 f"weight_decay {plan.weight_decay:g}" if plan.weight_decay else "no weight decay")
    if not plan.update_stats:
        parts.append("source BN statistics")
    return ", ".join(parts)


def _progress(enabled: bool, total: int, start: int, name: str):
    if not enabled:
        return None
    from tqdm.auto import tqdm
    return tqdm(total=total, initial=start, desc=name[:40], leave=False, dynamic_ncols=True)
