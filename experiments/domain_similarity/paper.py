"""domain_similarity at the paper's scale (GPUs): Cui et al. 2018 (arXiv 1806.06193), several source domains
ranked for one target by their similarity, measured with one common feature extractor, against the transfer
gain each gives.

Target: CUB-200-2011 (TFDS caltech_birds2011; train[:5394] for training, train[5394:] (600 images) as
validation, the 5,794 test images), Cui et al.'s first target.
Sources (one network per source domain, init=source, trained once per workdir: the sources are the independent
units of the ranking): ImageNet-1k (imagenet2012, a manual download: docs/data.md), iNaturalist 2017
(i_naturalist2017, Cui et al.'s other large source), Food-101, SUN397 and Stanford Dogs: from the closest kind
of images to the farthest, at sizes from 12,000 to 1.28M images. Every source network: ResNet-50 (resnet50) from
scratch at 224 px, SOURCE_EPOCHS epochs, SGD with momentum 0.9, lr 0.1, weight decay 1e-4, cosine decay after a
1-epoch warmup, batch 256, random resized crops and flips, bfloat16 (Cui et al. train Inception-v3 on each).
The common feature extractor (report.similarity_features): the ImageNet network, so every (source, target)
pair's exp(-0.01 EMD) is measured on its features (Cui et al. use one Inception-v3 trained on JFT, not public);
the sweep trains it as the source of one linear-probe run, labelled "extractor", which is shown, never ranked.
Target runs (3 seeds): fine-tune (every unit, lr 0.01) and linear probe (all units frozen, lr 0.1) from each
source, and scratch on the target (lr 0.1), the baseline the gain is measured against; 50 epochs of batch 64,
cosine decay, random resized crops and flips.

    python -m tl_research.experiments run domain_similarity --scale paper [--dry_run]
"""
from tl_research import config as config_lib
from tl_research.config import axis, base_config, chain, copy_config, product

TARGET = "caltech_birds2011"
SOURCES = {  # label -> (data.name, train / val / test splits)
    "imagenet": ("imagenet2012", "train[:1231167]", "train[1231167:]", "validation"),
    "inaturalist": ("i_naturalist2017", "train", "validation[:50%]", "validation[50%:]"),
    "food-101": ("food101", "train", "validation[:50%]", "validation[50%:]"),
    "sun397": ("sun397/tfds", "train", "validation", "test"),
    "stanford dogs": ("stanford_dogs", "train[:11000]", "train[11000:]", "test"),
}
EXTRACTOR = "imagenet"  # the source whose network is the common feature extractor
SOURCE_EPOCHS = 90.0
SEEDS = (0, 1, 2)
# the wording of the analysis's tables and verdicts where the digits' names the data (common.text)
TEXTS = {"target": "CUB-200-2011"}


def _base():
    c = base_config()
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
    return c


def source_config(label: str):
    """The source network of one domain: from scratch, seed 0 (one network per domain)."""
    s = _base()
    s.name = "domain_similarity_paper-source"
    s.data.name, s.data.train_split, s.data.val_split, s.data.test_split = SOURCES[label]
    s.data.batch_size = 256
    s.train.epochs = SOURCE_EPOCHS
    return s


def extractor_dir() -> str:
    """The common extractor's run directory, relative to the workdir (where the sweep trains it)."""
    return f"sources/{config_lib.config_hash(source_config(EXTRACTOR))}"


def _source_keys(label: str) -> dict:
    name, train, val, test = SOURCES[label]
    return {"label": label, "source.data.name": name, "source.data.train_split": train,
            "source.data.val_split": val, "source.data.test_split": test}


def get_config(arg=None):
    c = _base()
    c.name = "domain_similarity_paper"
    c.init = "source"
    c.source = copy_config(source_config(EXTRACTOR))
    c.data.name = TARGET
    c.data.train_split, c.data.val_split, c.data.test_split = "train[:5394]", "train[5394:]", "test"
    c.data.batch_size = 64
    c.train.epochs = 50.0
    c.report.x = "label"  # the source domain
    c.report.series = ("frozen_depth",)
    c.report.metric = "test_accuracy"
    c.report.similarity = True
    c.report.similarity_features = extractor_dir()
    return c


def get_sweep(arg=None):
    arms = [{"frozen_depth": 0, "schedule.lr": 0.01}, {"frozen_depth": "all", "schedule.lr": 0.1}]
    transfers = product([_source_keys(s) for s in SOURCES], arms)
    scratch = [{"init": "scratch", "frozen_depth": 0, "label": "scratch", "schedule.lr": 0.1}]
    extractor = {**_source_keys(EXTRACTOR), "label": f"extractor ({EXTRACTOR})", "frozen_depth": "all",
                 "schedule.lr": 0.1}
    return product(axis("seed", list(SEEDS)), chain(transfers, scratch)) + [{"seed": 0, **extractor}]
