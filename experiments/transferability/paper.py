"""transferability at the paper's scale (a GPU's): ImageNet-pretrained models ranked for natural-image datasets by
LogME, LEEP, NCE, H-score and the few-shot probe against their fine-tuned and linear-probe accuracy, as in You et
al. (ICML 2021, arXiv 2102.11005) and the Transfer-Learning-Library model-selection benchmark.

The zoo (ZOO): 10 torchvision ImageNet-1k CNNs and the AugReg ViT-B/16 (ImageNet-21k, fine-tuned on ImageNet-1k),
each converted once into a weights directory (docs/pretrained.md), e.g.
    python -m tl_research.convert resnet50-0676ba61.pth --arch resnet50 --out weights/resnet50_tv
    python -m tl_research.convert densenet121-a639ec97.pth --arch densenet121 --out weights/densenet121_tv
    python -m tl_research.convert B_16-i21k-300ep-lr_0.001-aug_medium1-wd_0.1-do_0.0-sd_0.0--imagenet2012-steps_20k-lr_0.01-res_224.npz --arch vit_b16 --out weights/vit_b16_in1k
The directories ZOO names are placeholders (weights/<arch>_tv): convert into them or edit ZOO. The converted
weights keep their 1,000-way ImageNet classifier, which LEEP and NCE read.
Targets (TARGETS, TFDS; prepared in data.data_dir): CIFAR-10, CIFAR-100, Caltech-101, DTD, Oxford-IIIT Pets,
Stanford Cars (cars196), SUN397 (its TFDS split); a validation split is carved from train where the dataset has none. FGVC-Aircraft is
not in TFDS: prepare its variant-level images as a class-per-folder directory and pass it as the config argument
(`--config experiments/transferability/paper.py:/data/fgvc_aircraft_variants`), which adds the target
folder:<that path>.
Per model, target and seed: fine-tuning (frozen_depth 0: SGD 0.01, cosine, 20 epochs, batch 64) and a linear
probe (frozen_depth all: SGD 0.1 on the cached features, 20 epochs), images at each checkpoint's input size
(224; Inception V3 299), 3 seeds; report.transferability scores every (model, target) pair at every depth unit.
No per-model hyper-parameter search (You et al. tune the fine-tuning per model and dataset: sweep schedule.lr
for that). Domain similarity is left out: converted checkpoints carry no record of their training data.

    python launch.py --config experiments/transferability/paper.py --workdir runs/transferability_paper

tests/test_exp_transferability.py validates every model and target of this sweep (tl_research.config.validate)
on mock TFDS data with random weights (init=scratch).
"""
from tl_research.config import axis, base_config, product

SEEDS = (0, 1, 2)
ZOO = {name: f"weights/{name}_tv" for name in ("resnet18", "resnet34", "resnet50", "resnet101", "resnet152",
                                               "densenet121", "mobilenet_v2", "mobilenet_v3_large",
                                               "efficientnet_b0", "inception_v3")}
ZOO["vit_b16"] = "weights/vit_b16_in1k"
CARVED = {"data.train_split": "train[:90%]", "data.val_split": "train[90%:]", "data.test_split": "test"}
TARGETS = {  # data.name -> its split keys
    "cifar10": {"data.train_split": "train[:45000]", "data.val_split": "train[45000:]", "data.test_split": "test"},
    "cifar100": {"data.train_split": "train[:45000]", "data.val_split": "train[45000:]", "data.test_split": "test"},
    "caltech101": CARVED,
    "dtd": {"data.train_split": "train", "data.val_split": "validation", "data.test_split": "test"},
    "oxford_iiit_pet": CARVED,
    "cars196": CARVED,
    "sun397/tfds": {"data.train_split": "train", "data.val_split": "validation", "data.test_split": "test"},
}
SCORES = ("logme", "leep", "nce", "hscore", "hscore_lw", "fewshot")
KINDS = {"fine-tune": {"frozen_depth": 0, "schedule.lr": 0.01}, "linear probe": {"frozen_depth": "all",
                                                                                   "schedule.lr": 0.1}}
# the wording of the analysis's tables and verdicts where the digits' names the data (common.text)
TEXTS = {"classes": "", "target": "natural-image targets", "zoo": "ZOO",
         "seed": "each seed a fine-tuning and a probe of the one checkpoint",
         "seeds": "each seed fine-tunes and probes the same converted checkpoint"}


def get_config(arg=None):
    c = base_config()
    c.name = "transferability_paper"
    c.model.name = "resnet50"
    c.init = ZOO["resnet50"]
    c.data.name = "cifar10"
    c.data.batch_size = 64
    c.optimizer.name = "sgd"
    c.optimizer.momentum = 0.9
    c.optimizer.weight_decay = 1e-4
    c.schedule.name = "cosine"
    c.schedule.lr = 0.01
    c.schedule.warmup_epochs = 1.0
    c.train.epochs = 20.0
    c.report.transferability = SCORES
    c.report.x = "data.name"
    c.report.series = ("label", "frozen_depth")
    c.report.metric = "test_accuracy"
    return c


def targets(arg=None) -> dict:
    """TARGETS, plus the FGVC-Aircraft folder named by the config argument."""
    extra = {f"folder:{arg}": {"data.train_split": "train", "data.val_split": "val", "data.test_split": "test"}}
    return {**TARGETS, **(extra if arg else {})}


def get_sweep(arg=None):
    models = [{"label": name, "model.name": name, "init": init} for name, init in ZOO.items()]
    data = [{"data.name": name, **keys} for name, keys in targets(arg).items()]
    return product(axis("seed", list(SEEDS)), models, data, list(KINDS.values()))
