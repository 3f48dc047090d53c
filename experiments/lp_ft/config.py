"""Fine-tuning vs linear probing vs LP-FT (Kumar et al. 2022, arXiv 2202.10054), in and out of distribution.

Source: digits 0-4 (once per workdir). Target (in-distribution): digits 5-9 of mnist_subset, 600 training
images. Out-of-distribution tests: digits 5-9 of the domain ladder's other rungs (data.extra_test_sets:
mnist_inverted, mnist_m, digits_upsampled), read in grey. Arms, 5 seeds:
  LP    : all units frozen, a new head, 60 steps at lr 0.05 (cosine)
  FT    : every unit trained, 60 steps at lr 0.05 (cosine)
  LP-FT : the LP arm's 60 head steps (strategy two_phase, head at 0.05 cosine), then 60 steps of every unit at
          lr 0.005 (cosine): Kumar et al.'s recipe of a converged head, then a small LR

    python -m tl_research.experiments run lp_ft
"""
from tl_research.config import axis, product
from tl_research.experiments.common import SEEDS, small_base, with_source

OOD = ("mnist_inverted", "mnist_m", "digits_upsampled")


def get_config():
    c = with_source(small_base("lp_ft"))
    c.data.train_examples = 600
    c.data.extra_test_sets = OOD
    c.strategy.boundary_steps = 60
    c.strategy.head_schedule.name = "cosine"
    c.strategy.head_schedule.lr = 0.05
    c.strategy.head_schedule.warmup_steps = 5
    c.report.x = "label"
    c.report.series = ()
    c.report.metric = "test_accuracy"
    return c


def get_sweep():
    arms = [{"label": "LP", "frozen_depth": "all"}, {"label": "FT", "frozen_depth": 0},
            {"label": "LP-FT", "frozen_depth": 0, "strategy.name": "two_phase", "schedule.lr": 0.005,
             "train.steps": 120}]
    return product(axis("seed", list(SEEDS)), arms)
