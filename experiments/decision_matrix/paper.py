"""decision_matrix at the paper's scale (a GPU's): the practitioners' four cells (target data size x similarity
to the source) with real datasets and an ImageNet source.

Weights: ResNet-50 trained on ImageNet-1k (torchvision's resnet50-0676ba61.pth), converted once
(docs/pretrained.md):
    python -m tl_research.convert resnet50-0676ba61.pth --arch resnet50 --out weights/resnet50_tv
INIT names that directory (a placeholder until converted).
Targets, 10 classes each, read at 224 px (the weights' input size):
  similar    CIFAR-10 (TFDS cifar10: objects of ImageNet's kinds), train[:45000], validation train[45000:], the
             10,000 test images
  different  EuroSAT RGB (TFDS eurosat/rgb: satellite land use, far from ImageNet's photographs), which has
             one split of 27,000: train[:21600], validation train[21600:24300], test train[24300:]
Sizes: small = 10 training images per class (500 steps), large = 2,000 per class (5,000 steps, 32 epochs), a
seeded stratified subset per seed shared by every arm of that seed (paired). Arms: feature extraction (all units
frozen, a new head; lr 0.1), fine-tuning (every unit; lr 0.01) and scratch (random weights; lr 0.1); batch 128,
SGD with momentum 0.9, weight decay 1e-4, cosine decay after 100 warmup steps, flips, bfloat16; 3 seeds.

    python -m tl_research.experiments run decision_matrix --scale paper [--dry_run]
"""
from tl_research.config import axis, base_config, product, zip_axes

INIT = "weights/resnet50_tv"  # placeholder: torchvision's ImageNet ResNet-50, converted
WEIGHTS = {INIT: f"python -m tl_research.convert resnet50-0676ba61.pth --arch resnet50 --out {INIT} (the file: "
                 "https://download.pytorch.org/models/resnet50-0676ba61.pth)"}
SIZES = {"small": (10, 500), "large": (2000, 5000)}  # examples per class, steps
DOMAINS = {
    "similar": {"data.name": "cifar10", "data.train_split": "train[:45000]", "data.val_split": "train[45000:]",
                "data.test_split": "test"},
    "different": {"data.name": "eurosat/rgb", "data.train_split": "train[:21600]",
                  "data.val_split": "train[21600:24300]", "data.test_split": "train[24300:]"},
}
SEEDS = (0, 1, 2)
# the wording of the analysis's tables and verdicts where the digits' names the data (common.text)
TEXTS = {"target": "CIFAR-10 (similar) and EuroSAT RGB (different)"}


def get_config(arg=None):
    c = base_config()
    c.name = "decision_matrix_paper"
    c.init = INIT
    c.model.name = "resnet50"
    c.data.name = "cifar10"
    c.data.image_size = 224
    c.data.batch_size = 128
    c.precision = "bfloat16"
    c.augment = ("flip",)
    c.optimizer.name = "sgd"
    c.optimizer.momentum = 0.9
    c.optimizer.weight_decay = 1e-4
    c.schedule.name = "cosine"
    c.schedule.warmup_steps = 100
    c.report.x = "data.name"
    c.report.series = ("label", "data.per_class")
    c.report.metric = "test_accuracy"
    return c


def get_sweep(arg=None):
    sizes = zip_axes(axis("data.per_class", [v[0] for v in SIZES.values()]),
                     axis("train.steps", [v[1] for v in SIZES.values()]))
    arms = [{"label": "feature extraction", "frozen_depth": "all", "schedule.lr": 0.1},
            {"label": "fine-tuning", "frozen_depth": 0, "schedule.lr": 0.01},
            {"label": "scratch", "init": "scratch", "frozen_depth": 0, "schedule.lr": 0.1}]
    return product(axis("seed", list(SEEDS)), list(DOMAINS.values()), sizes, arms)
