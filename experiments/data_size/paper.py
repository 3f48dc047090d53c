"""data_size at the paper's scale (a GPU's): BiT's few-shot and full-data transfer (Kolesnikov et al. 2019,
arXiv 1912.11370) of BiT-M R50x1 to CIFAR-10, with Kornblith et al.'s comparison against training from scratch.

Weights: BiT-M R50x1 (ImageNet-21k), converted once (docs/pretrained.md):
    python -m tl_research.convert BiT-M-R50x1.npz --arch resnetv2_50x1_bit --out weights/bit_m_r50x1
INIT below names that directory (a placeholder until converted); the dry run says whether it is there.
Data: TFDS cifar10, train[:45000] (train[45000:] is validation), the 10,000 test images; 1, 5, 10, 25 (BiT's
few-shot counts), 100, 1,000 and 4,000 examples per class (the last nearly all of train[:45000], whose classes
hold about 4,500 each), a seeded stratified subset per seed shared by every arm of that seed (paired). Images at 128 px (BiT resizes images under 96x96 to 160 and
crops 128; here they are resized to 128), flips.
BiT-HyperRule (bit_hyperrule.py of google-research/big_transfer): batch 512, SGD with momentum 0.9, lr 0.003
with a linear warmup, then divided by 10 three times; under 20,000 examples 500 steps (warmup 100, decays at
200, 300, 400), else 10,000 steps (warmup 500, decays at 3,000, 6,000, 9,000) and mixup 0.1.
Arms: fine-tune (every unit, lr 0.003), linear probe (all units frozen, a new head; lr 0.03) and scratch (the same
network from random weights, lr 0.1); the probe's and scratch's LRs are not BiT's (BiT fine-tunes only). 3 seeds.

    python -m tl_research.experiments run data_size --scale paper [--dry_run]
"""
from tl_research.config import axis, base_config, product

INIT = "weights/bit_m_r50x1"  # placeholder: the converted BiT-M R50x1
WEIGHTS = {INIT: "python -m tl_research.convert BiT-M-R50x1.npz --arch resnetv2_50x1_bit --out " + INIT
                 + " (BiT-M-R50x1.npz: https://storage.googleapis.com/bit_models/)"}
PER_CLASS = (1, 5, 10, 25, 100, 1000, 4000)
SMALL = {"train.steps": 500, "schedule.warmup_steps": 100, "schedule.milestones": (200, 300, 400)}
LARGE = {"train.steps": 10000, "schedule.warmup_steps": 500, "schedule.milestones": (3000, 6000, 9000),
         "augment": ("flip", "mixup(0.1)")}
SEEDS = (0, 1, 2)
# the wording of the analysis's tables and verdicts where the digits' names the data (common.text)
TEXTS = {"target": "CIFAR-10"}


def hyperrule(per_class: int) -> dict:
    """BiT-HyperRule's steps, warmup, decays and mixup for a CIFAR-10 subset of per_class x 10 examples."""
    return SMALL if per_class * 10 < 20000 else LARGE


def get_config(arg=None):
    c = base_config()
    c.name = "data_size_paper"
    c.init = INIT
    c.model.name = "resnetv2_50x1_bit"
    c.data.name = "cifar10"
    c.data.train_split, c.data.val_split, c.data.test_split = "train[:45000]", "train[45000:]", "test"
    c.data.image_size = 128
    c.data.batch_size = 512
    c.precision = "bfloat16"
    c.augment = ("flip",)
    c.optimizer.name = "sgd"
    c.optimizer.momentum = 0.9
    c.schedule.name = "step"
    c.schedule.lr = 0.003
    c.schedule.factor = 0.1
    c.report.x = "data.per_class"
    c.report.series = ("label",)
    c.report.metric = "test_accuracy"
    return c


def get_sweep(arg=None):
    sizes = [{"data.per_class": k, **hyperrule(k)} for k in PER_CLASS]
    arms = [{"label": "linear probe", "frozen_depth": "all", "schedule.lr": 0.03},
            {"label": "fine-tune", "frozen_depth": 0},
            {"label": "scratch", "init": "scratch", "frozen_depth": 0, "schedule.lr": 0.1}]
    return product(axis("seed", list(SEEDS)), sizes, arms)

