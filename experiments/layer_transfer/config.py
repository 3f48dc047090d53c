"""Layer transfer (Yosinski et al. 2014, arXiv 1411.1792) at MNIST scale.

Task A: digits 0-4; task B (the target): digits 5-9. Two source models, trained from scratch once per workdir:
baseA (on A) and baseB (on B, all of B's training images). Target runs, 60 steps on B, 3 seeds:
  AnB  (n = 1..4): baseA's units, the first n frozen, the rest trained on from baseA's weights
  BnB  (n = 1..4): the same from baseB (the target task's own network)
  AnB+ / BnB+   : all of baseA's / baseB's units fine-tuned (n does not change them here: see README)
  baseB         : from scratch on B

    python -m tl_research.experiments run layer_transfer     # or: python launch.py --config experiments/layer_transfer/config.py
"""
from tl_research.config import axis, chain, product
from tl_research.experiments.common import SEEDS, TARGET_CLASSES, UNITS, small_base, with_source


def get_config():
    c = with_source(small_base("layer_transfer"))
    c.report.x = "frozen_depth"
    c.report.series = ("label",)
    c.report.metric = "test_accuracy"
    return c


def get_sweep():
    from_b = {"source.data.classes": TARGET_CLASSES}
    depths = axis("frozen_depth", list(range(1, UNITS + 1)))
    arms = chain(product([{"label": "AnB"}], depths),
                 product([{"label": "BnB", **from_b}], depths),
                 [{"label": "AnB+", "frozen_depth": 0}, {"label": "BnB+", "frozen_depth": 0, **from_b},
                  {"label": "baseB", "init": "scratch", "frozen_depth": 0}])
    return product(axis("seed", list(SEEDS)), arms)
