"""Frozen-depth transfer to semantic segmentation, measured in mean IoU (Yosinski-style layer transfer with a
U-Net decoder as the new head).

Source: a small CIFAR-style ResNet (stem + 3 residual blocks = 4 depth units) trained from scratch to classify
the built-in MNIST digits 0-9 (mnist_subset) at 24x24 RGB, once per workdir: its digits are then about as large
as the scenes' (12-20 px at the target's 32x32).
Target: mnist_segmentation (1-3 real MNIST digits blended over photo crops, 11 classes: background + one per
digit, 2,000 training scenes), read at 32x32. Model: the same backbone under a U-Net decoder (model.decoder =
unet, skips from the last unit of each finer resolution, width 32). Every frozen depth from 0 (fine-tune
everything) to 4 = all (the decoder alone trains), initialised from the source and from scratch (frozen random
units: how much the source's features are worth at each depth), 2 seeds, 4 epochs, on-device flips and crops
that move the masks with the images. The table reports test mean IoU at the best validation-mIoU step.

    python launch.py --config configs/segmentation_frozen_depth.py

Not measured yet as a whole sweep. Probes (one run, frozen depth 0 from the source, seed 0, a machine shared
with three other jobs): source training plus the run took 1 min 52 s (the run 59.5 s: 20 runs would take about
20 min, over the 15-minute budget), and after its 4 epochs it still predicts background everywhere (test mIoU
0.085 = the background IoU 0.933 / 11 classes; pixel cross-entropy fell from 2.40 to 0.24). Adam at 3e-3, and
64x64 input at width 8, gave the same. The sweep needs a longer schedule (or a class-balanced loss) before its
table means anything; tune it before quoting one.
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
    c.data.image_size, c.data.channels = 64, 3  # fixed: a run from the source would read its 24x24 otherwise
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
