import numpy as np
import pytest

from tl_research.data import subsets
from tl_research.core.errors import ConfigError


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
    # CIFAR-10-LT with ratio 100 (one tenth of its 5,000 per class): 5000, 2997, 1796, 1077, 645, 387, 232, ...
    assert counts.tolist() == [500, 299, 179, 107, 64, 38, 23, 13, 8, 5]
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


# The data config fields, through pipeline.load on the built-in sklearn digits (1,258 training records).

from tl_research.data import pipeline  # noqa: E402
from tl_research.data.sampling import BalancedSampler  # noqa: E402


@pytest.fixture(scope="module")
def digits_dir(tmp_path_factory):
    d = str(tmp_path_factory.mktemp("tfds"))
    cfg = pipeline.default_config()
    cfg.name, cfg.data_dir = "sklearn_digits", d
    pipeline.builder(cfg)
    return d


def _cfg(data_dir, **fields):
    cfg = pipeline.default_config()
    cfg.name, cfg.data_dir, cfg.cache_mb = "sklearn_digits", data_dir, 0
    cfg.update(fields)
    return cfg


def test_load_draws_nested_subsets_and_records_their_ids(digits_dir):
    full = pipeline.load(_cfg(digits_dir), seed=0)
    small = pipeline.load(_cfg(digits_dir, per_class=5), seed=3)
    big = pipeline.load(_cfg(digits_dir, per_class=20), seed=3)
    assert np.bincount(small.train.labels).tolist() == [5] * 10
    np.testing.assert_array_equal(small.train_ids, small.train.indices)
    assert set(small.train_ids) <= set(big.train_ids) <= set(full.train_ids)
    # the ids are TFDS record indices of the train split: the labels read there agree
    records = full.train.source.__getitems__([int(i) for i in small.train_ids])
    assert [r["label"] for r in records] == small.train.labels.tolist()
    # val and test are untouched
    assert len(small.val) == len(full.val) and len(small.test) == len(full.test)
    # data.subset_seed fixes the subset across run seeds; -1 follows the run seed
    a = pipeline.load(_cfg(digits_dir, per_class=5, subset_seed=11), seed=1).train_ids
    b = pipeline.load(_cfg(digits_dir, per_class=5, subset_seed=11), seed=2).train_ids
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(small.train_ids, pipeline.load(_cfg(digits_dir, per_class=5), seed=4).train_ids)


def test_load_total_long_tailed_and_class_subset(digits_dir):
    data = pipeline.load(_cfg(digits_dir, train_examples=100, classes=(3, 1)), seed=0)
    assert len(data.train) == 100 and set(data.train.labels) == {0, 1}
    lt = pipeline.load(_cfg(digits_dir, imbalance_ratio=10.0, per_class=50), seed=0)
    counts = np.bincount(lt.train.labels)
    assert counts[0] == 50 and counts[-1] == 5 and (np.diff(counts) <= 0).all()


def test_class_order_is_a_label_permutation(digits_dir):
    """data.classes in another order keeps the same examples and relabels class classes[i] as i: the label-level
    shift of experiments/surgical ((1, 2, 0): class 1 -> 0, 2 -> 1, 0 -> 2), in every split. (A per_class or
    train_examples subset is drawn per relabelled class, so another order draws another subset of that size.)"""
    plain = pipeline.load(_cfg(digits_dir, classes=(0, 1, 2)), seed=0)
    permuted = pipeline.load(_cfg(digits_dir, classes=(1, 2, 0)), seed=0)
    for split in ("train", "val", "test"):
        a, b = getattr(plain, split), getattr(permuted, split)
        np.testing.assert_array_equal(np.sort(a.indices), np.sort(b.indices))
        relabelled = dict(zip(b.indices.tolist(), b.labels.tolist()))
        assert [relabelled[i] for i in a.indices.tolist()] == ((a.labels - 1) % 3).tolist(), split
    assert permuted.class_names == ["1", "2", "0"]


def test_vtab_splits_come_from_the_train_split(digits_dir):
    tune = pipeline.load(_cfg(digits_dir, vtab="train800"), seed=0)
    assert tune.train.indices.tolist() == list(range(800))
    assert tune.val.indices.tolist() == list(range(800, 1000))
    final = pipeline.load(_cfg(digits_dir, vtab="train800val200", classes=(0, 1, 2)), seed=0)
    assert set(final.train.indices) <= set(range(1000)) and len(final.train) > 250
    full = pipeline.load(_cfg(digits_dir), seed=0)
    assert len(final.test) == np.isin(full.test.labels, (0, 1, 2)).sum()


def test_balanced_sampler_is_chosen_by_config(digits_dir):
    data = pipeline.load(_cfg(digits_dir, imbalance_ratio=10.0), seed=0)
    assert isinstance(pipeline.train_sampler(_cfg(digits_dir, balance="oversample"), data, 0), BalancedSampler)
    assert isinstance(pipeline.train_sampler(_cfg(digits_dir), data, 0), pipeline.EpochSampler)


@pytest.mark.parametrize("field, value", [("per_class", -1), ("imbalance_ratio", 0.5), ("balance", "smote"),
                                          ("vtab", "val200"), ("subset_seed", -2)])
def test_bad_fields_fail_before_any_data_is_prepared(tmp_path, field, value):
    cfg = _cfg(str(tmp_path), **{field: value})
    with pytest.raises(ConfigError, match=rf"data\.{field}"):
        pipeline.load(cfg)
    assert not any(tmp_path.iterdir())
    with pytest.raises(ConfigError, match=r"data\.per_class"):
        pipeline.load(_cfg(str(tmp_path), per_class=5, train_examples=50))


def test_runs_of_one_process_share_label_scans_and_decoded_splits_but_draw_their_own_subsets(digits_dir):
    pipeline.SHARED.clear()
    cfg = _cfg(digits_dir, cache_mb=64, per_class=20)
    a = pipeline.load(cfg, seed=0)
    assert pipeline.SHARED.computed == {"labels": 3, "decoded": 3}  # one scan and one decode per split
    again = pipeline.load(cfg, seed=0)  # another run of the same data: nothing recomputed, the same arrays
    assert pipeline.SHARED.computed == {"labels": 3, "decoded": 3}
    assert again.train.images is a.train.images and again.test.images is a.test.images
    other_seed = pipeline.load(cfg, seed=1)  # its own subset, decoded from the shared scan
    assert pipeline.SHARED.computed == {"labels": 3, "decoded": 4}
    assert not np.array_equal(other_seed.train_ids, a.train_ids)
    assert other_seed.val.images is a.val.images
    fresh = {k: v for k, v in pipeline.SHARED.computed.items()}
    pipeline.SHARED.clear()
    uncached = pipeline.load(cfg, seed=1)  # what it decodes on its own
    np.testing.assert_array_equal(uncached.train.images, other_seed.train.images)
    np.testing.assert_array_equal(uncached.test.images, a.test.images)
    resized = pipeline.load(_cfg(digits_dir, cache_mb=64, per_class=20, image_size=16), seed=1)
    assert resized.test.images.shape[1:3] == (16, 16)  # other preprocessing: decoded again
    assert pipeline.SHARED.computed["decoded"] == 6 and fresh["decoded"] == 4
    with pytest.raises(ValueError):
        a.test.images[0, 0, 0, 0] = 1  # shared arrays are read-only
    pipeline.SHARED.clear()


def test_the_shared_cache_keeps_its_decoded_arrays_within_the_budget():
    cache, mb = pipeline.SharedCache(), 2**20
    for i in range(4):
        cache.get("decoded", (i,), lambda: (np.zeros(mb, np.uint8), {}), budget_mb=2.5)
    assert cache.get("decoded", (3,), lambda: None)[0].nbytes == mb  # the newest kept ...
    assert cache.get("decoded", (0,), lambda: "again") == "again"  # ... the oldest evicted: computed again
    assert cache.computed["decoded"] == 5
