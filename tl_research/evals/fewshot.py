"""Closed-form few-shot linear probe on frozen features (big_vision's `fewshot_lsr` evaluator).

For k shots per class, draw k training examples of every class with a seed, whiten their features, append a
large constant feature (an almost unregularised bias) and solve L2-regularised least squares to one-hot
targets in {-1, 1}:

    w = (X^T X + l2 I)^-1 X^T Y        (or X^T (X X^T + l2 I)^-1 Y when there are fewer points than features)

The test prediction is argmax(x_test w). No gradient steps, so a source model is scored on a target dataset in
seconds. Protocol as in Kolesnikov et al. 2019 (BiT, arXiv 1912.11370) and Zhai et al. 2019 (VTAB): 1, 5, 10
and 25 shots per class, several seeds, l2 = 2^10 on whitened features.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

SHOTS = (1, 5, 10, 25)
BIAS_CONSTANT = 100.0  # large, so that the bias is almost unregularised


def default_config() -> ml_collections.ConfigDict:
    return ml_collections.ConfigDict(dict(
        shots=SHOTS,  # examples per class drawn from the training split
        seeds=3,  # draws per shot count; the metric is their mean
        l2_reg=2.0 ** 10,  # ridge strength on whitened features (big_vision's default)
    ))


def draw(labels: np.ndarray, shots: int, seed: int, num_classes: int) -> np.ndarray:
    """Indices of `shots` examples per class (fewer where a class has fewer), seeded and nested across shot
    counts: the 5-shot draw of a seed holds its 1-shot draw."""
    rng = np.random.default_rng(seed)
    labels = np.asarray(labels)
    per_class = [rng.permutation(np.flatnonzero(labels == c))[:shots] for c in range(num_classes)]
    return np.sort(np.concatenate(per_class))


@jax.jit
def _lsr_predict(x, y_onehot, x_test, l2_reg):
    mean = jnp.mean(x, axis=0, keepdims=True)
    std = jnp.std(x, axis=0, keepdims=True) + 1e-5
    x, x_test = (x - mean) / std, (x_test - mean) / std
    x = jnp.pad(x, ((0, 0), (0, 1)), constant_values=BIAS_CONSTANT)
    x_test = jnp.pad(x_test, ((0, 0), (0, 1)), constant_values=BIAS_CONSTANT)
    y = 2.0 * y_onehot - 1.0
    n, d = x.shape
    if n >= d:
        w = jnp.linalg.solve(x.T @ x + l2_reg * jnp.eye(d, dtype=x.dtype), x.T @ y)
    else:  # the dual form: an (n, n) system instead of (d, d)
        w = x.T @ jnp.linalg.solve(x @ x.T + l2_reg * jnp.eye(n, dtype=x.dtype), y)
    return jnp.argmax(x_test @ w, axis=1)


def lsr_accuracy(train_x, train_y, test_x, test_y, num_classes: int, l2_reg: float) -> float:
    """Test accuracy of the ridge-regression classifier fitted on (train_x, train_y)."""
    onehot = jax.nn.one_hot(np.asarray(train_y), num_classes, dtype=jnp.float32)
    preds = _lsr_predict(jnp.asarray(train_x, jnp.float32), onehot, jnp.asarray(test_x, jnp.float32),
                         jnp.float32(l2_reg))
    return float(np.mean(np.asarray(preds) == np.asarray(test_y)))


def probe(train_x, train_y, test_x, test_y, num_classes: int, shots=SHOTS, seeds: int = 3,
          l2_reg: float = 2.0 ** 10) -> dict[str, float]:
    """{'{k}shot_accuracy': mean over seeds, '{k}shot_accuracy_std': their std} for every k in `shots`."""
    out = {}
    for k in shots:
        accs = []
        for seed in range(seeds):
            idx = draw(train_y, k, seed, num_classes)
            accs.append(lsr_accuracy(train_x[idx], np.asarray(train_y)[idx], test_x, test_y, num_classes, l2_reg))
        out[f"{k}shot_accuracy"] = float(np.mean(accs))
        out[f"{k}shot_accuracy_std"] = float(np.std(accs))
    return out


def holdout_probe(x, y, num_classes: int, shots: int, seeds: int = 3, l2_reg: float = 2.0 ** 10
                  ) -> tuple[float, float]:
    """(mean, std over seeds) of the k-shot probe's accuracy on the examples of the same split it did not draw:
    a few-shot score from one labelled split (the transferability report's; no test images). NaN where a draw
    leaves no example out."""
    y = np.asarray(y)
    accs = []
    for seed in range(seeds):
        idx = draw(y, shots, seed, num_classes)
        rest = np.setdiff1d(np.arange(len(y)), idx)
        if not len(rest):
            return float("nan"), float("nan")
        accs.append(lsr_accuracy(x[idx], y[idx], x[rest], y[rest], num_classes, l2_reg))
    return float(np.mean(accs)), float(np.std(accs))
