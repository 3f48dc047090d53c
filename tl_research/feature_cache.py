"""Frozen-prefix feature caching: the trainable suffix trains on activations computed once, not every step.

A frozen prefix (units 0..k-1) runs in inference mode: BatchNorm reads its running statistics, internal
dropout is off (models.base.set_unit_mode: a frozen unit never trains, so no dropout or stochastic depth in
it is ever active), its weights never change, and without input-side augmentation its input is a fixed
function of the example. Unit k-1's output for an example is then the same at every step, in every epoch
and in every run that shares the prefix's weights, the data and the preprocessing. A run on the cached path
computes those activations once per split (train, val, test; `Store` keeps them for the sweep's other runs)
and feeds them to a train step that starts at unit k (trainer.build_train's `start_unit`). Batches are the
normal path's: the same sampler draws the same positions, read from the cached rows instead of the decoded
images, so results equal the normal path's up to floating-point reassociation (XLA compiles the prefix and
the suffix apart).

Which path a run takes (`RunFeatures.reason`; metrics.jsonl's start and phase_start rows and the result
say it as `feature_path`, per phase: `cached@k` or `input`, and `feature_path_reason`):

    cached   train.feature_cache (default True), the classification task, no config.augment, one process,
             a model whose units form a plain chain (models.base.UnitModel), frozen depth k >= 1
    input    otherwise: a dense task (its decoder reads several units' outputs), augmentation (the prefix's
             input changes every step), a multi-process run (each process holds only its part of a batch),
             another model class, or frozen depth 0 (nothing to cache)

Phased strategies: each phase at frozen depth k >= 1 trains on the depth-k activations, a phase at depth 0
on the images. Evaluation (val, test) reads the activations at the smallest depth of the run's phases (its
last): no phase trains the units below it, so every evaluation, the best step's included, is exact.

Where activations live (`Store`): one entry per (prefix, split), in memory up to MEMORY_MB in all (the least
recently used dropped first); an entry above DISK_ENTRY_MB goes to `feature_cache/` next to the run's folder
(a sweep's workdir), memory-mapped, written atomically (tl_research.durable) and reused by later processes.
An entry's key hashes the prefix's parameter and BatchNorm statistic values, the model config (its head
keys aside), the depth, the preprocessing (image shape, value range, mean, std, precision) and the split
(dataset, split strings, the record indices it selected, resizing and cropping).
"""
from __future__ import annotations

import collections
import dataclasses
import hashlib
import json
import logging
import math
import pathlib
import time
from typing import Callable

import jax
import numpy as np

from tl_research import durable, freezing, sharding
from tl_research.data import pipeline
from tl_research.errors import ConfigError
from tl_research.models.base import UnitModel

log = logging.getLogger(__name__)
MEMORY_MB = 4096  # activations kept in memory by one sweep process, all entries together
DISK_ENTRY_MB = 1024  # an entry (one split at one depth) larger than this is kept on disk, memory-mapped
FOLDER = "feature_cache"
HEAD_KEYS = ("head", "head_hidden", "pool", "flatten_grid", "dropout")  # model keys the prefix never reads
DATA_KEYS = ("name", "data_dir", "train_split", "val_split", "test_split", "vtab", "image_key")
CACHED, INPUT = "cached", "input"


def check(config) -> None:
    """ConfigError for a train.feature_cache that is not a bool."""
    value = config.train.get("feature_cache", True)
    if not isinstance(value, bool):
        raise ConfigError("train.feature_cache", value, "True (train on cached frozen-prefix activations where "
                          "that is exact) or False (always from the images)")


def input_path_reason(config, model, task_name: str) -> str:
    """Why a run cannot use the cache at any depth ('' when it can)."""
    if not config.train.get("feature_cache", True):
        return "train.feature_cache is off"
    if task_name != "classification":
        return f"task {task_name}: its head reads several units' outputs"
    if tuple(config.augment):
        return f"input-side augmentation (augment={tuple(config.augment)})"
    if jax.process_count() > 1:
        return "a multi-process run (each process holds only its part of a batch)"
    if type(model) is not UnitModel:
        return f"model {config.model.name} ({type(model).__name__}) is not a plain chain of units"
    return ""


# ---------------------------------------------------------------------------------------------- keys

def _digest(*parts) -> "hashlib._Hash":
    h = hashlib.sha1()
    for p in parts:
        h.update(p if isinstance(p, bytes) else json.dumps(p, sort_keys=True, default=str).encode())
    return h


def prefix_key(params: dict, stats: dict, depth: int, model_cfg: dict, preprocessing: dict) -> str:
    """The identity of a depth-`depth` prefix: its parameter and BatchNorm statistic values (host arrays by
    dotted name), the model config without its head keys, and the preprocessing."""
    cfg = {k: v for k, v in model_cfg.items() if k not in HEAD_KEYS}
    h = _digest("prefix", depth, cfg, preprocessing)
    for coll in (params, stats):
        for name in sorted(coll):
            unit = freezing.unit_of(name)
            if unit is not None and unit < depth:
                a = np.ascontiguousarray(coll[name])
                h.update(f"{name}:{a.shape}:{a.dtype}".encode())
                h.update(a.tobytes())
    return h.hexdigest()


def split_key(data_cfg: dict, role: str, split: pipeline.Split, data: pipeline.Dataset) -> str:
    """The identity of a split's images: dataset, split strings, selected record indices, resizing."""
    return _digest("split", role, {k: data_cfg.get(k) for k in DATA_KEYS}, list(data.image_shape),
                   data.interpolation, data.crop_pct, np.asarray(split.indices, np.int64).tobytes()).hexdigest()


# ---------------------------------------------------------------------------------------------- store

class Store:
    """Cached activations shared by the runs of one process (trainer.StepCache holds it): {key: array}."""

    def __init__(self, memory_mb: float = MEMORY_MB, disk_entry_mb: float = DISK_ENTRY_MB):
        self.memory_bytes, self.disk_bytes = memory_mb * 2**20, disk_entry_mb * 2**20
        self._entries: collections.OrderedDict[str, np.ndarray] = collections.OrderedDict()

    def __contains__(self, key: str) -> bool:
        return key in self._entries

    def get(self, key: str, shape: tuple, dtype, fill: Callable[[np.ndarray], None],
            directory: pathlib.Path | None) -> tuple[np.ndarray, str]:
        """(the entry, where it came from: memory | disk | computed). `fill(out)` writes the activations into
        `out`, an array of `shape` and `dtype`."""
        if key in self._entries:
            self._entries.move_to_end(key)
            return self._entries[key], "memory"
        nbytes = math.prod(shape) * np.dtype(dtype).itemsize
        if nbytes > self.disk_bytes and directory is not None:
            found = read_entry(directory, key, shape, dtype)
            if found is not None:
                return found, "disk"
            write_entry(directory, key, shape, dtype, fill)
            return read_entry(directory, key, shape, dtype), "computed"
        out = np.empty(shape, dtype)
        fill(out)
        self._entries[key] = out
        while sum(a.nbytes for a in self._entries.values()) > self.memory_bytes and len(self._entries) > 1:
            self._entries.popitem(last=False)
        return out, "computed"


def _paths(directory: pathlib.Path, key: str) -> tuple[pathlib.Path, pathlib.Path]:
    return directory / f"{key}.bin", directory / f"{key}.json"


def read_entry(directory: pathlib.Path, key: str, shape: tuple, dtype) -> np.ndarray | None:
    """The on-disk entry, memory-mapped read-only; None when absent or not the expected size (torn)."""
    data, meta = _paths(directory, key)
    recorded = durable.read_json(meta)
    nbytes = math.prod(shape) * np.dtype(dtype).itemsize
    if (not isinstance(recorded, dict) or recorded.get("shape") != list(shape) or not data.exists()
            or data.stat().st_size != nbytes):
        return None
    return np.memmap(data, dtype=dtype, mode="r", shape=tuple(shape))


def write_entry(directory: pathlib.Path, key: str, shape: tuple, dtype, fill: Callable[[np.ndarray], None]):
    """Computes an entry straight into a file (never whole in memory), renamed into place atomically; its
    JSON record, written last, marks it complete."""
    directory.mkdir(parents=True, exist_ok=True)
    data, meta = _paths(directory, key)

    def write(tmp: pathlib.Path) -> None:
        out = np.memmap(tmp, dtype=dtype, mode="w+", shape=tuple(shape))
        fill(out)
        out.flush()
        del out

    durable.write_with(data, write, point=FOLDER)
    durable.write_json(meta, {"shape": list(shape), "dtype": np.dtype(dtype).name})


# ---------------------------------------------------------------------------------------------- a run

def build_prefix(model_of: Callable, preprocess: Callable, depth: int, mesh_, params_sharding) -> Callable:
    """jitted (params, stats, uint8 images) -> units 0..depth-1's output in inference mode, batch-sharded."""
    def prefix(params, stats, images):
        return model_of(params, stats).prefix(preprocess(images), depth)

    repl, batch = sharding.replicated(mesh_), sharding.batch_sharding(mesh_)
    return jax.jit(prefix, in_shardings=(params_sharding, repl, batch), out_shardings=batch)


@dataclasses.dataclass
class Source:
    """What computing a run's activations needs: the prefix function per depth (`prefix_of`), the weights
    placed on the devices (`weights()`, placed anew for each split computed), the host weights (the run's
    starting weights: a frozen prefix keeps them) and the keys' other inputs."""

    prefix_of: Callable[[int], Callable]
    weights: Callable[[], tuple]
    params: dict
    stats: dict
    model_cfg: dict
    preprocessing: dict
    data_cfg: dict


class RunFeatures:
    """One run's use of the cache: the depth each phase trains from, the cached splits, what it logged."""

    def __init__(self, store: Store, reason: str, source: Source, data: pipeline.Dataset, phases, *,
                 put: Callable, batch_size: int, threads: int, directory: pathlib.Path | None):
        self.store, self.reason, self.src, self.data, self.phases = store, reason, source, data, phases
        self.put, self.batch_size, self.threads, self.directory = put, batch_size, threads, directory
        self._prefix_keys: dict[int, str] = {}
        self.eval_depth = self.start(min(phases, key=lambda p: p.frozen_depth))

    def start(self, phase) -> int:
        """The unit a phase's step starts at: its frozen depth on the cached path, else 0 (the images)."""
        return 0 if self.reason else int(phase.frozen_depth)

    def path(self, phase) -> str:
        k = self.start(phase)
        return f"{CACHED}@{k}" if k else INPUT

    def why(self, phase) -> str:
        return self.reason or ("" if self.start(phase) else "frozen_depth 0: no frozen prefix to cache")

    def summary(self) -> dict:
        """The start row's and the result's description of the paths (a function of the config)."""
        out = {"feature_path": ",".join(self.path(p) for p in self.phases),
               "feature_path_eval": f"{CACHED}@{self.eval_depth}" if self.eval_depth else INPUT}
        reasons = sorted({self.why(p) for p in self.phases} - {""})
        if reasons:
            out["feature_path_reason"] = "; ".join(reasons)
        return out

    def split(self, role: str, depth: int) -> pipeline.Split:
        """The split `role` (train, val, test) with its images replaced by the depth-`depth` activations."""
        split = getattr(self.data, role)
        if depth not in self._prefix_keys:
            s = self.src
            self._prefix_keys[depth] = prefix_key(s.params, s.stats, depth, s.model_cfg, s.preprocessing)
        key = _digest(self._prefix_keys[depth], split_key(self.src.data_cfg, role, split, self.data)).hexdigest()[:24]
        h, w, c = self.data.image_shape
        spec = jax.eval_shape(self.src.prefix_of(depth), *self._abstract_weights(),
                              jax.ShapeDtypeStruct((self.batch_size, h, w, c), np.uint8))
        shape = (len(split), *spec.shape[1:])
        t0 = time.perf_counter()
        acts, where = self.store.get(key, shape, spec.dtype, lambda out: self._fill(out, split, depth),
                                     self.directory)
        log.info("feature cache: %s split at depth %d, %s %s (%.1f MB) %s in %.2fs", role, depth, shape,
                 np.dtype(spec.dtype).name, acts.nbytes / 2**20, where, time.perf_counter() - t0)
        return pipeline.Split(split.source, split.indices, split.labels, images=acts)

    def _abstract_weights(self) -> tuple:
        def shapes(tree):
            return {k: jax.ShapeDtypeStruct(np.shape(v), np.asarray(v).dtype) for k, v in tree.items()}
        return shapes(self.src.params), shapes(self.src.stats)

    def _fill(self, out: np.ndarray, split: pipeline.Split, depth: int) -> None:
        """Writes the prefix's activations of every example of `split`, in split order, into `out`."""
        prefix, (params, stats) = self.src.prefix_of(depth), self.src.weights()
        n, bs, pending = len(split), self.batch_size, None

        def store(k, acts):
            rows = np.asarray(jax.device_get(acts))[: max(0, min(bs, n - k * bs))]
            out[k * bs: k * bs + len(rows)] = rows

        for k, batch in enumerate(pipeline.eval_batches(self.data, split, bs, self.threads)):
            acts = prefix(params, stats, self.put({"image": batch["image"]})["image"])
            if pending is not None:  # the previous batch is read while this one computes
                store(*pending)
            pending = (k, acts)
        if pending is not None:
            store(*pending)

    def train_data(self, phase) -> pipeline.Dataset:
        """The dataset a phase's batches are read from: the run's, with the training images replaced by
        the phase's cached activations on the cached path."""
        k = self.start(phase)
        return dataclasses.replace(self.data, train=self.split("train", k)) if k else self.data


def for_program(prog, config, *, merger: Callable, preprocessor: Callable, put: Callable, batch_size: int,
                directory: pathlib.Path | None) -> RunFeatures:
    """The RunFeatures of a run's trainer.Program (`merger`, `preprocessor`: trainer's, which build the model
    from flat weights and the input preprocessing); the Store is the sweep's, held by the program's StepCache."""
    s = prog.s
    store = prog.cache.get(("feature_store",), Store)
    model_of = merger(prog.graphdef, prog.param_paths, prog.stat_paths, prog.precision)
    preprocess = preprocessor(prog.value_range, prog.mean, prog.std)
    norm = (prog.value_range, tuple(map(float, prog.mean)), tuple(map(float, prog.std)))

    def prefix_of(depth: int) -> Callable:
        return prog.cache.get(("prefix", prog.graphdef, depth, norm, prog.devices), lambda: build_prefix(
            model_of, preprocess, depth, prog.mesh, prog.placement.params))

    def weights() -> tuple:  # placed for each split computed, and freed after it
        w = prog.place_weights({"params": prog.params, "batch_stats": prog.stats})
        return w["params"], w["batch_stats"]

    preprocessing = {"image_shape": list(s.data.image_shape), "value_range": list(norm[0]), "mean": list(norm[1]),
                     "std": list(norm[2]), "precision": prog.precision}
    source = Source(prefix_of, weights, prog.params, prog.stats, json.loads(config.model.to_json()), preprocessing,
                    json.loads(config.data.to_json()))
    reason = input_path_reason(config, s.model, s.task.name)
    return RunFeatures(store, reason, source, s.data, s.plan.phases, put=put, batch_size=batch_size,
                       threads=int(config.data.threads), directory=directory)
