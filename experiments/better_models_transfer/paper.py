"""better_models_transfer at the paper's scale (a GPU's): the torchvision ImageNet zoo (converted checkpoints) on the
datasets of Kornblith, Shlens, Le 2019 (arXiv 1805.08974) that TFDS has, with the built-in experiment's two arms
(tl_research.experiments.better_models_transfer.ARMS) and analysis; each model's source accuracy is its published
ImageNet top-1 (better_models_transfer.IMAGENET_TOP1).

Weights: every model of ZOO from https://download.pytorch.org/models/ (the IMAGENET1K_V1 files, e.g.
resnet18-f37072fd.pth), converted once into weights/<name> (docs/pretrained.md; WEIGHTS below lists each
command, and the dry run says which are missing):
    python -m tl_research.convert resnet18-f37072fd.pth --arch resnet18 --out weights/resnet18
Datasets: 9 of the paper's 12 (python -m tl_research.prepare NAME): Food-101, CIFAR-10, CIFAR-100, SUN397, Stanford
Cars, DTD, Oxford-IIIT Pet, Caltech-101, Oxford Flowers-102. Birdsnap and FGVC Aircraft are not in TFDS; PASCAL
VOC 2007 is multi-label (the paper scores it by mAP), which the classification task here does not train.
Validation: the dataset's own split where TFDS has one, else the last 10% of its training split.

Arms: logistic regression (the `logreg` evaluator on the frozen penultimate features of the whole training split,
C chosen on val, refit on train + val; a run of one step with every unit frozen) and fine-tuning (every unit,
SGD with Nesterov momentum 0.9, batch 256, cosine from LR 0.01 over STEPS steps, weight decay 1e-4, flips and
random-resized crops, the test accuracy at the best validation step). The LR and weight decay are ours, fixed for
every model and dataset; Kornblith et al. choose them per model and dataset on validation. Images at each
checkpoint's own input size (224; Inception v3: 299).

    python -m tl_research.experiments run better_models_transfer --scale paper [--dry_run]

tests/test_exp_new.py validates every point of this sweep's config (tl_research.config.validate) on mock TFDS
data with random weights (init=scratch in place of the converted checkpoints).
"""
from tl_research.config import axis, base_config, product
from tl_research.evals import logreg
from tl_research.experiments import better_models_transfer as bmt

ZOO = tuple(bmt.IMAGENET_TOP1)  # resnet18 ... densenet121: 12 torchvision models with a converter here
FILES = {  # the IMAGENET1K_V1 files of https://download.pytorch.org/models/
    "resnet18": "resnet18-f37072fd.pth", "resnet34": "resnet34-b627a593.pth", "resnet50": "resnet50-0676ba61.pth",
    "resnet101": "resnet101-63fe2227.pth", "resnet152": "resnet152-394f9c45.pth", "vgg16": "vgg16-397923af.pth",
    "mobilenet_v2": "mobilenet_v2-b0353104.pth", "mobilenet_v3_large": "mobilenet_v3_large-8738ca79.pth",
    "mobilenet_v3_small": "mobilenet_v3_small-047dcff4.pth",
    "efficientnet_b0": "efficientnet_b0_rwightman-7f5810bc.pth",
    "inception_v3": "inception_v3_google-0cc3c7bd.pth", "densenet121": "densenet121-a639ec97.pth"}
INIT = {name: f"weights/{name}" for name in ZOO}  # placeholders: the converted checkpoints
WEIGHTS = {INIT[name]: f"python -m tl_research.convert {FILES[name]} --arch {name} --out {INIT[name]} (the file: "
                       f"https://download.pytorch.org/models/{FILES[name]})" for name in ZOO}
STEPS = 5000
# the wording of the analysis's tables and verdicts where the digits' names the data (common.text)
TEXTS = {"source": "ImageNet top-1, published"}
# the fine-tuned runs carry the logreg evaluator too (evaluators cannot be set per run) and nobody reads it
# there: one C on 1,000 examples instead of 12 on the whole training split (SUN397: 76k images)
UNREAD_PROBE = {"evals.logreg.cs": (1.0,), "evals.logreg.max_examples": 1000}
VAL_FROM_TRAIN = {"data.train_split": "train[:90%]", "data.val_split": "train[90%:]"}
DATASETS = {  # name -> its data keys
    "food101": {"data.name": "food101", **VAL_FROM_TRAIN, "data.test_split": "validation"},
    "cifar10": {"data.name": "cifar10", **VAL_FROM_TRAIN, "data.test_split": "test"},
    "cifar100": {"data.name": "cifar100", **VAL_FROM_TRAIN, "data.test_split": "test"},
    "sun397": {"data.name": "sun397/tfds", "data.train_split": "train", "data.val_split": "validation",
               "data.test_split": "test"},
    "cars196": {"data.name": "cars196", **VAL_FROM_TRAIN, "data.test_split": "test"},
    "dtd": {"data.name": "dtd", "data.train_split": "train", "data.val_split": "validation", "data.test_split": "test"},
    "oxford_iiit_pet": {"data.name": "oxford_iiit_pet", **VAL_FROM_TRAIN, "data.test_split": "test"},
    "caltech101": {"data.name": "caltech101", **VAL_FROM_TRAIN, "data.test_split": "test"},
    "oxford_flowers102": {"data.name": "oxford_flowers102", "data.train_split": "train",
                          "data.val_split": "validation", "data.test_split": "test"},
}


def get_config(arg=None):
    c = base_config()
    c.name = "better_models_transfer_paper"
    c.model.name = ZOO[0]
    c.init = INIT[ZOO[0]]
    c.data.name = "cifar10"
    c.data.batch_size = 256
    c.optimizer.name = "sgd"
    c.optimizer.momentum = 0.9
    c.optimizer.nesterov = True
    c.optimizer.weight_decay = 1e-4
    c.schedule.name = "cosine"
    c.schedule.lr = 0.01
    c.augment = ("rrc(0.08)", "flip")
    c.train.steps = STEPS
    c.train.eval_every = 500
    c.evals.logreg = dict(type="logreg", every=-1, cs=logreg.C_GRID, max_iter=1000, max_examples=0)
    c.report.x = "label"
    c.report.series = ("frozen_depth",)
    c.report.metric = "test_accuracy"
    return c


def get_sweep(arg=None):
    models = [{"label": name, "model.name": name, "init": INIT[name]} for name in ZOO]
    arms = [bmt.ARMS[bmt.PROBE], {**bmt.ARMS[bmt.FINE_TUNE], **UNREAD_PROBE}]
    return product(models, list(DATASETS.values()), arms, axis("seed", [0]))
