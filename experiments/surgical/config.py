"""Surgical fine-tuning (Lee et al., ICLR 2023, arXiv 2210.11466): which block to tune depends on the shift.

Source: the shared small ResNet (stem + 3 residual blocks) trained on digits 0-4 of mnist_subset (once per
workdir). Targets (tl_research.experiments.surgical.SHIFTS), 20 training images per class, read in grey:
  input-level    digits 0-4 of mnist_inverted and of mnist_m (the same digits, another look)
  feature-level  digits 5-9 of mnist_subset (the same look, shapes the source never told apart)
  label-level    digits 0-4 of mnist_subset with their labels permuted (data.classes (1, 2, 3, 4, 0))
Arms (what trains besides the new head, which always trains):
  full    every unit                     (frozen_depth 0)
  first   the stem and the first block   (strategy.trainable_units (0, 1): Lee et al.'s "Block 1")
  middle  the second block               ((2,))
  last    the third block                ((3,))
  head    nothing else                   (frozen_depth all: their "last layer")
60 steps of SGD (cosine) at lr 0.01, 0.03 and 0.1 (the analysis keeps, per target and arm, the LR of the best
mean validation accuracy), 5 seeds.

    python -m tl_research.experiments run surgical
"""
from tl_research.config import axis, product
from tl_research.experiments.common import SEEDS, SOURCE_CLASSES, small_base, with_source
from tl_research.experiments.surgical import ARMS, SHIFTS

LRS = (0.01, 0.03, 0.1)


def get_config():
    c = with_source(small_base("surgical", classes=SOURCE_CLASSES))
    c.data.per_class = 20  # after the source copy: the source trains on all of digits 0-4
    c.report.x = "label"
    c.report.series = ("data.name", "data.classes", "schedule.lr")
    c.report.metric = "test_accuracy"
    return c


def get_sweep():
    shifts = [{"data.name": name, "data.classes": classes} for _, name, classes in SHIFTS.values()]
    arms = [{"label": arm, **where} for arm, where in ARMS.items()]
    return product(axis("seed", list(SEEDS)), shifts, axis("schedule.lr", list(LRS)), arms)
