"""domain_similarity at the paper's scale (GPUs): Cui et al. 2018 (arXiv 1806.06193), several source domains
ranked for one target by their measured similarity, against the transfer gain each gives.

Target: CUB-200-2011 (TFDS caltech_birds2011; train[:5394] for training, train[5394:] (600 images) as
validation, the 5,794 test images), Cui et al.'s first target.
Sources (one source model each, init=source, trained once per workdir): ImageNet-1k (imagenet2012, a manual
download: docs/data.md), iNaturalist 2017 (i_naturalist2017; Cui et al.'s other large source), Food-101,
SUN397 and Stanford Dogs: from the closest kind of images to the farthest, at five sizes (12,000 to 1.28M).
Every source model: ResNet-50 (resnet50) from scratch at 224 px, SOURCE_EPOCHS epochs, SGD with momentum 0.9,
lr 0.1, weight decay 1e-4, cosine decay after a 1-epoch warmup, batch 256, random resized crops and flips,
bfloat16 (Cui et al. train Inception-v3 on each source).
Target runs (3 seeds): fine-tune (every unit, lr 0.01) and linear probe (all units frozen, lr 0.1) from each
source model, and scratch on the target (lr 0.1), the baseline the gain is measured against; 50 epochs of batch
64, cosine decay, flips and random resized crops. Each run's domain_similarity (report.similarity, exp(-0.01 EMD)
on class-mean features) is measured on its own source model's features; Cui et al. measure every source with
one common feature extractor, which the similarity column does not offer yet.

    python -m tl_research.experiments run domain_similarity --scale paper [--dry_run]
"""
from tl_research.config import axis, base_config, chain, copy_config, product

TARGET = "caltech_birds2011"
SOURCES = {  # data.name -> its train / val / test splits
    "imagenet2012": ("train[:1231167]", "train[1231167:]", "validation"),
    "i_naturalist2017": ("train", "validation[:50%]", "validation[50%:]"),
    "food101": ("train", "validation[:50%]", "validation[50%:]"),
    "sun397/tfds": ("train", "validation", "test"),
    "stanford_dogs": ("train[:11000]", "train[11000:]", "test"),
}
SOURCE_EPOCHS = 90.0
SEEDS = (0, 1, 2)


def source_keys(name: str) -> dict:
    train, val, test = SOURCES[name]
    return {"source.data.name": name, "source.data.train_split": train, "source.data.val_split": val,
            "source.data.test_split": test}


def get_config(arg=None):
    c = base_config()
    c.name = "domain_similarity_paper"
    c.model.name = "resnet50"
    c.data.image_size = 224
    c.precision = "bfloat16"
    c.augment = ("rrc(0.08, 1)", "flip")
    c.optimizer.name = "sgd"
    c.optimizer.momentum = 0.9
    c.optimizer.weight_decay = 1e-4
    c.schedule.name = "cosine"
    c.schedule.lr = 0.1
    c.schedule.warmup_epochs = 1.0
    source = copy_config(c)
    source.name = "domain_similarity_paper-source"
    source.data.name = "imagenet2012"
    source.data.train_split, source.data.val_split, source.data.test_split = SOURCES["imagenet2012"]
    source.data.batch_size = 256
    source.train.epochs = SOURCE_EPOCHS
    c.init = "source"
    c.source = source
    c.data.name = TARGET
    c.data.train_split, c.data.val_split, c.data.test_split = "train[:5394]", "train[5394:]", "test"
    c.data.batch_size = 64
    c.train.epochs = 50.0
    c.report.x = "source.data.name"
    c.report.series = ("init", "frozen_depth")
    c.report.metric = "test_accuracy"
    c.report.similarity = True
    return c


def get_sweep(arg=None):
    arms = [{"init": "source", "frozen_depth": 0, "schedule.lr": 0.01},
            {"init": "source", "frozen_depth": "all", "schedule.lr": 0.1}]
    transfer = product(axis("seed", list(SEEDS)), [source_keys(s) for s in SOURCES], arms)
    scratch = product(axis("seed", list(SEEDS)), [{"init": "scratch", "frozen_depth": 0, "schedule.lr": 0.1}])
    return chain(transfer, scratch)
