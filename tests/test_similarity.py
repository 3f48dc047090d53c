import numpy as np
import pytest

from tl_research.evals.similarity import ClassMeans, class_mean_features, domain_similarity


def test_identical_class_means_have_similarity_one():
    rng = np.random.default_rng(0)
    means, counts = rng.normal(size=(5, 8)), np.array([10, 20, 30, 5, 1])
    assert domain_similarity(means, counts, means.copy(), counts.copy()) == pytest.approx(1.0)
    # the class order does not matter, only the weighted set of means
    perm = rng.permutation(5)
    assert domain_similarity(means, counts, means[perm], counts[perm]) == pytest.approx(1.0)


def test_similarity_falls_monotonically_as_means_move_apart():
    rng = np.random.default_rng(1)
    source, counts = rng.normal(size=(4, 16)), np.array([5, 10, 15, 20])
    direction = rng.normal(size=16)
    sims = [domain_similarity(source, counts, source + t * direction, counts, gamma=0.01)
            for t in (0.0, 1.0, 5.0, 20.0, 100.0)]
    assert sims[0] == pytest.approx(1.0)
    assert all(a > b for a, b in zip(sims, sims[1:]))
    # a common shift of every class mean by a vector d costs exactly |d|
    assert sims[2] == pytest.approx(np.exp(-0.01 * 5.0 * np.linalg.norm(direction)))


def test_class_weights_follow_image_counts():
    # two classes at 0 and 10 (x axis); target puts all its mass on class 0's mean
    src = np.array([[0.0, 0.0], [10.0, 0.0]])
    tgt = np.array([[0.0, 0.0]])
    heavy_near = domain_similarity(src, np.array([9, 1]), tgt, np.array([1]), gamma=1.0)
    heavy_far = domain_similarity(src, np.array([1, 9]), tgt, np.array([1]), gamma=1.0)
    assert heavy_near == pytest.approx(np.exp(-1.0))  # 10% of the mass moves 10
    assert heavy_far == pytest.approx(np.exp(-9.0))


def test_class_mean_features_streaming_matches_all_at_once():
    rng = np.random.default_rng(2)
    feats, labels = rng.normal(size=(50, 3)), rng.integers(0, 4, 50)
    means, counts = class_mean_features(feats, labels, num_classes=5)
    assert counts.tolist() == np.bincount(labels, minlength=5).tolist()
    for c in range(4):
        np.testing.assert_allclose(means[c], feats[labels == c].mean(0))
    assert (means[4] == 0).all() and counts[4] == 0
    acc = ClassMeans(5)
    for start in range(0, 50, 16):  # padded last batch, masked
        f, l = feats[start:start + 16], labels[start:start + 16]
        pad = 16 - len(l)
        acc.update(np.pad(f, ((0, pad), (0, 0))), np.pad(l, (0, pad)), mask=np.arange(16) < len(l))
    m2, c2 = acc.result()
    np.testing.assert_allclose(m2, means)
    np.testing.assert_array_equal(c2, counts)
