"""Fine-tuning regularisers against plain fine-tuning at three label fractions (TLlib's benchmark,
thuml/Transfer-Learning-Library; tl_research.experiments.regularizers).

Source: the shared small ResNet (stem + 3 residual blocks, width 16) trained from scratch on digits 0-4 of
mnist_subset, one per seed (source.seed = seed: the intervals over seeds include the source's variance).
Target: digits 5-9 of mnist_subset (the source's domain, classes it never saw); its training set is 150 images (30
per class, as CUB-200-2011), of which 15%, 30% and 100% keep their label (22, 45 and 150 images: a stratified draw
by the seed, nested). Arms (strategy.regularizer at its default strength):
  plain      weight_decay (5e-4, TLlib's ERM)
  l2_sp      alpha 0.01, beta 0.01, no weight decay
  delta      supervised channel attention, alpha 0.48 (a mean over examples), beta 0.01, no weight decay
  bss        eta 0.001, k 1
  stochnorm  p 0.5
  co_tuning  lambda 2.3, the paper's calibrated relationship (the 250 validation images)
100 steps of SGD (batch 16, cosine from 0.05), the same for every arm; 5 seeds: 90 runs and 5 source models.

    python -m tl_research.experiments run regularizers
"""
from tl_research.config import axis, product
from tl_research.experiments import regularizers as R
from tl_research.experiments.common import small_base, with_source

SEEDS = (0, 1, 2, 3, 4)
STEPS = 100


def get_config():
    c = with_source(small_base("regularizers", steps=STEPS))
    c.data.name = R.TARGET  # after the source copy (the sources train on digits 0-4, batch 32, as elsewhere)
    c.data.batch_size = R.BATCH
    c.report.x = "data.train_examples"
    c.report.series = ("label",)
    c.report.metric = "test_accuracy"
    return c


def get_sweep():
    seeds = [{"seed": s, "source.seed": s} for s in SEEDS]
    arms = [{"label": m, "strategy.regularizer": r} for m, r in R.METHODS.items()]
    return product(seeds, axis("data.train_examples", [R.train_examples(f) for f in R.FRACTIONS]), arms)
