"""Class imbalance (Buda et al. 2018, arXiv 1710.05381; Cui et al. 2019, arXiv 1901.05555): what a long tail
costs in balanced accuracy, and how much oversampling and re-weighting win back.

From scratch on all 10 digits of mnist_subset, the training set made long-tailed (class c keeps
350 * ratio^(-c/9) images) at imbalance ratio 1, 10 and 100; 100 steps of batch 32; val and test stay balanced.
Arms: plain, class weights (train.class_weights=inverse, inverse frequency), oversampling
(data.balance=oversample: every class drawn equally often); 3 seeds (the same subset for every arm of a seed).

    python -m tl_research.experiments run class_imbalance
"""
from tl_research.config import axis, chain, product
from tl_research.experiments.common import SEEDS, small_base

RATIOS = (10.0, 100.0)


def get_config():
    c = small_base("class_imbalance", steps=100, classes=())
    c.report.x = "data.imbalance_ratio"
    c.report.series = ("label",)
    c.report.metric = "test_balanced_accuracy"
    return c


def get_sweep():
    arms = [{"label": "plain"}, {"label": "class weights", "train.class_weights": "inverse"},
            {"label": "oversampling", "data.balance": "oversample"}]
    balanced = [{"label": "plain", "data.imbalance_ratio": 1.0}]
    return product(axis("seed", list(SEEDS)), chain(balanced, product(axis("data.imbalance_ratio", list(RATIOS)), arms)))
