"""Checking a config before any work (`validate`, `check_initial_weights`): every check that needs no
training, each raising a ConfigError that names the key.

Each check lives in one place. `validate` is the one run before any run starts: a sweep validates all its runs
first, and `trainer.run` calls `validate_once`, which validates a config this process has not yet passed (by its
content), so a run started directly is checked the same way and a sweep's runs are not checked again. The run's
length is computed here as the run computes it (strategies.run_length over the drawn training set), so the
strategy's phases and schedules are checked over it (a two_phase boundary past the last step, gradual
unfreezing that the run ends before frozen_depth); the run's setup (tl_research.run.setup) plans again with the
built model's parameter paths."""
from __future__ import annotations

import math
import functools
import hashlib
import json
import pathlib

import ml_collections

from tl_research import models, tasks
from tl_research.checkpoints.initial import init_weights
from tl_research.config.defaults import AUTO_FREE_FRACTION, AUTO_MAX_GB, OPTIMIZERS, WANDB_MODES
from tl_research.config.loading import import_extensions
from tl_research.config.overrides import RUN_SEED, copy_config, resolve_source_seed
from tl_research.core import sharding
from tl_research.core.errors import ConfigError
from tl_research.data import pipeline, sampling
from tl_research.evals import evaluators
from tl_research.finetune import recipes, schedules, strategies
from tl_research.finetune.regularizers import co_tuning
from tl_research.finetune.freezing import resolve_frozen_depth
from tl_research.finetune import range_test as lr_range


def _check_cadences_and_batches(config, err) -> None:
    for key in ("batch_size", "eval_batch_size"):
        if config.data[key] <= 0:
            raise err(f"data.{key}", config.data[key], "a positive number of examples")
    for key in ("eval_every", "checkpoint_every"):
        if config.train[key] < 0:
            raise err(f"train.{key}", config.train[key], "0 (the default cadence) or a positive number of steps")
    if not config.train.checkpoint_seconds >= 0:
        raise err("train.checkpoint_seconds", config.train.checkpoint_seconds,
                  "0 (a checkpoint at every eval) or a positive number of seconds between checkpoints")


def _check_seed(config, err) -> None:
    """seed: an integer >= 0 (a source's -1, "the run's seed", is filled in before its source is checked)."""
    seed = config.seed
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise err("seed", seed, f"an integer >= 0 (source.seed also {RUN_SEED}: the run's seed)")


@functools.lru_cache(maxsize=64)
def _training_examples(data_json: str, seed: int) -> int:
    """The size of a run's training set (its class and example subsets drawn, as the run draws them); the
    subsets' own checks (e.g. data.per_class above a class's size) raise here, before any run trains."""
    cfg = ml_collections.ConfigDict(json.loads(data_json))
    cfg.cache_mb = 0  # labels only: no image is decoded
    # which examples a split holds does not depend on the input size, which for a folder of mixed sizes comes
    # from the starting weights' metadata, read later
    cfg.image_size = cfg.image_size or 32
    return len(pipeline.load(cfg, seed=seed).train)


def check_initial_weights(config, *, prefix: str = "") -> None:
    """Loads the weights config.init names (and its source run's) and fits them to config.model: a bad
    file or another architecture stops the command here, before any run (a source model's included)
    trains. After validate(), which checks that they exist."""
    if config.init == "source":
        check_initial_weights(config.source, prefix=prefix + "source.")
    elif config.init != "scratch":
        why = _init_problem(config.init, config.model.to_json(), config.strategy.to_json())
        if why:
            raise ConfigError(prefix + "init", config.init, "weights that load and fit config.model (a weights "
                              "or finished run directory, keras:PATH, torch:PATH, npz:PATH)", why=why)
        if config.strategy.regularizer == "co_tuning":  # the source classifier it keeps as a second head
            co_tuning.check_weights(config, init_weights(config.init, config.model)[0], prefix=prefix)


@functools.lru_cache(maxsize=16)
def _init_problem(init: str, model_json: str, strategy_json: str) -> str:
    """Why the weights `init` names cannot start a run of this model and strategy ('' when they can): nothing
    there, a file cut short, arrays of other shapes, another architecture, parameters an earlier run's strategy
    added that this run's does not (strategies.added). Loaded here, before any run trains."""
    from tl_research.checkpoints import weights as weights_lib
    model_cfg = ml_collections.ConfigDict(json.loads(model_json))
    try:
        weights, _ = init_weights(init, model_cfg)
        weights, added = strategies.added.split(weights, model_cfg)
        # the head is re-initialised either way, so 2 classes and 3 channels (adapted to the data's) do
        model = models.zeros(model_cfg, 2, 3)
        weights_lib.transfer(model, weights)
        if added:  # the strategy's extension, as the run will make it (shapes do not depend on the seed)
            cfg = ml_collections.ConfigDict(dict(model=model_cfg, strategy=json.loads(strategy_json), seed=0))
            strategies.added.load(strategies.extend(model, cfg), added, cfg)
    except ConfigError:
        raise  # e.g. a directory without weights, named as such
    except Exception as e:  # noqa: BLE001 - a converter's or orbax's error on a bad file, as one line
        lines = [line.strip() for line in str(e).strip().splitlines() if line.strip()]
        return f"{type(e).__name__}: {(lines[0] if lines else '')[:200]}"
    return ""


@functools.lru_cache(maxsize=64)
def _num_units(model_json: str) -> int:
    cfg = ml_collections.ConfigDict(json.loads(model_json))
    return models.abstract(cfg, 2, 3).num_units


_CLASSES: dict[tuple, tuple] = {}  # (the data keys read, the targets' id) -> (targets, number of classes)


def _num_classes(data_cfg, targets) -> int:
    """The classes of the dataset data_cfg names, as `targets` (a task's target_spec) reads them; memoised per
    process by the keys it reads (a folder dataset's builder checks its photos each time it is made)."""
    fields = ("name", "data_dir", "label_key", "image_key", "mask_key", "objects_key")
    key = (*(data_cfg[k] for k in fields), id(targets))
    if key not in _CLASSES:  # the targets are kept with the count, so their id is not reused
        cfg = pipeline.default_config()
        for k in fields:
            cfg[k] = data_cfg[k]
        cfg.targets = targets.name
        _CLASSES[key] = (targets, pipeline.num_classes(cfg, targets=targets))
    return _CLASSES[key][1]


_PASSED: set[str] = set()  # the content digests of the configs validate() passed in this process


def _digest(config) -> str:
    return hashlib.sha1(config.to_json().encode()).hexdigest()


def validate_once(config) -> None:
    """validate(config), unless this process has already passed a config with the same content (a sweep's
    runs, validated before any starts; a resumed run): trainer.run's check before any work."""
    if _digest(config) not in _PASSED:
        validate(config)


def validate(config, *, prefix: str = "") -> None:
    """Every check that needs no training: raises ConfigError naming the key before any work starts."""
    digest = _digest(config)
    def err(key, value, allowed, why=""):
        return ConfigError(prefix + key, value, allowed, why)

    import_extensions(config)  # first: the names it registers are what the checks below allow
    try:
        _check_seed(config, err)
        if config.model.name not in models.names():
            raise err("model.name", config.model.name, ", ".join(models.names()))
        units = _num_units(config.model.to_json())
        resolve_frozen_depth(config.frozen_depth, units)
        _check_transfer_depth(config, units, err)
        schedules.build(config.schedule, 10**7, 1000)  # the real run length is checked again in setup
        strategies.check(config)
        recipes.check(config)  # weight EMA, SAM
        lr_range.check(config.lr_range)
        sharding.check(config)  # mesh, sharding rules, precision, accumulation, batch sizes vs the devices
        evaluators.check(config.evals)
        if config.optimizer.name not in OPTIMIZERS:
            raise err("optimizer.name", config.optimizer.name, ", ".join(OPTIMIZERS))
        if config.wandb.mode not in WANDB_MODES:
            raise err("wandb.mode", config.wandb.mode, ", ".join(WANDB_MODES))
        tasks.check(config)  # config.task, data.targets, the head's keys, the options a dense task refuses
        task = tasks.of(config)
        config = tasks.resolved(config)  # not resolved yet (a copy then): check what the run will read
        tasks.selection_metric(config)
        if config.train.steps < 0 or (config.train.steps == 0 and config.train.epochs <= 0):
            raise err("train.steps", config.train.steps, "a positive number of steps, or train.epochs > 0")
        for key in ("log_every",):
            if config.train[key] <= 0:
                raise err(f"train.{key}", config.train[key], "a positive number of steps")
        _check_cadences_and_batches(config, err)
        check_feature_cache(config)
        if config.train.class_weights not in sampling.WEIGHTINGS:
            raise err("train.class_weights", config.train.class_weights, ", ".join(sampling.WEIGHTINGS))
        if config.train.class_weights_norm not in sampling.NORMS:
            raise err("train.class_weights_norm", config.train.class_weights_norm, ", ".join(sampling.NORMS))
        if not 0.0 <= config.train.class_weights_beta < 1.0:
            raise err("train.class_weights_beta", config.train.class_weights_beta, "0 <= beta < 1")
        pipeline.check_subset_config(config.data, task.target_spec)
        task.parse_augment(tuple(config.augment))  # the ops its objective applies
        num_classes = _num_classes(config.data, task.target_spec)
        bad = [c for c in config.data.classes if not (isinstance(c, int) and 0 <= c < num_classes)]
        if bad or len(set(config.data.classes)) != len(config.data.classes) or len(config.data.classes) == 1:
            raise err("data.classes", tuple(config.data.classes),
                      f"() for all, or two or more distinct class ids in 0..{num_classes - 1}")
        n_train = _training_examples(config.data.to_json(), config.seed)  # data.per_class checked there
        # A few-shot subset (data.per_class, data.train_examples) repeats its examples within a batch, as the
        # few-shot protocols do (BiT: batch 512 at 1 example per class); a whole split never needs to.
        subset = config.data.per_class or config.data.train_examples
        if config.data.batch_size > n_train and not subset:
            raise err("data.batch_size", config.data.batch_size, f"at most the {n_train} training examples "
                      "(or a data.per_class / data.train_examples subset, whose batches repeat examples)")
        # the run's length is known now: the strategy's phases and schedules over it, and what they leave undone
        total, per_epoch = strategies.run_length(config.train, config.data.batch_size, n_train)
        strategies.check_plan(config, num_units=units, frozen_depth=resolve_frozen_depth(config.frozen_depth, units),
                              total_steps=total, steps_per_epoch=per_epoch)
        init = config.init
        fmt, sep, path = init.partition(":")
        if init == "source":
            if config.source is None:
                raise err("init", init, "'source' together with a config.source run config")
            unresolved = config.source.seed == RUN_SEED  # a config that skipped apply_overrides
            validate(resolve_source_seed(copy_config(config)).source if unresolved else config.source,
                     prefix=prefix + "source.")
        elif sep and fmt in ("keras", "torch", "npz"):
            if not pathlib.Path(path).is_file():
                raise err("init", init, f"{fmt}:PATH with an existing file", why="file not found")
        elif init != "scratch" and not pathlib.Path(init).is_dir():
            raise err("init", init, "scratch, source, a weights or run directory, keras:PATH, torch:PATH, "
                                    "npz:PATH", why="no such directory")

    except ConfigError as e:
        if prefix and not e.key.startswith(prefix):
            raise ConfigError(prefix + e.key, e.value, e.allowed) from None
        raise
    _PASSED.add(digest)


def check_feature_cache(config) -> None:
    """ConfigError for a train.feature_cache that is not a bool, a train.feature_cache_max_gb that is not >= 0."""
    value = config.train.get("feature_cache", True)
    if not isinstance(value, bool):
        raise ConfigError("train.feature_cache", value, "True (train on cached frozen-prefix activations where "
                          "that is exact) or False (always from the images)")
    cap = config.train.get("feature_cache_max_gb", 0.0)
    if isinstance(cap, bool) or not isinstance(cap, (int, float)) or not math.isfinite(cap) or cap < 0:
        raise ConfigError("train.feature_cache_max_gb", cap, "a size in GB > 0, or 0 (automatic: the smaller of "
                          f"{AUTO_MAX_GB:g} GB and {AUTO_FREE_FRACTION:.0%} of the workdir's free space)")


def _check_transfer_depth(config, units: int, err) -> None:
    """transfer_depth: -1 (every unit loaded) or 0..units, and only with initial weights to load from."""
    n = config.get("transfer_depth", -1)
    if isinstance(n, bool) or not isinstance(n, int) or not -1 <= n <= units:
        raise err("transfer_depth", n, f"-1 (every unit) or 0..{units} (this model has {units} depth units)")
    if n != -1 and config.init == "scratch":
        raise err("transfer_depth", n, "-1 with init='scratch'", why="there are no initial weights to load")
