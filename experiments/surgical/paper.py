"""surgical at the paper's scale (a GPU's): Lee et al.'s CIFAR setting (ICLR 2023, arXiv 2210.11466) with the
datasets TFDS has.

Source: ResNet-26 (resnet_cifar, stage_sizes (4, 4, 4), width 16: 6 x 4 + 2 = 26 layers; 13 depth units, the
stem and 12 residual blocks) trained from scratch on CIFAR-10 (init=source: 100 epochs, SGD 0.1, cosine, flips and
4-pixel crops), once per workdir. Lee et al. start from a trained CIFAR-10 ResNet-26 as well.
Targets, 1,000 training images each (Lee et al.'s CIFAR-C count: the first 1,000 of a split, the same for every
seed, as VTAB-1k's train800), read at 32x32:
  input-level    CIFAR-10-C (`cifar10_corrupted/<corruption>_5`, the 15 corruptions of Hendrycks & Dietterich at
                 severity 5): TFDS has only its test split, so train = test[:1000], val = test[1000:2000],
                 test = test[2000:]
  feature-level  CIFAR-100's 20 superclasses (label_key coarse_label): the same kind of tiny images, other
                 classes. Lee et al.'s Living-17 / Entity-30 (BREEDS, built from ImageNet) are not in TFDS
  label-level    CIFAR-10's images with their labels permuted (data.classes in reverse), as CIFAR-Flip
Arms: full; first = the stem and stage 1 (units 0-4, Lee et al.'s "Block 1"), second = stage 2 (units 5-8),
third = stage 3 (units 9-12); head = the classifier alone ("last layer"). Adam at lr 1e-3, 1e-4 and 1e-5 (the
analysis keeps per target and arm the LR of the best mean validation accuracy), 15 epochs, 3 seeds.

    python launch.py --config experiments/surgical/paper.py --workdir runs/surgical_paper

tests/test_experiments.py validates every point of this sweep's config (tl_research.config.validate) on mock
TFDS data with random weights.
"""
from tl_research.config import axis, base_config, copy_config, product

CORRUPTIONS = ("brightness", "contrast", "defocus_blur", "elastic", "fog", "frost", "gaussian_noise",
               "frosted_glass_blur", "impulse_noise", "jpeg_compression", "motion_blur", "pixelate", "shot_noise",
               "snow", "zoom_blur")
CIFAR_C = {"data.train_split": "test[:1000]", "data.val_split": "test[1000:2000]", "data.test_split": "test[2000:]"}
FROM_TRAIN = {"data.train_split": "train[:1000]", "data.val_split": "train[45000:]", "data.test_split": "test"}
TARGETS = {  # name -> the target's data keys
    **{f"input: {c}": {"data.name": f"cifar10_corrupted/{c}_5", **CIFAR_C} for c in CORRUPTIONS},
    "feature: cifar100 superclasses": {"data.name": "cifar100", "data.label_key": "coarse_label", **FROM_TRAIN},
    "label: cifar10 permuted": {"data.name": "cifar10", "data.classes": tuple(range(9, -1, -1)), **FROM_TRAIN},
}
ARMS = {"full": {"frozen_depth": 0}, "first": {"strategy.trainable_units": (0, 1, 2, 3, 4)},
        "second": {"strategy.trainable_units": (5, 6, 7, 8)}, "third": {"strategy.trainable_units": (9, 10, 11, 12)},
        "head": {"frozen_depth": "all"}}
LRS = (1e-3, 1e-4, 1e-5)
SEEDS = (0, 1, 2)
# what the analysis reads (tl_research.experiments.surgical.setting): each target's shift level (the prefix of its
# name) and keys, and the part Lee et al. find best per level (the middle of the three stages: feature-level)
SHIFTS = {name: (name.split(":")[0], keys) for name, keys in TARGETS.items()}
CLAIMED = {"input": "first", "feature": "second", "label": "head"}


def get_config(arg=None):
    c = base_config()
    c.name = "surgical_paper"
    c.data.name = "cifar10"
    c.data.train_split, c.data.val_split = "train[:45000]", "train[45000:]"
    c.data.batch_size = 64
    c.model.name = "resnet_cifar"
    c.model.stage_sizes = (4, 4, 4)
    c.model.width = 16
    source = copy_config(c)
    source.name = "surgical_paper-source"
    source.optimizer.name = "sgd"
    source.optimizer.momentum = 0.9
    source.optimizer.weight_decay = 5e-4
    source.schedule.name = "cosine"
    source.schedule.lr = 0.1
    source.train.epochs = 100.0
    source.augment = ("flip", "crop(4)")
    c.init = "source"
    c.source = source
    c.optimizer.name = "adam"
    c.optimizer.weight_decay = 1e-4
    c.schedule.name = "constant"
    c.train.epochs = 15.0
    c.report.x = "label"
    c.report.series = ("data.name", "schedule.lr")
    c.report.metric = "test_accuracy"
    return c


def get_sweep(arg=None):
    arms = [{"label": arm, **where} for arm, where in ARMS.items()]
    return product(axis("seed", list(SEEDS)), list(TARGETS.values()), axis("schedule.lr", list(LRS)), arms)
