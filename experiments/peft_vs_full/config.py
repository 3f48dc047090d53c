"""Parameter-efficient fine-tuning against full fine-tuning: accuracy against trainable parameters (the PETL plot
of VPT, Jia et al. 2022, arXiv 2203.12119), on two sources trained from scratch on digits 0-4 of mnist_subset
(once per workdir each):
  resnet_cifar  the shared small ResNet (stem + 3 residual blocks, width 16), 28x28 grey, SGD, 5 epochs
  vit_micro     the 6-unit ViT (4x4 patches, width 64, 4 blocks) at 16x16 grey, AdamW (lr 3e-3), 10 epochs
Targets: digits 5-9 on the 4 rungs of the domain ladder (mnist_subset, digits_upsampled, mnist_inverted,
mnist_m), 600 training images each; 5 seeds. Arms: every method of tl_research.experiments.peft_vs_full.METHODS
that is a registered strategy (those that are not are named in one printed line and left out; VPT only on the
ViT), each `strategy.name` at its defaults. Full fine-tuning trains at one LR per source (ResNet SGD 0.05, ViT
AdamW 1e-3), every other method at a higher one (ResNet 0.1, ViT 1e-2): partial or added parameters take a
higher LR than the whole network, as in configs/strategies.py and the PEFT papers' recipes. 60 steps (ResNet),
80 (ViT); no hyper-parameter search. LRs, sizes and steps per source: tl_research.experiments.peft_vs_full.SOURCES.

    python -m tl_research.experiments run peft_vs_full
"""
from tl_research.config import axis, product
from tl_research.data.domains import LADDER
from tl_research.experiments import peft_vs_full
from tl_research.experiments.common import SEEDS, small_base, with_source

TRAIN_EXAMPLES = 600


def get_config():
    c = with_source(small_base("peft_vs_full"))
    c.data.train_examples = TRAIN_EXAMPLES  # after the source copy: the sources train on all of digits 0-4
    c.report.x = "trainable_params"
    c.report.series = ("model.name", "strategy.name")
    c.report.metric = "test_accuracy"
    return c


def get_sweep():
    base = get_config()
    points = []
    for source in peft_vs_full.SOURCES.values():
        arms = [{"label": m, **peft_vs_full.arm(source, m)} for m in peft_vs_full.methods_for(base, source)]
        points += product(axis("seed", list(SEEDS)), axis("data.name", list(LADDER)), [source.overrides], arms)
    return points
