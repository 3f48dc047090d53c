"""lp_ft at the paper's scale (GPUs): Kumar et al. 2022 (arXiv 2202.10054), ImageNet -> its distribution shifts.

Weights: ViT-B/16 pretrained on ImageNet-21k (big_vision / AugReg), converted once (docs/pretrained.md):
    python -m tl_research.convert B_16-i21k-300ep-lr_0.001-aug_medium1-wd_0.1-do_0.0-sd_0.0.npz --arch vit_b16 \
        --out weights/vit_b16_i21k
INIT names that directory (the same as peft_vs_full's paper.py; a placeholder until converted). Kumar et al.
start from CLIP and MoCo-v2 models, for which this codebase has no converter.
In distribution: ImageNet-1k (TFDS imagenet2012, a manual download: docs/data.md), train[:1271167] for training,
train[1271167:] (10,000 images) as validation, ImageNet's validation split as the ID test. Out of distribution
(data.extra_test_sets, read with ImageNet's 1,000 classes): ImageNet-V2 (imagenet_v2, matched-frequency) and
ImageNet-Sketch (imagenet_sketch). Kumar et al. also test on ImageNet-R and ImageNet-A, whose 200 classes are a
subset this codebase cannot map yet.
Recipe: 224 px, batch 512, SGD with momentum 0.9, no weight decay, gradient clipping at norm 1, cosine decay
after a 1-epoch warmup, flips and random resized crops, bfloat16, 3 seeds:
  LP    : every unit frozen, a new head, 10 epochs at lr 0.03
  FT    : every unit trained, 10 epochs at lr 0.003 (Kumar et al.'s ImageNet fine-tuning length)
  LP-FT : the LP arm's 10 head epochs (strategy two_phase), then 10 epochs of every unit at lr 0.0003 (Kumar et
          al.: a converged head, then a smaller LR)

    python -m tl_research.experiments run lp_ft --scale paper [--dry_run]
"""
from tl_research.config import axis, base_config, product

INIT = "weights/vit_b16_i21k"  # placeholder: the converted ImageNet-21k ViT-B/16
WEIGHTS = {INIT: "python -m tl_research.convert B_16-i21k-300ep-lr_0.001-aug_medium1-wd_0.1-do_0.0-sd_0.0.npz "
                 f"--arch vit_b16 --out {INIT} (the file: gs://vit_models/augreg/, docs/pretrained.md)"}
OOD = ("imagenet_v2", "imagenet_sketch")
EPOCHS = 10.0
SEEDS = (0, 1, 2)
# the wording of the analysis's tables and verdicts where the digits' names the data (common.text)
TEXTS = {"target": "ImageNet", "id": "imagenet2012"}


def get_config(arg=None):
    c = base_config()
    c.name = "lp_ft_paper"
    c.init = INIT
    c.model.name = "vit_b16"
    c.data.name = "imagenet2012"
    c.data.train_split, c.data.val_split, c.data.test_split = "train[:1271167]", "train[1271167:]", "validation"
    c.data.image_size = 224
    c.data.batch_size = 512
    c.data.extra_test_sets = OOD
    c.precision = "bfloat16"
    c.augment = ("rrc(0.08, 1)", "flip")
    c.optimizer.name = "sgd"
    c.optimizer.momentum = 0.9
    c.optimizer.grad_clip = 1.0
    c.schedule.name = "cosine"
    c.schedule.lr = 0.003
    c.schedule.warmup_epochs = 1.0
    c.train.epochs = EPOCHS
    c.strategy.boundary_epochs = EPOCHS
    c.strategy.head_schedule.name = "cosine"
    c.strategy.head_schedule.lr = 0.03
    c.strategy.head_schedule.warmup_epochs = 1.0
    c.report.x = "label"
    c.report.series = ()
    c.report.metric = "test_accuracy"
    return c


def get_sweep(arg=None):
    arms = [{"label": "LP", "frozen_depth": "all", "schedule.lr": 0.03},
            {"label": "FT", "frozen_depth": 0},
            {"label": "LP-FT", "frozen_depth": 0, "strategy.name": "two_phase", "schedule.lr": 0.0003,
             "train.epochs": 2 * EPOCHS}]
    return product(axis("seed", list(SEEDS)), arms)
