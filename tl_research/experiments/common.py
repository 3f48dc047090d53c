"""The setting the experiments share, so that their numbers compare: the quickstart's small ResNet (stem + 3
residual blocks = 4 depth units, width 16) on the built-in MNIST digits, SGD with momentum, short cosine runs,
W&B off (the tables are the record; offline W&B costs seconds a run), and the source model (task A: digits
0-4, trained from scratch once per workdir and seed: its seed is the run's). And what every analysis reads at
either scale: the chance level of its runs (`chance`, from their num_classes) and the wording that names the data
(`text`, from the config module in use)."""
from __future__ import annotations

import pandas as pd

from tl_research.config import RUN_SEED, base_config, copy_config
from tl_research.experiments import stats

SEEDS = (0, 1, 2, 3, 4)  # every interval over seeds rests on 5 (with 3, a t-interval's width is about 3x)
TARGET_CLASSES = (5, 6, 7, 8, 9)  # task B, relabelled 0-4
SOURCE_CLASSES = (0, 1, 2, 3, 4)  # task A
UNITS = 4  # depth units of the model below: frozen_depth 4 = all = a linear probe
CHANCE = 1 / len(TARGET_CLASSES)  # per-class chance of a 5-class target (`chance` without a num_classes column)
DELTA = 0.01  # equivalence margin of a difference of accuracies: one point, below every published effect here


def small_base(name: str, *, steps: int = 60, classes=TARGET_CLASSES):
    """A target run from scratch on `classes` of mnist_subset (grey 28x28), `steps` steps of batch 32."""
    c = base_config()
    c.name = name
    c.data.name = "mnist_subset"
    c.data.classes = tuple(classes)
    c.data.channels = 1  # the ladder's RGB rungs are read in the source's grey
    c.data.batch_size = 32
    c.model.name = "resnet_cifar"
    c.model.stage_sizes = (1, 1, 1)
    c.model.width = 16
    c.optimizer.name = "sgd"
    c.optimizer.momentum = 0.9
    c.optimizer.weight_decay = 5e-4
    c.schedule.name = "cosine"  # decays to 0: the last steps settle instead of bouncing at a high LR
    c.schedule.lr = 0.05
    c.schedule.warmup_steps = 5
    c.train.steps = steps
    c.train.eval_every = 20
    c.train.log_every = 20
    c.train.checkpoint_every = 1000  # runs take seconds: a checkpoint at the end only
    c.wandb.mode = "disabled"
    return c


def with_source(c, classes=SOURCE_CLASSES):
    """c with init=source: the same model trained from scratch on all training images of `classes` for 5
    epochs, with the run's seed (source.seed = -1): one source model per seed and workdir (the sweep keys it
    by its config), so an interval over seeds holds the source model's variance as well as the target run's."""
    source = copy_config(c)
    source.name = f"{c.name}-source"
    source.data.classes = tuple(classes)
    for key, value in dict(train_examples=0, per_class=0, imbalance_ratio=1.0, balance="none").items():
        source.data[key] = value
    source.init = "scratch"
    source.seed = RUN_SEED
    source.frozen_depth = 0
    source.evals = base_config().evals
    source.train.steps = 0
    source.train.epochs = 5
    source.train.eval_every = 0  # once per epoch
    c.init = "source"
    c.source = source
    return c


def chance(df: pd.DataFrame, where=None, default: float = CHANCE) -> float:
    """The per-class chance of the runs matching `where` (a stats.matches dict; None: every row): the mean over
    them of 1/num_classes (their results rows' column), which is the balanced accuracy of a constant prediction,
    and of an analysis's mean over runs of targets with different class counts. `default` (the digits' 1/5)
    where the rows carry no num_classes (a workdir written before the column) or none match."""
    if where:
        df = df[stats.matches(df, where)]
    if "num_classes" not in df:
        return default
    n = pd.to_numeric(df["num_classes"], errors="coerce")
    n = n[n > 0]
    return float((1.0 / n).mean()) if len(n) else default


def text(module, key: str, digits: str) -> str:
    """A piece of an analysis's text that names the data (e.g. the target in a table's title): `digits`, the
    digits' wording, unless the config module in use (experiments/NAME/paper.py) gives TEXTS[key]."""
    return getattr(module, "TEXTS", {}).get(key, digits)
