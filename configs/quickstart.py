"""Quickstart: Yosinski-style layer transfer (arXiv 1411.1792) on the built-in MNIST digits, offline.

Source (task A): a small CIFAR-style ResNet trained from scratch on digits 0-4, once per workdir.
Target (task B): digits 5-9 (relabelled 0-4), for every frozen depth from 0 (fine-tune everything) to all
(a linear probe on the source features), initialised from the source (AnB: frozen copied units) and from
scratch (baseB, the reference), 2 seeds, a constant LR vs Smith's triangular cyclical LR.

Trend to expect: low frozen depths transfer almost as well as baseB (early features are general); accuracy
falls as more source-specific top units stay frozen.

    python launch.py                      # the same as: python launch.py --config configs/quickstart.py
"""
from tl_research import models
from tl_research.config import axis, base_config, chain, copy_config, product


def get_config():
    c = base_config()
    c.name = "quickstart"
    c.data.name = "mnist_subset"
    c.data.classes = (5, 6, 7, 8, 9)
    c.data.batch_size = 64
    c.model.name = "resnet_cifar"
    c.model.stage_sizes = (1, 1, 1)  # stem + 3 residual blocks = 4 depth units
    c.model.width = 16
    c.optimizer.name = "sgd"
    c.optimizer.momentum = 0.9
    c.optimizer.weight_decay = 5e-4
    c.schedule.name = "constant"
    c.schedule.lr = 0.05
    c.schedule.step_size_epochs = 1.5  # cyclical: half a cycle (Smith: 2-10 epochs; short runs here)
    c.train.epochs = 3
    c.train.log_every = 10

    source = copy_config(c)
    source.name = "quickstart-source"
    source.data.classes = (0, 1, 2, 3, 4)
    source.init = "scratch"
    source.frozen_depth = 0
    source.train.epochs = 5
    c.init = "source"
    c.source = source
    c.report.x = "frozen_depth"
    c.report.series = ("init", "schedule.name")
    c.report.metric = "test_accuracy"
    return c


def get_sweep():
    units = models.abstract(get_config().model, 2, 1).num_units
    transfer = product(axis("init", ["source"]), axis("frozen_depth", list(range(units + 1))))
    scratch = [{"init": "scratch", "frozen_depth": 0}]
    return product(axis("seed", [0, 1]), axis("schedule.name", ["constant", "cyclical"]),
                   chain(transfer, scratch))
