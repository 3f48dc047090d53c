"""The input pipeline: a TFDS dataset -> random-access data source -> selected examples -> host batches.

Every dataset, built-in, a real TFDS name, a VTAB-1k task or the user's folder, takes the same path:
`tfds` builder -> `as_data_source` (array_record, no TensorFlow) -> the examples a config selects (split,
class subset, then the training subset: data.subsets) -> a grain dataset that yields fixed-shape uint8
batches. With a task's targets other than image-level labels (data/targets.py: segmentation's mask,
detection's padded boxes and classes) the batches carry the task's arrays instead of the label. Batch `k` of
a run is a pure function of (seed, k), so a resumed run reads exactly the batches the uninterrupted run
would have. Normalisation and augmentation happen on the device.

Within one process the runs of a sweep share the work that does not depend on the run: a split's label
scan and its decoded images are computed once and reused by every later run that reads the same dataset,
split, records and preprocessing (`SHARED`, keyed on everything that determines them, memory-bounded by
data.cache_mb); each run still draws its own training subset from the shared labels.
"""
from __future__ import annotations

import atexit
import collections
import dataclasses
import functools
import hashlib
import io
import os
import threading
import weakref
from typing import Callable, Iterator

import grain
import jax
import ml_collections
import numpy as np
import tensorflow_datasets as tfds
from absl import flags
from PIL import Image

from tl_research.core import distributed, memo
from tl_research.data import folder, geometry, registry, subsets, targets as targets_lib, tfds_spill
from tl_research.data import vtab as vtab_lib
from tl_research.data.sampling import BalancedSampler
from tl_research.core.errors import ConfigError

INTERPOLATIONS = {"bilinear": Image.BILINEAR, "bicubic": Image.BICUBIC, "nearest": Image.NEAREST,
                  "lanczos": Image.LANCZOS}


def default_config() -> ml_collections.ConfigDict:
    return ml_collections.ConfigDict(dict(
        # a built-in dataset (data.registry.BUILDERS), any TFDS name, "vtab:TASK" (data.vtab.VTAB_TASKS) or
        # "folder:/path" (a folder with one subfolder of images per class; data.folder)
        name="mnist_subset",
        data_dir="",  # TFDS data dir; "" = TFDS's default (~/tensorflow_datasets or $TFDS_DATA_DIR)
        train_split="train",
        val_split="val",  # any TFDS split string, e.g. "train[90%:]" for datasets without a val split
        test_split="test",
        classes=(),  # class subset, relabelled 0..len-1 in this order; () = all classes
        # which training examples (data.subsets), drawn after the class subset; nested for one seed
        train_examples=0,  # a stratified subset of this many examples; 0 = all
        per_class=0,  # this many examples of every class (with imbalance_ratio: of class 0); 0 = all
        imbalance_ratio=1.0,  # long-tailed: class c keeps n_max * ratio^(-c / (C - 1)); 1 = balanced
        subset_seed=-1,  # seed of the subsets above; -1 = the run's seed
        balance="none",  # "none" | "oversample": draw every class equally often (data.sampling)
        vtab="",  # "" | "train800" | "train800val200": VTAB-1k; train = those records of train_split,
        # val = its val200 records (800:1000), test unchanged; for a vtab:TASK, the task's own 1k splits
        image_key="image",
        label_key="label",
        # what a batch carries next to "image" (data.targets): "label" (an image-level class,
        # classification), "segmentation" ("segmentation_mask" (B, H, W) uint8, 255 = ignore) or
        # "detection" ("boxes" (B, max_boxes, 4) float32 [ymin, xmin, ymax, xmax] in [0, 1], zeros where
        # padded, and "classes" (B, max_boxes) int32, -1 where padded), or a registered task's own (tasks.register)
        targets="label",
        mask_key="segmentation_mask",  # the record's mask image (targets=segmentation)
        objects_key="objects",  # the record's Sequence of bbox + label (targets=detection)
        max_boxes=10,  # boxes per image after padding; an image with more keeps its largest
        image_size=0,  # square side after resizing; 0 = the checkpoint's input size, else the dataset's own
        channels=0,  # 0 = the checkpoint's channels, else the dataset's own; 1 <-> 3 converts
        interpolation="",  # "" = the checkpoint's, else bilinear
        crop_pct=0.0,  # resize the shorter side to size / crop_pct, centre-crop size; 0 = checkpoint's or 1
        batch_size=64,  # global batch size (split over all devices)
        eval_batch_size=250,
        cache_mb=512,  # decode a split into memory once when it fits in this many MB (0 = never)
        threads=2,  # host loading threads (of this process, or of each worker process)
        prefetch=4,  # batches prepared ahead of the device
        # processes that decode and assemble the training, evaluation and feature-cache batches of a split
        # not held in memory (pipeline.resolve_workers): -1 (default) = automatic: the cores this process may
        # use minus one (0 on one core), or 0 for fewer than AUTO_MIN_EXAMPLES examples; 0 = the `threads` of
        # this process (the GIL caps them near 540 JPEGs/s); N > 0 = N worker processes (started with
        # "spawn", a few seconds each). A split held in memory (data.cache_mb) is read in this process,
        # whatever the value. The batches are the same bytes whatever the value.
        workers=-1,
    ))


@dataclasses.dataclass
class Split:
    """The examples of one split a run uses: record ids into a data source and their (relabelled) labels."""

    source: object
    indices: np.ndarray
    labels: np.ndarray
    images: np.ndarray | None = None  # decoded uint8 images of every selected example, when cached
    extras: dict[str, np.ndarray] | None = None  # their target arrays (data.targets), when cached
    key: tuple | None = None  # the dataset and split string its records come from (SHARED's keys)

    def __len__(self) -> int:
        return len(self.indices)


@dataclasses.dataclass
class Dataset:
    name: str
    train: Split
    val: Split
    test: Split
    num_classes: int
    class_names: list[str]
    image_shape: tuple[int, int, int]  # what the model sees: (height, width, channels)
    load_image: Callable[[dict], np.ndarray]  # record -> uint8 (H, W, C) of image_shape
    train_ids: np.ndarray | None = None  # the TFDS record indices (in data.train_split) of the training set
    interpolation: str = "bilinear"  # how load_image resizes
    crop_pct: float = 1.0  # the centre crop load_image takes
    targets: targets_lib.TargetSpec | None = None  # a task's targets read from records; None: image labels
    decode_key: tuple | None = None  # what determines a decoded example besides its record (SHARED's keys)
    workers: int = 0  # data.workers: the worker processes train_batches and eval_batches decode its splits in


class SharedCache:
    """Label scans and decoded splits shared by the runs of one process (`SHARED`): an LRU map from a key
    naming everything a value depends on to the value, made read-only. Decoded splits are bounded: after an
    insertion the entries held stay within 3 x data.cache_mb of the run that added it (each of a run's three
    splits may take cache_mb, as when each run decoded its own), least recently used out first."""

    def __init__(self):
        self._items: collections.OrderedDict = collections.OrderedDict()  # key -> (value, bytes)
        self._lock = threading.Lock()
        self.computed: collections.Counter = collections.Counter()  # kind -> times computed (a miss)

    def get(self, kind: str, key: tuple, compute: Callable[[], object], budget_mb: float | None = None):
        k = (kind, key)
        with self._lock:
            if k in self._items:
                self._items.move_to_end(k)
                return self._items[k][0]
        value = compute()
        arrays = [v for v in jax.tree.leaves(value) if isinstance(v, np.ndarray)]
        for a in arrays:
            a.flags.writeable = False  # shared by runs: nobody may change another run's data
        with self._lock:
            self.computed[kind] += 1
            self._items[k] = (value, sum(a.nbytes for a in arrays))
            if budget_mb is not None:
                self._evict(budget_mb * 2**20)
        return value

    def _evict(self, budget: float) -> None:
        total = sum(n for _, n in self._items.values())
        for k in list(self._items)[:-1]:  # never the entry just added
            if total <= budget:
                break
            total -= self._items.pop(k)[1]

    def clear(self) -> None:
        with self._lock:
            self._items.clear()
            self.computed.clear()


SHARED = SharedCache()


def source_key(cfg, b) -> tuple:
    """What identifies the records a builder reads: the dataset as named, its TFDS data dir and version."""
    return (cfg.name, cfg.data_dir, str(b.data_dir), str(b.version))


def _digest(indices: np.ndarray) -> str:
    return hashlib.sha1(np.ascontiguousarray(indices, dtype=np.int64).tobytes()).hexdigest()


VTAB_PREFIX = "vtab:"


def vtab_task(cfg) -> vtab_lib.VtabTask | None:
    """The VTAB-1k task `data.name = "vtab:TASK"` names, else None."""
    if not cfg.name.startswith(VTAB_PREFIX):
        return None
    task = vtab_lib.VTAB_TASKS.get(cfg.name[len(VTAB_PREFIX):])
    if task is None:
        raise ConfigError("data.name", cfg.name, ", ".join(VTAB_PREFIX + t for t in vtab_lib.VTAB_TASKS))
    return task


def builder(cfg) -> tfds.core.DatasetBuilder:
    """The TFDS builder for `data.name`, prepared locally if it is built in (or a folder). Multi-host: process
    0 prepares it while the others wait, then they read what it wrote."""
    local = cfg.name.startswith(folder.PREFIX) or cfg.name in registry.BUILDERS
    if not local or jax.process_count() == 1:
        return _builder(cfg)
    b = _builder(cfg) if distributed.is_writer() else None
    distributed.barrier(f"prepared {cfg.name}")
    return b or _builder(cfg)


# The builders this process made (a config's checks, then its runs), kept while their prepared files stay as
# they were (tl_research.core.memo); never a folder:PATH dataset's (its builder checks the photos each time)
# nor one made under tfds.testing.mock_data.
BUILDERS = memo.FileMemo(entries=16)


def _builder(cfg) -> tfds.core.DatasetBuilder:
    if cfg.name.startswith(folder.PREFIX) or _mocked():
        return _new_builder(cfg)
    key = (cfg.name, cfg.data_dir, os.environ.get("TFDS_DATA_DIR", ""))
    return BUILDERS.get(key, lambda: _new_builder(cfg), lambda b: [b.data_dir])


def _mocked() -> bool:
    return tfds.core.DatasetBuilder.download_and_prepare.__module__ == "tensorflow_datasets.testing.mocking"


def _new_builder(cfg) -> tfds.core.DatasetBuilder:
    kwargs = {"data_dir": cfg.data_dir or None}
    if cfg.name.startswith(folder.PREFIX):
        return folder.builder(cfg.name[len(folder.PREFIX):], cfg.data_dir or None)
    if cfg.name in registry.BUILDERS:
        b = registry.BUILDERS[cfg.name](file_format="array_record", **kwargs)
        if not b.is_prepared():
            with tfds_spill.without_tensorflow():  # a split past TFDS's 1,000 MB buffer spills to disk
                b.download_and_prepare()
        return b
    task = vtab_task(cfg)
    name = task.tfds_name if task else cfg.name
    try:
        b = tfds.builder(name, **kwargs)
    except tfds.core.registered.DatasetNotFoundError:
        raise ConfigError("data.name", cfg.name, f"a built-in dataset ({', '.join(registry.BUILDERS)}), a TFDS "
                          "dataset name, vtab:TASK or folder:PATH") from None
    except ModuleNotFoundError:  # code that needs TensorFlow to describe its features (e.g. coco): read the
        try:  # prepared copy from its files, which describe themselves
            b = tfds.core.read_only_builder.builder_from_files(name, **kwargs)
        except tfds.core.registered.DatasetNotFoundError:
            root = cfg.data_dir or tfds.core.constants.DATA_DIR
            raise ConfigError("data.name", cfg.name, f"a prepared dataset: {prepare_command(cfg.name, root)}",
                              why=f"not prepared in {root}; its TFDS code needs TensorFlow") from None
    check_prepared(cfg, b)
    return b


def prepare_command(name: str, data_dir) -> str:
    """The command that prepares dataset `name` (as data.name spells it) under `data_dir` (tl_research.cli.prepare)."""
    import shlex
    return f"python -m tl_research.prepare {shlex.quote(name)} --data_dir {shlex.quote(str(data_dir))}"


def check_prepared(cfg, b) -> None:
    """ConfigError naming data.name, the data dir searched and the prepare command, unless `b` is prepared in a
    format read without TensorFlow (array_record): an unprepared dataset, or one `tfds build` wrote as tfrecord
    only, stops a launch here rather than at its first split."""
    if b.download_and_prepare.__module__ == "tensorflow_datasets.testing.mocking":
        return  # tfds.testing.mock_data: generated examples, no files to find
    root = b.data_dir_root
    if not b.is_prepared():
        raise ConfigError("data.name", cfg.name, f"a prepared dataset: {prepare_command(cfg.name, root)}",
                          why=f"not prepared in {root}")
    formats = b.info.available_file_formats()
    if not formats & tfds.core.file_adapters.FileFormat.with_random_access():
        shown = ", ".join(sorted(f.value for f in formats)) or "?"
        raise ConfigError("data.name", cfg.name, "a dataset prepared in array_record: "
                          f"{prepare_command(cfg.name, root)} --overwrite",
                          why=f"prepared in {b.data_dir} as {shown} only, which needs TensorFlow to read; "
                          "it must be array_record")


@dataclasses.dataclass(frozen=True)
class LabelSpec:
    """Where a dataset's images and labels come from: record fields, or a VTAB task's derived label."""

    num_classes: int
    names: list[str]
    image_key: str
    label_of: Callable[[dict], int]  # record -> label in 0..num_classes-1
    pixel_scale: int = 1


def label_spec(cfg, b) -> LabelSpec:
    """The images and labels `cfg` (data config) reads from builder `b`; ConfigError for a missing field."""
    features = b.info.features
    task = vtab_task(cfg)
    if task is not None:
        # the task defines its fields; data.image_key / data.label_key may only repeat them
        for key, own in (("image_key", task.image_key), ("label_key", task.label_key)):
            if cfg[key] not in (own, default_config()[key]):
                raise ConfigError(f"data.{key}", cfg[key], f"{own!r} (set by the task {cfg.name})")
        feature = features[task.label_key]
        names = (list(feature.names) if task.label_fn is None and hasattr(feature, "names")
                 else [str(c) for c in range(task.num_classes)])
        return LabelSpec(task.num_classes, names, task.image_key, task.label, task.pixel_scale)
    if cfg.label_key not in features or cfg.image_key not in features:
        key = "data.label_key" if cfg.label_key not in features else "data.image_key"
        no_labels = not any(isinstance(f, tfds.features.ClassLabel) for f in features.values())
        raise ConfigError(key, cfg[key.split(".")[1]], ", ".join(features.keys()),
                          why="no image-level label: data.targets=segmentation or detection reads its targets"
                          if no_labels and key == "data.label_key" else "")
    feature = features[cfg.label_key]
    if not isinstance(feature, tfds.features.ClassLabel):
        raise ConfigError("data.label_key", cfg.label_key, ", ".join(
            k for k, f in features.items() if isinstance(f, tfds.features.ClassLabel)), why="not a class label")
    label_key = cfg.label_key
    return LabelSpec(feature.num_classes, list(feature.names), cfg.image_key, lambda r: int(r[label_key]))


def num_classes(cfg, targets: targets_lib.Targets | None = None) -> int:
    """Number of classes of the dataset `cfg` (data config) names, before any data.classes subset: of its
    image labels, or with a task's `targets` (else data.targets') of what those read (segmentation: its mask
    classes, background included; detection: its object classes)."""
    b = builder(cfg)
    spec = targets_lib.spec(cfg, b, targets=targets or targets_lib.get(cfg.get("targets", "label")))
    return label_spec(cfg, b).num_classes if spec is None else len(spec.names)


def _num_examples(b, split: str, name: str) -> int:
    if split in b.info.splits:
        return int(b.info.splits[split].num_examples)
    try:  # metadata not at hand (e.g. tfds.testing.mock_data)
        return len(b.as_data_source(split=split))
    except Exception as e:  # noqa: BLE001 - TFDS raises several types for a dataset that is not prepared
        raise ConfigError("data.name", name, f"a task whose TFDS dataset ({b.name}) is prepared in array_record "
                          "format under the TFDS data dir", why=str(e).splitlines()[0][:120]) from None


def split_strings(cfg, b) -> dict[str, str]:
    """The TFDS split string of each split key (data.train_split, data.val_split, data.test_split). For a VTAB
    task, the keys name the task's splits (vtab.SPLITS), turned here into absolute TFDS split strings."""
    keys = ("data.train_split", "data.val_split", "data.test_split")
    values = {k: cfg[k.split(".")[1]] for k in keys}
    task = vtab_task(cfg)
    if task is None:
        return values
    if cfg.vtab:  # the protocol's own splits rather than records 0:800 / 800:1000 of one split
        values.update({"data.train_split": cfg.vtab, "data.val_split": "val200"})
    for key, value in values.items():
        if value not in vtab_lib.SPLITS:
            raise ConfigError(key, value, f"a split of the VTAB task {cfg.name}: {', '.join(vtab_lib.SPLITS)}")
    counts = {n: _num_examples(b, n, cfg.name) for n in task.base_splits()}
    out = {}
    for key, value in values.items():
        try:
            out[key] = task.split(value, counts)
        except ValueError as e:
            raise ConfigError(key, value, "train, val, test", why=str(e)) from None
    return out


def _scan_labels(b, split: str, label_of: Callable[[dict], int], records: np.ndarray | None = None,
                 image_key: str = "image") -> np.ndarray:
    """Labels of every record of a split (or of `records`, record indices). Images are not decoded where
    the source allows skipping them."""
    try:
        src = b.as_data_source(split=split, decoders={image_key: tfds.decode.SkipDecoding()})
        if len(src):
            src[0]  # probe: fails where the source cannot skip decoding
    except Exception:  # sources that encode on the fly (tfds.testing.mock_data) cannot skip decoding
        src = b.as_data_source(split=split)
    records = np.arange(len(src)) if records is None else np.asarray(records)
    labels = np.empty(len(records), dtype=np.int64)
    chunk = 1024
    for start in range(0, len(records), chunk):
        keys = [int(k) for k in records[start:start + chunk]]
        for i, rec in enumerate(src.__getitems__(keys), start):
            labels[i] = label_of(rec)
    return labels


def _source(b, split: str, key: str):
    try:
        return b.as_data_source(split=split)
    except Exception as e:  # noqa: BLE001 - TFDS raises several types for a bad split string
        raise ConfigError(key, split, f"a split of {b.name}: {', '.join(b.info.splits.keys()) or '?'}",
                          why=str(e).splitlines()[0][:120]) from None


def resolve_image_shape(cfg, native_shape, meta) -> tuple[tuple[int, int, int], str, float]:
    """(height, width, channels), interpolation and crop fraction: the config's, else the checkpoint
    metadata's, else the dataset's own."""
    size = cfg.image_size or (meta.input_size[0] if meta and meta.input_size else 0)
    channels = cfg.channels or (meta.input_size[2] if meta and meta.input_size else 0)
    native_h, native_w, native_c = native_shape
    if not size:
        if native_h is None or native_w is None:
            raise ConfigError("data.image_size", cfg.image_size,
                              "a positive size: the images of this dataset have different sizes")
        h, w = native_h, native_w
    else:
        h = w = int(size)
    c = int(channels or native_c or 3)
    if c not in (1, 3):
        raise ConfigError("data.channels", c, "0 (as the data or checkpoint), 1 or 3")
    interpolation = cfg.interpolation or (meta.interpolation if meta else "") or "bilinear"
    if interpolation not in INTERPOLATIONS:
        raise ConfigError("data.interpolation", interpolation, ", ".join(INTERPOLATIONS))
    crop_pct = cfg.crop_pct or (meta.crop_pct if meta else 0.0) or 1.0
    return (h, w, c), interpolation, float(crop_pct)


def make_image_loader(image_key, shape, interpolation, crop_pct, pixel_scale: int = 1):
    """record -> uint8 (H, W, C): scale the pixel values (binary 0/1 images to 0/255), resize the shorter
    side to size / crop_pct, centre-crop, fix channels."""
    h, w, c = shape
    resample = INTERPOLATIONS[interpolation]

    def load(record: dict) -> np.ndarray:
        img = record[image_key]
        if isinstance(img, EncodedImage):
            img = _decode_encoded(img, h, w, crop_pct, resample) if pixel_scale == 1 else img.decode(img.data)
        img = np.asarray(img)
        if pixel_scale != 1:
            img = np.minimum(img.astype(np.int32) * pixel_scale, 255).astype(np.uint8)
        if img.ndim == 2:
            img = img[..., None]
        img = geometry.fit(img, h, w, crop_pct, resample)
        if img.shape[-1] != c:
            if c == 3:
                img = np.repeat(img[..., :1], 3, axis=-1)
            else:  # ITU-R 601 luma
                img = np.round(img[..., :3].astype(np.float32) @ np.array([0.299, 0.587, 0.114]))[..., None]
        return np.ascontiguousarray(img, dtype=np.uint8)

    load.image_key = image_key  # which field `_fetch` may hand over still encoded
    return load


@dataclasses.dataclass(frozen=True)
class EncodedImage:
    """A record's image as stored (`_fetch`), decoded by the image loader: its bytes and the TFDS feature's
    own decoding of them."""

    data: bytes
    decode: Callable[[bytes], np.ndarray]


DRAFT_MARGIN = 2  # a JPEG is decoded at a reduced scale to at least this many times the size its resize needs


def _decode_encoded(image: EncodedImage, h: int, w: int, crop_pct: float, resample) -> np.ndarray:
    """An encoded image -> its pixels. An RGB or greyscale JPEG at least 2 x DRAFT_MARGIN times the size the
    resize to (h, w) needs (geometry.window) is decoded at a reduced scale (PIL's `draft`: libjpeg's DCT
    scaling by 1/2, 1/4 or 1/8, to no less than DRAFT_MARGIN times that size) and resized here to the
    full-size decode's window, mapped onto the reduced image exactly (a `box` of the original's extent, as the
    last reduced row or column may cover part of a block): deterministic, and within a mean |difference| of 1
    grey level (at most 8) of the full decode on photos (tests/test_pipeline_workers.py); returned at (h, w).
    Anything else is decoded exactly as the TFDS data source would, at its stored size."""
    with Image.open(io.BytesIO(image.data)) as im:
        if im.format == "JPEG" and im.mode in ("RGB", "L"):
            width, height = im.size
            win = geometry.window(height, width, h, w, crop_pct)
            need_w, need_h = DRAFT_MARGIN * win.new_w, DRAFT_MARGIN * win.new_h
            if width >= 2 * need_w and height >= 2 * need_h:
                im.draft(im.mode, (need_w, need_h))
                scale = 2 ** round(np.log2(width / im.width))  # the power of two libjpeg reduced by
                out = im.resize((win.new_w, win.new_h), resample, box=(0, 0, width / scale, height / scale))
                out = np.asarray(out.crop((win.left, win.top, win.left + w, win.top + h)))
                return out[..., None] if out.ndim == 2 else out
    return image.decode(image.data)


_ENCODED: dict[int, tuple] = {}  # id(data source) -> (weakref to it, its source of encoded images or None)
_ENCODED_LOCK = threading.Lock()


def _encoded_source(source, image_key: str):
    """The same records as `source` with field `image_key` not decoded, or None where that is not possible
    (not a TFDS array_record source, not an Image feature, or a source that cannot skip decoding). One per
    source and process: each worker process opens its own."""
    with _ENCODED_LOCK:
        hit = _ENCODED.get(id(source))
        if hit is not None and hit[0]() is source:
            return hit[1]
    enc = None
    features = getattr(getattr(source, "dataset_info", None), "features", None)
    if (isinstance(source, tfds.core.data_sources.array_record.ArrayRecordDataSource) and features is not None
            and image_key in features.keys() and isinstance(features[image_key], tfds.features.Image)):
        try:
            enc = dataclasses.replace(source, decoders={**(source.decoders or {}),
                                                      image_key: tfds.decode.SkipDecoding()})
            if len(enc) and not isinstance(enc[0][image_key], bytes):
                enc = None
        except Exception:  # noqa: BLE001 - a source that cannot skip decoding: records come decoded
            enc = None
    with _ENCODED_LOCK:
        for k in [k for k, (ref, _) in _ENCODED.items() if ref() is None]:
            del _ENCODED[k]
        _ENCODED[id(source)] = (weakref.ref(source), enc)
    return enc


def _fetch(data: Dataset, source, keys: list[int]) -> list[dict]:
    """The records `keys` of `source`, with the image still encoded (EncodedImage) where the data source
    allows it, so the image loader decodes it (JPEGs at a reduced scale when much larger than needed).
    Classification only: a dense task's target readers (data/targets.py) read the decoded image's size."""
    image_key = getattr(data.load_image, "image_key", None)
    enc = _encoded_source(source, image_key) if image_key is not None and data.targets is None else None
    if enc is None:
        return source.__getitems__(keys)
    decode = source.dataset_info.features[image_key].decode_example_np
    records = enc.__getitems__(keys)
    for r in records:
        r[image_key] = EncodedImage(r[image_key], decode)
    return records


BALANCE = ("none", "oversample")


def check_subset_config(cfg, targets: targets_lib.Targets | None = None) -> None:
    """Raises ConfigError for a bad training-subset field, before any data is read or prepared (`targets`:
    the task's, else the one data.targets names)."""
    for key in ("train_examples", "per_class"):
        if not isinstance(cfg[key], (int, np.integer)) or cfg[key] < 0:
            raise ConfigError(f"data.{key}", cfg[key], "a whole number >= 0 (0 = all)")
    if cfg.train_examples and cfg.per_class and cfg.imbalance_ratio == 1.0:
        raise ConfigError("data.per_class", cfg.per_class, "0 when data.train_examples is set "
                          "(per_class sets class 0's size only with data.imbalance_ratio > 1)")
    if not cfg.imbalance_ratio >= 1.0:
        raise ConfigError("data.imbalance_ratio", cfg.imbalance_ratio, "a number >= 1 (1 = balanced)")
    if cfg.balance not in BALANCE:
        raise ConfigError("data.balance", cfg.balance, ", ".join(BALANCE))
    if cfg.vtab not in ("", "train800", "train800val200"):
        raise ConfigError("data.vtab", cfg.vtab, "'' (off), 'train800' (tuning), 'train800val200' (final run)")
    if not isinstance(cfg.subset_seed, (int, np.integer)) or cfg.subset_seed < -1:
        raise ConfigError("data.subset_seed", cfg.subset_seed, "-1 (the run's seed) or a seed >= 0")
    targets_lib.check(cfg, targets)


def select_training_examples(cfg, labels: np.ndarray, seed: int) -> np.ndarray:
    """Positions into a training split's (relabelled) labels that the config keeps: long-tailed first
    (data.imbalance_ratio, class 0 keeping data.per_class or the smallest class size), then a stratified
    subset (data.train_examples, or data.per_class when balanced). Sorted; all positions when unset."""
    seed = seed if cfg.subset_seed == -1 else cfg.subset_seed
    keep = np.arange(len(labels))
    if cfg.imbalance_ratio != 1.0:
        keep = subsets.long_tailed(labels, cfg.imbalance_ratio, seed, n_max=cfg.per_class)
        if cfg.train_examples:
            keep = keep[subsets.stratified_nested(labels[keep], total=cfg.train_examples, seed=seed)]
    elif cfg.train_examples or cfg.per_class:
        keep = subsets.stratified_nested(labels, total=cfg.train_examples, per_class=cfg.per_class, seed=seed)
    return keep


def train_sampler(cfg, data: "Dataset", seed: int):
    """The sampler `train_batches` should use for data.balance: an EpochSampler, or a BalancedSampler."""
    if cfg.balance == "oversample":
        return BalancedSampler(data.train.labels, seed)
    return EpochSampler(len(data.train), seed)


def load(cfg, meta=None, seed: int = 0, targets: targets_lib.Targets | None = None) -> Dataset:
    """Selects the examples of every split. `meta` (a checkpoint's ModelMeta) fills image size, channels,
    interpolation and crop fraction the config leaves at 0. `seed` (the run's) draws the training subset
    when data.subset_seed is -1. `targets`: what the batches carry besides the image, the task's
    `target_spec` (None: the registered one data.targets names)."""
    targets = targets or targets_lib.get(cfg.targets)
    check_subset_config(cfg, targets)
    check_workers(cfg.get("workers", 0))
    b = builder(cfg)
    if not targets.image_level:
        return _load_with_targets(cfg, b, meta, seed, targets)
    spec = label_spec(cfg, b)
    split_names = split_strings(cfg, b)
    num_all, all_names = spec.num_classes, spec.names
    classes = tuple(int(c) for c in cfg.classes) if cfg.classes else tuple(range(num_all))
    bad = [c for c in classes if not 0 <= c < num_all]
    if bad or len(set(classes)) != len(classes) or len(classes) < 2:
        raise ConfigError("data.classes", tuple(cfg.classes),
                          f"two or more distinct class ids in 0..{num_all - 1} of {cfg.name}")
    relabel = np.full(num_all, -1, dtype=np.int64)
    relabel[list(classes)] = np.arange(len(classes))

    def split(key: str, vtab: str = "") -> Split:
        name = split_names[key]
        src = _source(b, name, key)
        records = subsets.vtab_positions(vtab, len(src)) if vtab else np.arange(len(src))
        scan_key = (source_key(cfg, b), name, vtab, len(src), spec.image_key, cfg.label_key)
        raw = SHARED.get("labels", scan_key, lambda: _scan_labels(b, name, spec.label_of, records if vtab else None,
                                                                  spec.image_key))
        bad = raw[(raw < 0) | (raw >= num_all)]
        if len(bad):
            raise ConfigError("data.name", cfg.name, f"a dataset whose labels lie in 0..{num_all - 1}",
                              why=f"split {name} gives label {int(bad[0])}")
        labels = relabel[raw]
        idx = np.flatnonzero(labels >= 0)
        if len(idx) == 0:
            raise ConfigError(key, name, "a split holding examples of data.classes")
        return Split(src, records[idx], labels[idx], key=(source_key(cfg, b), name))

    if cfg.vtab and vtab_task(cfg) is None:
        train, val = split("data.train_split", cfg.vtab), split("data.train_split", "val200")
    else:
        train, val = split("data.train_split"), split("data.val_split")
    test = split("data.test_split")
    keep = select_training_examples(cfg, train.labels, seed)
    train = Split(train.source, train.indices[keep], train.labels[keep], key=train.key)
    shape, interpolation, crop_pct = resolve_image_shape(cfg, b.info.features[spec.image_key].shape, meta)
    load_image = make_image_loader(spec.image_key, shape, interpolation, crop_pct, spec.pixel_scale)
    data = Dataset(cfg.name, train, val, test, len(classes), [all_names[c] for c in classes], shape,
                   load_image, train_ids=train.indices.copy(), interpolation=interpolation, crop_pct=crop_pct,
                   decode_key=(spec.image_key, shape, interpolation, crop_pct, spec.pixel_scale),
                   workers=int(cfg.get("workers", 0)))
    if cfg.cache_mb:
        cache_in_memory(data, cfg.cache_mb)
    return data


def _load_with_targets(cfg, b, meta, seed: int, targets: targets_lib.Targets) -> Dataset:
    """`load` for targets read from a record (segmentation, detection): every record of a split, in record
    order, with the task's targets; no image-level label is read (Split.labels are 0, so data.train_examples draws a seeded, nested
    random subset)."""
    if vtab_task(cfg) is not None:
        raise ConfigError("data.targets", targets.name, "label for a VTAB task (they are classification tasks)")
    if cfg.image_key not in b.info.features:
        raise ConfigError("data.image_key", cfg.image_key, ", ".join(b.info.features.keys()))
    shape, interpolation, crop_pct = resolve_image_shape(cfg, b.info.features[cfg.image_key].shape, meta)
    spec = targets_lib.spec(cfg, b, shape, crop_pct, targets=targets)
    names = split_strings(cfg, b)

    def split(key: str) -> Split:
        src = _source(b, names[key], key)
        if not len(src):
            raise ConfigError(key, names[key], f"a split of {cfg.name} holding examples")
        return Split(src, np.arange(len(src), dtype=np.int64), np.zeros(len(src), dtype=np.int64),
                     key=(source_key(cfg, b), names[key]))

    train, val, test = split("data.train_split"), split("data.val_split"), split("data.test_split")
    keep = select_training_examples(cfg, train.labels, seed)
    train = Split(train.source, train.indices[keep], train.labels[keep], key=train.key)
    load_image = make_image_loader(cfg.image_key, shape, interpolation, crop_pct)
    data = Dataset(cfg.name, train, val, test, len(spec.names), list(spec.names), shape, load_image,
                   train_ids=train.indices.copy(), interpolation=interpolation, crop_pct=crop_pct, targets=spec,
                   decode_key=(cfg.image_key, shape, interpolation, crop_pct, 1, targets.name, cfg.mask_key,
                               cfg.objects_key, int(cfg.max_boxes)), workers=int(cfg.get("workers", 0)))
    if cfg.cache_mb:
        cache_in_memory(data, cfg.cache_mb)
    return data


class EpochSampler:
    """Position p of the training stream -> an example: a fresh permutation of the split every epoch.

    Deterministic for (seed, epoch), so any batch can be recomputed from its step alone."""

    def __init__(self, n: int, seed: int):
        self.n, self.seed = n, seed

    @functools.lru_cache(maxsize=4)
    def _perm(self, epoch: int) -> np.ndarray:
        return np.random.default_rng([self.seed, epoch]).permutation(self.n)

    def __call__(self, positions: np.ndarray) -> np.ndarray:
        epochs, offsets = np.divmod(positions, self.n)
        return np.array([self._perm(int(e))[o] for e, o in zip(epochs, offsets)], dtype=np.int64)


def _example_bytes(data: Dataset) -> int:
    h, w, c = data.image_shape
    if data.targets is None:
        return h * w * c
    return h * w * c + data.targets.example_bytes


def _decode(data: Dataset, records: list[dict]) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """Records -> stacked images and, with data.targets, the stacked target arrays of each key."""
    images = np.stack([data.load_image(r) for r in records])
    if data.targets is None:
        return images, {}
    rows = [data.targets.read(r) for r in records]
    return images, {k: np.stack([row[k] for row in rows]) for k in rows[0]}


def _decode_split(data: Dataset, split: Split, limit_mb: float) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """`_decode` of a whole split, chunk by chunk into arrays of the final (resized) size allocated once:
    besides them only one chunk of records is held at its stored resolution, about 1/16 of the budget (the
    chunk length adapts to the records' size), so decoding stays within about `limit_mb`."""
    n, chunk_bytes = len(split), max(limit_mb * 2**20 / 16, 1.0)
    out: dict[str, np.ndarray] = {}
    start, size = 0, 1  # then as many as fit in chunk_bytes
    while start < n:
        records = _fetch(data, split.source, [int(i) for i in split.indices[start:start + size]])
        stored = sum(v.nbytes if isinstance(v, np.ndarray) else len(v.data) * 8  # encoded: a bound
                     for r in records for v in jax.tree.leaves(r) if isinstance(v, (np.ndarray, EncodedImage)))
        images, extras = _decode(data, records)
        for key, value in {"image": images, **extras}.items():
            if key not in out:
                out[key] = np.empty((n, *value.shape[1:]), value.dtype)
            out[key][start:start + len(value)] = value
        start += len(records)
        size = int(np.clip(chunk_bytes * len(records) / max(stored, 1), 1, 1024))
        del records, images, extras
    if "image" not in out:  # an empty split
        out["image"] = np.empty((0, *data.image_shape), np.uint8)
    images = out.pop("image")
    return images, out


def cache_in_memory(data: Dataset, limit_mb: float) -> None:
    """Decodes small splits once, so an epoch costs an index lookup instead of PNG decoding. A split whose
    dataset, split string, records and preprocessing an earlier run of this process decoded reuses those
    arrays (SHARED). Decoding holds about `limit_mb` per split at most (`_decode_split`)."""
    for split in (data.train, data.val, data.test):
        if split.images is None and len(split) * _example_bytes(data) <= limit_mb * 2**20:
            def decode(split=split):
                return _decode_split(data, split, limit_mb)
            if split.key is None or data.decode_key is None:  # a Dataset built by hand
                split.images, extras = decode()
            else:
                key = (split.key, data.decode_key, _digest(split.indices))
                split.images, extras = SHARED.get("decoded", key, decode, budget_mb=3 * limit_mb)
            split.extras = extras or None


def _read(data: Dataset, split: Split, positions: np.ndarray) -> dict[str, np.ndarray]:
    """The examples at `positions` of a split: {"image", "label"}, or {"image", target arrays...}."""
    if split.images is not None:
        images, extras = split.images[positions], {k: v[positions] for k, v in (split.extras or {}).items()}
    else:
        images, extras = _decode(data, _fetch(data, split.source, [int(i) for i in split.indices[positions]]))
    if data.targets is None:
        return {"image": images, "label": split.labels[positions].astype(np.int32)}
    return {"image": images, **extras}


def _local_slice(global_batch: int) -> slice:
    """This host's part of a global batch (multi-host: each process loads only its own examples)."""
    n, i = jax.process_count(), jax.process_index()
    per = global_batch // n
    return slice(i * per, (i + 1) * per)


def check_workers(workers) -> None:
    if not isinstance(workers, (int, np.integer)) or workers < -1:
        raise ConfigError("data.workers", workers, "0 (threads of this process), N > 0 worker processes or -1 "
                          "(automatic)")


# data.workers=-1 starts no worker process for an iterator over fewer examples: starting one (a "spawn"
# process importing this package: seconds of CPU) costs more than decoding them in this process
AUTO_MIN_EXAMPLES = 2048


def resolve_workers(workers: int, split: Split, examples: int | None = None) -> int:
    """data.workers -> the number of worker processes for an iterator over `examples` examples (default: the
    split's) of `split`: 0 for a split held in memory (copying its arrays into processes costs more than the
    index lookup it replaces), else N > 0 as given, 0 none, and -1 (automatic) the cores this process may use
    minus one (0 on one core), or 0 for fewer than AUTO_MIN_EXAMPLES examples."""
    check_workers(workers)
    if split.images is not None or workers == 0:
        return 0
    if workers > 0:
        return int(workers)
    if (len(split) if examples is None else examples) < AUTO_MIN_EXAMPLES:
        return 0
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    return max(0, cores - 1)


def _iterate(ds: grain.MapDataset, threads: int, prefetch: int, workers: int) -> Iterator[dict]:
    """Element k of `ds` in order k = 0, 1, ...: on `threads` threads of this process, or with `workers` > 0
    in that many "spawn" processes (grain's mp_prefetch: worker i computes elements i, i + workers, ... of
    the pipeline it unpickles, opening its own data source, and the parent takes them round-robin, so the
    order and bytes do not depend on the worker count or on which worker finishes first). The processes end
    when the iterator is closed, dropped or exhausted, or with this process."""
    it = ds.to_iter_dataset(grain.ReadOptions(num_threads=threads, prefetch_buffer_size=prefetch))
    if workers > 0:
        if not flags.FLAGS.is_parsed():  # grain reads its absl flags (defaults here); the command line parses
            flags.FLAGS.mark_as_parsed()  # its own FlagValues, never absl's global ones
        per_worker = max(1, -(-prefetch // workers))  # about `prefetch` batches in flight in all
        it = it.mp_prefetch(grain.MultiprocessingOptions(num_workers=workers, per_worker_buffer_size=per_worker))
        it = it.map(_plain_arrays)
        out = iter(it)
        _LIVE.add(out)
        return out
    return iter(it)


def _plain_arrays(batch: dict) -> dict:
    """A batch from the worker processes as plain numpy arrays (views of grain's shared-memory arrays)."""
    return {k: np.asarray(v) for k, v in batch.items()}


_LIVE: "weakref.WeakSet" = weakref.WeakSet()  # iterators with worker processes, closed at exit (quietly)


@atexit.register
def _close_live() -> None:
    for it in list(_LIVE):
        it.close()


def train_batches(data: Dataset, batch_size: int, seed: int, start_step: int, num_steps: int,
                  threads: int = 2, prefetch: int = 4, sampler=None, workers: int | None = None) -> Iterator[dict]:
    """Batches for steps start_step..num_steps-1: {"image": uint8 (B, H, W, C), "label": int32 (B,)}, or
    with data.targets the target arrays in place of "label" (see default_config's `targets`). `workers`:
    data.workers (resolve_workers; None: the dataset's); the batches are the same whatever it is."""
    sampler = sampler or EpochSampler(len(data.train), seed)
    local = _local_slice(batch_size)

    def batch(step: int) -> dict:
        positions = sampler(np.arange(step * batch_size, (step + 1) * batch_size)[local])
        return _read(data, data.train, positions)

    ds = grain.MapDataset.range(start_step, num_steps).map(batch)
    workers = data.workers if workers is None else workers
    examples = max(0, num_steps - start_step) * batch_size
    return _iterate(ds, threads, prefetch, resolve_workers(workers, data.train, examples))


def eval_batches(data: Dataset, split: Split, batch_size: int, threads: int = 2,
                 workers: int | None = None) -> Iterator[dict]:
    """Fixed-order batches over a whole split, the last one padded; "mask" marks the real examples. Padded
    rows repeat the first example's image; their label is 0, their segmentation mask all 255 (ignore),
    their boxes zeros and classes -1 (no object), so a target left unmasked still scores nothing.
    `workers`: data.workers (resolve_workers; None: the dataset's, so evaluators and the feature cache's
    fill read a streamed split in the run's worker processes); the batches are the same whatever it is."""
    n = len(split)
    local = _local_slice(batch_size)

    def batch(k: int) -> dict:
        pos = np.arange(k * batch_size, (k + 1) * batch_size)[local]
        mask = pos < n
        out = _read(data, split, np.where(mask, pos, 0))
        pad = targets_lib.LABEL.pad if data.targets is None else data.targets.pad
        for key, value in pad.items():
            where = mask.reshape((-1,) + (1,) * (out[key].ndim - 1))
            out[key] = np.where(where, out[key], np.asarray(value, dtype=out[key].dtype))
        return {**out, "mask": mask}

    num = -(-n // batch_size)
    ds = grain.MapDataset.range(num).map(batch)
    return _iterate(ds, threads, 2, resolve_workers(data.workers if workers is None else workers, split))
