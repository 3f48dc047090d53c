"""Configs: the base run config, command-line overrides, sweep axes and run ids.

A config file is a Python module with `get_config(arg=None) -> ConfigDict` (built from `base_config()`) and,
optionally, `get_sweep(arg=None) -> list[dict]`: one dict of {dotted key: value} per run, built with the axis
helpers below. Both are called with the ARG of `--config FILE:ARG`, or with no argument
(tl_research/command_line.py reads the command line). A config is read once, validated once and passed down.
"""
from __future__ import annotations

import ast
import copy
import difflib
import functools
import hashlib
import importlib.util
import itertools
import json
import pathlib
import re
from typing import Any, Iterable

import ml_collections
from ml_collections import config_dict

from tl_research.evals import evaluators

from tl_research.run import feature_cache, lr_range

from tl_research import models, tasks

from tl_research.finetune import schedules, strategies

from tl_research.core import sharding
from tl_research.data import pipeline
from tl_research.tasks.detection import head as centernet
from tl_research.tasks.segmentation import head as decoders
from tl_research.core.errors import ConfigError
from tl_research.finetune.freezing import resolve_frozen_depth  # noqa: F401 - also config.resolve_frozen_depth

OPTIMIZERS = ("sgd", "adam")  # as freezing.OPTIMIZERS: adam with weight_decay > 0 is AdamW
WANDB_MODES = ("offline", "online", "disabled")


def base_config() -> ml_collections.ConfigDict:
    """Every key a run understands, with its default. Config files start from this."""
    c = ml_collections.ConfigDict()
    c.name = "run"  # the sweep's name: W&B group and default workdir runs/<name>
    c.seed = 0
    c.label = ""  # a free-form name for a run's variant (e.g. a strategy recipe); tables can group by it
    # what the run predicts (tl_research/tasks): "classification" (an image-level class), "segmentation" (a
    # class per pixel: model.decoder on the depth units, mean IoU) or "detection" (boxes: a CenterNet head,
    # COCO mAP). It sets data.targets (label, segmentation, detection) when that is left at "label".
    c.task = "classification"
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
    c.schedule = schedules.default_config()
    # how the run fine-tunes: phases (two_phase, gradual_unfreezing), discriminative LRs, regulariser, BN
    c.strategy = strategies.default_config()
    c.optimizer = ml_collections.ConfigDict(dict(
        name="sgd",  # sgd (with momentum) | adam (AdamW when weight_decay > 0: the decay is decoupled)
        momentum=0.9, nesterov=False, b1=0.9, b2=0.999, eps=1e-8,
        weight_decay=0.0,  # decoupled (Loshchilov & Hutter 2019), times the LR; kernels of trainable units only
        grad_clip=0.0,  # global gradient norm clip; 0 = off
    ))
    # Scaling out (tl_research/sharding.py): the device mesh, ((axis, size), ...) with axes data and fsdp (one
    # size -1: the devices left; batches split over both), e.g. (("data", 2), ("fsdp", 4)) on 8 devices; the
    # parameter placement, ((regex over dotted parameter names, "replicate" | "fsdp"), ...), first match
    # wins and every parameter must match one; the compute precision, "float32" | "bfloat16" (parameters,
    # optimizer state, loss and BatchNorm statistics stay float32).
    c.mesh = sharding.DEFAULT_MESH
    c.sharding = sharding.DEFAULT_RULES
    c.precision = "float32"
    c.augment = ()  # ordered on-device augmentation ops, e.g. ("flip", "crop(4)"); see data/augment.py
    c.train = _train_config()
    # Extra evaluators, by name (tl_research/evaluators.py); none by default. Each is a dict with a `type` and
    #   every: 0 = at every validation eval | k > 0 = every k steps | -1 = only at the end
    # type="fewshot": the closed-form few-shot linear probe on the model's frozen penultimate features
    #   shots=(1, 5, 10, 25) (training examples per class), seeds=3 (draws per shot count; the metric is their
    #   mean), l2_reg=2**10 (ridge strength on whitened features), e.g.
    #   c.evals.fewshot = dict(type="fewshot", every=0, shots=(1, 5, 10, 25), seeds=3, l2_reg=2.0 ** 10)
    # type="classification": accuracy, loss, balanced_accuracy, macro_f1 of one more split
    #   split="test": train | val | test (the run's own, as it selected them) or a TFDS split string
    #   data="": the run's dataset, or another data.name with the same classes (read with the run's data
    #   settings and image shape), e.g. c.evals.test_b = dict(type="classification", split="test", data="X")
    # Logged to metrics.jsonl and W&B as "{name}/{metric}" (e.g. fewshot/10shot_accuracy); the values at the
    # weights the run reports (see train.restore_best) go into the result as "{name}_{metric}".
    c.evals = evaluators.default_config()
    c.lr_range = lr_range.default_config()  # launch.py --lr_range_test: see tl_research/lr_range.py
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
    return report


# ---------------------------------------------------------------------------------------------- overrides

def _get(config: ml_collections.ConfigDict, key: str, value: Any = "?"):
    """config[key] for a dotted key; ConfigError naming the closest existing key (a typo's likely target,
    matched as ConfigDict's own KeyError suggests one) and the keys around it otherwise."""
    node = config
    parts = key.split(".")
    for i, p in enumerate(parts):
        if not isinstance(node, ml_collections.ConfigDict) or p not in node:
            parent = ".".join(parts[:i]) or "config"
            keys = sorted(node.keys()) if isinstance(node, ml_collections.ConfigDict) else []
            close = difflib.get_close_matches(p, keys, n=1)
            closest = f"{'.'.join([*parts[:i], close[0]])} (the closest) or " if close else ""
            raise ConfigError(key, value, f"{closest}a key of {parent}: {', '.join(keys)}", why="no such key")
        node = node[p]
    return node


def set_value(config: ml_collections.ConfigDict, key: str, value: Any) -> None:
    """config[key] = value for a dotted key that must exist; the value must fit the key's type."""
    old = _get(config, key, value)
    *parents, leaf = key.split(".")
    node = config
    for p in parents:
        node = node[p]
    if isinstance(value, list):
        value = tuple(value)
    if isinstance(old, ml_collections.ConfigDict) and isinstance(value, dict):
        for k, v in value.items():
            set_value(config, f"{key}.{k}", v)
        return
    try:
        node[leaf] = value
    except (TypeError, ValueError) as e:
        kind = type(old).__name__
        raise ConfigError(key, value, f"a value of type {kind}", why=str(e).split(".")[0][:80]) from None


def parse_value(text: str) -> Any:
    """A command-line value: a Python literal (1, 0.1, (5, 6), True, None) or else the bare string."""
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError):
        return text


def apply_overrides(config, overrides: dict[str, Any]) -> ml_collections.ConfigDict:
    config = copy_config(config)
    for key, value in overrides.items():
        set_value(config, key, value)
    resolve_task_targets(config)
    return expand_extra_test_sets(config)


def resolve_task_targets(config) -> None:
    """data.targets from config.task, in the run's config and its source's (tasks.resolve_targets)."""
    tasks.resolve_targets(config)
    if config.get("source") is not None:
        resolve_task_targets(config.source)


def expand_extra_test_sets(config) -> ml_collections.ConfigDict:
    """data.extra_test_sets -> one classification evaluator per name (kept in the config: config.json shows
    what ran). An evaluator of that name the config sets itself is left as it is."""
    for name in config.data.get("extra_test_sets", ()):
        if not isinstance(name, str) or not name:
            raise ConfigError("data.extra_test_sets", tuple(config.data.extra_test_sets),
                              "a tuple of dataset names with the run's classes, e.g. ('mnist_m',)")
        key = "test_" + re.sub(r"[^A-Za-z0-9_]+", "_", name)
        if key not in config.evals:
            config.evals[key] = dict(type="classification", data=name, split="test", every=-1)
    return config


def copy_config(config) -> ml_collections.ConfigDict:
    """An independent copy that keeps each field's declared type (copy_and_resolve_references would narrow
    `frozen_depth` to the type of its current value) and the lock of every block: a copy made in a config
    file (e.g. a source run's) refuses unknown keys as the original does."""
    return copy.deepcopy(config)


# ---------------------------------------------------------------------------------------------- sweeps

Points = list[dict[str, Any]]


def axis(key: str, values: Iterable) -> Points:
    """One sweep axis: a run per value of `key`."""
    return [{key: v} for v in values]


def product(*axes: Points) -> Points:
    """Every combination of the axes (the last varies fastest)."""
    out = []
    for combo in itertools.product(*axes):
        point: dict[str, Any] = {}
        for part in combo:
            point.update(part)
        out.append(point)
    return out


def zip_axes(*axes: Points) -> Points:
    """Axes of equal length, walked together."""
    lengths = {len(a) for a in axes}
    if len(lengths) > 1:
        raise ValueError(f"zip_axes needs axes of equal length, got {sorted(lengths)}")
    return [{k: v for part in parts for k, v in part.items()} for parts in zip(*axes)]


def chain(*axes: Points) -> Points:
    """The runs of several sweeps, one after the other."""
    return [dict(p) for a in axes for p in a]


def _slug(value: Any) -> str:
    text = json.dumps(value) if not isinstance(value, str) else value
    return re.sub(r"[^A-Za-z0-9.\-]+", "_", text).strip("_") or "_"


def run_id(point: dict[str, Any]) -> str:
    """A stable, readable id from a run's swept values (order-independent); 'run' for a single run."""
    if not point:
        return "run"
    text = "__".join(f"{k}-{_slug(v)}" for k, v in sorted(point.items()))
    if len(text) > 150:
        digest = hashlib.sha1(text.encode()).hexdigest()[:10]
        text = text[:130] + "__" + digest
    return text


def run_name(point: dict[str, Any]) -> str:
    return " ".join(f"{k}={v}" for k, v in sorted(point.items())) or "run"


# Keys added to base_config() after workdirs were made without them: each with the value that trains what the
# code trained before the key existed. A config holding that value keeps the identity it had before the key
# existed (its config_hash, so a source model is not retrained; the workdir checks, so a workdir is not
# refused), so relaunching an existing sweep after an upgrade resumes it. A key set to any other value is a
# different config, as usual.
INTRODUCED: dict[str, Any] = {"model.stem_stride": 1, "train.background_weight": 1.0,
                              "train.feature_cache": True,  # cached activations: the same results
                              "train.deterministic": False}


# Keys that never change what a run computes (how often it checkpoints, how much disk the feature cache may
# take: a run it sends to the images computes what the cached path would, up to float reassociation, and the
# automatic cap depends on the free space anyway): left out of a config's identity at every value, so
# setting one neither retrains a source model nor refuses a workdir.
NEUTRAL: frozenset[str] = frozenset({"train.checkpoint_seconds", "train.feature_cache_max_gb",
                                     "data.workers"})  # worker processes: the same batches, whatever their count


def _plain(value):
    return json.loads(json.dumps(value, default=str))


def _introduced(path: str, value) -> bool:
    while path.startswith("source."):  # a run's config holds its source model's config under source.
        path = path[len("source."):]
    return path in NEUTRAL or (path in INTRODUCED and _plain(value) == _plain(INTRODUCED[path]))


def identity(tree: dict, prefix: str = "") -> dict:
    """A config as a nested dict (ConfigDict.to_dict() or its JSON) without the INTRODUCED keys that hold
    their old-behaviour value: what decides whether two configs are the same experiment."""
    out = {}
    for key, value in tree.items():
        path = f"{prefix}{key}"
        if isinstance(value, dict):
            out[key] = identity(value, path + ".")
        elif not _introduced(path, value):
            out[key] = value
    return out


def config_hash(config) -> str:
    tree = identity(config.to_dict())
    return hashlib.sha1(json.dumps(tree, sort_keys=True, default=str).encode()).hexdigest()[:12]


# ---------------------------------------------------------------------------------------------- files

def load_module(path: str):
    """Imports a config file by path; ConfigError when there is none or it defines no get_config."""
    p = pathlib.Path(path)
    if not p.is_file():
        raise ConfigError("--config", path, "a path to a config file, e.g. configs/quickstart.py[:arg]",
                          why="no such file")
    spec = importlib.util.spec_from_file_location(f"tl_config_{p.stem}", p)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    if not hasattr(module, "get_config"):
        raise ConfigError("--config", path, "a file defining get_config(arg=None)")
    return module


def read_config(module, arg: str | None, path: str = "") -> ml_collections.ConfigDict:
    """module.get_config(arg), with its mistakes as ConfigErrors: an ARG for a get_config that takes none,
    and a key the file sets that base_config() does not have (named with the closest one)."""
    fn = module.get_config
    if arg is not None and not _takes_an_argument(fn):
        raise ConfigError("--config", f"{path}:{arg}", f"{path} without ':{arg}', or a get_config(arg=None) that "
                                                        "reads it", why="its get_config takes no argument")
    try:
        return fn(*([] if arg is None else [arg]))
    except ConfigError:
        raise
    except Exception as e:  # noqa: BLE001 - whatever the file does wrong is one line naming it
        text = (str(e).strip().splitlines() or [""])[-1][:160]
        raise _unknown_key(e, path) or ConfigError(
            "--config", path + (f":{arg}" if arg is not None else ""),
            "a config file whose get_config(arg=None) returns a ConfigDict", why=f"{type(e).__name__}: {text}"
        ) from None


def _takes_an_argument(fn) -> bool:
    import inspect
    try:
        params = inspect.signature(fn).parameters.values()
    except (TypeError, ValueError):
        return True
    return any(p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD, p.VAR_POSITIONAL) for p in params)


_LOCKED = re.compile(r'Key "([^"]+)" does not exist and cannot be added since the config is locked')


def _unknown_key(e: Exception, path: str) -> ConfigError | None:
    """The ConfigError for ConfigDict's refusal of a new key in a locked block: the dotted key (the block
    found in base_config() by its keys) and the closest existing one."""
    m = _LOCKED.search(str(e))
    if not m:
        return None
    leaf, block, value = m[1], None, f"(set in {path or 'the config file'})"
    tb = e.__traceback__
    while tb is not None:  # the innermost ConfigDict frame: the block refusing the key, and the value
        frame = tb.tb_frame
        if isinstance(frame.f_locals.get("self"), ml_collections.ConfigDict):
            block = frame.f_locals["self"]
            value = frame.f_locals.get("value", value)
        tb = tb.tb_next
    keys = sorted(block.keys()) if block is not None else []
    prefix = _block_path(base_config(), set(keys)) if keys else None
    dotted = ".".join(filter(None, [prefix, leaf]))
    close = difflib.get_close_matches(leaf, keys, n=1)
    closest = f"{'.'.join(filter(None, [prefix, close[0]]))} (the closest) or " if close else ""
    return ConfigError(dotted, value, f"{closest}a key of {prefix or 'config'}: {', '.join(keys)}",
                       why=f"no such key, set in {path or 'the config file'}")


def _block_path(node, keys: set[str], prefix: str = "") -> str | None:
    """The dotted path of the block of base_config() with exactly these keys ('' for the top level)."""
    if set(node.keys()) == keys:
        return prefix
    for k, v in node.items():
        if isinstance(v, ml_collections.ConfigDict):
            found = _block_path(v, keys, f"{prefix}.{k}" if prefix else k)
            if found is not None:
                return found
    return None


def sweep_points(module, arg: str | None, config, overrides: dict[str, Any]) -> Points:
    """The runs of a config file: its get_sweep(arg) points ([{}], one run, without one). A command-line
    override of a swept key replaces the sweep's values for that key (the user asked for that value); the
    points' keys must exist in `config`."""
    points: Points = [{}]
    if hasattr(module, "get_sweep"):
        # called as config_flags calls get_config: with the ':arg' string if the spec has one
        points = module.get_sweep(*([] if arg is None else [arg]))
        swept = {k for p in points for k in p}
        for key, value in overrides.items():
            if key in swept:
                points = [{**p, key: value} for p in points]
        # duplicates would write two rows for one run id
        seen, unique = set(), []
        for p in points:
            rid = run_id(p)
            if rid not in seen:
                seen.add(rid)
                unique.append(p)
        points = unique
    for p in points:
        for key in p:
            _get(config, key)
    return points


# ---------------------------------------------------------------------------------------------- validation

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
        why = _init_problem(config.init, config.model.to_json())
        if why:
            raise ConfigError(prefix + "init", config.init, "weights that load and fit config.model (a weights "
                              "or finished run directory, keras:PATH, torch:PATH, npz:PATH)", why=why)


@functools.lru_cache(maxsize=16)
def _init_problem(init: str, model_json: str) -> str:
    """Why the weights `init` names cannot start a run of this model ('' when they can): nothing there, a
    file cut short, arrays of other shapes, another architecture. Loaded here, before any run trains."""
    from tl_research.run import trainer
    from tl_research.checkpoints import weights as weights_lib
    model_cfg = ml_collections.ConfigDict(json.loads(model_json))
    try:
        weights, _ = trainer.init_weights(init, model_cfg)
        # the head is re-initialised either way, so 2 classes and 3 channels (adapted to the data's) do
        weights_lib.transfer(models.zeros(model_cfg, 2, 3), weights)
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


@functools.lru_cache(maxsize=16)
def _num_classes(name: str, data_dir: str, label_key: str, image_key: str, targets: str = "label",
                 mask_key: str = "segmentation_mask", objects_key: str = "objects") -> int:
    cfg = pipeline.default_config()
    cfg.name, cfg.data_dir, cfg.label_key, cfg.image_key = name, data_dir, label_key, image_key
    cfg.targets, cfg.mask_key, cfg.objects_key = targets, mask_key, objects_key
    return pipeline.num_classes(cfg)


def validate(config, *, prefix: str = "") -> None:
    """Every check that needs no training: raises ConfigError naming the key before any work starts."""
    def err(key, value, allowed, why=""):
        return ConfigError(prefix + key, value, allowed, why)

    try:
        if config.model.name not in models.names():
            raise err("model.name", config.model.name, ", ".join(models.names()))
        units = _num_units(config.model.to_json())
        resolve_frozen_depth(config.frozen_depth, units)
        schedules.build(config.schedule, 10**7, 1000)  # the real run length is checked again in setup
        strategies.check(config)
        lr_range.check(config.lr_range)
        sharding.check(config)  # mesh, sharding rules, precision, accumulation, batch sizes vs the devices
        evaluators.check(config.evals)
        if config.optimizer.name not in OPTIMIZERS:
            raise err("optimizer.name", config.optimizer.name, ", ".join(OPTIMIZERS))
        if config.wandb.mode not in WANDB_MODES:
            raise err("wandb.mode", config.wandb.mode, ", ".join(WANDB_MODES))
        tasks.check(config)  # config.task, data.targets, the head's keys, the options a dense task refuses
        if config.data.targets != tasks.of(config).targets:  # not resolved yet: check what the run will read
            config = copy_config(config)
            tasks.resolve_targets(config)
        tasks.selection_metric(config)
        if config.train.steps < 0 or (config.train.steps == 0 and config.train.epochs <= 0):
            raise err("train.steps", config.train.steps, "a positive number of steps, or train.epochs > 0")
        for key in ("log_every",):
            if config.train[key] <= 0:
                raise err(f"train.{key}", config.train[key], "a positive number of steps")
        _check_cadences_and_batches(config, err)
        feature_cache.check(config)
        if config.train.class_weights not in ("none", "inverse", "effective"):
            raise err("train.class_weights", config.train.class_weights, "none, inverse, effective")
        pipeline.check_subset_config(config.data)
        if config.augment:
            from tl_research.data import augment
            augment.parse(tuple(config.augment))
        num_classes = _num_classes(config.data.name, config.data.data_dir, config.data.label_key,
                                   config.data.image_key, config.data.targets, config.data.mask_key,
                                   config.data.objects_key)
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
        init = config.init
        fmt, sep, path = init.partition(":")
        if init == "source":
            if config.source is None:
                raise err("init", init, "'source' together with a config.source run config")
            validate(config.source, prefix=prefix + "source.")
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
