"""Which training examples a run uses: seeded, stratified, nested subsets; long-tailed subsets; VTAB-1k.

All functions take the labels of a split and return sorted positions into it. They share one seeded
permutation per class (a function of (seed, class) only), and every subset takes a prefix of it. So for one
seed the subsets of a dataset-size sweep are nested: the 100-example subset lies inside the 1,000-example
one, and a long-tailed subset keeps each class's first examples too. A sweep over sizes then measures the
effect of more data, not of different data.
"""
from __future__ import annotations

import numpy as np

from tl_research.core.errors import ConfigError

# The VTAB-1k protocol (Zhai et al. 2019, arXiv 1910.04867): 1,000 training examples. Tune on train800 /
# val200, make the final run on train800val200 and report the test split. Here as [start, stop) record
# ranges of one TFDS train split, for any dataset. The benchmark's own splits of its 19 tasks (val200 often
# from another split) are in tl_research.data.vtab.
VTAB_SPLITS: dict[str, tuple[int, int]] = {"train800": (0, 800), "val200": (800, 1000),
                                           "train800val200": (0, 1000)}


def _class_orders(labels: np.ndarray, seed: int) -> dict[int, np.ndarray]:
    """Class -> its positions in a seeded random order, which depends only on (seed, class)."""
    labels = np.asarray(labels)
    return {int(c): np.random.default_rng([int(seed), int(c)]).permutation(np.flatnonzero(labels == c))
            for c in np.unique(labels)}


def proportional_allocation(counts: np.ndarray, total: int) -> np.ndarray:
    """Examples per class for a stratified subset of `total`: largest-remainder rounding made monotone.

    Plain largest-remainder rounding of `total * counts / sum(counts)` is not monotone in `total` (the
    Alabama paradox: one more example overall can take one away from a class), which would break nesting.
    So examples are handed out one at a time, each to the class furthest below its exact share
    k * n_c / N (ties to the lower class). Every prefix is then within one example of its exact share, like
    largest-remainder rounding, and the allocation for `total` contains the one for any smaller total.
    """
    counts = np.asarray(counts, dtype=np.int64)
    n = int(counts.sum())
    if total >= n:
        return counts.copy()
    alloc = np.zeros(len(counts), dtype=np.int64)
    for k in range(1, int(total) + 1):
        # deficit * N in integers: k * n_c - a_c * N, exact for any size
        alloc[int(np.argmax(k * counts - alloc * n))] += 1
    return alloc


def stratified_nested(labels: np.ndarray, *, total: int = 0, per_class: int = 0, seed: int) -> np.ndarray:
    """Sorted positions of a stratified subset: `per_class` examples of every class, or `total` examples
    split over the classes in proportion to their sizes (see `proportional_allocation`).

    Each class contributes a prefix of its seeded permutation, so for one seed a smaller subset is always
    inside a larger one, whichever of `total` / `per_class` defines them.
    """
    labels = np.asarray(labels)
    if total < 0 or per_class < 0 or (total > 0) == (per_class > 0):
        if per_class > 0 or per_class < 0:
            raise ConfigError("data.per_class", per_class, "a count >= 0; 0 when data.train_examples is set")
        raise ConfigError("data.train_examples", total, "a count > 0 when data.per_class is 0")
    orders = _class_orders(labels, seed)
    classes = sorted(orders)
    sizes = np.array([len(orders[c]) for c in classes])
    if per_class:
        if per_class > sizes.min():
            small = classes[int(np.argmin(sizes))]
            raise ConfigError("data.per_class", per_class, f"at most {sizes.min()}",
                              why=f"class {small} has {sizes.min()} training examples")
        take = np.full(len(classes), per_class)
    else:
        if total > len(labels):
            raise ConfigError("data.train_examples", total, f"at most {len(labels)} (the training split)")
        take = proportional_allocation(sizes, total)
    return np.sort(np.concatenate([orders[c][:k] for c, k in zip(classes, take)])).astype(np.int64)


def long_tailed_counts(num_classes: int, n_max: int, imbalance_ratio: float) -> np.ndarray:
    """Examples per class of the exponential profile n_c = n_max * ratio^(-c / (C - 1)), truncated to an
    integer as in the CIFAR-LT recipe (Cui et al. 2019, "Class-balanced loss based on effective number of
    samples", arXiv 1901.05555). Class 0 keeps n_max, the last class n_max / ratio; at least 1 each."""
    c = np.arange(num_classes)
    counts = (n_max * float(imbalance_ratio) ** (-c / max(num_classes - 1, 1))).astype(np.int64)
    return np.maximum(counts, 1)


def long_tailed(labels: np.ndarray, imbalance_ratio: float, seed: int, *, n_max: int = 0) -> np.ndarray:
    """Sorted positions of a long-tailed subset: the k-th class in sorted label order keeps
    `long_tailed_counts(...)[k]` examples, a prefix of its seeded permutation (so it nests with
    `stratified_nested` for the same seed). `n_max` (0 = the smallest class size) is class 0's count."""
    if not imbalance_ratio >= 1.0:
        raise ConfigError("data.imbalance_ratio", imbalance_ratio, "a number >= 1 (1 = balanced)")
    orders = _class_orders(labels, seed)
    classes = sorted(orders)
    smallest = min(len(orders[c]) for c in classes)
    n_max = int(n_max) or smallest
    if n_max > smallest:
        raise ConfigError("data.per_class", n_max, f"at most {smallest}",
                          why="with data.imbalance_ratio it sets the size of class 0")
    take = long_tailed_counts(len(classes), n_max, imbalance_ratio)
    return np.sort(np.concatenate([orders[c][:k] for c, k in zip(classes, take)])).astype(np.int64)


def vtab_positions(split_name: str, num_examples: int) -> np.ndarray:
    """Record positions of a VTAB-1k split (`VTAB_SPLITS`) in a TFDS train split of `num_examples`."""
    if split_name not in VTAB_SPLITS:
        raise ConfigError("data.vtab", split_name, ", ".join(repr(s) for s in ("", *VTAB_SPLITS)))
    start, stop = VTAB_SPLITS[split_name]
    if stop > num_examples:
        raise ConfigError("data.vtab", split_name, "a train split of at least 1,000 examples",
                          why=f"data.train_split holds {num_examples}")
    return np.arange(start, stop, dtype=np.int64)
