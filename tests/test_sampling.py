import numpy as np
import pytest

from tl_research.data.sampling import BalancedSampler, class_weights
from tl_research.core.errors import ConfigError


def test_inverse_weights_equalise_each_classes_total_weight():
    counts = np.array([500, 100, 10])
    w = class_weights(counts, "inverse")
    assert w.mean() == pytest.approx(1.0)
    totals = w * counts  # every class then contributes the same total loss weight
    np.testing.assert_allclose(totals, totals[0])


def test_effective_number_weights():
    counts = np.array([1000, 100, 10, 1])
    beta = 0.99
    w = class_weights(counts, "effective", beta=beta)
    expected = (1 - beta) / (1 - beta ** counts)
    np.testing.assert_allclose(w, expected / expected.mean())
    assert (np.diff(w) > 0).all()  # rarer classes weigh more
    # between no reweighting (beta -> 0) and inverse frequency (beta -> 1)
    np.testing.assert_allclose(class_weights(counts, "effective", beta=0.0), np.ones(4))
    np.testing.assert_allclose(class_weights(counts, "effective", beta=1 - 1e-12),
                               class_weights(counts, "inverse"), rtol=1e-3)
    np.testing.assert_allclose(class_weights(counts, "none"), np.ones(4))


def test_examples_normalisation_keeps_the_unweighted_losss_scale():
    counts = np.array([1000, 100, 10])  # a 100:1 imbalance
    by_class = class_weights(counts, "inverse")
    by_example = class_weights(counts, "inverse", norm="examples")
    np.testing.assert_allclose(by_example / by_example[0], by_class / by_class[0])  # the same proportions
    # the mean weight of a training example: 1 (the unweighted loss's scale), where the class normalisation
    # leaves this imbalance's examples at 3 * 3 / (1/1000 + 1/100 + 1/10) / 1110 = 0.073 of it, and the
    # effective learning rate with them
    assert (by_example * counts).sum() / counts.sum() == pytest.approx(1.0)
    assert (by_class * counts).sum() / counts.sum() == pytest.approx(9 / 0.111 / 1110)
    with pytest.raises(ConfigError, match="k_norm"):
        class_weights(counts, "inverse", key="k", norm="batch")


def test_absent_class_gets_zero_weight_and_bad_method_is_a_config_error():
    w = class_weights(np.array([10, 0, 30]), "inverse")
    assert w[1] == 0 and w[[0, 2]].mean() == pytest.approx(1.0)
    with pytest.raises(ConfigError, match="loss.class_weights"):
        class_weights(np.array([1, 2]), "sqrt", key="loss.class_weights")


def test_balanced_sampler_draws_classes_uniformly_and_uses_every_rare_example():
    labels = np.array([0] * 90 + [1] * 9 + [2] * 1)
    rng = np.random.default_rng(0)
    labels = labels[rng.permutation(100)]
    sampler = BalancedSampler(labels, seed=3)
    pos = sampler(np.arange(3000))
    assert pos.min() >= 0 and pos.max() < 100
    freq = np.bincount(labels[pos], minlength=3) / len(pos)
    np.testing.assert_allclose(freq, 1 / 3, atol=0.002)
    # the 9 rare examples are each drawn (almost) equally often: cycled, not resampled at random
    rare = np.bincount(pos[labels[pos] == 1], minlength=100)[labels == 1]
    assert rare.max() - rare.min() <= 1
    # the common class is undersampled without repeats within one pass over it
    first = pos[labels[pos] == 0][:90]
    assert len(set(first.tolist())) == 90


def test_balanced_sampler_is_a_pure_function_of_seed_and_position():
    labels = np.repeat(np.arange(4), [40, 20, 10, 5])
    a = BalancedSampler(labels, seed=7)(np.arange(500, 764))
    b = BalancedSampler(labels, seed=7)
    b(np.arange(0, 100))  # earlier calls do not change later answers
    np.testing.assert_array_equal(a, b(np.arange(500, 764)))
    assert not np.array_equal(a, BalancedSampler(labels, seed=8)(np.arange(500, 764)))
