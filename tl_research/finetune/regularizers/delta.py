"""DELTA (Li, Xiong, Wang, Huan, Liu, Xu, Chen & Huan, "DELTA: DEep Learning Transfer using Feature Map with
Attention", ICLR 2019, arXiv 1901.09229): the behavioural regulariser. The outputs of chosen units of the network
being trained are pulled towards those of the starting (source) network on the same batch, each channel weighed
by its attention, plus L2 on the head:

    penalty = alpha/2 * mean_x sum_units sum_c w_c * mean_positions (FM_c(w, x) - FM_c(w0, x))^2 + beta/2 ||w_head||^2

The source network is the anchor: the starting weights and BatchNorm statistics of every unit, run in inference
mode. The units (strategy.delta_units; () = TLlib's choice for ResNets: the last unit before each spatial
downsampling, and the last unit). The weights w_c (strategy.delta_attention): the paper's supervised attention,
computed once before training: a linear softmax classifier fitted to the source network's pooled features of
the target training set (the paper's discriminator on frozen starting features); on `delta_attention_examples`
training examples (TLlib: 10 batches of 32), the rise of its cross-entropy when channel c of the unit's output is
set to zero, averaged; standardised over the unit's channels, w = C * softmax(z / 5) (TLlib; mean 1). False:
every w_c = 1. TLlib sums the distance over its batch of 48 with alpha 0.01; here it is a mean over examples,
so alpha 0.48 is the same pull at TLlib's batch; beta 0.01 (TLlib's head trade-off).
"""
from __future__ import annotations

import dataclasses
import functools
import math
from typing import Sequence

import jax
import jax.numpy as jnp
import numpy as np
import optax

from tl_research.finetune.regularizers import base as R

ATTENTION_BATCH = 32  # examples per pass of the attention (TLlib's attention batch size)
CHANNEL_CHUNK = 8  # channels removed at once while computing the attention
PROBE_STEPS = 300  # full-batch Adam steps of the attention's classifier
PROBE_LR = 0.05  # their learning rate
PROBE_L2 = 1e-3  # its L2 penalty on standardised features
TEMPERATURE = 5.0  # softmax(z / 5) of the standardised loss rises (TLlib)


def _positions(shape: Sequence[int]) -> int:
    """The positions of a unit output (B, ..., C): H * W, tokens, or 1 for (B, C)."""
    return int(math.prod(shape[1:-1]))


def select_units(shapes: Sequence[Sequence[int]], requested: Sequence[int] = (), offset: int = 0) -> list[int]:
    """The units whose outputs DELTA compares, given the output shapes of units offset, offset + 1, ...:
    `requested` (those at or above offset), or by default each unit the next one downsamples (fewer positions)
    and the last unit."""
    n = len(shapes)
    if requested:
        return sorted(u for u in set(requested) if offset <= u < offset + n)
    return [offset + j for j in range(n) if j == n - 1 or _positions(shapes[j + 1]) < _positions(shapes[j])]


def feature_distance(target, source, weights=None):
    """mean over examples of sum_c w_c * mean over positions of (target - source)^2, for (B, ..., C) outputs;
    `weights` (C,) or None (every w_c = 1)."""
    d = jnp.square(target.astype(jnp.float32) - source.astype(jnp.float32))
    per_channel = d.reshape(d.shape[0], -1, d.shape[-1]).mean(axis=1)  # (B, C)
    if weights is not None:
        per_channel = per_channel * weights
    return jnp.mean(jnp.sum(per_channel, axis=-1))


def attention_weights(loss_rise: np.ndarray) -> np.ndarray:
    """C * softmax(z / 5), z the standardised loss rises of the C channels (uniform where they are all equal)."""
    rise = np.asarray(loss_rise, np.float64)
    sd = rise.std()
    z = (rise - rise.mean()) / sd if sd > 0 else np.zeros_like(rise)
    e = np.exp(z / TEMPERATURE - np.max(z / TEMPERATURE))
    return (len(rise) * e / e.sum()).astype(np.float32)


def fit_probe(features: np.ndarray, labels: np.ndarray, num_classes: int):
    """(w (D, C), b (C,)): a softmax classifier fitted to (features, labels) by full-batch Adam on standardised
    features with a small L2 penalty, returned for the raw features."""
    x = np.asarray(features, np.float32)
    mu, sd = x.mean(0), x.std(0) + 1e-6
    w, b = _fit((x - mu) / sd, np.asarray(labels, np.int32), num_classes)
    w, b = np.asarray(w, np.float64), np.asarray(b, np.float64)
    return (w / sd[:, None]).astype(np.float32), (b - (mu / sd) @ w).astype(np.float32)


@functools.partial(jax.jit, static_argnums=2)
def _fit(x, labels, num_classes: int):
    def loss(p):
        ce = optax.softmax_cross_entropy_with_integer_labels(x @ p["w"] + p["b"], labels).mean()
        return ce + 0.5 * PROBE_L2 * jnp.sum(jnp.square(p["w"]))

    opt = optax.adam(PROBE_LR)
    params = {"w": jnp.zeros((x.shape[1], num_classes)), "b": jnp.zeros((num_classes,))}

    def step(carry, _):
        p, state = carry
        updates, state = opt.update(jax.grad(loss)(p), state, p)
        return (optax.apply_updates(p, updates), state), None

    (params, _), _ = jax.lax.scan(step, (params, opt.init(params)), None, length=PROBE_STEPS)
    return params["w"], params["b"]


@R.register
@dataclasses.dataclass(frozen=True)
class Delta(R.Term):
    name = "delta"
    transfer_only = True
    classification_only = True

    alpha: float = 0.48
    beta: float = 0.01
    units: tuple = ()
    attention: bool = True
    attention_examples: int = 320

    @classmethod
    def from_config(cls, s) -> "Delta":
        return cls(float(s.delta_alpha), float(s.delta_beta), tuple(int(u) for u in s.delta_units),
                   bool(s.delta_attention), int(s.delta_attention_examples))

    @classmethod
    def check(cls, config) -> None:
        from tl_research import models
        n = models.abstract(config.model, 2, 3).num_units
        bad = [u for u in config.strategy.delta_units if u >= n]
        if bad:
            raise R.err("delta_units", tuple(config.strategy.delta_units),
                        f"() or unit indices in 0..{n - 1}", why=f"{config.model.name} has {n} units")

    def anchor(self, params: dict, stats: dict, prepared: dict):
        return {"params": {k: v for k, v in params.items() if not k.startswith("head.")},
                "batch_stats": dict(stats), "attention": prepared.get("attention", {})}

    def anchor_shardings(self, param_shardings: dict, repl):
        return {"params": {k: s for k, s in param_shardings.items() if not k.startswith("head.")},
                "batch_stats": repl, "attention": repl}

    def apply(self, model, images, targets: dict, call: dict, ctx: R.Pass):
        logits, outs, _ = model.outputs(images, **call)
        start = call.get("start", 0)
        source = ctx.model_of({**ctx.params, **ctx.anchor["params"]}, {**ctx.stats, **ctx.anchor["batch_stats"]})
        _, source_outs = source.features(images, train=False, start=start, return_units=True)
        attention = ctx.anchor["attention"]
        dist = sum(feature_distance(outs[u - start], jax.lax.stop_gradient(source_outs[u - start]),
                                    attention.get(str(u)))
                   for u in select_units([o.shape for o in outs], self.units, start))
        head = sum(jnp.sum(jnp.square(v)) for k, v in ctx.train_params.items() if k.startswith("head."))
        feature_term = 0.5 * self.alpha * dist
        return logits, feature_term + 0.5 * self.beta * head, {"reg_delta": feature_term}

    def summary(self) -> str:
        units = f", units {list(self.units)}" if self.units else ""
        return f"delta {self.alpha:g}/{self.beta:g}" + (", attention" if self.attention else "") + units

    def prepare(self, model, preprocess, data, config, lowest_unit: int) -> dict:
        if not self.attention:
            return {}
        from flax import nnx
        graphdef, state = nnx.split(model)
        shape = (1, *data.image_shape)
        outs = jax.eval_shape(lambda s, x: nnx.merge(graphdef, s).features(x, return_units=True)[1], state,
                              jax.ShapeDtypeStruct(shape, jnp.float32))
        units = [u for u in select_units([o.shape for o in outs], self.units) if u >= lowest_unit]
        if not units:
            return {"attention": {}}
        w, b = fit_probe(*_pooled_features(graphdef, state, preprocess, data, config), data.num_classes)
        rises = _loss_rises(graphdef, state, preprocess, data, config, units, w, b, self.attention_examples)
        return {"attention": {str(u): attention_weights(r) for u, r in zip(units, rises)}}


@functools.partial(jax.jit, static_argnums=0)
def _features(graphdef, state, inputs):
    """The pooled last-unit outputs of the source network (compiled once per model structure)."""
    from flax import nnx
    from tl_research.models.base import global_pool
    m = nnx.merge(graphdef, state)
    return global_pool(m.features(inputs, train=False), m.head.pool).astype(jnp.float32)


def _pooled_features(graphdef, state, preprocess, data, config):
    """(features (N, D), labels (N,)): the source network's pooled last-unit outputs of the training split."""
    from tl_research.data import pipeline

    def every_process(x):  # multi-process: each process reads its part of a batch, the probe fits them all
        if jax.process_count() == 1:
            return np.asarray(x)
        from jax.experimental import multihost_utils
        return np.concatenate(list(np.asarray(multihost_utils.process_allgather(np.asarray(x)))))

    xs, ys = [], []
    for batch in pipeline.eval_batches(data, data.train, config.data.eval_batch_size, config.data.threads):
        keep = every_process(batch["mask"])
        xs.append(every_process(_features(graphdef, state, preprocess(batch["image"])))[keep])
        ys.append(every_process(batch["label"])[keep])
    return np.concatenate(xs), np.concatenate(ys)


@functools.partial(jax.jit, static_argnums=(0, 1))
def _rise(graphdef, unit: int, state, inputs, labels, mask, w, b):
    """(C,) the probe's cross-entropy, summed over the batch's real examples, with each channel of unit `unit`'s
    output set to zero, less the intact one's (compiled once per model structure and unit)."""
    from flax import nnx
    from tl_research.models.base import global_pool
    h = nnx.merge(graphdef, state).prefix(inputs, unit + 1)

    def loss(hm):  # a model of its own: made inside lax.map's trace
        rest = nnx.merge(graphdef, state)
        z = global_pool(rest.features(hm, train=False, start=unit + 1), rest.head.pool).astype(jnp.float32)
        ce = optax.softmax_cross_entropy_with_integer_labels(z @ w + b, labels)
        return jnp.sum(jnp.where(mask, ce, 0.0))

    channels = jnp.arange(h.shape[-1])
    removed = jax.lax.map(lambda c: loss(jnp.where(channels == c, 0.0, h)), channels, batch_size=CHANNEL_CHUNK)
    return removed - loss(h)


def _loss_rises(graphdef, state, preprocess, data, config, units, w, b, examples: int) -> list[np.ndarray]:
    """Per unit, (C,) the probe's mean cross-entropy rise over `examples` training examples (a seeded draw)
    when one channel of the unit's output is set to zero."""
    train = data.train
    pick = np.sort(np.random.default_rng(config.seed).permutation(len(train))[:examples])
    subset = dataclasses.replace(
        train, indices=train.indices[pick], labels=train.labels[pick],
        images=None if train.images is None else train.images[pick],
        extras=None if train.extras is None else {k: v[pick] for k, v in train.extras.items()})

    def rises(batch):
        inputs = preprocess(batch["image"])
        return tuple(_rise(graphdef, u, state, inputs, batch["label"], batch["mask"], w, b) for u in units)

    totals = R.source_pass(rises, data, subset, ATTENTION_BATCH, config.data.threads)
    return [t / len(pick) for t in totals]
