"""Domain similarity between a source and a target dataset (Cui et al. 2018, arXiv 1806.06193).

Each class is represented by the mean feature of its images under the source model, weighted by its share
of the images; the distance between two domains is the Earth Mover's Distance between these weighted sets
of class means with Euclidean ground distance, and

    sim(S, T) = exp(-gamma * EMD(S, T)),   gamma = 0.01 in the paper.

To measure it: run the source model's penultimate layer over each dataset, feed the features batch by
batch into a `ClassMeans` (or all at once into `class_mean_features`), and pass both results to
`domain_similarity`. Features of the same model must be compared: the scale of EMD depends on it.
"""
from __future__ import annotations

import numpy as np
import ot


def class_mean_features(features: np.ndarray, labels: np.ndarray, num_classes: int
                        ) -> tuple[np.ndarray, np.ndarray]:
    """(means (C, D) float64, counts (C,) int64); a class with no examples has a zero mean and count 0."""
    acc = ClassMeans(num_classes)
    acc.update(features, labels)
    return acc.result()


class ClassMeans:
    """Streaming per-class feature means: `update` once per batch, `result` at the end."""

    def __init__(self, num_classes: int):
        self.num_classes = num_classes
        self.sums: np.ndarray | None = None
        self.counts = np.zeros(num_classes, dtype=np.int64)

    def update(self, features: np.ndarray, labels: np.ndarray, mask: np.ndarray | None = None) -> None:
        """Adds a batch; `mask` (as in pipeline.eval_batches) marks the real examples of a padded batch."""
        features = np.asarray(features, dtype=np.float64).reshape(len(labels), -1)
        labels = np.asarray(labels, dtype=np.int64)
        if mask is not None:
            keep = np.asarray(mask, dtype=bool)
            features, labels = features[keep], labels[keep]
        if self.sums is None:
            self.sums = np.zeros((self.num_classes, features.shape[1]))
        np.add.at(self.sums, labels, features)
        self.counts += np.bincount(labels, minlength=self.num_classes)

    def result(self) -> tuple[np.ndarray, np.ndarray]:
        if self.sums is None:
            raise ValueError("ClassMeans.result() before any update()")
        means = self.sums / np.maximum(self.counts, 1)[:, None]
        return means, self.counts.copy()


def earth_movers_distance(source_means, source_counts, target_means, target_counts) -> float:
    """EMD between class means weighted by their image counts, Euclidean ground distance (exact, via POT)."""
    xs, ws = _weighted(source_means, source_counts, "source")
    xt, wt = _weighted(target_means, target_counts, "target")
    if xs.shape[1] != xt.shape[1]:
        raise ValueError(f"feature sizes differ: source {xs.shape[1]}, target {xt.shape[1]}")
    cost = ot.dist(xs, xt, metric="euclidean")
    return float(ot.emd2(ws, wt, cost))


def domain_similarity(source_means: np.ndarray, source_counts: np.ndarray, target_means: np.ndarray,
                      target_counts: np.ndarray, gamma: float = 0.01) -> float:
    """exp(-gamma * EMD(S, T)) (Cui et al. 2018): 1 for identical domains, falling towards 0 as the class
    means move apart. Classes with count 0 are ignored."""
    return float(np.exp(-gamma * earth_movers_distance(source_means, source_counts, target_means,
                                                        target_counts)))


def _weighted(means, counts, name):
    means = np.asarray(means, dtype=np.float64)
    counts = np.asarray(counts, dtype=np.float64)
    if means.ndim != 2 or counts.shape != (len(means),):
        raise ValueError(f"{name}: means must be (C, D) and counts (C,), got {means.shape} and {counts.shape}")
    keep = counts > 0
    if not keep.any():
        raise ValueError(f"{name}: every class count is 0")
    return means[keep], counts[keep] / counts[keep].sum()
