import numpy as np
import pytest

from tl_research.data import subsets
from tl_research.errors import ConfigError


def _labels():
    rng = np.random.default_rng(0)
    return rng.permutation(np.repeat(np.arange(5), [300, 200, 120, 60, 23]))


def test_per_class_subsets_are_stratified_nested_and_reproducible():
    labels = _labels()
    small = subsets.stratified_nested(labels, per_class=5, seed=1)
    big = subsets.stratified_nested(labels, per_class=20, seed=1)
    assert np.bincount(labels[small]).tolist() == [5] * 5
    assert np.bincount(labels[big]).tolist() == [20] * 5
    assert set(small) <= set(big)
    assert (np.diff(big) > 0).all()  # sorted, no repeats
    np.testing.assert_array_equal(big, subsets.stratified_nested(labels, per_class=20, seed=1))
    assert not np.array_equal(big, subsets.stratified_nested(labels, per_class=20, seed=2))


def test_total_subsets_are_proportional_and_nested_at_every_size():
    labels = _labels()
    counts = np.bincount(labels)
    previous = np.array([], dtype=np.int64)
    for total in range(1, 400, 7):
        pos = subsets.stratified_nested(labels, total=total, seed=4)
        assert len(pos) == total
        got = np.bincount(labels[pos], minlength=5)
        exact = total * counts / counts.sum()
        assert (np.abs(got - exact) < 1).all(), (total, got, exact)  # within one of the exact share
        assert set(previous) <= set(pos)
        previous = pos
    # per_class and total draw from the same per-class order, so they nest too
    assert set(subsets.stratified_nested(labels, per_class=3, seed=4)) <= set(
        subsets.stratified_nested(labels, per_class=10, seed=4))


def test_allocation_never_takes_from_a_class_as_the_total_grows():
    # a profile where plain largest-remainder rounding shows the Alabama paradox
    counts = np.array([6, 6, 2])
    allocs = [subsets.proportional_allocation(counts, k) for k in range(15)]
    assert all((b >= a).all() for a, b in zip(allocs, allocs[1:]))
    assert allocs[14].tolist() == counts.tolist()


def test_bad_sizes_are_config_errors():
    labels = _labels()
    with pytest.raises(ConfigError, match="data.per_class"):
        subsets.stratified_nested(labels, per_class=24, seed=0)  # smallest class has 23
    with pytest.raises(ConfigError, match="data.per_class"):
        subsets.stratified_nested(labels, per_class=2, total=10, seed=0)
    with pytest.raises(ConfigError, match="data.train_examples"):
        subsets.stratified_nested(labels, seed=0)
    with pytest.raises(ConfigError, match="data.train_examples"):
        subsets.stratified_nested(labels, total=len(labels) + 1, seed=0)
    with pytest.raises(ConfigError, match="data.imbalance_ratio"):
        subsets.long_tailed(labels, 0.5, seed=0)


def test_long_tailed_follows_the_exponential_profile():
    labels = np.repeat(np.arange(10), 500)
    pos = subsets.long_tailed(labels, imbalance_ratio=100.0, seed=0)
    counts = np.bincount(labels[pos])
    # CIFAR-10-LT with ratio 100: 500, 299, 179, 107, 64, 38, 22, 13, 8, 5
    assert counts.tolist() == [500, 299, 179, 107, 64, 38, 22, 13, 8, 5]
    assert counts[0] / counts[-1] == pytest.approx(100)
    # ratio 1 keeps everything; a smaller n_max scales the profile and nests inside the larger one
    assert len(subsets.long_tailed(labels, 1.0, seed=0)) == 5000
    small = subsets.long_tailed(labels, 10.0, seed=0, n_max=50)
    assert np.bincount(labels[small])[[0, -1]].tolist() == [50, 5]
    assert set(small) <= set(subsets.long_tailed(labels, 10.0, seed=0))


def test_vtab_split_arithmetic():
    assert subsets.vtab_positions("train800", 5000).tolist() == list(range(800))
    assert subsets.vtab_positions("val200", 5000).tolist() == list(range(800, 1000))
    both = subsets.vtab_positions("train800val200", 1000)
    assert both.tolist() == list(range(1000))
    assert set(subsets.vtab_positions("train800", 1000)).isdisjoint(subsets.vtab_positions("val200", 1000))
    with pytest.raises(ConfigError, match="data.vtab"):
        subsets.vtab_positions("train800val200", 999)
    with pytest.raises(ConfigError, match="data.vtab"):
        subsets.vtab_positions("train1000", 5000)
