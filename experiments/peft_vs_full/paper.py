"""peft_vs_full at the paper's scale (a GPU's): ViT-B/16 pretrained on ImageNet-21k, every registered method of
tl_research.experiments.peft_vs_full.METHODS, on the 19 VTAB-1k tasks (tl_research/data/vtab.py), as in VPT's
Table 1 (Jia et al. 2022, arXiv 2203.12119).

Weights: the big_vision / AugReg ImageNet-21k checkpoint, converted once (docs/pretrained.md), e.g.
    python -m tl_research.convert ViT-B_16.npz --arch vit_b16 --out weights/vit_b16_i21k
INIT below is a placeholder for that directory (or npz:PATH): set it, or pass --config.init=... .
Data: the tasks' TFDS datasets prepared in data.data_dir (TFDS downloads them; some need a manual download).

Protocol (VTAB-1k): train on train800val200 (1,000 images), report test accuracy at the last step (val200 is
part of the training set, so nothing is selected on it; restore_best is off). 100 epochs of batch 64, SGD with
10 warmup epochs and cosine decay, images at 224; full fine-tuning at LR_FULL, every other method at LR_PEFT,
3 seeds. VPT tunes the LR and weight decay per task on train800 / val200: for that, sweep schedule.lr with
--config.data.vtab=train800 --config.train.restore_best=True first.

    python launch.py --config experiments/peft_vs_full/paper.py --config.init=weights/vit_b16_i21k \
        --workdir runs/peft_vs_full_paper

tests/test_experiments.py validates every point of this sweep's config (tl_research.config.validate) on mock
TFDS data with random weights (init=scratch).
"""
from tl_research.config import axis, base_config, product
from tl_research.data import vtab
from tl_research.experiments import peft_vs_full

INIT = "weights/vit_b16_i21k"  # placeholder: the converted ImageNet-21k ViT-B/16 (set it before running)
SEEDS = (0, 1, 2)
SOURCE = peft_vs_full.Source("ViT-B/16", "vit_b16", {}, lr_full=1e-3, lr_peft=1e-2)
TASKS = tuple(f"vtab:{name}" for name in vtab.VTAB_TASKS)
SOURCES = {SOURCE.name: SOURCE}  # what the analysis compares the methods on (its digits' ResNet and ViT)
# the wording of the analysis's tables and verdicts where the digits' names the data (common.text)
TEXTS = {"targets": "each VTAB-1k task", "kind": "VTAB-1k tasks"}


def get_config(arg=None):
    c = base_config()
    c.name = "peft_vs_full_paper"
    c.model.name = "vit_b16"
    c.init = INIT
    c.data.name = TASKS[0]
    c.data.vtab = "train800val200"
    c.data.image_size = 224
    c.data.batch_size = 64
    c.optimizer.name = "sgd"
    c.optimizer.momentum = 0.9
    c.optimizer.weight_decay = 1e-4
    c.schedule.name = "cosine"
    c.schedule.lr = SOURCE.lr_full
    c.schedule.warmup_epochs = 10.0
    c.train.epochs = 100.0
    c.train.restore_best = False  # val200 is inside train800val200: report the last step
    c.report.x = "trainable_params"
    c.report.series = ("strategy.name",)
    c.report.metric = "test_accuracy"
    return c


def get_sweep(arg=None):
    methods = peft_vs_full.methods_for(get_config(), SOURCE, check=False)
    arms = [{"label": m, **peft_vs_full.arm(SOURCE, m)} for m in methods]
    return product(axis("seed", list(SEEDS)), axis("data.name", list(TASKS)), arms)
