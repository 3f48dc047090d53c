"""Cui et al. 2018's domain similarity of a run's target data to the data its source model was trained on,
measured with that source model: the `domain_similarity` column of a sweep (`report.similarity = True`), and
what the command `python -m tl_research.similarity_command` measures.

A run's source model is its own: `init='source'` (the workdir's source model, WORKDIR/sources/<hash>) or
`init=` a run directory (config.json and weights/). Runs from scratch have no source model; converted
checkpoints (keras:, torch:, npz:, a weights directory outside a run) carry no record of their training data,
so there is nothing to compare with: both are refused by `report.similarity` and by the command.

What is measured (similarity.py): the source model's class-mean penultimate features over its own training
examples (the source run's data config and seed) and over the target's training examples (the run's data
config and seed, so its training subset if it has one), target images brought to the source's input size and
channels; classes weighted by their image counts; sim = exp(-gamma * EMD), gamma = 0.01 as in the paper.

Cui et al. measure every (source, target) pair with one common feature extractor (an Inception-v3 trained on
JFT), so that similarities of several sources to one target compare: `report.similarity_features` = a run
directory (absolute, or relative to the workdir, e.g. `sources/<hash>` for a source model the sweep trains)
does that here: both sides' class means come from that network's features, the source's training images and
the target's brought to its input size and channels. "" (the default) measures each pair with the run's own
source model.

Each (source, target) EMD is cached as JSON in WORKDIR/similarity/, so a relaunched sweep or the command after
a sweep recomputes nothing; gamma is applied when reading, so changing it is free.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import math
import os
import pathlib
from typing import Any

import ml_collections

from tl_research import config as config_lib

from tl_research.core import durable
from tl_research.checkpoints import weights as weights_lib
from tl_research.core.errors import ConfigError

log = logging.getLogger(__name__)
CACHE_DIR = "similarity"
DEFAULT_GAMMA = 0.01
# data config fields that do not change which images a split holds or how they look
_LOADER_KEYS = ("data_dir", "val_split", "test_split", "balance", "batch_size", "eval_batch_size", "cache_mb",
                "threads", "prefetch")
RUN_DIR = "a run directory holding config.json and weights/ (e.g. WORKDIR/sources/<hash> or WORKDIR/<run id>)"


@dataclasses.dataclass(frozen=True)
class Source:
    """A source model and what it was trained on."""

    weights_dir: pathlib.Path
    model: Any  # model config
    data: Any  # data config of its training run
    seed: int  # its run's seed (draws its training subset, if any)


def source_from_run_dir(path, key: str = "--source") -> Source:
    """The source model of a run directory (or of its weights/ directory); ConfigError naming `key` else."""
    d = pathlib.Path(path)
    for run_dir in (d, d.parent):
        if (run_dir / "config.json").is_file() and weights_lib.is_weights_dir(run_dir / "weights"):
            run = ml_collections.ConfigDict(json.loads((run_dir / "config.json").read_text()))
            return Source((run_dir / "weights").absolute(), run.model, run.data, int(run.seed))
    raise ConfigError(key, str(path), RUN_DIR, why="no run config and weights there")


def source_of(cfg, workdir) -> Source | None:
    """The source model run config `cfg` starts from (None from scratch). For init='source' it is the
    workdir's source model, which may not be trained yet."""
    init = cfg.init
    if init == "scratch":
        return None
    if init == "source":
        d = pathlib.Path(workdir).absolute() / "sources" / config_lib.config_hash(cfg.source)
        return Source(d / "weights", cfg.source.model, cfg.source.data, int(cfg.source.seed))
    fmt, sep, _ = init.partition(":")
    if sep and fmt in ("keras", "torch", "npz"):
        raise ConfigError("report.similarity", True, "runs from scratch, init='source' or init=" + RUN_DIR,
                          why=f"init={init} records no training data to compare with")
    try:
        return source_from_run_dir(init, key="init")
    except ConfigError:
        raise ConfigError("report.similarity", True, "runs from scratch, init='source' or init=" + RUN_DIR,
                          why=f"init={init} records no training data to compare with") from None


def data_key(data_cfg, seed: int) -> dict:
    """What decides the training images a data config selects: its fields, and the seed of its training
    subset when it draws one."""
    d = {k: v for k, v in data_cfg.to_dict().items() if k not in _LOADER_KEYS}
    subset = data_cfg.train_examples or data_cfg.per_class or data_cfg.imbalance_ratio != 1.0
    d["subset_seed"] = (seed if data_cfg.subset_seed == -1 else int(data_cfg.subset_seed)) if subset else None
    return d


def _digest(obj) -> str:
    return hashlib.sha1(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:16]


class Measurer:
    """Measures and caches EMDs. Keeps each source model's feature extractor and class means for the process,
    and each (source, target) EMD as a JSON file in `cache_dir`."""

    def __init__(self, cache_dir):
        self.cache_dir = pathlib.Path(cache_dir)
        self._sources: dict[str, tuple] = {}
        self.computed = self.cached = 0

    def _source_key(self, source: Source, features: Source | None = None) -> dict:
        net = features or source
        meta = net.weights_dir / weights_lib.META_FILE
        key = {"weights": str(net.weights_dir), "written": os.stat(meta).st_mtime_ns,
               "data": data_key(source.data, source.seed)}
        return key if features is None else {**key, "common_features": True}

    def pair_key(self, source: Source, target_data, seed: int, features: Source | None = None) -> str:
        return _digest([self._source_key(source, features), data_key(target_data, seed)])

    def _source(self, source: Source, features: Source | None = None):
        """(feature extractor, its meta, the input shape, the class means of the source's training images),
        on the source model's features or on `features`' (the common extractor)."""
        from tl_research.data import pipeline
        from tl_research.run.features import FeatureExtractor
        key = _digest(self._source_key(source, features))
        if key not in self._sources:
            net = features or source
            weights, meta = weights_lib.load_weights(net.weights_dir)
            data_cfg = config_lib.copy_config(source.data)
            if features is not None:  # the source's images as the common extractor reads its own
                data_cfg.channels, data_cfg.image_size = features.data.channels, features.data.image_size
            data = pipeline.load(data_cfg, meta, seed=source.seed)
            extractor = FeatureExtractor(net.model, weights, meta, data.image_shape[2])
            means = extractor.class_means(data, data.train, source.data.eval_batch_size, source.data.threads)
            self._sources[key] = (extractor, meta, data.image_shape, means)
        return self._sources[key]

    def emd(self, source: Source, target_data, seed: int, features: Source | None = None) -> dict:
        """{"emd", "source", "target", ...} for the training images of `target_data` (drawn with `seed`), on
        the source model's features or, given `features` (a run directory's network), on those."""
        for net in (source, features):
            if net is not None and not weights_lib.is_weights_dir(net.weights_dir):
                raise ConfigError("init", str(net.weights_dir), RUN_DIR, why="no weights there")
        path = self.cache_dir / f"{self.pair_key(source, target_data, seed, features)}.json"
        cached = durable.read_json(path)  # torn by a crash: measured again
        if cached is not None:
            self.cached += 1
            return cached
        from tl_research.evals import similarity
        from tl_research.data import pipeline
        extractor, meta, (h, w, c), (src_means, src_counts) = self._source(source, features)
        target = config_lib.copy_config(target_data)
        target.channels = c  # the source model's input: its channels and, for square inputs, its size
        if h == w:
            target.image_size = h
        data = pipeline.load(target, meta, seed=seed)
        means, counts = extractor.class_means(data, data.train, target.eval_batch_size, target.threads)
        result = {
            "emd": similarity.earth_movers_distance(src_means, src_counts, means, counts),
            "source": {"weights": str(source.weights_dir), "data": source.data.name,
                       "classes": list(source.data.classes), "images": int(src_counts.sum())},
            "features": str((features or source).weights_dir),
            "target": {**data_key(target_data, seed), "images": int(counts.sum())},
        }
        self.cache_dir.mkdir(parents=True, exist_ok=True)
        durable.write_json(path, result, default=str)
        self.computed += 1
        return result


def similarity_of(emd: float, gamma: float) -> float:
    """exp(-gamma * EMD) (Cui et al. 2018)."""
    return math.exp(-gamma * emd)


def common_features(cfg, workdir) -> Source | None:
    """report.similarity_features: the common extractor's run directory (relative to the workdir, or
    absolute), as a Source; None for "" (each run's own source model). Its weights may not exist yet when
    the sweep trains it (a source model): `emd` checks them when measuring."""
    path = cfg.report.get("similarity_features", "")
    if not path:
        return None
    d = pathlib.Path(path) if os.path.isabs(path) else pathlib.Path(workdir).absolute() / path
    if (d / "config.json").is_file():
        return source_from_run_dir(d, key="report.similarity_features")
    raise ConfigError("report.similarity_features", path, "'' (each run's source model) or " + RUN_DIR +
                      ", absolute or relative to the workdir", why="no run config there (yet)")


def check(cfg, workdir) -> None:
    """ConfigError before any work when `report.similarity` is on and the run's source cannot be compared."""
    if cfg.report.similarity:
        source_of(cfg, workdir)
        if not cfg.report.similarity_gamma > 0:
            raise ConfigError("report.similarity_gamma", cfg.report.similarity_gamma, "a number > 0 (0.01)")
        if not isinstance(cfg.report.get("similarity_features", ""), str):
            raise ConfigError("report.similarity_features", cfg.report.similarity_features, "a path string")


def for_runs(runs, workdir, gamma: float) -> tuple[dict[str, float], Measurer]:
    """{run id: domain similarity} for the (run id, run config) pairs that start from a source model."""
    measurer = Measurer(pathlib.Path(workdir) / CACHE_DIR)
    out = {}
    for rid, cfg in runs:
        source = source_of(cfg, workdir)
        if source is not None:
            features = common_features(cfg, workdir)
            out[rid] = similarity_of(measurer.emd(source, cfg.data, cfg.seed, features)["emd"], gamma)
    return out, measurer
