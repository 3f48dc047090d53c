"""class_imbalance at the paper's scale (a GPU's): CIFAR-10-LT (Cui et al. 2019, arXiv 1901.05555; Buda et al.
2018, arXiv 1710.05381) at imbalance ratios 10 to 200.

Data: TFDS cifar10, train[:45000] made long-tailed (class c keeps n_max x ratio^(-c/9) images, n_max about
4,500: Cui et al.'s CIFAR-10-LT construction) at ratios RATIOS, and balanced (ratio 1) for the plain arm;
validation train[45000:] and the 10,000 test images stay balanced. Recipe (Cui et al.'s CIFAR setting):
ResNet-32 (resnet_cifar, stage sizes (5, 5, 5), width 16) from scratch, 200 epochs of batch 128, SGD with momentum
0.9, lr 0.1 after a 5-epoch linear warmup, divided by 100 at epochs 160 and 180, weight decay 2e-4, flips and
4-pixel crops. Arms: plain, class weights (train.class_weights=inverse: inverse class frequency), effective
number (Cui et al.'s class-balanced loss, beta BETA = 0.9999, their best on CIFAR-10-LT), oversampling
(data.balance=oversample: every class drawn equally often); 3 seeds (the same subset for every arm of a seed).
The weights average to 1 over the training examples (train.class_weights_norm=examples), so a weighted run keeps
the plain run's loss scale and effective learning rate, as in the digits-scale config.

    python -m tl_research.experiments run class_imbalance --scale paper [--dry_run]
"""
from tl_research.config import axis, base_config, chain, product

RATIOS = (10.0, 20.0, 50.0, 100.0, 200.0)
BETA = 0.9999
EPOCHS, WARMUP, DECAYS = 200.0, 5.0, (160, 180)
SEEDS = (0, 1, 2)


def get_config(arg=None):
    c = base_config()
    c.name = "class_imbalance_paper"
    c.data.name = "cifar10"
    c.data.train_split, c.data.val_split, c.data.test_split = "train[:45000]", "train[45000:]", "test"
    c.data.batch_size = 128
    c.model.name = "resnet_cifar"
    c.model.stage_sizes = (5, 5, 5)
    c.model.width = 16
    c.augment = ("flip", "crop(4)")
    c.optimizer.name = "sgd"
    c.optimizer.momentum = 0.9
    c.optimizer.weight_decay = 2e-4
    c.schedule.name = "step"
    c.schedule.lr = 0.1
    c.schedule.warmup_epochs = WARMUP
    # fractions of the post-warmup length: epochs 160 and 180 of 200 after 5 of warmup
    c.schedule.milestones = tuple((d - WARMUP) / (EPOCHS - WARMUP) for d in DECAYS)
    c.schedule.factor = 0.01
    c.train.epochs = EPOCHS
    c.report.x = "data.imbalance_ratio"
    c.report.series = ("label",)
    c.report.metric = "test_balanced_accuracy"
    return c


def get_sweep(arg=None):
    weighted = {"train.class_weights_norm": "examples"}
    arms = [{"label": "plain"}, {"label": "class weights", "train.class_weights": "inverse", **weighted},
            {"label": "effective number", "train.class_weights": "effective", "train.class_weights_beta": BETA,
             **weighted},
            {"label": "oversampling", "data.balance": "oversample"}]
    balanced = [{"label": "plain", "data.imbalance_ratio": 1.0}]
    return product(axis("seed", list(SEEDS)), chain(balanced, product(axis("data.imbalance_ratio", list(RATIOS)), arms)))
