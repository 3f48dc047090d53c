"""Learning-rate schedules: schedule x peak LR x frozen depth, on the built-in MNIST digits, offline.

Source: the quickstart's small ResNet trained on digits 0-4 (once per workdir). Target: digits 5-9, 200
training examples per class, 4 epochs (100 steps of 40), fine-tuning everything (frozen depth 0) or the top two
units (frozen depth 2), with each schedule of tl_research.finetune.schedules at two peak LRs and 2 seeds. Test
accuracy is also measured at every eval (train.eval_test), so the table can count the steps each schedule
needs to reach the constant LR's best.

    python launch.py --config configs/lr_schedules.py            # runs/lr_schedules/table.md

table.md then holds, per schedule and frozen depth, the peak LR chosen on validation accuracy, the best test
accuracy seen during training, the final one, the one at the best validation step, and the steps to reach
the constant LR's best test accuracy (Smith 2017's comparison). No figures are quoted here: the ones that
were came from batches of 50 (80 steps); with batches of 40 (100 steps, 25 per epoch) the sweep has not been
run to the end since (it took about 11 minutes on the 2-core CPU).

To take cyclical bounds from an LR range test first:

    python launch.py --config configs/lr_schedules.py --lr_range_test --workdir runs/lr_schedules
    python launch.py --config configs/lr_schedules.py \
        --config.schedule.range_test=runs/lr_schedules/lr_range_test/range_test.json
"""
from tl_research.config import axis, base_config, copy_config, product

SCHEDULES = ("constant", "step", "cosine", "cyclical", "one_cycle", "slanted_triangular")


def get_config():
    c = base_config()
    c.name = "lr_schedules"
    c.data.name = "mnist_subset"
    c.data.classes = (5, 6, 7, 8, 9)
    c.data.per_class = 200  # 1,000 training examples: 25 steps per epoch
    c.data.batch_size = 40  # a multiple of 8: runs unchanged on 1, 2, 4 and 8 devices
    c.data.eval_batch_size = 250
    c.model.name = "resnet_cifar"
    c.model.stage_sizes = (1, 1, 1)
    c.model.width = 16
    c.optimizer.name = "sgd"
    c.optimizer.momentum = 0.9
    c.optimizer.weight_decay = 5e-4
    c.schedule.lr = 0.1
    c.schedule.step_size_epochs = 1.0  # cyclical: two whole cycles in 4 epochs
    c.schedule.mode = "triangular2"
    c.schedule.milestones = (0.5, 0.75)
    c.train.epochs = 4
    c.train.eval_every = 16
    c.train.log_every = 10
    c.train.eval_test = True

    source = copy_config(c)  # the quickstart's source: same hash, same recipe
    source.name = "lr_schedules-source"
    source.data.classes = (0, 1, 2, 3, 4)
    source.data.per_class = 0
    source.data.batch_size = 64
    source.init = "scratch"
    source.schedule.name = "constant"
    source.schedule.lr = 0.05
    source.train.epochs = 5
    source.train.eval_every = 0
    source.train.eval_test = False
    c.init = "source"
    c.source = source
    c.report.x = "frozen_depth"
    c.report.series = ("schedule.name", "schedule.lr")
    c.report.metric = "test_accuracy"
    c.report.tables = ("mean", "schedules")
    return c


def get_sweep():
    return product(axis("seed", [0, 1]), axis("frozen_depth", [0, 2]), axis("schedule.name", list(SCHEDULES)),
                   axis("schedule.lr", [0.03, 0.1]))
