"""Data size (BiT's few-shot subsets, Kolesnikov et al. 2019, arXiv 1912.11370; Kornblith et al. 2019):
transfer's gain over scratch as the target data grows.

Source: digits 0-4 (once per workdir). Target: digits 5-9 with 1, 10, 100 and 350 (all) training examples per
class, a seeded stratified subset per seed shared by every arm of that seed (paired); steps grow with the data
(40, 50, 100, 150). Arms: linear probe (source, all 4 units frozen), fine-tune (source, nothing frozen), scratch.

    python -m tl_research.experiments run data_size
"""
from tl_research.config import axis, product, zip_axes
from tl_research.experiments.common import SEEDS, small_base, with_source

PER_CLASS = (1, 10, 100, 350)
STEPS = (40, 50, 100, 150)


def get_config():
    c = with_source(small_base("data_size"))
    c.report.x = "data.per_class"
    c.report.series = ("label",)
    c.report.metric = "test_accuracy"
    return c


def get_sweep():
    sizes = zip_axes(axis("data.per_class", list(PER_CLASS)), axis("train.steps", list(STEPS)))
    arms = [{"label": "linear probe", "frozen_depth": "all"}, {"label": "fine-tune", "frozen_depth": 0},
            {"label": "scratch", "init": "scratch", "frozen_depth": 0}]
    return product(axis("seed", list(SEEDS)), sizes, arms)
