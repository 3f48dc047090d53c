"""Model soups and WiSE-FT against the best single run (Wortsman et al., ICML 2022, arXiv 2203.05482; Wortsman et
al., CVPR 2022, arXiv 2109.01903), in and out of distribution.

One group per source seed (tl_research.experiments.soups.GROUPS), each its own source model (the shared small
ResNet trained on digits 0-4 of mnist_subset with `source.seed` = the group) and its own 600 target training
images (digits 5-9, `data.subset_seed` = the group). In each group, the ingredients of
tl_research.experiments.soups.INGREDIENTS: full fine-tuning from that source with the hyper-parameters the model
soups paper varies (LR, label smoothing, augmentation, mixup, weight decay, length, seed), SGD with a cosine
schedule; and one linear probe (frozen_depth all, 60 steps at 0.05), WiSE-FT's theta_0. Out-of-distribution
test sets: digits 5-9 of the domain ladder's other rungs (mnist_inverted, mnist_m, digits_upsampled), read in grey.
The soups, WiSE-FT curves and straight paths are built per group by the analysis (`python -m tl_research.soup`'s
code), cached in the workdir's soups/ folder.

    python -m tl_research.experiments run soups
"""
from tl_research.experiments.common import small_base, with_source
from tl_research.experiments.soups import GROUPS, INGREDIENTS, OOD, PROBE, points


def get_config():
    c = with_source(small_base("soups"))
    c.data.train_examples = 600  # after the source copy: the sources train on all of digits 0-4
    c.data.extra_test_sets = OOD
    c.report.x = "label"
    c.report.series = ("source.seed",)
    c.report.metric = "test_accuracy"
    return c


def get_sweep():
    return points(GROUPS, INGREDIENTS, PROBE)
