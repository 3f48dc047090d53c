"""The base run config: every key a run understands, with its default (`base_config`).

Config files start from `base_config()`; a key not set here is refused (the config is locked, see loading.py).
A key added here after workdirs exist needs an entry in run_identity.INTRODUCED or run_identity.NEUTRAL
(tests/test_config_keys.py checks it).
"""
from __future__ import annotations

import ml_collections
from ml_collections import config_dict

from tl_research import models
from tl_research.core import sharding
from tl_research.data import pipeline
from tl_research.evals import evaluators
from tl_research.finetune import schedules, strategies
from tl_research.tasks import base as tasks_base
from tl_research.tasks.detection import head as centernet
from tl_research.tasks.segmentation import head as decoders
from tl_research.finetune import range_test as lr_range

OPTIMIZERS = ("sgd", "adam")  # as freezing.OPTIMIZERS: adam with weight_decay > 0 is AdamW
WANDB_MODES = ("offline", "online", "disabled")
# train.feature_cache_max_gb=0 (automatic): the smaller of AUTO_MAX_GB and AUTO_FREE_FRACTION of the space the
# feature cache may take (tl_research/run/feature_cache.py)
AUTO_MAX_GB, AUTO_FREE_FRACTION = 50.0, 0.25


def base_config() -> ml_collections.ConfigDict:
    """Every key a run understands, with its default. Config files start from this."""
    c = ml_collections.ConfigDict()
    c.name = "run"  # the sweep's name: W&B group and default workdir runs/<name>
    c.seed = 0
    c.label = ""  # a free-form name for a run's variant (e.g. a strategy recipe); tables can group by it
    # modules (dotted names on sys.path) or .py files (absolute, or relative to the directory a launch starts
    # in) imported before any check, in every process that reads this config (launcher, workers, SLURM tasks):
    # where strategies, tasks and datasets registered from outside the package come from (docs/extending.md)
    c.imports = ()
    # what the run predicts (tl_research/tasks): "classification" (an image-level class), "segmentation" (a
    # class per pixel: model.decoder on the depth units, mean IoU) or "detection" (boxes: a CenterNet head,
    # COCO mAP). It sets data.targets (label, segmentation, detection) when that is left at "label".
    c.task = tasks_base.DEFAULT  # "classification"
    c.data = pipeline.default_config()
    # More test sets, by built-in dataset name (e.g. ("mnist_m", "mnist_inverted")): shorthand that
    # apply_overrides expands into c.evals.test_NAME = dict(type="classification", data=NAME, split="test"),
    # so each run reports `test_NAME_accuracy` (and balanced accuracy, macro-F1) next to its own test set.
    c.data.extra_test_sets = ()
    c.model = models.default_config()
    # segmentation's head (tasks/segmentation/head.py): decoder = fcn | unet, skips = () (one per resolution) or unit
    # indices, decoder_width; detection's (tasks/detection/head.py): detect_unit (-1: the deepest with a map),
    # fpn_units (() or two or more units), head_width, max_detections. Unused by classification.
    c.model.update(decoders.default_config())
    c.model.update(centernet.default_config())
    # 'scratch' | 'source' (train config.source first, once per workdir) | a weights or run directory
    # | 'keras:PATH' | 'torch:PATH' | 'npz:PATH' (converted on the fly)
    c.init = "scratch"
    c.source = config_dict.placeholder(ml_collections.ConfigDict)  # the source run, for init='source'
    # int k: units 0..k-1 frozen; -1 or 'all': a linear probe. Typed `object` so that both kinds fit.
    c.frozen_depth = config_dict.FieldReference(0, field_type=object)
    # With init from weights: load depth units 0..n-1 only; units n and above start fresh from config.seed, as
    # the head does (Yosinski et al.'s AnB / AnB+ re-initialise the layers above n). -1: every unit loaded.
    c.transfer_depth = -1
    c.schedule = schedules.default_config()
    # how the run fine-tunes: phases (two_phase, gradual_unfreezing), discriminative LRs, regulariser, BN
    c.strategy = strategies.default_config()
    c.optimizer = ml_collections.ConfigDict(dict(
        name="sgd",  # sgd (with momentum) | adam (AdamW when weight_decay > 0: the decay is decoupled)
        momentum=0.9, nesterov=False, b1=0.9, b2=0.999, eps=1e-8,
        weight_decay=0.0,  # decoupled, times the LR; every trainable *.kernel, the head's too (freezing.decays)
        grad_clip=0.0,  # global gradient norm clip; 0 = off
        # SAM (Foret et al. 2021): the gradient taken again at w + rho g / ||g|| over the trainable parameters,
        # applied at w by the optimizer above (two passes a step); 0 = off. sam_adaptive: ASAM (Kwon et al.
        # 2021, rho w^2 g / ||w g||; larger radii, e.g. 0.5). See tl_research/finetune/recipes.py
        sam_rho=0.0, sam_adaptive=False,
    ))
    # Scaling out (tl_research/core/sharding.py): the device mesh, ((axis, size), ...) with axes data and fsdp (one
    # size -1: the devices left; batches split over both), e.g. (("data", 2), ("fsdp", 4)) on 8 devices; the
    # parameter placement, ((regex over dotted parameter names, "replicate" | "fsdp"), ...), first match
    # wins and every parameter must match one; the compute precision, "float32" | "bfloat16" (parameters,
    # optimizer state, loss and BatchNorm statistics stay float32).
    c.mesh = sharding.DEFAULT_MESH
    c.sharding = sharding.DEFAULT_RULES
    c.precision = "float32"
    c.augment = ()  # ordered on-device augmentation ops, e.g. ("flip", "crop(4)"); see data/augment.py
    c.train = _train_config()
    # Extra evaluators, by name (tl_research/evals/evaluators.py); none by default. Each is a dict with a `type` and
    #   every: 0 = at every validation eval | k > 0 = every k steps | -1 = only at the end
    # type="fewshot": the closed-form few-shot linear probe on the model's frozen penultimate features
    #   shots=(1, 5, 10, 25) (training examples per class), seeds=3 (draws per shot count; the metric is their
    #   mean), l2_reg=2**10 (ridge strength on whitened features), e.g.
    #   c.evals.fewshot = dict(type="fewshot", every=0, shots=(1, 5, 10, 25), seeds=3, l2_reg=2.0 ** 10)
    # type="logreg": Kornblith et al.'s fixed-feature L-BFGS logistic regression probe (evals/logreg.py: cs,
    #   max_iter, max_examples; every=-1 by default), e.g. c.evals.logreg = dict(type="logreg")
    # type="classification": accuracy, loss, balanced_accuracy, macro_f1 of one more split
    #   split="test": train | val | test (the run's own, as it selected them) or a TFDS split string
    #   data="": the run's dataset, or another data.name with the same classes (read with the run's data
    #   settings and image shape), e.g. c.evals.test_b = dict(type="classification", split="test", data="X")
    # Logged to metrics.jsonl and W&B as "{name}/{metric}" (e.g. fewshot/10shot_accuracy); the values at the
    # weights the run reports (see train.restore_best) go into the result as "{name}_{metric}".
    c.evals = evaluators.default_config()
    c.lr_range = lr_range.default_config()  # launch.py --lr_range_test: see tl_research/run/lr_range.py
    c.wandb = ml_collections.ConfigDict(dict(mode="offline", project="tl_research", entity="", tags=()))
    c.report = _report_config()
    # Locked: a config file that sets a key not listed here (a typo) fails, naming the closest key
    # (read_config). config.evals stays open: its entries are named by the config file.
    c.lock()
    c.evals.unlock()
    return c


def _train_config() -> ml_collections.ConfigDict:
    """The `config.train` block: run length, cadences, loss options, selection."""
    return ml_collections.ConfigDict(dict(
        steps=0,  # total steps; 0 = from epochs
        epochs=5.0,
        log_every=10,
        eval_every=0,  # steps between validation evals; 0 = once per epoch
        # steps between checkpoints; 0 = at every eval; none at the last step (the run's result follows)
        checkpoint_every=0,
        # with checkpoint_every=0: after a run's first checkpoint, one at most every this many seconds (0: at
        # every eval). It bounds what a resume redoes, never what it computes: any value trains the same run
        checkpoint_seconds=60.0,
        label_smoothing=0.0,
        class_weights="none",  # loss weight per class: none | inverse (frequency) | effective (Cui et al. 2019)
        class_weights_beta=0.999,  # effective: beta of the effective number (1 - beta^n) / (1 - beta)
        # classes: mean weight 1 over the classes (Cui et al.); examples: mean weight 1 over the training
        # examples, so the loss's scale, and the effective learning rate, stay those of the unweighted loss
        class_weights_norm="classes",
        # segmentation: the loss weight of a background (class 0) pixel, every other pixel's being 1; below 1
        # it counters the background's share of the pixels (the eval loss stays the plain mean)
        background_weight=1.0,
        early_stopping_patience=0,  # evals without improvement before stopping; 0 = never stop early
        # the validation metric that selects the best step: "" = the task's (val_accuracy, val_miou, val_map)
        # | val_loss
        early_stopping_metric="",
        restore_best=True,  # report test metrics at the best validation step (else at the last step)
        eval_test=False,  # also evaluate test at every eval (a test-accuracy curve; never used for selection)
        # micro-batches per step: each global batch is split in k whose gradients are averaged before one
        # update (less memory, the same update without BatchNorm; BatchNorm sees micro-batch statistics and
        # updates its running ones k times a step). data.batch_size must divide by k x the batch devices.
        accumulate=1,
        # train the trainable units on the frozen prefix's activations, computed once per (weights, data,
        # preprocessing, depth) and shared by a sweep's runs, where that is exact (tl_research.run.feature_cache:
        # frozen depth >= 1, classification, no augmentation); the result equals the path from the images
        feature_cache=True,
        # the most the workdir's feature_cache/ folder holds on disk, in GB (least recently used entries are
        # evicted to make room; a run whose entries exceed it trains from the images and says why); 0 =
        # automatic: the smaller of 50 GB and 25% of the file system's free space. Where activations come
        # from, never what a run computes
        feature_cache_max_gb=0.0,
        # XLA's deterministic GPU ops (the same run gives the same bits on the same GPU; slower: scatters and
        # reductions lose their atomics). Set for the process before JAX starts, so one value per sweep; a
        # CPU run is deterministic already (one core each: sweep_job.pin_cpu_run)
        deterministic=False,
        # Weight EMA (Polyak averaging, timm's ModelEmaV2): after each update ema += (1 - decay) (w - ema) over
        # the trainable parameters and the BatchNorm statistics, from the initial weights; 0 = off, e.g.
        # 0.999. ema_warmup: timm ModelEmaV3's warmup, decay min(ema_decay, 1 - t^(-2/3)) at update t.
        # ema_select: which weights select the best step, are tested and exported, "raw" | "ema" (with the EMA
        # on, every eval measures both: ema_val_* beside val_*). See tl_research/finetune/recipes.py
        ema_decay=0.0, ema_warmup=False, ema_select="raw",
    ))


def _report_config() -> ml_collections.ConfigDict:
    """The `config.report` block: how results.csv becomes table.md, table.tex and plot.png."""
    # How results.csv becomes table.md and plot.png: x axis, one line per series, the metric.
    report = ml_collections.ConfigDict(dict(x="frozen_depth", series=("init",), metric="test_accuracy"))
    # The tables of table.md / table.tex, in order (results.REPORT_TABLES): "mean" (mean ± std per setting),
    # "gain" (metric minus the report.baseline runs', paired by seed), "similarity" (report.x values ordered
    # by domain similarity, with its rank correlation to the metric), "schedules" (per schedule: the LR chosen
    # on validation, best/final test accuracy, steps to reach the constant LR's best; needs train.eval_test).
    report.tables = ("mean",)
    report.baseline = ""  # for "gain": the runs gains are measured against, "KEY=VALUE" with KEY in series
    # Cui et al. 2018's domain similarity of each run's target data to its source model's training data, on the
    # source model's features (tl_research.analysis.domain_similarity): a results column; cached in the workdir.
    report.similarity = False
    report.similarity_gamma = 0.01  # sim = exp(-gamma * EMD)
    report.similarity_features = ""  # a run directory (e.g. "sources/<hash>"): one common feature extractor
    # Transferability scores of each run's source model on its target, computed after the runs from one pass
    # over the target's training split (tl_research.analysis.transferability): any of "logme", "leep", "nce",
    # "hscore", "hscore_lw" (Ledoit-Wolf-shrunk H-score), "fewshot", "similarity"; () = off. Writes
    # transferability.csv (per source, target and depth unit) and transferability.md (each score's rank
    # correlation with the measured fine-tuned and linear-probe metric; per-layer scores against the best
    # measured frozen depth). Cached in the workdir's transferability/.
    report.transferability = ()
    report.transferability_examples = 20000  # at most this many training examples per target (0: all)
    return report
