"""The compiled steps of a run: the train step of each phase, the eval step and the feature step, each built
from a frozen, hashable spec that is also its key in the StepCache (`TrainSpec`, `EvalSpec`, `FeaturesSpec`,
on the common `StepSpec`: the model, its input preprocessing, where the arrays live and how they compute).
Two equal specs build the same computation, so runs and phases with equal specs share one jitted function.

`Program` is what one run executes: the model split into flat dicts, its placement on the mesh, the eval and
feature steps, one train step per phase (from the cache) and its regulariser's anchor. The train step applies
the recipes of tl_research.finetune.recipes around its optimizer: SAM's second gradient and the weight EMA,
which the state carries under "ema" (placed like the parameters it averages).
"""
from __future__ import annotations

import dataclasses
import functools
from typing import Any, Callable

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
from flax import nnx
from jax.sharding import NamedSharding, PartitionSpec as P

from tl_research.core import sharding
from tl_research.finetune import freezing, recipes, regularizers, strategies
from tl_research.models.base import global_pool
from tl_research.run.setup import Setup, normaliser
from tl_research.tasks.classification import task as classification


class StepCache:
    """Compiled steps shared by the runs of a sweep (and the phases of a run): a step is built once per spec
    (a TrainSpec, EvalSpec or FeaturesSpec: its own key) and runs with equal specs reuse one jitted function
    and its compilations. The learning rate and momentum are step inputs, so schedules never cause a
    recompile. Other things a run's steps share (the feature store, the prefix steps) are kept here too."""

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


@dataclasses.dataclass(frozen=True, eq=False)
class Placement:
    """Where a run's arrays live on the mesh: parameters by the config.sharding rules (sharding.py), their
    optimizer state like them, BatchNorm statistics, step and key replicated, batches over the batch axes.
    Equal (and hashed) by what it places where: the mesh, each parameter's sharding and shape."""

    mesh: jax.sharding.Mesh
    params: dict  # dotted name -> NamedSharding
    shapes: dict  # dotted name -> jax.ShapeDtypeStruct of the parameter

    @classmethod
    def of(cls, mesh_: jax.sharding.Mesh, params: dict, rules=sharding.DEFAULT_RULES) -> "Placement":
        # arrays or jax.ShapeDtypeStruct (benchmarks/sharding_memory.py places a model it never allocates)
        shapes = {k: jax.ShapeDtypeStruct(v.shape, v.dtype) for k, v in params.items()}
        return cls(mesh_, sharding.param_shardings({k: s.shape for k, s in shapes.items()}, rules, mesh_), shapes)

    @functools.cached_property
    def _identity(self) -> tuple:
        return (self.mesh, tuple(sorted(self.params.items())),
                tuple(sorted((k, s.shape, s.dtype) for k, s in self.shapes.items())))

    def __eq__(self, other) -> bool:
        return isinstance(other, Placement) and self._identity == other._identity

    def __hash__(self) -> int:
        return hash(self._identity)

    @property
    def repl(self) -> NamedSharding:
        return sharding.replicated(self.mesh)

    @property
    def batch(self) -> NamedSharding:
        return sharding.batch_sharding(self.mesh)

    def opt_state(self, tx: optax.GradientTransformation):
        return sharding.like_params(jax.eval_shape(tx.init, self.shapes), self.shapes, self.params, self.mesh)

    def state(self, tx: optax.GradientTransformation, ema: recipes.Ema | None = None) -> dict:
        """The train state's shardings; with a weight EMA its averaged parameters sharded like themselves."""
        repl = self.repl
        out = {"params": self.params, "batch_stats": repl, "opt_state": self.opt_state(tx), "step": repl,
               "key": repl}
        if ema is not None:
            out["ema"] = {"params": {k: self.params[k] for k in ema.names}, "batch_stats": repl}
        return out

    def anchor(self, term) -> Any:
        """The placement of the regulariser `term`'s anchor (a prefix of its tree; {} without one): starting
        weights (L2-SP's, DELTA's) are placed like the parameters (regularizers.Term.anchor_shardings)."""
        return {} if term is None else term.anchor_shardings(self.params, self.repl)


# ---------------------------------------------------------------------------------------------- specs

@dataclasses.dataclass(frozen=True)
class Net:
    """A model as the compiled steps take it (split_model): its graphdef and the path of each dotted parameter
    and statistic name. Equal, and hashed, by the graphdef alone: the paths are a function of it."""

    graphdef: Any
    param_paths: dict = dataclasses.field(compare=False, repr=False)
    stat_paths: dict = dataclasses.field(compare=False, repr=False)


def _items(mapping, sort: bool) -> tuple:
    """A mapping (dict, ConfigDict) or its items as a tuple of (key, value) pairs: hashable."""
    items = tuple(mapping.items()) if hasattr(mapping, "items") else tuple(mapping)
    return tuple(sorted(items)) if sort else items


@dataclasses.dataclass(frozen=True, kw_only=True)
class StepSpec:
    """What every compiled step is built from: the model, its input preprocessing (uint8 images scaled to
    `value_range`, then normalised by `mean` and `std`), the mesh, the parameters' placement on it (None:
    replicated) and the compute precision. A spec is its step's key in the StepCache."""

    net: Net
    value_range: tuple
    mean: tuple
    std: tuple
    mesh: jax.sharding.Mesh
    placement: Placement | None = None
    precision: str = "float32"

    def __post_init__(self):
        for name in ("value_range", "mean", "std"):  # arrays as tuples of their elements (dtype kept)
            object.__setattr__(self, name, tuple(getattr(self, name)))

    def common(self) -> dict:
        """The StepSpec fields, to build another kind of spec on them: `TrainSpec(**base.common(), ...)`."""
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(StepSpec)}

    def model_of(self) -> Callable:
        return _merger(self.net.graphdef, self.net.param_paths, self.net.stat_paths, self.precision)

    def preprocess(self) -> Callable:
        return preprocessor(self.value_range, self.mean, self.std)

    def param_shardings(self):
        return self.placement.params if self.placement else sharding.replicated(self.mesh)


@dataclasses.dataclass(frozen=True, kw_only=True)
class EvalSpec(StepSpec):
    """The eval step's spec: the task objective's eval part (default: classification's) and `start_unit = k
    > 0` for a step on unit k-1's cached activations (tl_research.run.feature_cache)."""

    objective: Any = None
    start_unit: int = 0

    def __post_init__(self):
        super().__post_init__()
        if self.objective is None:  # its reduce reads C from the logits
            object.__setattr__(self, "objective", classification.Objective(num_classes=0))


@dataclasses.dataclass(frozen=True, kw_only=True)
class FeaturesSpec(StepSpec):
    """The feature step's spec: the head's global pooling."""

    pool: str


@dataclasses.dataclass(frozen=True, kw_only=True)
class TrainSpec(StepSpec):
    """One phase's train step: units below `frozen_depth` (the phase's lowest trainable unit) run in inference
    mode with no backward pass; `labels` (parameter name -> optimizer group or 'frozen': the phase's rule,
    Phase.labels) say what updates and, with `optimizer` (the config.optimizer block), make the optimizer,
    with the strategy's `lr_multipliers` per group, `weight_decay` (None: the optimizer's own),
    `regularizer` (a finetune.regularizers Term: its forward pass and penalty, against the anchor given to each
    step; `l2sp = (alpha, beta)` is short for regularizers.l2_sp.L2SP(alpha, beta)); `sam` (recipes.Sam: the
    gradient taken again at the SAM ascent point) and `ema` (recipes.Ema: the state's "ema" updated after each
    update); `update_stats`
    (BatchNorm's running statistics); `accumulate = k` micro-batches per update; the task's `objective`
    (targets and loss); `start_unit = k > 0` (k = frozen_depth, no augmentation): batch["image"] holds unit
    k-1's cached activations and the step runs units k.. only (feature_cache); `frozen_units` (the phase's,
    Phase.frozen_units) the units none of whose parameters train: those above frozen_depth also run in
    inference mode (their BatchNorm statistics untouched) while the gradient passes through them. Mappings are
    kept as tuples of their items (labels in their own order, optimizer and lr_multipliers sorted by key)."""

    frozen_depth: int
    labels: tuple
    optimizer: tuple
    objective: Any
    lr_multipliers: tuple = ()
    weight_decay: float | None = None
    l2sp: tuple[float, float] | None = None
    sam: recipes.Sam | None = None
    ema: recipes.Ema | None = None
    regularizer: Any = None
    update_stats: bool = True
    accumulate: int = 1
    start_unit: int = 0
    frozen_units: frozenset = frozenset()

    def __post_init__(self):
        super().__post_init__()
        object.__setattr__(self, "frozen_units", frozenset(self.frozen_units))
        object.__setattr__(self, "labels", _items(self.labels, sort=False))
        object.__setattr__(self, "optimizer", _items(self.optimizer, sort=True))
        object.__setattr__(self, "lr_multipliers", _items(self.lr_multipliers or {}, sort=True))
        if self.l2sp is not None:
            object.__setattr__(self, "l2sp", tuple(self.l2sp))
            if self.regularizer is None:
                object.__setattr__(self, "regularizer", regularizers.l2_sp.L2SP(*map(float, self.l2sp)))

    def label_map(self) -> dict[str, str]:
        return dict(self.labels)

    def optimizer_config(self) -> ml_collections.ConfigDict:
        return ml_collections.ConfigDict(dict(self.optimizer))


# ---------------------------------------------------------------------------------------------- builders

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


def build_eval(spec: EvalSpec) -> Callable:
    """jitted (params, stats, batch) -> the task objective's `reduce` of the model's outputs over the examples
    batch["mask"] marks, reduced across devices (and processes) inside the step. Classification (the
    default): {"correct", "loss", "confusion"}, the batch's correct predictions, summed cross-entropy and
    (C, C) confusion matrix (rows = true class), which evaluators.Classification sums over batches."""
    model_of, preprocess = spec.model_of(), spec.preprocess()
    objective, start_unit = spec.objective, spec.start_unit

    def eval_step(params, stats, batch):
        model = model_of(params, stats)
        if start_unit:
            return objective.reduce(model(batch["image"], train=False, start=start_unit), batch)
        return objective.reduce(model(preprocess(batch["image"]), train=False), batch)

    repl, batch = sharding.replicated(spec.mesh), sharding.batch_sharding(spec.mesh)
    return jax.jit(eval_step, in_shardings=(spec.param_shardings(), repl, batch), out_shardings=repl)


def build_features(spec: FeaturesSpec) -> Callable:
    """jitted (params, stats, batch) -> (B, D) penultimate features of batch["image"]: the depth units in
    inference mode and the head's global pooling. Replicated on the way out: the host-side probe reads them."""
    model_of, preprocess, pool = spec.model_of(), spec.preprocess(), spec.pool

    def features(params, stats, batch):
        model = model_of(params, stats)
        return global_pool(model.features(preprocess(batch["image"]), train=False), pool).astype(jnp.float32)

    repl, batch = sharding.replicated(spec.mesh), sharding.batch_sharding(spec.mesh)
    return jax.jit(features, in_shardings=(spec.param_shardings(), repl, batch), out_shardings=repl)


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


def _gradients(spec: TrainSpec, model_of: Callable) -> Callable:
    """grad_fn(train_params, stats, images, targets, drop_key, *, frozen, anchor, hp) -> (grads of the trainable
    parameters, loss, train metrics, new BatchNorm statistics): one forward and backward pass of the phase's
    model (frozen parameters from `frozen`; the regulariser's penalty against `anchor` in the total
    differentiated, its terms in the metrics: finetune.regularizers)."""
    objective, frozen_depth, start_unit, term = spec.objective, spec.frozen_depth, spec.start_unit, spec.regularizer
    update_stats = spec.update_stats
    # frozen units above the frozen prefix (a phase that trains units 0 and 2 but not 1): inference mode too;
    # passed only where there are any, so a model of the depth rule alone is called as before
    above = frozenset(u for u in spec.frozen_units if u >= frozen_depth)
    mode = {"frozen_units": above} if above else {}

    def grad_fn(train_params, stats, images, targets, drop_key, *, frozen, anchor, hp):
        def loss_fn(train_params):
            all_params = {**frozen, **train_params}
            model = model_of(all_params, stats)
            call = dict(train=True, frozen_depth=frozen_depth, update_stats=update_stats, dropout_key=drop_key,
                        **({"start": start_unit} if start_unit else {}), **mode)
            # the forward pass, and the regulariser's penalty and metrics (finetune.regularizers)
            outputs, penalty, reg_metrics = regularizers.apply(
                term, model, images, targets, call, train_params=train_params, params=all_params, stats=stats,
                anchor=anchor, model_of=model_of)
            loss, metrics = objective.loss(outputs, targets, hp)  # in float32, whatever computes
            total = loss if penalty is None else loss + penalty
            metrics = {**metrics, **reg_metrics}
            new_stats = {_dotted(q): v.get_value() for q, v in nnx.to_flat_state(nnx.state(model, nnx.BatchStat))}
            return total, (loss, metrics, new_stats)

        (_, (loss, metrics, new_stats)), g = jax.value_and_grad(loss_fn, has_aux=True)(train_params)
        return g, loss, metrics, new_stats
    return grad_fn


def build_train(spec: TrainSpec) -> tuple[optax.GradientTransformation, Callable]:
    """(optimizer, jitted train step) for one phase (TrainSpec): the step takes (state, batch, hp, anchor),
    `anchor` what the regulariser reads (Program.anchor), and returns (state, metrics). With SAM the gradient is taken a second
    time at the ascent point (the same batch, augmentation and dropout key; the loss, train metrics and
    BatchNorm statistics are the first pass's, at w, as google-research/sam keeps the first pass's state);
    with a weight EMA the state's "ema" moves towards the updated weights and statistics."""
    objective, start_unit, sam, ema = spec.objective, spec.start_unit, spec.sam, spec.ema
    label_map = spec.label_map()
    tx = freezing.build_optimizer(spec.optimizer_config(), label_map, dict(spec.lr_multipliers), spec.weight_decay)
    trainable = freezing.trainable(label_map)
    trainable_set = set(trainable)
    model_of, preprocess = spec.model_of(), spec.preprocess()
    repl, batch_sh = sharding.replicated(spec.mesh), sharding.batch_sharding(spec.mesh)
    gradients = _gradients(spec, model_of)

    def train_step(state, batch, hp, anchor):
        key = jax.random.fold_in(state["key"], state["step"])
        k_aug, k_drop = jax.random.split(key)
        inputs = batch["image"] if start_unit else preprocess(batch["image"])
        images, targets = objective.prepare(batch, inputs, k_aug)
        params = state["params"]
        frozen = {k: v for k, v in params.items() if k not in trainable_set}
        grad_fn = _accumulated(functools.partial(gradients, frozen=frozen, anchor=anchor, hp=hp),
                               int(spec.accumulate), batch_sh)
        train_params = {k: params[k] for k in trainable}
        grads, loss, metrics, stats = grad_fn(train_params, state["batch_stats"], images, targets, k_drop)
        if sam is not None:  # the gradient at w + eps, applied at w
            grads = grad_fn(recipes.sam_ascent(train_params, grads, sam), state["batch_stats"], images, targets,
                            k_drop)[0]
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
        if ema is not None:  # update t = step + 1
            decay = recipes.ema_decay(new_state["step"], ema.decay, ema.warmup)
            new_state["ema"] = recipes.ema_update(state["ema"], new_params, stats, decay)
        return new_state, {"loss": loss, **metrics}

    placement = spec.placement
    state_sh, anchor_sh = ((placement.state(tx, ema), placement.anchor(spec.regularizer)) if placement
                           else (repl, repl))
    train = jax.jit(train_step, in_shardings=(state_sh, batch_sh, repl, anchor_sh), out_shardings=(state_sh, repl),
                    donate_argnums=(0,))
    return tx, train


# ---------------------------------------------------------------------------------------------- a run's program

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
    the cache, so phases and runs of the same structure share compilations) and its regulariser's anchor."""

    def __init__(self, s: Setup, config, mesh_: jax.sharding.Mesh, cache: StepCache):
        self.s, self.config, self.mesh, self.cache = s, config, mesh_, cache
        graphdef, param_paths, stat_paths, params, stats = split_model(s.model)
        # host copies (the same on every process): the state is placed from them shard by shard
        self.params, self.stats = jax.tree.map(np.asarray, (params, stats))
        self.placement = Placement.of(mesh_, self.params, config.sharding)
        self.sizes = {k: int(np.size(v)) for k, v in self.params.items()}
        value_range, mean, std = normaliser(s.meta, s.data.image_shape[2])
        # the part of every step's spec the run fixes: the model, its preprocessing, placement and precision
        self.base = StepSpec(net=Net(graphdef, param_paths, stat_paths), value_range=value_range, mean=mean,
                             std=std, mesh=mesh_, placement=self.placement, precision=config.precision)
        # the task's pieces of the steps (targets, loss, eval reduction): hashable, part of the specs; the
        # normalisation tells pixel-space augmentation (randaugment) what the images' values are
        self.objective = s.task.objective(config, s.data, s.task.parse_augment(tuple(config.augment)),
                                          normaliser=(value_range, mean, std))
        # the weight EMA (None: off) averages what trains in any phase; SAM (None: off)
        self.ema = recipes.ema_of(config, sorted(set().union(
            *(freezing.trainable(s.labels(p)) for p in s.plan.phases))))
        self.sam = recipes.sam_of(config)
        self.repl = sharding.replicated(mesh_)
        self.evaluate = self.evaluate_from(0)
        pool = getattr(s.model.head, "pool", None)  # a dense head has no pooled features
        features = None if pool is None else FeaturesSpec(**self.base.common(), pool=pool)
        self.features = None if features is None else cache.get(features, lambda: build_features(features))
        # the regulariser's anchor (L2-SP's: the starting weights of the units; finetune.regularizers), a pure
        # function of the config, placed apart from the state (which is donated to the train step)
        self.anchor = self.regularizer_anchor()

    def train_spec(self, phase: strategies.Phase, start_unit: int = 0) -> TrainSpec:
        s, plan, cfg = self.s, self.s.plan, self.config
        return TrainSpec(**self.base.common(), frozen_depth=s.depth(phase), labels=s.labels(phase),
                         optimizer=cfg.optimizer, objective=self.objective, lr_multipliers=plan.lr_multipliers,
                         weight_decay=plan.weight_decay, l2sp=plan.l2sp, regularizer=plan.regularizer,
                         sam=self.sam, ema=self.ema,
                         update_stats=plan.update_stats,
                         accumulate=int(cfg.train.accumulate), start_unit=start_unit,
                         frozen_units=phase.frozen_units(s.param_names))

    def regularizer_anchor(self):
        """The anchor the train steps receive: what the plan's regulariser computes from the starting weights
        (and, for DELTA's attention and Co-Tuning's category relationship, one pass over the training set
        before training), placed on the mesh."""
        term, s, cfg = self.s.plan.regularizer, self.s, self.config
        if term is None:
            return {}
        lowest = min(s.depth(p) for p in s.plan.phases)  # no phase trains the units below it
        prepared = term.prepare(s.model, self.base.preprocess(), s.data, cfg, lowest)
        return sharding.place(term.anchor(self.params, self.stats, prepared), self.placement.anchor(term))

    def steps(self, phase: strategies.Phase, start_unit: int = 0) -> Steps:
        """The phase's optimizer and train step; `start_unit = k`: the step on cached unit k-1 activations."""
        spec = self.train_spec(phase, start_unit)
        tx, train = self.cache.get(spec, lambda: build_train(spec))
        return Steps(tx, train, self.evaluate)

    def evaluate_from(self, start_unit: int) -> Callable:
        """The eval step on cached unit start_unit-1 activations (on images at 0); without what only training
        uses (objective.for_eval), so that runs share eval steps."""
        spec = EvalSpec(**self.base.common(), objective=self.objective.for_eval(), start_unit=start_unit)
        return self.cache.get(spec, lambda: build_eval(spec))

    def place_weights(self, weights: dict) -> dict:
        """{"params", "batch_stats"} host arrays (all the parameters or some: the EMA's) -> device arrays placed
        as the run places them."""
        p = self.placement
        return {"params": sharding.place(weights["params"], {k: p.params[k] for k in weights["params"]}),
                "batch_stats": sharding.place(weights["batch_stats"], {k: p.repl for k in weights["batch_stats"]})}

    def init_opt(self, tx: optax.GradientTransformation, params: dict):
        """tx.init(params) created where it will live (each device computes only its shard)."""
        return jax.jit(tx.init, out_shardings=self.placement.opt_state(tx))(params)

    def copy_weights(self, params: dict, stats: dict) -> dict:
        """A device copy of the weights, placed like them (the state's own arrays are donated to each step);
        one jitted copy per placement, shared by the runs of a sweep."""
        p = self.placement
        copy = self.cache.get(("copy", p), lambda: jax.jit(
            lambda t: jax.tree.map(jnp.copy, t), out_shardings={"params": p.params, "batch_stats": p.repl}))
        return copy({"params": params, "batch_stats": stats})

    def fresh_state(self, tx: optax.GradientTransformation) -> dict:
        """The state at step 0, created sharded: parameters shard by shard from the host, the optimizer
        state by a jitted init whose outputs are the shards (no device holds the whole of a sharded tensor)."""
        weights = self.place_weights({"params": self.params, "batch_stats": self.stats})
        repl = self.repl
        state = {**weights, "opt_state": self.init_opt(tx, weights["params"]),
                 "step": sharding.place(np.zeros((), np.int32), repl),
                 "key": sharding.place(np.asarray(jax.random.key_data(jax.random.key(self.config.seed))), repl)}
        if self.ema is not None:  # the EMA starts at the initial weights, in buffers of its own
            state["ema"] = self.place_weights({"params": {k: self.params[k] for k in self.ema.names},
                                               "batch_stats": self.stats})
        return state

    def trainable_count(self, phase: strategies.Phase) -> int:
        return sum(self.sizes[k] for k in freezing.trainable(self.s.labels(phase)))
