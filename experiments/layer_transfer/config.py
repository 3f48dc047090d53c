"""Layer transfer (Yosinski et al. 2014, arXiv 1411.1792) at MNIST scale, with the paper's arms.

Task A: digits 0-4; task B (the target): digits 5-9, all 1,750 training images of each. Per seed, two base
networks trained from scratch for 5 epochs: baseA (on A, the source of AnB) and baseB (on B: the source of BnB,
and itself the baseB arm, since a run of baseB's config is baseB). Every target run trains on B for the same 5
epochs, from the base network's first n units (transfer_depth = n) with the units above n re-initialised, as in
the paper:
  AnB  (n = 1..4): baseA's first n units copied and frozen, the rest re-initialised and trained on B
  BnB  (n = 1..4): the same from baseB (the target task's own network)
  AnB+ / BnB+ (n = 1..4): the first n units copied and fine-tuned with the rest
  baseB         : the B network itself (from scratch on B, 5 epochs)
n = 4 copies every unit (only the head is new); AnB(4) is then a linear probe on baseA's features.

    python -m tl_research.experiments run layer_transfer     # or: python launch.py --config experiments/layer_transfer/config.py
"""
from tl_research.config import axis, chain, product
from tl_research.experiments.common import SEEDS, SOURCE_CLASSES, TARGET_CLASSES, UNITS, small_base, with_source

EPOCHS = 5.0  # base networks and target runs alike (Yosinski et al. train every network to the same schedule)


def get_config():
    c = with_source(small_base("layer_transfer"))
    c.train.steps, c.train.epochs = 0, EPOCHS
    c.train.eval_every = 0  # once per epoch, as the base networks
    c.report.x = "transfer_depth"  # n: the units copied (AnB, BnB: and frozen)
    c.report.series = ("label",)
    c.report.metric = "test_accuracy"
    return c


def get_sweep():
    from_a = {"source.data.classes": SOURCE_CLASSES}
    from_b = {"source.data.classes": TARGET_CLASSES}
    copied = lambda n: {"transfer_depth": n}  # noqa: E731 - units n and above start fresh
    arms = chain(*[[{"label": "AnB", "frozen_depth": n, **copied(n), **from_a},
                    {"label": "BnB", "frozen_depth": n, **copied(n), **from_b},
                    {"label": "AnB+", "frozen_depth": 0, **copied(n), **from_a},
                    {"label": "BnB+", "frozen_depth": 0, **copied(n), **from_b}] for n in range(1, UNITS + 1)],
                 [{"label": "baseB", "init": "scratch", "frozen_depth": 0}])
    # each seed trains its own base networks: an interval over seeds includes their variance
    return product([{"seed": s, "source.seed": s} for s in SEEDS], arms)
