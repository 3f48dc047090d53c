"""Frozen-depth transfer to semantic segmentation, measured in mean IoU (Yosinski-style layer transfer with a
U-Net decoder as the new head).

Source: a small CIFAR-style ResNet (stride-2 stem + 3 residual blocks = 4 depth units) trained from scratch to
classify MNIST-M digits (mnist_m: the same |photo crop - ink| look as the scenes) at 32x32, 4 epochs, once per
workdir (test accuracy about 0.86): its digits are then about as large as the scenes' (24-40 px at 64x64).
Target: mnist_segmentation (1-3 real MNIST digits blended over photo crops, 11 classes: background + one per
digit, 2,000 training scenes) at its native 64x64. Model: the same backbone (its maps 32, 32, 16 and 8 px
a side) under a U-Net decoder (model.decoder = unet, skips from the last unit of each finer resolution, width
32). Every frozen depth from 0 (fine-tune everything) to 4 = all (the decoder alone trains), initialised from
the source and from scratch (frozen random units: how much the source's features are worth at each depth), 2
seeds, 2 epochs of Adam (cosine from 3e-3) at batch 16, background pixels weighted 0.2 in the loss (they are
about 93% of the pixels), on-device crops that move the masks with the images (no flips: a mirrored digit is
not that digit). The table reports test mean IoU (11 classes, background included) at the best
validation-mIoU step.

    python launch.py --config configs/segmentation_frozen_depth.py

Measured (the whole command from a fresh workdir and an empty compilation cache, source included, on this
shared 2-core CPU with other jobs running): 7 min 17 s (437 s; the runs 15-34 s each). test_miou, mean ± std
over the 2 seeds:

| init | frozen_depth=0 | frozen_depth=1 | frozen_depth=2 | frozen_depth=3 | frozen_depth=4 |
|---|---|---|---|---|---|
| scratch | 0.096 ± 0.001 (2) | 0.094 ± 0.000 (2) | 0.091 ± 0.003 (2) | 0.085 ± 0.001 (2) | 0.085 ± 0.000 (2) |
| source | 0.175 ± 0.006 (2) | 0.178 ± 0.005 (2) | 0.180 ± 0.003 (2) | 0.184 ± 0.008 (2) | 0.188 ± 0.032 (2) |

The source's units roughly double the mIoU at every depth; from scratch 2 epochs find the digits' strokes but
hardly their identities (0.085 is the background's IoU alone, over 11 classes). The short schedule is the
budget's: a probe of 8 epochs (frozen depth 4 from the source) reached validation mIoU 0.31, still rising.
"""
from tl_research import models
from tl_research.config import axis, base_config, product


def _backbone(c) -> None:
    c.model.name = "resnet_cifar"
    c.model.stage_sizes = (1, 1, 1)
    c.model.width = 16
    c.model.stem_stride = 2


def source_config():
    """The digit classifier the target runs start from."""
    s = base_config()
    s.name = "segmentation_frozen_depth-source"
    s.data.name = "mnist_m"
    s.data.image_size, s.data.channels = 32, 3
    s.data.batch_size = 64
    _backbone(s)
    s.optimizer.weight_decay = 5e-4
    s.schedule.name, s.schedule.lr = "constant", 0.05
    s.train.epochs = 4
    return s


def get_config():
    c = base_config()
    c.name = "segmentation_frozen_depth"
    c.task = "segmentation"  # sets data.targets = segmentation
    c.data.name = "mnist_segmentation"
    c.data.image_size, c.data.channels = 64, 3  # fixed: a run from the source would read its 32x32 otherwise
    c.data.batch_size = 16
    c.data.eval_batch_size = 100
    _backbone(c)
    c.model.decoder = "unet"
    c.model.skips = ()  # the last unit of each resolution finer than the deepest map's
    c.model.decoder_width = 32
    c.augment = ("crop(4)",)
    c.train.background_weight = 0.2
    c.optimizer.name = "adam"
    c.schedule.name, c.schedule.lr = "cosine", 3e-3
    c.train.epochs = 2
    c.train.log_every = 20
    c.init = "source"
    c.source = source_config()
    c.report.x = "frozen_depth"
    c.report.series = ("init",)
    c.report.metric = "test_miou"
    return c


def get_sweep():
    units = models.abstract(get_config().model, 2, 3).num_units
    return product(axis("seed", [0, 1]), axis("init", ["source", "scratch"]),
                   axis("frozen_depth", list(range(units + 1))))
