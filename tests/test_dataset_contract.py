"""A dataset from outside the package plugs in through `data.registry.register`: a TFDS builder defined in this
module (8x8 stripes whose class is their orientation) is prepared on first use like the built-in datasets, its
records reach the batches with the labels its generator gave them, and a short run trains on it."""
from __future__ import annotations

import numpy as np
import pytest
import tensorflow_datasets as tfds

from tl_research import config as C
from tl_research.core.errors import ConfigError
from tl_research.data import builtin, pipeline, registry
from tl_research.run import trainer

from conftest import tiny

ORIENTATIONS = ("horizontal", "vertical", "diagonal")


def stripes(label: int, phase: int) -> np.ndarray:
    """An 8x8 grey image of period-2 stripes: rows (0), columns (1) or anti-diagonals (2), shifted by phase."""
    y, x = np.mgrid[:8, :8]
    coord = (y, x, x + y)[label] + phase
    return np.where(coord % 2 == 0, 255, 0).astype(np.uint8)[..., None]


def orientation(image: np.ndarray) -> int:
    """The class an image's stripes show (the rule the generator used, read back from the pixels)."""
    img = image[..., 0].astype(int)
    same_row = (img[:, 1:] == img[:, :-1]).all()
    same_col = (img[1:, :] == img[:-1, :]).all()
    return 0 if same_row else 1 if same_col else 2


class ToyStripes(tfds.core.GeneratorBasedBuilder):
    """90 images, 30 per orientation, split 60/15/15 by the builder's own seeded rule."""

    VERSION = tfds.core.Version("1.0.0")

    def _info(self):
        return tfds.core.DatasetInfo(builder=self, features=tfds.features.FeaturesDict({
            "image": tfds.features.Image(shape=(8, 8, 1)),
            "label": tfds.features.ClassLabel(names=ORIENTATIONS)}))

    def _split_generators(self, dl_manager):
        rng = np.random.default_rng(0)
        order = rng.permutation(90)
        return {"train": self._generate_examples(order[:60]), "val": self._generate_examples(order[60:75]),
                "test": self._generate_examples(order[75:])}

    def _generate_examples(self, ids):
        for i in ids:
            label, phase = int(i) % 3, (int(i) // 3) % 2
            yield int(i), {"image": builtin.png_bytes(stripes(label, phase)), "label": label}


@pytest.fixture
def toy():
    registry.register("toy_stripes", ToyStripes)
    yield "toy_stripes"
    registry.unregister("toy_stripes")


def _config(tmp_path, **overrides):
    return tiny(str(tmp_path / "tfds"), **{"data.name": "toy_stripes", "data.classes": (), **overrides})


def test_a_dataset_registered_from_outside_is_prepared_read_and_trained_on(toy, tmp_path):
    config = _config(tmp_path)
    C.validate(config)  # data.name=toy_stripes is a dataset now
    data = pipeline.load(config.data, seed=0)
    assert (data.num_classes, data.class_names, data.image_shape) == (3, list(ORIENTATIONS), (8, 8, 1))
    assert (len(data.train.indices), len(data.val.indices), len(data.test.indices)) == (60, 15, 15)
    batch = next(pipeline.train_batches(data, 16, seed=0, start_step=0, num_steps=1))
    assert [orientation(im) for im in batch["image"]] == list(batch["label"])  # each record's own label
    assert len(set(batch["label"].tolist())) > 1

    config.train.steps, config.train.eval_every = 8, 4
    result = trainer.run(config, tmp_path / "run", progress=False)
    assert result.status == "done", result.reason
    assert 0.0 <= result.metrics["test_accuracy"] <= 1.0


def test_the_registry_refuses_a_taken_name_and_a_non_builder(toy):
    with pytest.raises(ValueError, match="already registered"):
        registry.register("toy_stripes", builtin.SklearnDigits)
    with pytest.raises(TypeError, match="GeneratorBasedBuilder"):
        registry.register("not_a_builder", dict)


def test_without_registration_the_name_is_refused(tmp_path):
    with pytest.raises(ConfigError, match="data.name"):
        C.validate(_config(tmp_path, **{"data.name": "toy_stripes_unregistered"}))
