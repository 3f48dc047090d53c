"""Fine-tuning strategies from one source checkpoint, on a small target set, offline.

Source: the quickstart's small ResNet trained on digits 0-4 (once per workdir). Target: digits 5-9 with
100 training examples per class, 200 steps of 40 (16 epochs), 3 seeds:

    feature_extraction  frozen base, new head                       (lr 0.1)
    fine_tune           everything trains, weight decay 5e-4         (lr 0.03)
    two_phase           head alone for 2 epochs at 0.1, then everything at 0.01 (LP-FT)
    gradual_unfreezing  one more unit from the top every 2 epochs, slanted triangular LR (ULMFiT)
    discriminative      fine_tune with lr(unit) = lr(unit above) / 2.6
    l2_sp               fine_tune with L2-SP (alpha = beta = 0.01) instead of weight decay
    bn_source           fine_tune keeping the source BatchNorm statistics

    python launch.py --config configs/strategies.py               # runs/strategies/table.md

The table (test accuracy per strategy, mean ± std over 3 seeds) is what that command writes; no figures are
quoted here, since the ones that were came from batches of 50 (160 steps) and from two_phase and
gradual_unfreezing rows that selected their best step across all phases. two_phase and gradual_unfreezing
rows report their final phase's best validation step; results.csv's best_any_phase_* columns say where the
best step of the whole run fell (docs/strategies.md). Measured with batches of 40, on the 2-core CPU shared with
other jobs (load average 9): `--run=label-fine_tune__schedule.lr-0.03__seed-0` took 3 min 20 s with its source
model (60 s of CPU time), the run itself 69 s of it; the sweep is 21 such runs.
"""
from tl_research.config import axis, base_config, copy_config, product, zip_axes

VARIANTS = {
    "feature_extraction": {"strategy.name": "feature_extraction", "schedule.lr": 0.1},
    "fine_tune": {"schedule.lr": 0.03},
    "two_phase": {"strategy.name": "two_phase", "schedule.lr": 0.01},
    "gradual_unfreezing": {"strategy.name": "gradual_unfreezing", "schedule.name": "slanted_triangular",
                           "schedule.lr": 0.03},
    "discriminative": {"strategy.lr_decay": 2.6, "schedule.lr": 0.03},
    "l2_sp": {"strategy.regularizer": "l2_sp", "schedule.lr": 0.03},
    "bn_source": {"strategy.bn": "source", "schedule.lr": 0.03},
}


def get_config():
    c = base_config()
    c.name = "strategies"
    c.data.name = "mnist_subset"
    c.data.classes = (5, 6, 7, 8, 9)
    c.data.per_class = 100
    c.data.batch_size = 40  # a multiple of 8: runs unchanged on 1, 2, 4 and 8 devices
    c.data.eval_batch_size = 250
    c.model.name = "resnet_cifar"
    c.model.stage_sizes = (1, 1, 1)
    c.model.width = 16
    c.optimizer.name = "sgd"
    c.optimizer.momentum = 0.9
    c.optimizer.weight_decay = 5e-4
    c.schedule.name = "cosine"
    c.train.steps = 200  # 12.5 steps per epoch
    c.train.eval_every = 25
    c.train.log_every = 10
    c.strategy.boundary_epochs = 2.0
    c.strategy.head_schedule.lr = 0.1
    c.strategy.unfreeze_every_epochs = 2.0
    c.strategy.l2sp_alpha = 0.01
    c.strategy.l2sp_beta = 0.01

    source = copy_config(c)
    source.name = "strategies-source"
    source.data.classes = (0, 1, 2, 3, 4)
    source.data.per_class = 0
    source.data.batch_size = 64
    source.init = "scratch"
    source.schedule.name = "constant"
    source.schedule.lr = 0.05
    source.train.steps = 0
    source.train.epochs = 5
    source.train.eval_every = 0
    c.init = "source"
    c.source = source
    c.report.x = "label"
    c.report.series = ()
    c.report.metric = "test_accuracy"
    return c


def get_sweep():
    labels = list(VARIANTS)
    variants = zip_axes(axis("label", labels), [VARIANTS[k] for k in labels])
    return product(axis("seed", [0, 1, 2]), variants)
