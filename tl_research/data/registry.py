"""Every built-in dataset by name: the base datasets (data.builtin) and the domain ladder derived from them
(data.domains). One map, owned here above both, so neither module registers into the other."""
from __future__ import annotations

import tensorflow_datasets as tfds

from tl_research.data import builtin, domains

BUILDERS: dict[str, type[tfds.core.GeneratorBasedBuilder]] = {
    "mnist_subset": builtin.MnistSubset,
    "sklearn_digits": builtin.SklearnDigits,
    "digits_upsampled": domains.DigitsUpsampled,
    "mnist_inverted": domains.MnistInverted,
    "mnist_m": domains.MnistM,
}
