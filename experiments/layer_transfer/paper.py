"""layer_transfer at the paper's scale (GPUs): Yosinski et al. 2014 (arXiv 1411.1792) on two halves of ImageNet.

Tasks: ImageNet-1k (TFDS imagenet2012, a manual download: docs/data.md) split at random into two halves of 500
classes, A and B (Yosinski et al.'s random split; HALVES_SEED fixes it, data.classes relabels each half 0-499).
Training images: train[:1231167] (the last 50,000 held out as validation, for the best-step selection); test:
ImageNet's validation split, as in the paper.
Network: ResNet-18 from scratch at 224 px (resnet18: 9 depth units, the stem and 8 basic blocks, so n = 1..8;
Yosinski et al. used an 8-layer AlexNet-like network, n = 1..7), SGD with momentum 0.9, lr 0.1, weight decay
1e-4, cosine decay with a 1-epoch warmup, batch 256, random resized crops and flips, bfloat16, EPOCHS epochs for
every network (the paper trains each for the same 450k iterations of batch 256, about 180 epochs of a half).
Per seed, two base networks (the source models, init=source, with the run's seed): baseA on all of A's training
images and baseB on B's. Every target run trains on B for the same EPOCHS from the base network's first n units
(transfer_depth = n), the units above n re-initialised, as in the paper:
  AnB  (n=1..8)  baseA's first n units copied and frozen, the rest re-initialised and trained on B
  BnB  (n=1..8)  the same from baseB
  AnB+ / BnB+    (n=1..8) the first n units copied and fine-tuned with the rest
  baseB          the B network itself (from scratch on B, the same recipe)
3 seeds, each with its own baseA and baseB.

    python -m tl_research.experiments run layer_transfer --scale paper [--dry_run]
"""
import numpy as np

from tl_research.config import RUN_SEED, base_config, chain, copy_config, product

HALVES_SEED = 0
_ORDER = np.random.RandomState(HALVES_SEED).permutation(1000)
HALF_A = tuple(int(c) for c in sorted(_ORDER[:500]))
HALF_B = tuple(int(c) for c in sorted(_ORDER[500:]))
UNITS = 9  # resnet18: the stem and 8 basic blocks
EPOCHS = 90.0
SEEDS = (0, 1, 2)
# the wording of the analysis's tables and verdicts where the digits' names the data (common.text)
TEXTS = {"target": "ImageNet half B, 500 classes"}


def get_config(arg=None):
    c = base_config()
    c.name = "layer_transfer_paper"
    c.data.name = "imagenet2012"
    c.data.train_split, c.data.val_split, c.data.test_split = "train[:1231167]", "train[1231167:]", "validation"
    c.data.classes = HALF_B
    c.data.image_size = 224
    c.data.batch_size = 256
    c.model.name = "resnet18"
    c.precision = "bfloat16"
    c.augment = ("rrc(0.08, 1)", "flip")
    c.optimizer.name = "sgd"
    c.optimizer.momentum = 0.9
    c.optimizer.weight_decay = 1e-4
    c.schedule.name = "cosine"
    c.schedule.lr = 0.1
    c.schedule.warmup_epochs = 1.0
    c.train.epochs = EPOCHS
    source = copy_config(c)
    source.name = "layer_transfer_paper-source"
    source.data.classes = HALF_A
    source.seed = RUN_SEED  # one pair of base networks per seed
    c.init = "source"
    c.source = source
    c.report.x = "transfer_depth"
    c.report.series = ("label",)
    c.report.metric = "test_accuracy"
    return c


def get_sweep(arg=None):
    from_a, from_b = {"source.data.classes": HALF_A}, {"source.data.classes": HALF_B}
    arms = chain(*[[{"label": "AnB", "frozen_depth": n, "transfer_depth": n, **from_a},
                    {"label": "BnB", "frozen_depth": n, "transfer_depth": n, **from_b},
                    {"label": "AnB+", "frozen_depth": 0, "transfer_depth": n, **from_a},
                    {"label": "BnB+", "frozen_depth": 0, "transfer_depth": n, **from_b}] for n in range(1, UNITS)],
                 [{"label": "baseB", "init": "scratch", "frozen_depth": 0}])
    return product([{"seed": s} for s in SEEDS], arms)
