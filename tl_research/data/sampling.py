"""Class imbalance: per-class loss weights and a class-balanced training sampler.

Two remedies that can be compared in one sweep: reweight the loss per class (`class_weights`), or draw the
training stream so that every class is equally frequent (`BalancedSampler`, oversampling the rare ones).
"""
from __future__ import annotations

import functools

import numpy as np

from tl_research.core.errors import ConfigError

WEIGHTINGS = ("none", "inverse", "effective")
NORMS = ("classes", "examples")  # what the class weights average to 1 over (class_weights' norm)


def class_weights(counts: np.ndarray, method: str, beta: float = 0.999, *,
                  key: str = "class_weights", norm: str = "classes") -> np.ndarray:
    """Loss weight per class from its number of training examples n_c, normalised (norm="classes") to mean 1
    over the classes present (absent classes get 0), as Cui et al., or (norm="examples") to mean 1 over the
    training examples, sum_c w_c n_c = sum_c n_c: the weighted loss then has the unweighted loss's scale, so
    a weighting does not also change the effective learning rate (under a 100:1 imbalance, "classes" scales
    the mean example weight, and with it every gradient, to a fraction of 1).

    - "none": 1 for every class.
    - "inverse": proportional to 1 / n_c.
    - "effective": proportional to 1 / E_c with the effective number of samples
      E_c = (1 - beta^n_c) / (1 - beta) (Cui et al. 2019, "Class-balanced loss based on effective number of
      samples", arXiv 1901.05555). beta = 0 gives "none", beta -> 1 gives "inverse"; the paper uses
      0.9 to 0.9999.

    `key` is the config key named in errors.
    """
    counts = np.asarray(counts, dtype=np.float64)
    if method not in WEIGHTINGS:
        raise ConfigError(key, method, ", ".join(WEIGHTINGS))
    if counts.ndim != 1 or (counts < 0).any() or not (counts > 0).any():
        raise ConfigError(key, method, "counts: one non-negative count per class, some > 0")
    present = counts > 0
    if method == "none":
        w = np.ones_like(counts)
    elif method == "inverse":
        w = np.divide(1.0, counts, out=np.zeros_like(counts), where=present)
    else:
        if not 0.0 <= beta < 1.0:
            raise ConfigError(key + "_beta", beta, "0 <= beta < 1")
        w = np.divide(1.0 - beta, 1.0 - beta ** counts, out=np.zeros_like(counts), where=present)
    w = np.where(present, w, 0.0)
    if norm not in NORMS:
        raise ConfigError(key + "_norm", norm, ", ".join(NORMS))
    if norm == "examples":
        return w * counts.sum() / (w * counts).sum()
    return w * present.sum() / w.sum()


class BalancedSampler:
    """Position p of the training stream -> a position into the split, drawing every class equally often.

    The stream is cut into blocks of len(labels) positions. Position t is given class t mod C, then the
    classes within each block are shuffled with a seed; so in every block each class is drawn equally
    often, up to one. The k-th draw of class c is example k mod n_c of a fresh seeded permutation of that
    class for every pass over it. Rare classes are oversampled by cycling
    through all their examples rather than by repeating a few. Deterministic for (seed, position), so a
    batch can be recomputed from its step alone; same call interface as `pipeline.EpochSampler`.
    """

    def __init__(self, labels: np.ndarray, seed: int):
        labels = np.asarray(labels)
        self.seed, self.n = int(seed), len(labels)
        self.classes = np.unique(labels)
        self.members = [np.flatnonzero(labels == c) for c in self.classes]

    @functools.lru_cache(maxsize=4)
    def _block(self, block: int) -> tuple[np.ndarray, np.ndarray]:
        """(class index, how many earlier draws of that class in the block) for each offset of a block."""
        # before shuffling, stream position t is class t mod C
        pattern = np.arange(block * self.n, (block + 1) * self.n) % len(self.classes)
        cls = np.random.default_rng([self.seed, 0, block]).permutation(pattern)
        rank = np.empty(self.n, dtype=np.int64)
        for c in range(len(self.classes)):
            where = np.flatnonzero(cls == c)
            rank[where] = np.arange(len(where))
        return cls, rank

    @functools.lru_cache(maxsize=64)
    def _perm(self, c: int, cycle: int) -> np.ndarray:
        order = np.random.default_rng([self.seed, 1, c, cycle]).permutation(len(self.members[c]))
        return self.members[c][order]

    def __call__(self, positions: np.ndarray) -> np.ndarray:
        out = np.empty(len(positions), dtype=np.int64)
        for i, p in enumerate(np.asarray(positions, dtype=np.int64)):
            block, offset = divmod(int(p), self.n)
            cls, rank = self._block(block)
            c = int(cls[offset])
            before = (block * self.n + len(self.classes) - 1 - c) // len(self.classes)  # earlier blocks
            k = before + int(rank[offset])  # draws of class c before this one
            cycle, j = divmod(k, len(self.members[c]))
            out[i] = self._perm(c, cycle)[j]
        return out
