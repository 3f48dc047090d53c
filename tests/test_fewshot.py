"""The closed-form few-shot probe (tl_research.fewshot) against a direct ridge solution, and its command
(tl_research.fewshot_command) against the library on the same features."""
import json

import numpy as np
import pytest
from sklearn.linear_model import Ridge

from tl_research import fewshot


def _blobs(n_per_class, dim, num_classes, seed, spread=1.0, draw=0):
    """Gaussian classes around random means (fixed by `seed`), `draw` picking the points: (x, y)."""
    means = np.random.default_rng(seed).normal(size=(num_classes, dim)) * 3.0
    y = np.repeat(np.arange(num_classes), n_per_class)
    noise = np.random.default_rng([seed, draw + 1]).normal(size=(len(y), dim))
    return (means[y] + spread * noise).astype(np.float32), y


# ---------------------------------------------------------------------------------------------- draw

def test_draw_gives_k_per_class_seeded_and_nested():
    labels = np.random.default_rng(0).integers(0, 4, size=400)
    one, five = fewshot.draw(labels, 1, seed=3, num_classes=4), fewshot.draw(labels, 5, seed=3, num_classes=4)
    assert np.bincount(labels[five], minlength=4).tolist() == [5, 5, 5, 5]
    assert np.bincount(labels[one], minlength=4).tolist() == [1, 1, 1, 1]
    assert set(one) <= set(five)  # the 5-shot draw of a seed holds its 1-shot draw
    assert np.array_equal(five, fewshot.draw(labels, 5, seed=3, num_classes=4))  # seeded
    assert not np.array_equal(five, fewshot.draw(labels, 5, seed=4, num_classes=4))  # the seed matters
    assert len(set(five)) == len(five)


def test_draw_takes_all_of_a_small_class():
    labels = np.array([0] * 10 + [1] * 2 + [2] * 10)
    idx = fewshot.draw(labels, 5, seed=0, num_classes=3)
    assert np.bincount(labels[idx], minlength=3).tolist() == [5, 2, 5]
    assert set(np.flatnonzero(labels == 1)) <= set(idx)


# ---------------------------------------------------------------------------------------------- lsr

def _ridge_predictions(train_x, train_y, test_x, num_classes, l2_reg):
    """The same model written directly: whitening on the training points, a bias column of
    fewshot.BIAS_CONSTANT, targets 2 * onehot - 1, and scikit-learn's ridge without its own intercept."""
    x, t = train_x.astype(np.float64), test_x.astype(np.float64)
    mean, std = x.mean(axis=0), x.std(axis=0) + 1e-5
    bias = lambda a: np.hstack([a, np.full((len(a), 1), fewshot.BIAS_CONSTANT)])
    x, t = bias((x - mean) / std), bias((t - mean) / std)
    y = 2.0 * np.eye(num_classes)[train_y] - 1.0
    ridge = Ridge(alpha=l2_reg, fit_intercept=False, solver="cholesky").fit(x, y)
    return np.argmax(ridge.predict(t), axis=1)


@pytest.mark.parametrize("n_per_class,dim", [(40, 8), (2, 60)], ids=["primal n>=d", "dual n<d"])
def test_lsr_predicts_what_direct_ridge_predicts(n_per_class, dim):
    num_classes, l2 = 5, 2.0 ** 10
    # overlapping classes (40 to 60% accuracy), so that another linear rule predicts differently; features on
    # scales from 0.01 to 100 with offsets, so that a probe which skipped the whitening would too
    train_x, train_y = _blobs(n_per_class, dim, num_classes, seed=1, spread=8.0)
    test_x, test_y = _blobs(60, dim, num_classes, seed=1, spread=8.0, draw=1)
    scale, offset = np.logspace(-2, 2, dim, dtype=np.float32), np.linspace(-50, 50, dim, dtype=np.float32)
    train_x, test_x = train_x * scale + offset, test_x * scale + offset
    n, d = len(train_x), dim + 1  # the bias column counts
    assert (n >= d) == (n_per_class == 40)  # each case exercises the branch its id names
    want = _ridge_predictions(train_x, train_y, test_x, num_classes, l2)
    # accuracy against sklearn's predictions as labels is 1.0 exactly when every prediction agrees
    assert fewshot.lsr_accuracy(train_x, train_y, test_x, want, num_classes, l2) == 1.0
    # and the reference is not trivially constant, so agreement means something
    assert len(np.unique(want)) == num_classes
    assert fewshot.lsr_accuracy(train_x, train_y, test_x, test_y, num_classes, l2) == np.mean(want == test_y)


def test_lsr_strength_matters():
    """A ridge strength that swamps the data changes predictions; the test above would not notice an l2
    that is ignored."""
    train_x, train_y = _blobs(2, 60, 5, seed=2, spread=8.0)
    test_x, _ = _blobs(30, 60, 5, seed=2, spread=8.0, draw=1)
    weak, strong = (_ridge_predictions(train_x, train_y, test_x, 5, l2) for l2 in (1e-3, 2.0 ** 10))
    assert np.sum(weak != strong) > 5
    assert fewshot.lsr_accuracy(train_x, train_y, test_x, strong, 5, 2.0 ** 10) == 1.0
    assert fewshot.lsr_accuracy(train_x, train_y, test_x, weak, 5, 1e-3) == 1.0


def test_separable_features_give_full_accuracy_and_random_labels_chance():
    num_classes = 10
    x, y = _blobs(60, 32, num_classes, seed=3, spread=0.1)
    assert fewshot.lsr_accuracy(x[::2], y[::2], x[1::2], y[1::2], num_classes, 2.0 ** 10) == 1.0
    rng = np.random.default_rng(4)
    noise, labels = rng.normal(size=(4000, 32)).astype(np.float32), rng.integers(0, num_classes, 4000)
    acc = fewshot.lsr_accuracy(noise[:2000], labels[:2000], noise[2000:], labels[2000:], num_classes, 2.0 ** 10)
    assert abs(acc - 1 / num_classes) < 0.03  # 2,000 test points: std of chance accuracy about 0.007


def test_probe_returns_every_key_and_means_over_seeds():
    train_x, train_y = _blobs(30, 16, 4, seed=5, spread=3.0)
    test_x, test_y = _blobs(20, 16, 4, seed=5, spread=3.0, draw=1)
    out = fewshot.probe(train_x, train_y, test_x, test_y, 4, shots=(1, 5, 10, 25), seeds=3, l2_reg=2.0 ** 10)
    assert sorted(out) == sorted([f"{k}shot_accuracy{s}" for k in (1, 5, 10, 25) for s in ("", "_std")])
    accs = [fewshot.lsr_accuracy(train_x[i], train_y[i], test_x, test_y, 4, 2.0 ** 10)
            for i in (fewshot.draw(train_y, 5, s, 4) for s in range(3))]
    assert out["5shot_accuracy"] == pytest.approx(np.mean(accs))
    assert out["5shot_accuracy_std"] == pytest.approx(np.std(accs))
    assert out["1shot_accuracy_std"] > 0  # different seeds draw different shots
