"""soups at the paper's scale (a GPU cluster's): model soups and WiSE-FT from one pre-trained ViT fine-tuned on
ImageNet, tested on ImageNet's validation set and on the shifted ImageNets with ImageNet's 1,000 classes (Wortsman
et al., ICML 2022, arXiv 2203.05482; CVPR 2022, arXiv 2109.01903).

Weights: ViT-B/16 pre-trained on ImageNet-21k (the big_vision / AugReg checkpoint, converted once,
docs/pretrained.md), standing in for the paper's CLIP ViT-B/32 and JFT ViT-G/14 (a pre-training that is not
ImageNet-1k itself):
    python -m tl_research.convert B_16-i21k-300ep-lr_0.001-aug_medium1-wd_0.1-do_0.0-sd_0.0.npz --arch vit_b16 \
        --out weights/vit_b16_i21k
INIT below is a placeholder for that directory: set it, or pass --config.init=... .
Data: imagenet2012 (TFDS, a manual download: docs/data.md), imagenet_v2 (matched-frequency) and imagenet_sketch. In
distribution: training on train[:1255167], the held-out split train[1255167:] (26,000 images, the paper's
"ImageNet2p", 2% of ImageNet's training set: what the best run, the greedy soup and alpha are chosen on), test =
ImageNet's validation set. Out of distribution (data.extra_test_sets, read with ImageNet's 1,000 classes): ImageNet-V2
and ImageNet-Sketch, two of the paper's five shifts; ImageNet-R and ImageNet-A have 200 of the classes (an extra
test set must have the run's 1,000) and ObjectNet is not in TFDS.

Ingredients: GROUPS independent sweeps of INGREDIENTS fine-tuning runs each, hyper-parameters drawn at random as
the paper's CLIP sweep (its released hparam_info.json: LR log-uniform in [1e-6, 1e-4], weight decay log-uniform in
[1e-4, 0.5], 4 to 16 epochs, label smoothing 0 or up to 0.25, mixup 0 or up to 0.9, RandAugment off or n 1-2 at
magnitude up to 20), AdamW, cosine after 0.2 epochs of warmup (about 500 steps), batch 512, random-resized crops
and flips at 224, bfloat16; each group also trains a linear probe (frozen_depth all, 10 epochs at lr 1e-3),
WiSE-FT's theta_0. `data.subset_seed` tags the group (the whole training split is used): the experiment's
analysis builds the soups per group (a ViT has no BatchNorm, so re-estimating statistics changes nothing) and
reads the same verdicts:
    python -m tl_research.experiments run soups --scale paper [--dry_run]
or one group by hand: python -m tl_research.soup WORKDIR --select data.subset_seed=0 --out soups/group_0.
The analysis's chance level is 1/num_classes of the runs (ImageNet's 1,000 classes: 0.001).

tests/test_paper_scale.py dry-runs this sweep; tests/test_exp_soups.py validates a recipe with RandAugment, one with
mixup and the linear probe (tl_research.config.validate) on mock TFDS data with random weights (init=scratch).
"""
import numpy as np

from tl_research.config import base_config

INIT = "weights/vit_b16_i21k"  # placeholder: the converted ImageNet-21k ViT-B/16 (set it before running)
WEIGHTS = {INIT: "python -m tl_research.convert B_16-i21k-300ep-lr_0.001-aug_medium1-wd_0.1-do_0.0-sd_0.0.npz "
                 f"--arch vit_b16 --out {INIT} (the file: gs://vit_models/augreg/, docs/pretrained.md)"}
GROUPS = (0, 1, 2)
INGREDIENTS = 24  # per group: 72 in all, the size of the paper's CLIP ViT-B/32 sweep
OOD = ("imagenet_v2", "imagenet_sketch")
DRAW_SEED = 2203_05482  # the hyper-parameter draws are part of the config, the same on every machine


def draw(group: int, n: int = INGREDIENTS) -> list[dict]:
    """n random fine-tuning recipes of the paper's search space, fixed by (DRAW_SEED, group)."""
    rng = np.random.default_rng([DRAW_SEED, group])
    out = []
    for _ in range(n):
        lr, wd = 10 ** rng.uniform(-6, -4), 10 ** rng.uniform(-4, np.log10(0.5))
        epochs, smoothing = int(rng.integers(4, 17)), (0.0 if rng.random() < 0.5 else rng.uniform(0, 0.25))
        mixup, ra = (0.0 if rng.random() < 0.5 else rng.uniform(0.05, 0.9)), rng.random() >= 0.4
        n_ops, magnitude = int(rng.integers(1, 3)), int(rng.integers(0, 21))
        augment = ("rrc(0.08)", "flip", *((f"randaugment(n={n_ops}, m={magnitude})",) if ra else ()),
                   *((f"mixup({mixup:.2f})",) if mixup else ()))
        out.append({"schedule.lr": float(f"{lr:.2g}"), "optimizer.weight_decay": float(f"{wd:.2g}"),
                    "train.epochs": float(epochs), "train.label_smoothing": round(float(smoothing), 2),
                    "augment": augment})
    return out


def get_config(arg=None):
    c = base_config()
    c.name = "soups_paper"
    c.model.name = "vit_b16"
    c.init = INIT
    c.data.name = "imagenet2012"
    c.data.train_split, c.data.val_split, c.data.test_split = "train[:1255167]", "train[1255167:]", "validation"
    c.data.image_size = 224
    c.data.batch_size = 512
    c.data.extra_test_sets = OOD
    c.precision = "bfloat16"
    c.optimizer.name = "adam"  # with weight decay: AdamW
    c.schedule.name = "cosine"
    c.schedule.warmup_epochs = 0.2  # about 500 steps of batch 512, the paper's warmup
    c.train.epochs = 10.0
    c.augment = ("rrc(0.08)", "flip")
    c.report.x = "label"
    c.report.series = ("data.subset_seed",)
    c.report.metric = "test_accuracy"
    return c


def get_sweep(arg=None):
    points = []
    for g in GROUPS:
        for i, recipe in enumerate(draw(g)):
            points.append({"data.subset_seed": g, "seed": 100 * g + i, "label": f"ingredient {i}", **recipe})
        points.append({"data.subset_seed": g, "seed": 100 * g, "label": "LP", "frozen_depth": "all",
                       "schedule.lr": 1e-3, "optimizer.weight_decay": 0.0})
    return points
