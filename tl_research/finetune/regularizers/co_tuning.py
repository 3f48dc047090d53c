"""Co-Tuning (You, Kou, Long & Wang, "Co-Tuning for Transfer Learning", NeurIPS 2020): the source model's
classifier is kept as a second head (`head.source_classifier`, on the same classifier input as the new head) and
trained beside it, towards the source categories the target labels relate to:

    loss = CE(target head, y) + lambda * CE(source head, p(y_s | y_t = y))

p(y_s | y_t) is the paper's direct approach (TLlib's Relationship): the source model's softmax over its classes,
averaged over the target training examples of each class, computed once before training in inference mode (a
class with no training example relates to every source class equally). The calibrated approach is not built.
With soft targets (label smoothing, mixup, cutmix) the source target is their mixture of the rows. lambda 2.3
(TLlib's default). The source classifier is the starting checkpoint's `head.classifier` (a run from init=source,
a run or weights directory, or a converted file that has its classifier); a linear head only (model.head).
"""
from __future__ import annotations

import dataclasses
import functools

import jax
import jax.numpy as jnp
import numpy as np

from tl_research.core.errors import ConfigError
from tl_research.finetune.regularizers import base as R

CLASSIFIER = "head.classifier"


def relationship(probs_sum: np.ndarray, counts: np.ndarray) -> np.ndarray:
    """(C_t, C_s) p(y_s | y_t): the per-target-class sums of the source model's softmax over the counts of
    examples; a class with none gets the uniform row."""
    uniform = np.full(probs_sum.shape[1], 1.0 / probs_sum.shape[1])
    rows = [probs_sum[c] / counts[c] if counts[c] > 0 else uniform for c in range(len(counts))]
    return np.asarray(rows, np.float32)


def co_tuning_loss(source_logits, source_targets):
    """mean over examples of -sum_s p(s) log softmax(source_logits)_s (TLlib's CoTuningLoss)."""
    logp = jax.nn.log_softmax(source_logits.astype(jnp.float32), axis=-1)
    return jnp.mean(-jnp.sum(source_targets * logp, axis=-1))


def _source_problem(weights, in_features: int) -> str:
    """Why `weights` hold no source classifier that reads `in_features` features ('' when they do)."""
    kernel = (weights or {}).get("params", {}).get(CLASSIFIER + ".kernel")
    if kernel is None:
        return "the starting weights have no classifier (head.classifier.kernel)"
    if np.ndim(kernel) != 2 or np.shape(kernel)[0] != in_features:
        return (f"the source classifier reads {np.shape(kernel)[0]} features, the model's head "
                f"{in_features}")
    return ""


def check_weights(config, weights, prefix: str = "") -> None:
    """ConfigError (strategy.regularizer, after `prefix`) where the starting weights hold no classifier the
    model's head input fits (config.check_initial_weights: before any run)."""
    from tl_research import models
    in_features = models.abstract(config.model, 2, 3).head.classifier.kernel.shape[0]
    why = _source_problem(weights, in_features)
    if why:
        raise ConfigError(prefix + "strategy.regularizer", "co_tuning", "a starting checkpoint with its source "
                          "classifier (init=source, a run directory, or a converted file with its classifier)",
                          why=why)


@functools.partial(jax.jit, static_argnums=(0, 1))
def _class_sums(graphdef, num_classes: int, state, inputs, labels, mask):
    """Per target class, the sum of the source head's softmax over the batch's real examples, and their count
    (compiled once per model structure: a sweep's runs and a resumed run share it)."""
    from flax import nnx
    m = nnx.merge(graphdef, state)
    z = m.head.embed(m.features(inputs, train=False))
    probs = jax.nn.softmax(m.head.source_classifier(z).astype(jnp.float32), axis=-1)
    onehot = jax.nn.one_hot(labels, num_classes) * mask[:, None]
    return onehot.T @ probs, onehot.sum(0)


@R.register
@dataclasses.dataclass(frozen=True)
class CoTuning(R.Term):
    name = "co_tuning"
    transfer_only = True
    classification_only = True
    keeps_weight_decay = True

    lam: float = 2.3

    @classmethod
    def from_config(cls, s) -> "CoTuning":
        return cls(float(s.co_tuning_lambda))

    @classmethod
    def check(cls, config) -> None:
        from tl_research import models
        if config.model.get("head", "linear") != "linear":
            raise R.err("regularizer", "co_tuning", "a regularizer other than co_tuning with model.head=mlp",
                        why="the source classifier reads the pooled features, and an mlp head's hidden layers "
                            "start fresh")
        if config.init == "source" and config.get("source") is not None:
            src, tgt = (models.abstract(c.model, 2, 3).head.classifier.kernel.shape[0]
                        for c in (config.source, config))
            if src != tgt:
                raise R.err("regularizer", "co_tuning", "a source model whose classifier reads the features the "
                            "target's head reads", why=f"the source classifier reads {src} features, the "
                                                       f"target's head {tgt}")

    def extend(self, model, config, weights):
        from flax import nnx
        in_features = model.head.classifier.kernel.shape[0]
        why = _source_problem(weights, in_features)
        if why:
            raise R.err("regularizer", "co_tuning", "a starting checkpoint with its source classifier", why=why)
        kernel = np.asarray(weights["params"][CLASSIFIER + ".kernel"], np.float32)
        bias = weights["params"].get(CLASSIFIER + ".bias")
        head = nnx.Linear(in_features, kernel.shape[1], kernel_init=nnx.initializers.zeros, rngs=nnx.Rngs(0))
        head.kernel.set_value(jnp.asarray(kernel))
        head.bias.set_value(jnp.asarray(np.zeros(kernel.shape[1], np.float32) if bias is None else bias,
                                        jnp.float32))
        model.head.source_classifier = head
        return model

    def prepare(self, model, preprocess, data, config, lowest_unit: int) -> dict:
        from flax import nnx
        graphdef, state = nnx.split(model)
        probs, counts = R.source_pass(
            lambda b: _class_sums(graphdef, data.num_classes, state, preprocess(b["image"]), b["label"], b["mask"]),
            data, data.train, config.data.eval_batch_size, config.data.threads)
        return {"relationship": relationship(probs, counts)}

    def anchor(self, params: dict, stats: dict, prepared: dict):
        return {"relationship": prepared["relationship"]}

    def anchor_shardings(self, param_shardings: dict, repl):
        return repl

    def apply(self, model, images, targets: dict, call: dict, ctx: R.Pass):
        logits, _, features = model.outputs(images, **call)
        source_targets = targets["soft"].astype(jnp.float32) @ ctx.anchor["relationship"]
        penalty = self.lam * co_tuning_loss(model.head.source_classifier(features), source_targets)
        return logits, penalty, {"reg_co_tuning": penalty}

    def summary(self) -> str:
        return f"co_tuning {self.lam:g}"
