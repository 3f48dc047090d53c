"""Every built-in dataset by name: the base datasets (data.builtin), the domain ladder derived from them
(data.domains) and the segmentation / detection scenes (data.digit_scenes). One map, owned here above
them, so none registers into another."""
from __future__ import annotations

import tensorflow_datasets as tfds

from tl_research.data import builtin, digit_scenes, domains

BUILDERS: dict[str, type[tfds.core.GeneratorBasedBuilder]] = {
    "mnist_subset": builtin.MnistSubset,
    "sklearn_digits": builtin.SklearnDigits,
    "digits_upsampled": domains.DigitsUpsampled,
    "mnist_inverted": domains.MnistInverted,
    "mnist_m": domains.MnistM,
    "mnist_segmentation": digit_scenes.MnistSegmentation,
    "mnist_segmentation_shifted": digit_scenes.MnistSegmentationShifted,
    "mnist_detection": digit_scenes.MnistDetection,
    "mnist_detection_shifted": digit_scenes.MnistDetectionShifted,
}
