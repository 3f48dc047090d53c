"""Transferability scores against measured transfer (LogME, You et al., ICML 2021): do LogME, LEEP, NCE, H-score,
the few-shot probe and the domain similarity rank source models as their fine-tuned and linear-probe accuracy
does?

Source models (tl_research.experiments.transferability_ranking.SOURCES), each trained from scratch on digits 0-4
of one rung of the domain ladder, once per seed (source.seed = seed), 6 of them differing in
  architecture      resnet_cifar (stem + 3 residual blocks, width 16, 28x28, SGD) or vit_micro (4x4 patches,
                    width 64, 4 blocks, 16x16, AdamW)
  source data       mnist_subset, digits_upsampled or mnist_m (digits 0-4, read in grey)
  training length   1 or 5 epochs (ResNet), 2 or 10 (ViT)
Targets: digits 5-9 of mnist_subset, digits_upsampled and mnist_m, 600 training images each (all of
digits_upsampled's 5-9). Per source, target and seed: full fine-tuning (frozen_depth 0) and a linear probe
(frozen_depth all) at the source's LRs. The sweep's report.transferability scores every (source model, target)
pair from one pass over the target's training images (WORKDIR/transferability.csv, .md); the analysis ranks the
6 sources per target by each score against the measured test accuracy (seeds averaged within a source).

    python -m tl_research.experiments run transferability
"""
from tl_research.config import axis, product
from tl_research.experiments import transferability_ranking as tr
from tl_research.experiments.common import small_base, with_source

TRAIN_EXAMPLES = 600
# 3 seeds a source: the units of every ranking statistic are the 6 sources (a seed only steadies a source's mean)
SEEDS = (0, 1, 2)


def get_config():
    c = with_source(small_base("transferability"))
    c.data.train_examples = TRAIN_EXAMPLES  # after the source copy: the sources train on all of digits 0-4
    c.report.transferability = tr.SCORES
    c.report.x = "data.name"
    c.report.series = ("label", "frozen_depth")
    c.report.metric = "test_accuracy"
    return c


def get_sweep():
    points = []
    for seed in SEEDS:
        for source in tr.SOURCES:
            points += product([tr.source_keys(source, seed)], axis("data.name", list(tr.TARGETS)),
                              [tr.arm_keys(source, kind) for kind in tr.KINDS])
    return points
