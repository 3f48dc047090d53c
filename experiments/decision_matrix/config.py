"""The practitioners' four-cell rule of thumb: target data size x similarity to the source x
{feature extraction, fine-tuning, scratch}.

Source: digits 0-4 (once per workdir). Targets: digits 5-9 of mnist_subset (similar: the source's own domain) or
of mnist_m (different: digits blended over photographs), read in grey; small = 10 training images per class
(50 steps), large = all 350 per class (150 steps). Arms: feature extraction (all units frozen, a new head),
fine-tuning (every unit), scratch; 5 seeds, paired (the same subset for every arm of a seed).

    python -m tl_research.experiments run decision_matrix
"""
from tl_research.config import axis, product, zip_axes
from tl_research.experiments.common import SEEDS, small_base, with_source

SIZES = {"small": (10, 50), "large": (350, 150)}  # examples per class, steps
DOMAINS = {"similar": "mnist_subset", "different": "mnist_m"}


def get_config():
    c = with_source(small_base("decision_matrix"))
    c.report.x = "data.name"
    c.report.series = ("label", "data.per_class")
    c.report.metric = "test_accuracy"
    return c


def get_sweep():
    sizes = zip_axes(axis("data.per_class", [v[0] for v in SIZES.values()]),
                     axis("train.steps", [v[1] for v in SIZES.values()]))
    arms = [{"label": "feature extraction", "frozen_depth": "all"}, {"label": "fine-tuning", "frozen_depth": 0},
            {"label": "scratch", "init": "scratch", "frozen_depth": 0}]
    return product(axis("seed", list(SEEDS)), axis("data.name", list(DOMAINS.values())), sizes, arms)
