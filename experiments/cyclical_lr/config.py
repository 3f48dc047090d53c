"""Cyclical learning rates (Smith 2017, arXiv 1506.01186) against a fixed LR tuned on validation.

From scratch on digits 5-9 (no transfer: Smith's comparison is about training), 1,100 steps of batch 32 (20
epochs of the 1,750 training images), test accuracy evaluated every 22 steps (train.eval_test: a curve, never
used for selection), 5 seeds:
  fixed LR 0.01, 0.03, 0.1 (the one with the best mean validation accuracy is "the fixed LR")
  cyclical triangular, triangular2, exp_range: base_lr 0.01, max_lr 0.1, half cycle 110 steps (2 epochs, the
  low end of Smith's "2-10 times the number of iterations in an epoch"), so 5 whole cycles; exp_range's gamma
  0.996 per step decays its amplitude to 1.2% by the end, as Smith's 0.99994 does over his 70,000 iterations

    python -m tl_research.experiments run cyclical_lr
"""
from tl_research.config import axis, chain, product
from tl_research.experiments.common import SEEDS, small_base

STEPS = 1100
FIXED_LRS = (0.01, 0.03, 0.1)
MODES = ("triangular", "triangular2", "exp_range")


def get_config():
    c = small_base("cyclical_lr", steps=STEPS)
    c.schedule.name = "constant"
    c.schedule.warmup_steps = 0
    c.schedule.base_lr = 0.01
    c.schedule.step_size = 110
    c.schedule.gamma = 0.996
    c.train.eval_every = 22
    c.train.eval_test = True
    c.train.restore_best = False  # the final weights: "final accuracy" is the claim
    c.report.x = "label"
    c.report.series = ()
    c.report.metric = "final_test_accuracy"
    return c


def get_sweep():
    fixed = [{"label": f"fixed {lr}", "schedule.name": "constant", "schedule.lr": lr} for lr in FIXED_LRS]
    cyclic = [{"label": mode, "schedule.name": "cyclical", "schedule.mode": mode, "schedule.lr": 0.1}
              for mode in MODES]
    return product(axis("seed", list(SEEDS)), chain(fixed, cyclic))
