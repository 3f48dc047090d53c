"""cyclical_lr at the paper's scale (a GPU's): Smith 2017 (arXiv 1506.01186) on CIFAR-10, long enough to
resolve the claim.

Smith's CIFAR-10 result (Table 1): a fixed LR needs 70,000 iterations of batch 100 for its final accuracy;
triangular2 (stepsize 2,000 iterations, 4 epochs) reaches it in 25,000. Here: ResNet-56 (resnet_cifar, stage
sizes (9, 9, 9), width 16: He et al.'s CIFAR ResNet; Smith also reports ResNets) from scratch on TFDS cifar10,
train[:45000] (train[45000:] is the validation split that picks the fixed LR), tested on the 10,000 test
images every 1,000 steps (train.eval_test: a curve, never used for selection), 70,000 steps of batch 100,
SGD with momentum 0.9, weight decay 1e-4, flips and 4-pixel crops, 3 seeds:
  fixed LR 0.01, 0.03, 0.1 (the one with the best mean validation accuracy is "the fixed LR")
  cyclical triangular, triangular2, exp_range (gamma 0.99994, Smith's): base_lr 0.01, max_lr 0.1, half cycle
  STEP_SIZE steps
The final weights are reported (train.restore_best off): "final accuracy" is the claim.

    python -m tl_research.experiments run cyclical_lr --scale paper [--dry_run]
"""
from tl_research.config import axis, base_config, chain, product

FIXED_LRS = (0.01, 0.03, 0.1)
MODES = ("triangular", "triangular2", "exp_range")
STEPS, STEP_SIZE, EVAL_EVERY = 70000, 2000, 1000
SEEDS = (0, 1, 2)


def get_config(arg=None):
    c = base_config()
    c.name = "cyclical_lr_paper"
    c.data.name = "cifar10"
    c.data.train_split, c.data.val_split, c.data.test_split = "train[:45000]", "train[45000:]", "test"
    c.data.batch_size = 100
    c.model.name = "resnet_cifar"
    c.model.stage_sizes = (9, 9, 9)
    c.model.width = 16
    c.augment = ("flip", "crop(4)")
    c.optimizer.name = "sgd"
    c.optimizer.momentum = 0.9
    c.optimizer.weight_decay = 1e-4
    c.schedule.name = "constant"
    c.schedule.base_lr = 0.01
    c.schedule.step_size = STEP_SIZE
    c.schedule.gamma = 0.99994
    c.train.steps = STEPS
    c.train.eval_every = EVAL_EVERY
    c.train.log_every = 100
    c.train.eval_test = True
    c.train.restore_best = False
    c.report.x = "label"
    c.report.series = ()
    c.report.metric = "final_test_accuracy"
    return c


def get_sweep(arg=None):
    fixed = [{"label": f"fixed {lr}", "schedule.name": "constant", "schedule.lr": lr} for lr in FIXED_LRS]
    cyclic = [{"label": mode, "schedule.name": "cyclical", "schedule.mode": mode, "schedule.lr": 0.1}
              for mode in MODES]
    return product(axis("seed", list(SEEDS)), chain(fixed, cyclic))
