"""Co-Tuning (You, Kou, Long & Wang, "Co-Tuning for Transfer Learning", NeurIPS 2020): the source model's
classifier is kept as a second head (`head.source_classifier`, on the same classifier input as the new head) and
trained beside it, towards the source categories the target labels relate to:

    loss = CE(target head, y) + lambda * CE(source head, p(y_s | y_t = y))

The category relationship p(y_s | y_t) is computed once before training, in inference mode, from the source
model's softmax over its classes, softmax(source_scale * logits) (the authors' code scales its ImageNet
ResNet-50's logits by 0.884, a temperature fitted on the source's held-out data), on the target data:

    calibrated  (default) the paper's calibrated relationship, as its authors' code (github.com/thuml/CoTuning,
                module/relationship_learning.py) learns it: a multinomial logistic regression g without intercept
                from the source probabilities to the target label, fitted on the training split for each C of
                C_GRID (sklearn's objective, C * sum CE + ||W||^2 / 2) and chosen by accuracy on the held-out
                validation split; g's logits calibrated on that split by temperature scaling (one scale s,
                minimising the validation cross-entropy); p(y_t | y_s) = softmax(s * W[y_s]) (g applied to each
                one-hot source label), and by Bayes' rule with the source marginal p(y_s) (the mean source
                probabilities of the training and validation examples)
                    p(y_s | y_t) = p(y_t | y_s) p(y_s) / sum_s' p(y_t | s') p(s')
    direct      TLlib's Relationship (the paper's direct approach): the source probabilities averaged over the
                target training examples of each class (a class with no example relates to every source class
                equally); no validation data

With soft targets (label smoothing, mixup, cutmix) the source target is their mixture of the rows. lambda 2.3
(TLlib's and the authors' default). The source classifier is the starting checkpoint's `head.classifier` (a run
from init=source, a run or weights directory, or a converted file that has its classifier); a linear head only
(model.head).
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
RELATIONSHIPS = ("calibrated", "direct")
# the authors' grid of g's inverse L2 strength (relationship_learning.py), in their order: on a tie in validation
# accuracy the first (the largest C) wins, as their argmax picks it
C_GRID = (1e4, 3e3, 1e3, 3e2, 1e2, 3e1, 1e1, 3.0, 1.0, 3e-1, 1e-1, 3e-2, 1e-2, 3e-3, 1e-3, 3e-4, 1e-4)
FIT_ITERATIONS = 1000  # L-BFGS iterations of each fit of g, at most
SCALE_BOUNDS = (1e-3, 1e3)  # the temperature scale's search interval


def relationship(probs_sum: np.ndarray, counts: np.ndarray) -> np.ndarray:
    """(C_t, C_s) p(y_s | y_t): the per-target-class sums of the source model's softmax over the counts of
    examples; a class with none gets the uniform row."""
    uniform = np.full(probs_sum.shape[1], 1.0 / probs_sum.shape[1])
    rows = [probs_sum[c] / counts[c] if counts[c] > 0 else uniform for c in range(len(counts))]
    return np.asarray(rows, np.float32)


def softmax(x: np.ndarray, axis: int = -1) -> np.ndarray:
    """softmax in float64 (numpy)."""
    z = np.asarray(x, np.float64)
    e = np.exp(z - z.max(axis=axis, keepdims=True))
    return e / e.sum(axis=axis, keepdims=True)


def _cross_entropy(logits: np.ndarray, labels: np.ndarray) -> float:
    z = logits - logits.max(axis=1, keepdims=True)
    return float(np.mean(np.log(np.exp(z).sum(axis=1)) - z[np.arange(len(labels)), labels]))


def fit_reverse(probs: np.ndarray, labels: np.ndarray, num_classes: int, c: float, start=None) -> np.ndarray:
    """(C_s, C_t) W of g: argmin_W mean_i CE(softmax(probs_i @ W), y_i) + ||W||^2 / (2 c n), the minimiser of
    sklearn's LogisticRegression(C=c, fit_intercept=False) multinomial objective c * sum_i CE + ||W||^2 / 2
    (L-BFGS from `start`, else zeros)."""
    from scipy import optimize
    x, y = np.asarray(probs, np.float64), np.asarray(labels, np.int64)
    n, d = x.shape
    onehot = np.eye(num_classes)[y]

    def loss(w):
        w = w.reshape(d, num_classes)
        z = x @ w
        p = softmax(z)
        value = _cross_entropy(z, y) + np.sum(w * w) / (2 * c * n)
        return value, (x.T @ (p - onehot) / n + w / (c * n)).ravel()

    w0 = np.zeros(d * num_classes) if start is None else np.asarray(start, np.float64).ravel()
    out = optimize.minimize(loss, w0, jac=True, method="L-BFGS-B",
                            options={"maxiter": FIT_ITERATIONS, "gtol": 1e-8, "ftol": 1e-14})
    return out.x.reshape(d, num_classes)


def temperature_scale(logits: np.ndarray, labels: np.ndarray) -> float:
    """argmin_{s > 0} mean CE(s * logits, labels): temperature scaling (Guo et al. 2017), as the authors'
    `calibrate` (theirs by L-BFGS from 1; a bounded scalar search here, the loss being convex in s)."""
    from scipy import optimize
    z, y = np.asarray(logits, np.float64), np.asarray(labels, np.int64)
    out = optimize.minimize_scalar(lambda s: _cross_entropy(s * z, y), bounds=SCALE_BOUNDS, method="bounded",
                                   options={"xatol": 1e-9})
    return float(out.x)


def calibrated_relationship(train_probs, train_labels, val_probs, val_labels, num_classes: int):
    """((C_t, C_s) p(y_s | y_t) float32, {"C", "val_accuracy", "scale"}): the paper's calibrated relationship
    from the source probabilities of the training and the held-out validation examples (module docstring)."""
    train_labels, val_labels = np.asarray(train_labels, np.int64), np.asarray(val_labels, np.int64)
    fits, w = {}, None
    for c in sorted(C_GRID):  # from the strongest penalty, each fit starting at the previous one's solution
        w = fit_reverse(train_probs, train_labels, num_classes, c, start=w)
        fits[c] = w
    accuracy = {c: float(np.mean(np.argmax(np.asarray(val_probs, np.float64) @ w, 1) == val_labels))
                for c, w in fits.items()}
    best = max(C_GRID, key=lambda c: (accuracy[c], -C_GRID.index(c)))
    w = fits[best]
    scale = temperature_scale(np.asarray(val_probs, np.float64) @ w, val_labels)
    target_given_source = softmax(scale * w, axis=1)  # (C_s, C_t): g of each one-hot source label
    marginal = np.concatenate([train_probs, val_probs]).astype(np.float64).mean(0)  # p(y_s)
    joint = target_given_source * marginal[:, None]
    rel = (joint / joint.sum(0, keepdims=True)).T
    return rel.astype(np.float32), {"C": best, "val_accuracy": accuracy[best], "scale": scale}


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


def _source_logits_of(m, inputs):
    """The source head's logits of a batch, in inference mode."""
    return m.head.source_classifier(m.head.embed(m.features(inputs, train=False))).astype(jnp.float32)


@functools.partial(jax.jit, static_argnums=(0, 1))
def _class_sums(graphdef, num_classes: int, state, inputs, labels, mask, scale):
    """Per target class, the sum of the source head's softmax(scale * logits) over the batch's real examples,
    and their count (compiled once per model structure: a sweep's runs and a resumed run share it)."""
    from flax import nnx
    probs = jax.nn.softmax(scale * _source_logits_of(nnx.merge(graphdef, state), inputs), axis=-1)
    onehot = jax.nn.one_hot(labels, num_classes) * mask[:, None]
    return onehot.T @ probs, onehot.sum(0)


@functools.partial(jax.jit, static_argnums=0)
def _source_logits(graphdef, state, inputs):
    from flax import nnx
    return _source_logits_of(nnx.merge(graphdef, state), inputs)


@R.register
@dataclasses.dataclass(frozen=True)
class CoTuning(R.Term):
    name = "co_tuning"
    transfer_only = True
    classification_only = True
    keeps_weight_decay = True

    lam: float = 2.3
    relationship: str = "calibrated"  # RELATIONSHIPS
    source_scale: float = 1.0  # the source logits' scale before the softmax (1 / its temperature)

    @classmethod
    def from_config(cls, s) -> "CoTuning":
        return cls(float(s.co_tuning_lambda), str(s.co_tuning_relationship), float(s.co_tuning_source_scale))

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
        size, threads = config.data.eval_batch_size, config.data.threads
        if self.relationship == "direct":
            probs, counts = R.source_pass(
                lambda b: _class_sums(graphdef, data.num_classes, state, preprocess(b["image"]), b["label"],
                                      b["mask"], jnp.float32(self.source_scale)),
                data, data.train, size, threads)
            return {"relationship": relationship(probs, counts)}
        rows = lambda b: (_source_logits(graphdef, state, preprocess(b["image"])), b["label"])
        (train_logits, train_labels), held_out = (R.source_rows(rows, data, split, size, threads)
                                                  for split in (data.train, data.val))
        if not held_out:
            raise ValueError("co_tuning's calibrated relationship needs held-out target data: the validation "
                             "split is empty (strategy.co_tuning_relationship=direct needs none)")
        rel, _ = calibrated_relationship(softmax(self.source_scale * train_logits), train_labels,
                                         softmax(self.source_scale * held_out[0]), held_out[1], data.num_classes)
        return {"relationship": rel}

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
        scale = f", source scale {self.source_scale:g}" if self.source_scale != 1.0 else ""
        return f"co_tuning {self.lam:g}" + ("" if self.relationship == "calibrated" else f" ({self.relationship})") + scale
