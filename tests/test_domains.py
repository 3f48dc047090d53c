import pathlib

import numpy as np
import pytest

from tl_research.data import builtin, domains, pipeline, registry


@pytest.fixture
def few_digits(monkeypatch):
    """The first 60 digits of each class: each example's look depends only on its id, so the properties
    below hold for the full 5,000 and the test stays fast."""
    images, labels = builtin.mnist_arrays()
    keep = np.sort(np.concatenate([np.flatnonzero(labels == c)[:60] for c in range(10)]))
    monkeypatch.setattr(builtin, "mnist_arrays", lambda: (images[keep], labels[keep]))
    return images[keep], labels[keep]


def _prepare(name, data_dir):
    b = registry.BUILDERS[name](data_dir=str(data_dir), file_format="array_record")
    b.download_and_prepare()
    return b


def _records(b, split):
    src = b.as_data_source(split)
    return src.__getitems__(list(range(len(src))))


def test_mnist_m_prepares_identically_twice_and_differs_from_mnist(tmp_path, few_digits):
    a, b = _prepare("mnist_m", tmp_path / "a"), _prepare("mnist_m", tmp_path / "b")
    files_a = sorted(pathlib.Path(a.data_dir).glob("*.array_record*"))
    assert [f.name for f in files_a] == [f.name for f in sorted(pathlib.Path(b.data_dir).glob("*.array_record*"))]
    for fa in files_a:
        assert fa.read_bytes() == (pathlib.Path(b.data_dir) / fa.name).read_bytes()
    digits, labels = few_digits
    records = _records(a, "train")
    assert len(records) == 420  # mnist_subset's 70% train split
    for r in records[:50]:
        image, digit = r["image"], digits[r["id"]]
        assert image.shape == (28, 28, 3) and r["label"] == labels[r["id"]]
        np.testing.assert_array_equal(image, domains.blend_over_photo(digit, r["id"]))
        # |background - digit|: far from the plain grey digit, and the background is textured colour
        assert np.abs(image.astype(int) - digit.astype(int)).mean() > 20
    images = np.stack([r["image"] for r in records]).astype(float)
    assert images.std(axis=(1, 2)).mean() > 20 and np.abs(images[..., 0] - images[..., 2]).mean() > 5


def test_mnist_domains_keep_mnist_subset_examples_and_splits(tmp_path, few_digits):
    digits, labels = few_digits
    b = _prepare("mnist_inverted", tmp_path)
    expected = builtin.stratified_split(labels, builtin.MnistSubset.SPLITS)
    for split in ("train", "val", "test"):
        records = _records(b, split)
        assert sorted(r["id"] for r in records) == expected[split].tolist()
    r = records[0]
    assert r["image"].shape == (28, 28, 3)
    ink = digits[r["id"]][..., 0] > 128
    # inverted: the strokes are darker than the background
    assert r["image"][ink].mean() + 100 < r["image"][~ink].mean()


def test_digits_upsampled_keeps_sklearn_digits_splits_in_mnist_layout(tmp_path):
    from sklearn.datasets import load_digits
    b = _prepare("digits_upsampled", tmp_path)
    expected = builtin.stratified_split(load_digits().target, builtin.SklearnDigits.SPLITS)
    records = _records(b, "val")
    assert sorted(r["id"] for r in records) == expected["val"].tolist()
    images = np.stack([r["image"] for r in records])
    assert images.shape[1:] == (28, 28, 1)
    assert images[:, :4].max() == 0 and images[:, :, -4:].max() == 0  # MNIST's empty border
    assert images[:, 4:24, 4:24].mean() > 30


def test_the_ladder_is_registered_and_loads_through_the_pipeline(tmp_path, few_digits):
    assert set(domains.LADDER) <= set(registry.BUILDERS)
    cfg = pipeline.default_config()
    cfg.name, cfg.data_dir, cfg.classes, cfg.per_class = "mnist_m", str(tmp_path), (5, 6, 7, 8, 9), 10
    data = pipeline.load(cfg, seed=0)
    assert data.image_shape == (28, 28, 3) and len(data.train) == 50 and data.num_classes == 5

