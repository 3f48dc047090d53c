"""The 19 tasks of VTAB-1k (Zhai et al. 2019, "The Visual Task Adaptation Benchmark", arXiv 1910.04867).

Each task names its TFDS dataset (with config; and the version range the benchmark pinned, which a current
TFDS may no longer offer: `tfds_name` loads the installed version), where its label
comes from, its train / val / test splits and its group. The definitions follow the benchmark's own data
loaders (github.com/google-research/task_adaptation, task_adaptation/data/*.py): the derived labels of the
structured tasks (CLEVR counts and distances, dSprites positions binned, KITTI distance) and the splits cut
from TFDS splits by integer percentages.

The VTAB-1k protocol: tune hyper-parameters training on "train800" and validating on "val200", then train
on "train800val200" and report accuracy on "test". `VtabTask.splits(counts)` turns a task's splits into
absolute TFDS split strings, e.g. for cifar100 (train 50,000 examples):

    train800 = "train[:800]", val200 = "train[45000:45200]", train800val200 = "train[:800]+train[45000:45200]"

(`data.vtab` in the pipeline is the simpler same-split variant for any dataset: records 0:800 / 800:1000.)

In a config, `data.name = "vtab:TASK"` loads a task through the pipeline (derived labels included), e.g.
`vtab:clevr_count`; `data.train_split` / `val_split` / `test_split` then name the task's splits (SPLITS:
"train", "val", "test" by default, "train800" / "val200" / "train800val200" for VTAB-1k), and
`data.vtab = "train800"` or `"train800val200"` selects the protocol's train and val200 splits.
"""
from __future__ import annotations

import dataclasses
import re
from typing import Callable

import numpy as np

from tl_research.core.errors import ConfigError

GROUPS = ("natural", "specialized", "structured")
# The split names a task answers to: its own train / val / test and the VTAB-1k protocol's.
SPLITS = ("train", "val", "test", "trainval", "train800", "val200", "train800val200")


@dataclasses.dataclass(frozen=True)
class VtabTask:
    name: str
    tfds_name: str  # "dataset[/config]" for tfds.builder
    group: str  # natural | specialized | structured
    num_classes: int
    label_key: str  # the record field holding the label, or the one a derived label is computed from
    train: str  # TFDS split strings; percentages are cut as VTAB does: start = pct * n // 100
    val: str
    test: str
    label_fn: Callable[[dict], int] | None = None  # record -> label, for derived labels
    benchmark_version: str = ""  # the TFDS version range the benchmark pinned (current TFDS may lack it)
    image_key: str = "image"
    pixel_scale: int = 1  # dSprites stores binary 0/1 images; the benchmark multiplies them by 255

    def label(self, record: dict) -> int:
        """The task's label of one TFDS record (as `tfds.data_source` returns it)."""
        if self.label_fn is not None:
            return int(self.label_fn(record))
        return int(record[self.label_key])

    def base_splits(self) -> list[str]:
        """The TFDS splits the task's train, val and test are cut from, e.g. ["train", "test"]."""
        names = [_SPLIT_RE.match(s).group(1) for s in (self.train, self.val, self.test)]
        return sorted(set(names))

    def split(self, name: str, num_examples: dict[str, int]) -> str:
        """One of SPLITS as an absolute TFDS split string (see `splits`)."""
        if name not in SPLITS:
            raise ValueError(f"{self.name}: unknown split {name!r}; allowed: {', '.join(SPLITS)}")
        if name in ("train", "val", "test"):
            return _fmt(*_resolve(getattr(self, name), num_examples))
        return self.splits(num_examples)[name]

    def splits(self, num_examples: dict[str, int]) -> dict[str, str]:
        """Absolute TFDS split strings of train, val, test, trainval and the VTAB-1k train800, val200 and
        train800val200, given the number of examples of each TFDS split the task cuts by percentage
        (e.g. builder.info.splits[name].num_examples)."""
        train, val, test = (_resolve(s, num_examples) for s in (self.train, self.val, self.test))
        (tn, ta, tb), (vn, va, vb) = train, val
        if tb - ta < 800 or vb - va < 200:
            raise ValueError(f"{self.name}: train {tb - ta} / val {vb - va} examples, VTAB-1k needs 800 / 200")
        train800, val200 = _fmt(tn, ta, ta + 800), _fmt(vn, va, va + 200)
        trainval = _fmt(tn, ta, vb) if tn == vn and tb == va else f"{_fmt(*train)}+{_fmt(*val)}"
        return {"train": _fmt(*train), "val": _fmt(*val), "test": _fmt(*test), "trainval": trainval,
                "train800": train800, "val200": val200, "train800val200": f"{train800}+{val200}"}


_SPLIT_RE = re.compile(r"^(\w+)(?:\[(\d*)%?:(\d*)%?\])?$")


def _resolve(split: str, num_examples: dict[str, int]) -> tuple[str, int, int]:
    """"train[60%:80%]" -> ("train", 60 * n // 100, 80 * n // 100) for n = num_examples["train"]."""
    m = _SPLIT_RE.match(split)
    if not m:
        raise ValueError(f"unsupported split {split!r}")
    name, start, stop = m.groups()
    if name not in num_examples:
        raise ValueError(f"the number of examples of split {name!r} is needed to cut {split!r}")
    n = int(num_examples[name])
    a = int(start) * n // 100 if start else 0
    b = int(stop) * n // 100 if stop else n
    return name, a, b


def _fmt(name: str, a: int, b: int) -> str:
    return f"{name}[{a or ''}:{b}]"


# Derived labels, as the benchmark's loaders compute them (numpy versions of their TF code).

def _clevr_count(record) -> int:
    return len(record["objects"]["size"]) - 3  # 3..10 objects -> 0..7


def _clevr_distance(record) -> int:
    depth = np.min(np.asarray(record["objects"]["pixel_coords"])[:, 2])
    thresholds = np.array([0.0, 8.0, 8.5, 9.0, 9.5, 10.0, 100.0])
    return int(np.max(np.flatnonzero(thresholds - depth < 0)))


def _kitti_closest_vehicle_distance(record) -> int:
    types = np.asarray(record["objects"]["type"])
    z = np.asarray(record["objects"]["location"])[:, 2]
    n = min(len(types), len(z))
    vehicles = z[:n][types[:n] < 3]  # Car, Van, Truck
    distance = np.min(np.append(vehicles, 1000.0))  # 1000: no vehicle
    thresholds = np.array([-100.0, 8.0, 20.0, 999.0])
    return int(np.max(np.flatnonzero(thresholds - distance < 0)))


def _binned(key: str, num_values: int, num_classes: int) -> Callable[[dict], int]:
    factor = num_values / num_classes  # dSprites: neighbouring values grouped into num_classes bins

    def label(record) -> int:
        return int(np.floor(float(record[key]) / factor))

    return label


def _task(name, tfds_name, group, num_classes, label_key="label", train="train", val="validation",
          test="test", label_fn=None, pixel_scale=1):
    tfds_name, _, version = tfds_name.partition(":")
    return VtabTask(name, tfds_name, group, num_classes, label_key, train, val, test, label_fn, version,
                    pixel_scale=pixel_scale)


VTAB_TASKS: dict[str, VtabTask] = {t.name: t for t in [
    # natural
    _task("caltech101", "caltech101:3.*.*", "natural", 102, train="train[:90%]", val="train[90%:]"),
    _task("cifar100", "cifar100:3.*.*", "natural", 100, train="train[:90%]", val="train[90%:]"),
    _task("dtd", "dtd:3.*.*", "natural", 47),
    _task("oxford_flowers102", "oxford_flowers102:2.*.*", "natural", 102),
    _task("oxford_iiit_pet", "oxford_iiit_pet:3.*.*", "natural", 37, train="train[:80%]", val="train[80%:]"),
    _task("sun397", "sun397/tfds:4.*.*", "natural", 397),
    _task("svhn", "svhn_cropped:3.*.*", "natural", 10, train="train[:90%]", val="train[90%:]"),
    # specialized
    _task("patch_camelyon", "patch_camelyon:2.*.*", "specialized", 2),
    _task("eurosat", "eurosat/rgb:2.*.*", "specialized", 10, train="train[:60%]", val="train[60%:80%]",
          test="train[80%:]"),
    _task("resisc45", "resisc45:3.*.*", "specialized", 45, train="train[:60%]", val="train[60%:80%]",
          test="train[80%:]"),
    _task("diabetic_retinopathy", "diabetic_retinopathy_detection/btgraham-300:3.*.*", "specialized", 5),
    # structured
    _task("clevr_count", "clevr:3.*.*", "structured", 8, label_key="objects", train="train[:90%]",
          val="train[90%:]", test="validation", label_fn=_clevr_count),
    _task("clevr_distance", "clevr:3.*.*", "structured", 6, label_key="objects", train="train[:90%]",
          val="train[90%:]", test="validation", label_fn=_clevr_distance),
    _task("dmlab", "dmlab:2.0.1", "structured", 6),
    _task("dsprites_location", "dsprites:2.*.*", "structured", 16, label_key="label_x_position",
          train="train[:80%]", val="train[80%:90%]", test="train[90%:]",
          label_fn=_binned("label_x_position", 32, 16), pixel_scale=255),
    _task("dsprites_orientation", "dsprites:2.*.*", "structured", 16, label_key="label_orientation",
          train="train[:80%]", val="train[80%:90%]", test="train[90%:]",
          label_fn=_binned("label_orientation", 40, 16), pixel_scale=255),
    _task("kitti_distance", "kitti:3.*.*", "structured", 4, label_key="objects",
          label_fn=_kitti_closest_vehicle_distance),
    _task("smallnorb_azimuth", "smallnorb:2.*.*", "structured", 18, label_key="label_azimuth",
          val="test[:50%]", test="test[50%:]"),
    _task("smallnorb_elevation", "smallnorb:2.*.*", "structured", 9, label_key="label_elevation",
          val="test[:50%]", test="test[50%:]"),
]}


def get(name: str) -> VtabTask:
    """The VTAB-1k task `name`; ConfigError("data.name", ...) listing the tasks otherwise."""
    if name not in VTAB_TASKS:
        raise ConfigError("data.name", name, ", ".join(VTAB_TASKS))
    return VTAB_TASKS[name]
