"""Every built-in dataset by name: the base datasets (data.builtin), the domain ladder derived from them
(data.domains) and the segmentation / detection scenes (data.digit_scenes). One map, owned here above
them, so none registers into another. `register` adds a dataset from outside the package."""
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


def register(name: str, builder: type[tfds.core.GeneratorBasedBuilder], *, replace: bool = False):
    """Makes `data.name = name` read `builder` (a TFDS GeneratorBasedBuilder class), prepared in array_record
    format under data.data_dir on first use, as the built-in datasets are. Usable from outside the package
    (a config file or a module it imports); returns the builder, so it can decorate the class."""
    if not (isinstance(builder, type) and issubclass(builder, tfds.core.GeneratorBasedBuilder)):
        raise TypeError(f"dataset {name!r}: {builder!r} is not a tfds.core.GeneratorBasedBuilder class")
    if name in BUILDERS and BUILDERS[name] is not builder and not replace:
        raise ValueError(f"dataset {name!r} is already registered ({BUILDERS[name].__name__})")
    BUILDERS[name] = builder
    return builder


def unregister(name: str) -> None:
    BUILDERS.pop(name, None)
