"""Class imbalance (Buda et al. 2018, arXiv 1710.05381; Cui et al. 2019, arXiv 1901.05555): what a long tail
costs in balanced accuracy, and how much oversampling and re-weighting win back.

From scratch on all 10 digits of mnist_subset, the training set made long-tailed (class c keeps
350 * ratio^(-c/9) images) at imbalance ratio 1, 10 and 100; 100 steps of batch 32; val and test stay balanced.
Arms: plain, class weights (train.class_weights=inverse, inverse frequency), effective-number weights (Cui et
al.'s class-balanced loss, beta 0.999), oversampling (data.balance=oversample: every class drawn equally
often); 5 seeds (the same subset for every arm of a seed). The weights average to 1 over the training examples
(train.class_weights_norm=examples), so a weighted run keeps the plain run's loss scale and effective learning
rate (averaged over the classes instead, a 100:1 tail scales every step down to a fraction).

    python -m tl_research.experiments run class_imbalance
"""
from tl_research.config import axis, chain, product
from tl_research.experiments.common import SEEDS, small_base

RATIOS = (10.0, 100.0)
BETA = 0.999  # Cui et al.'s effective number: their best long-tailed CIFAR-10 runs use 0.9999 with 50,000 images


def get_config():
    c = small_base("class_imbalance", steps=100, classes=())
    c.report.x = "data.imbalance_ratio"
    c.report.series = ("label",)
    c.report.metric = "test_balanced_accuracy"
    return c


def get_sweep():
    weighted = {"train.class_weights_norm": "examples"}
    arms = [{"label": "plain"}, {"label": "class weights", "train.class_weights": "inverse", **weighted},
            {"label": "effective number", "train.class_weights": "effective", "train.class_weights_beta": BETA,
             **weighted},
            {"label": "oversampling", "data.balance": "oversample"}]
    balanced = [{"label": "plain", "data.imbalance_ratio": 1.0}]
    return product(axis("seed", list(SEEDS)), chain(balanced, product(axis("data.imbalance_ratio", list(RATIOS)), arms)))
