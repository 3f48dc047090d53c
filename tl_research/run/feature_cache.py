"""Frozen-prefix feature caching: the trainable suffix trains on activations computed once, not every step.

A frozen prefix (units 0..k-1) runs in inference mode: BatchNorm reads its running statistics, internal
dropout is off (models.base.set_unit_mode: a frozen unit never trains, so no dropout or stochastic depth in
it is ever active), its weights never change, and without input-side augmentation its input is a fixed
function of the example. Unit k-1's output for an example is then the same at every step, in every epoch
and in every run that shares the prefix's weights, the data and the preprocessing. A run on the cached path
computes those activations once per split (train, val, test; `Store` keeps them for the sweep's other runs)
and feeds them to a train step that starts at unit k (steps.TrainSpec's `start_unit`). Batches are the
normal path's: the same sampler draws the same positions, read from the cached rows instead of the decoded
images, so results equal the normal path's up to floating-point reassociation (XLA compiles the prefix and
the suffix apart).

Which path a run takes (`RunFeatures.reason`; metrics.jsonl's start and phase_start rows and the result
say it as `feature_path`, per phase: `cached@k` or `input`, and `feature_path_reason`):

    cached   train.feature_cache (default True), a cacheable task (Task.cacheable: classification), no
             config.augment, one process, a model whose units form a plain chain (models.base.UnitModel),
             frozen depth k >= 1 (a phase's lowest trainable unit, Phase.lowest_trainable_unit: the depth
             rule's frozen_depth)
    input    otherwise: a task that is not (its cache_reason: a dense task's decoder reads several units'
             outputs), augmentation (the prefix's input changes every step), a multi-process run (each
             process holds only its part of a batch), another model class, or frozen depth 0 (nothing to cache)

Phased strategies: each phase at frozen depth k >= 1 trains on the depth-k activations, a phase at depth 0
on the images. Evaluation (val, test) reads the activations at the smallest depth of the run's phases (its
last): no phase trains the units below it, so every evaluation, the best step's included, is exact.

Where activations live (`Store`): one entry per (prefix, split), in memory up to MEMORY_MB in all (the least
recently used dropped first); an entry above DISK_ENTRY_MB goes to `feature_cache/` next to the run's folder
(a sweep's workdir), memory-mapped, written atomically (tl_research.core.durable) and reused by later processes.

The on-disk size cap: `train.feature_cache_max_gb` (GB = 1e9 bytes; 0 = automatic: the smaller of
AUTO_MAX_GB = 50 GB and AUTO_FREE_FRACTION = 25% of the space the cache may take, the file system's free space
plus what the folder already holds). The folder's entries (and the files being written into it) never add
up to more than the cap, and an entry is written only if FREE_RESERVE_GB stays free after it. Before an
entry is computed, under the folder's lock, the least recently used entries are evicted until it fits and
its file is created at full size, so a concurrent writer counts it. Use is the mtime of an entry's JSON
record, set when it is written and on every read. A run checks its on-disk entries (its phases' training
splits and its evaluation splits, together) when it starts: if they exceed the cap, or the free space with
every other entry evicted, it takes the `input` path, logs one line and records it as its
`feature_path_reason` ("activations of 122.3 GB exceed train.feature_cache_max_gb=50"). The cap is
config.NEUTRAL: it decides where a run's activations come from, never what it computes. An entry that no
longer fits when it is written (the disk filled meanwhile) is computed in memory and not kept.

Locks (tl_research.core.locks, under the workdir's `.locks/`): `feature-<key>.lock` is held while an on-disk entry
is computed and written, so two launches never compute one entry twice: the second waits (saying for whom)
and then reads what the first wrote; `feature_cache.lock` is held briefly around the size accounting
(eviction and reserving an entry's bytes). Always in that order. A reader takes no lock: an entry evicted
under it is a miss (computed again), one evicted while mapped stays readable (POSIX unlink).

An entry's key hashes the prefix's parameter and BatchNorm statistic values, the model config (its head
keys aside), the depth, the preprocessing (image shape, value range, mean, std, precision) and the split:
the dataset's content (`dataset_identity`: the prepared TFDS builder's data dir, version and split string
and a fingerprint of its prepared files, dataset_info.json's content and every file's name and size; for
a `folder:PATH` dataset the prepared data dir's name hashes every photo's path, size and modification time,
so replaced photos give a new key), every data key of the config but NOT_DECODING, the record indices it
selected, the decoding (image key, pixel scale), resizing and cropping, and CODE_VERSION (bumped with any
change to the code that computes an entry's values; see its comment).
"""
from __future__ import annotations

import collections
import dataclasses
import hashlib
import json
import logging
import math
import os
import pathlib
import shutil
import time
from typing import Callable

import jax
import numpy as np

from tl_research.core import durable, locks, sharding

from tl_research.finetune import freezing
from tl_research.data import pipeline
from tl_research.config.defaults import AUTO_FREE_FRACTION, AUTO_MAX_GB
from tl_research.config.validation import check_feature_cache as check  # noqa: F401 - feature_cache.check
from tl_research.models.base import UnitModel

log = logging.getLogger(__name__)
MEMORY_MB = 4096  # activations kept in memory by one sweep process, all entries together
DISK_ENTRY_MB = 1024  # an entry (one split at one depth) larger than this is kept on disk, memory-mapped
FOLDER = "feature_cache"
HEAD_KEYS = ("head", "head_hidden", "pool", "flatten_grid", "dropout",  # model keys the prefix never reads
             "drop_path")  # stochastic depth: frozen units never drop a branch
# The data keys (config.data) that never change the activations of a split's entry: left out of its key, so
# runs that differ only in them share entries. Every other data key is part of the key (`data_identity`), a
# key added to pipeline.default_config() included (tests/test_feature_cache.py checks the two sets).
NOT_DECODING = frozenset({
    # which records a split holds: the key hashes the selected record indices themselves, so the runs of a
    # data-size sweep share their val and test entries
    "classes", "train_examples", "per_class", "imbalance_ratio", "subset_seed",
    "label_key",  # the labels: the run's own are attached to the cached rows, never stored in an entry
    "balance",  # the order the sampler draws training examples in, not what they hold
    "batch_size",  # the training batch: entries are computed per example, at the evaluation batch (which IS
    # in the key: another batch may round differently, and a run must not depend on which run filled an entry)
    "cache_mb", "threads", "prefetch", "workers",  # where and how fast the images are decoded: the same bytes
    "extra_test_sets",  # other datasets' evaluators (never cached), not this split's images
})
CACHED, INPUT = "cached", "input"
# The version of the code that computes an entry's values (build_prefix, RunFeatures._fill, the models'
# `prefix`, the entry layout). Bump it with any change that alters the bytes an entry holds for the same
# weights, data and preprocessing (e.g. a unit's inference-mode computation, the order or dtype of the
# rows); every entry written before is then a miss, never a silent reuse.
# 2: the split key covers every data key but NOT_DECODING (it covered 7 listed keys), so no entry written
# under version 1 is read.
CODE_VERSION = 2
FREE_RESERVE_GB = 1.0  # an entry is written only if the file system keeps at least this much free after it
GB = 1e9


def input_path_reason(config, model, task) -> str:
    """Why a run cannot use the cache at any depth ('' when it can); `task`: the run's (tasks.base.Task)."""
    if not config.train.get("feature_cache", True):
        return "train.feature_cache is off"
    if not task.cacheable:
        return f"task {task.name}: {task.cache_reason}"
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
    """The identity of a split's images: the dataset's content (`dataset_identity`), the config's data keys
    but NOT_DECODING (`data_identity`), the selected record indices, the decoding and resizing, and
    CODE_VERSION."""
    return _digest("split", CODE_VERSION, role, data_identity(data_cfg), dataset_identity(split),
                   list(data.image_shape), data.interpolation, data.crop_pct, data.decode_key,
                   np.asarray(split.indices, np.int64).tobytes()).hexdigest()


def data_identity(data_cfg: dict) -> dict:
    """The data keys of a split's entry key: every key of config.data but NOT_DECODING."""
    return {k: v for k, v in data_cfg.items() if k not in NOT_DECODING}


def dataset_identity(split: pipeline.Split) -> list:
    """What the records of a split hold, not where the dataset is named from: the prepared builder's data
    dir, version and split (Split.key, from pipeline.source_key; for a folder:PATH dataset the data dir ends
    in the prepared config's name, a hash of every file's path, size and modification time) and a
    fingerprint of the prepared files (`prepared_fingerprint`). [] for a Split built by hand (no key)."""
    if split.key is None:
        return []
    source, split_name = split.key  # ((data.name, data.data_dir, the builder's data dir, its version), split)
    data_dir = str(source[2]) if len(source) > 2 else ""
    return [list(source), split_name, prepared_fingerprint(data_dir) if data_dir else ""]


def prepared_fingerprint(data_dir: str) -> str:
    """A hash of a prepared TFDS dataset's files: dataset_info.json's content (splits, shard lengths and
    sizes, features) and every file's name and size; '' where the folder cannot be read."""
    root = pathlib.Path(data_dir)
    try:
        files = sorted((p.name, p.stat().st_size) for p in root.iterdir() if p.is_file())
        info = (root / "dataset_info.json").read_bytes() if (root / "dataset_info.json").exists() else b""
    except OSError:
        return ""
    return _digest(files, info).hexdigest()


# ---------------------------------------------------------------------------------------------- store

class Store:
    """Cached activations shared by the runs of one process (steps.StepCache holds it): {key: array}."""

    def __init__(self, memory_mb: float | None = None, disk_entry_mb: float | None = None):
        memory_mb = MEMORY_MB if memory_mb is None else memory_mb
        disk_entry_mb = DISK_ENTRY_MB if disk_entry_mb is None else disk_entry_mb
        self.memory_bytes, self.disk_bytes = memory_mb * 2**20, disk_entry_mb * 2**20
        self._entries: collections.OrderedDict[str, np.ndarray] = collections.OrderedDict()

    def __contains__(self, key: str) -> bool:
        return key in self._entries

    def on_disk(self, nbytes: int, directory: pathlib.Path | None) -> bool:
        return nbytes > self.disk_bytes and directory is not None

    def get(self, key: str, shape: tuple, dtype, fill: Callable[[np.ndarray], None],
            directory: pathlib.Path | None, max_gb: float = 0.0) -> tuple[np.ndarray, str]:
        """(the entry, where it came from: memory | disk | computed). `fill(out)` writes the activations into
        `out`, an array of `shape` and `dtype`. An on-disk entry is computed by one process at a time (its
        lock); one that finds no room under `max_gb` (train.feature_cache_max_gb) is computed, not kept."""
        if key in self._entries:
            self._entries.move_to_end(key)
            return self._entries[key], "memory"
        nbytes = math.prod(shape) * np.dtype(dtype).itemsize
        if self.on_disk(nbytes, directory):
            found = read_entry(directory, key, shape, dtype)
            if found is not None:
                return found, "disk"
            with locks.held(entry_lock(directory, key), what=f"feature cache entry {key}"):
                found = read_entry(directory, key, shape, dtype)  # written by the process we waited for
                if found is not None:
                    return found, "disk"
                why = write_entry(directory, key, shape, dtype, fill, max_gb)
                if not why:
                    return read_entry(directory, key, shape, dtype), "computed"
            # the run checked the room when it chose the cached path (RunFeatures); the disk filled since
            log.warning("feature cache: entry %s not kept: %s", key, why)
            out = np.empty(shape, dtype)
            fill(out)
            return out, "computed"
        out = np.empty(shape, dtype)
        fill(out)
        self._entries[key] = out
        while sum(a.nbytes for a in self._entries.values()) > self.memory_bytes and len(self._entries) > 1:
            self._entries.popitem(last=False)
        return out, "computed"


def _paths(directory: pathlib.Path, key: str) -> tuple[pathlib.Path, pathlib.Path]:
    return directory / f"{key}.bin", directory / f"{key}.json"


def entry_lock(directory: pathlib.Path, key: str) -> pathlib.Path:
    """The lock of one entry (held while it is computed and written): <workdir>/.locks/feature-<key>.lock."""
    return locks.lock_path(directory.parent, "feature", key)


def cache_lock(directory: pathlib.Path) -> pathlib.Path:
    """The lock of the folder's size accounting (held while making room and reserving an entry's bytes)."""
    return locks.lock_path(directory.parent, "feature_cache")


def read_entry(directory: pathlib.Path, key: str, shape: tuple, dtype) -> np.ndarray | None:
    """The on-disk entry, memory-mapped read-only, its use recorded (its record's mtime: least recently used
    entries are evicted first); None when absent, evicted meanwhile or not the expected size (torn)."""
    data, meta = _paths(directory, key)
    recorded = durable.read_json(meta)
    nbytes = math.prod(shape) * np.dtype(dtype).itemsize
    try:
        if (not isinstance(recorded, dict) or recorded.get("shape") != list(shape) or not data.exists()
                or data.stat().st_size != nbytes):
            return None
        out = np.memmap(data, dtype=dtype, mode="r", shape=tuple(shape))
        _touch(meta)
    except OSError:  # evicted by another process between the checks
        return None
    return out


def write_entry(directory: pathlib.Path, key: str, shape: tuple, dtype, fill: Callable[[np.ndarray], None],
                max_gb: float = 0.0) -> str:
    """Computes an entry straight into a file (never whole in memory), renamed into place atomically; its
    JSON record, written last, marks it complete. Before computing, under the folder's lock, least recently
    used entries are evicted until the entry fits under the cap and the free space, and its file is created
    at full size (so concurrent writers count it). '' when written, else why not (nothing is computed)."""
    directory.mkdir(parents=True, exist_ok=True)
    data, meta = _paths(directory, key)
    nbytes = math.prod(shape) * np.dtype(dtype).itemsize

    def write(tmp: pathlib.Path) -> None:
        with locks.held(cache_lock(directory), what="the feature cache's size accounting"):
            why = make_room(directory, nbytes, max_gb)
            if why:
                raise _NoRoom(why)
            out = np.memmap(tmp, dtype=dtype, mode="w+", shape=tuple(shape))
        fill(out)
        out.flush()
        del out

    try:
        durable.write_with(data, write, point=FOLDER)
    except _NoRoom as e:
        return str(e)
    durable.write_json(meta, {"shape": list(shape), "dtype": np.dtype(dtype).name, "code_version": CODE_VERSION})
    _touch(meta)
    return ""


def _touch(path: pathlib.Path) -> None:
    """Records a use: the file's mtime set from the fine-grained clock (the file system's own is coarse)."""
    now = time.time_ns()
    os.utime(path, ns=(now, now))


class _NoRoom(Exception):
    pass


# ---------------------------------------------------------------------------------------------- size cap

@dataclasses.dataclass
class Usage:
    """A cache folder's bytes: complete entries [(last use, key, bytes)], oldest first; temporaries being
    written (their full size, and the part not yet allocated on disk); the file system's free bytes."""

    entries: list
    writing: int
    unallocated: int
    free: int

    @property
    def total(self) -> int:
        return sum(b for _, _, b in self.entries) + self.writing


def usage(directory: pathlib.Path) -> Usage:
    entries, writing, unallocated = [], 0, 0
    if directory.is_dir():
        for p in directory.iterdir():
            try:
                st = p.stat()
                if p.name.startswith(".") and durable.TMP_MARK in p.name:
                    writing += st.st_size
                    unallocated += max(0, st.st_size - st.st_blocks * 512)
                elif p.suffix == ".bin":
                    meta = p.with_suffix(".json")
                    used = meta.stat().st_mtime_ns if meta.exists() else st.st_mtime_ns
                    entries.append((used, p.stem, st.st_size))
            except OSError:  # removed meanwhile
                continue
    place = directory
    while not place.exists():
        place = place.parent
    return Usage(sorted(entries), writing, unallocated, shutil.disk_usage(place).free)


def cap_bytes(max_gb: float, u: Usage) -> float:
    """train.feature_cache_max_gb in bytes; 0 (automatic): the smaller of AUTO_MAX_GB and AUTO_FREE_FRACTION of
    the space the cache may take (the file system's free space plus what the cache holds already)."""
    if max_gb:
        return max_gb * GB
    return min(AUTO_MAX_GB * GB, AUTO_FREE_FRACTION * (u.free + u.total))


def too_large(nbytes: int, max_gb: float, u: Usage, directory: pathlib.Path) -> str:
    """Why `nbytes` of activations cannot be kept in the folder even with every evictable entry evicted
    (one line), or ''."""
    cap = cap_bytes(max_gb, u)
    if nbytes > cap:
        auto = "" if max_gb else (f" (automatic: {cap / GB:.3g} GB, the smaller of {AUTO_MAX_GB:g} GB and "
                                  f"{AUTO_FREE_FRACTION:.0%} of the free space)")
        return f"activations of {nbytes / GB:.4g} GB exceed train.feature_cache_max_gb={max_gb:g}{auto}"
    room = u.free + sum(b for _, _, b in u.entries) - u.unallocated - FREE_RESERVE_GB * GB
    if nbytes > room:
        return (f"activations of {nbytes / GB:.4g} GB exceed the free space of {directory} ({u.free / GB:.4g} GB "
                f"free, {FREE_RESERVE_GB:g} GB kept free)")
    return ""


def make_room(directory: pathlib.Path, nbytes: int, max_gb: float) -> str:
    """Evicts the least recently used entries until `nbytes` more fit under the cap and the free space; ''
    then, else why they cannot (nothing is evicted for an entry too large for the cap or the disk). The
    caller holds cache_lock."""
    durable.remove_stale_temporaries(directory)  # a dead writer's reservation
    u = usage(directory)
    why = too_large(nbytes, max_gb, u, directory)
    if why:
        return why
    while u.total + nbytes > cap_bytes(max_gb, u) or nbytes + u.unallocated + FREE_RESERVE_GB * GB > u.free:
        if not u.entries:
            return (f"activations of {nbytes / GB:.4g} GB do not fit beside the {u.writing / GB:.4g} GB being "
                    f"written to the feature cache ({u.free / GB:.4g} GB free)")
        _, key, size = u.entries[0]
        data, meta = _paths(directory, key)
        for path in (meta, data):  # the record first: a reader meanwhile finds the entry absent
            try:
                path.unlink()
            except FileNotFoundError:
                pass
        log.info("feature cache: evicted %s (%.1f MB, least recently used) to make room", key, size / 2**20)
        u = usage(directory)
    return ""


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
                 put: Callable, batch_size: int, threads: int, directory: pathlib.Path | None, max_gb: float = 0.0,
                 depth: Callable):
        # depth(phase): the lowest unit that trains in the phase (setup.Setup.depth), where its frozen prefix ends
        self.store, self.reason, self.src, self.data, self.phases = store, reason, source, data, phases
        self.depth = lambda phase: int(depth(phase))
        self.put, self.batch_size, self.threads, self.directory = put, batch_size, threads, directory
        self.max_gb = max_gb
        self._prefix_keys: dict[int, str] = {}
        if not reason:  # the cached path, if the cache folder can hold the run's on-disk entries
            self.reason = self._no_room(phases)
            if self.reason:
                log.warning("feature cache: %s; training from the images", self.reason)
        self.eval_depth = self.start(min(phases, key=self.depth))

    def start(self, phase) -> int:
        """The unit a phase's step starts at: its frozen depth on the cached path, else 0 (the images)."""
        return 0 if self.reason else self.depth(phase)

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

    def _no_room(self, phases) -> str:
        """Why the on-disk entries the run's phases and evaluations need cannot be kept (one line: they exceed
        train.feature_cache_max_gb, or the free space, together), or ''."""
        needed = {("train", self.depth(p)) for p in phases if self.depth(p)}
        low = min(self.depth(p) for p in phases)
        needed |= {("val", low), ("test", low)} if low else set()
        sizes = [math.prod(shape) * np.dtype(dtype).itemsize
                 for shape, dtype in (self._entry_spec(role, depth) for role, depth in sorted(needed))]
        disk = sum(n for n in sizes if self.store.on_disk(n, self.directory))
        return too_large(disk, self.max_gb, usage(self.directory), self.directory) if disk else ""

    def _entry_spec(self, role: str, depth: int) -> tuple[tuple, np.dtype]:
        """(shape, dtype) of the depth-`depth` activations of split `role`."""
        h, w, c = self.data.image_shape
        spec = jax.eval_shape(self.src.prefix_of(depth), *self._abstract_weights(),
                              jax.ShapeDtypeStruct((self.batch_size, h, w, c), np.uint8))
        return (len(getattr(self.data, role)), *spec.shape[1:]), np.dtype(spec.dtype)

    def split(self, role: str, depth: int) -> pipeline.Split:
        """The split `role` (train, val, test) with its images replaced by the depth-`depth` activations."""
        split = getattr(self.data, role)
        if depth not in self._prefix_keys:
            s = self.src
            self._prefix_keys[depth] = prefix_key(s.params, s.stats, depth, s.model_cfg, s.preprocessing)
        key = _digest(self._prefix_keys[depth], split_key(self.src.data_cfg, role, split, self.data)).hexdigest()[:24]
        shape, dtype = self._entry_spec(role, depth)
        t0 = time.perf_counter()
        acts, where = self.store.get(key, shape, dtype, lambda out: self._fill(out, split, depth),
                                     self.directory, self.max_gb)
        log.info("feature cache: %s split at depth %d, %s %s (%.1f MB) %s in %.2fs", role, depth, shape,
                 dtype.name, acts.nbytes / 2**20, where, time.perf_counter() - t0)
        return pipeline.Split(split.source, split.indices, split.labels, images=acts)

    def _abstract_weights(self) -> tuple:
        def shapes(tree):
            return {k: jax.ShapeDtypeStruct(np.shape(v), np.asarray(v).dtype) for k, v in tree.items()}
        return shapes(self.src.params), shapes(self.src.stats)

    def _fill(self, out: np.ndarray, split: pipeline.Split, depth: int) -> None:
        """Writes the prefix's activations of every example of `split`, in split order, into `out`. A split
        not held in memory is decoded as the run's evaluations are: in data.workers worker processes
        (pipeline.eval_batches with the dataset's workers), the same bytes whatever their count."""
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


def for_program(prog, config, *, put: Callable, batch_size: int, directory: pathlib.Path | None) -> RunFeatures:
    """The RunFeatures of a run's steps.Program; the Store is the sweep's, held by the program's StepCache."""
    s, base = prog.s, prog.base
    store = prog.cache.get(("feature_store",), Store)
    model_of, preprocess = base.model_of(), base.preprocess()
    norm = (base.value_range, tuple(map(float, base.mean)), tuple(map(float, base.std)))

    def prefix_of(depth: int) -> Callable:  # keyed by what builds it: the depth and the program's StepSpec
        return prog.cache.get(("prefix", depth, base), lambda: build_prefix(
            model_of, preprocess, depth, base.mesh, base.placement.params))

    def weights() -> tuple:  # placed for each split computed, and freed after it
        w = prog.place_weights({"params": prog.params, "batch_stats": prog.stats})
        return w["params"], w["batch_stats"]

    preprocessing = {"image_shape": list(s.data.image_shape), "value_range": list(norm[0]), "mean": list(norm[1]),
                     "std": list(norm[2]), "precision": base.precision}
    source = Source(prefix_of, weights, prog.params, prog.stats, json.loads(config.model.to_json()), preprocessing,
                    json.loads(config.data.to_json()))
    reason = input_path_reason(config, s.model, s.task)
    return RunFeatures(store, reason, source, s.data, s.plan.phases, put=put, batch_size=batch_size,
                       threads=int(config.data.threads), directory=directory,
                       max_gb=float(config.train.get("feature_cache_max_gb", 0.0)), depth=s.depth)
