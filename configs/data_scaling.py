"""Data scaling: how much transfer gains over training from scratch as the target data grows (BiT's few-shot
subsets, Kolesnikov et al. 2019, arXiv 1912.11370; VTAB's finding that the gain from pretraining falls with
dataset size, Zhai et al. 2019, arXiv 1910.04867).

Source: the quickstart's small ResNet trained from scratch on MNIST digits 0-4, once per workdir.
Target: digits 5-9 (relabelled 0-4) with 1, 5, 10, 25, 100 and 350 (= all) training examples per class, a
seeded stratified subset per seed (nested: the 5-shot subset holds the 1-shot one), the same subset for every
arm of a seed. Arms (report series init x frozen_depth): linear probe (source, all 4 units frozen), partial
fine-tune (source, stem + first block frozen), full fine-tune (source, nothing frozen) and scratch. Steps grow
with the data (40 at 1 per class to 150 at 350: a fixed short budget leaves scratch under-trained on the larger
sets and inflates the gain there), cosine decay, batch 32; 3 seeds.

table.md first holds the gain of each transfer arm over scratch per data size (paired by seed: the same
subset), then the accuracies themselves; plot.png the accuracies.

    python launch.py --config configs/data_scaling.py            # 72 runs + 1 source: 8 min 9 s on 2 busy CPU cores

Trend measured here (3 seeds; the tables are in docs/experiments.md): fine-tuning from the source gains most with little
data, +0.19 to +0.28 test accuracy over scratch at 1-10 examples per class (most at 5; at 1 every arm is poor
and the seeds vary most), then +0.17 at 25 and only +0.02 at 100 and at 350 per class. Partial and full
fine-tuning are within noise of each other. The linear probe gains as much at 1 example per class, but its
gain shrinks fastest and turns negative from 100 per class on (-0.14): frozen digit-0-4 features cap it near
0.84 while scratch keeps improving.
"""
from tl_research.config import axis, base_config, chain, copy_config, product, zip_axes

PER_CLASS = (1, 5, 10, 25, 100, 350)  # mnist_subset holds 350 training images per class: 350 = all
STEPS = (40, 40, 50, 60, 100, 150)  # longer for more data (BiT's HyperRule sets steps by dataset size)
SEEDS = (0, 1, 2)


def get_config():
    c = base_config()
    c.name = "data_scaling"
    c.data.name = "mnist_subset"
    c.data.classes = (5, 6, 7, 8, 9)
    c.data.batch_size = 32
    c.model.name = "resnet_cifar"
    c.model.stage_sizes = (1, 1, 1)  # stem + 3 residual blocks = 4 depth units
    c.model.width = 16
    c.optimizer.name = "sgd"
    c.optimizer.momentum = 0.9
    c.optimizer.weight_decay = 5e-4
    c.schedule.name = "cosine"  # decays to 0: the last steps settle instead of bouncing at a high LR
    c.schedule.lr = 0.05
    c.schedule.warmup_steps = 5
    c.train.steps = 100  # set per data size by the sweep (STEPS)
    c.train.eval_every = 20
    c.train.log_every = 20
    c.train.checkpoint_every = 1000  # runs take seconds: a checkpoint at the end only

    source = copy_config(c)
    source.name = "data_scaling-source"
    source.data.classes = (0, 1, 2, 3, 4)
    source.init = "scratch"
    source.frozen_depth = 0
    source.train.steps = 0
    source.train.epochs = 5
    source.train.eval_every = 0  # once per epoch
    c.init = "source"
    c.source = source

    c.report.x = "data.per_class"
    c.report.series = ("init", "frozen_depth")
    c.report.metric = "test_accuracy"
    c.report.tables = ("gain", "mean")
    c.report.baseline = "init=scratch"
    return c


def get_sweep():
    sizes = zip_axes(axis("data.per_class", list(PER_CLASS)), axis("train.steps", list(STEPS)))
    arms = chain(product(axis("init", ["source"]), axis("frozen_depth", ["all", 2, 0])),
                 [{"init": "scratch", "frozen_depth": 0}])
    return product(axis("seed", list(SEEDS)), sizes, arms)
