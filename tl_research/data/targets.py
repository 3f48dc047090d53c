"""What a batch carries besides its image, as a task declares it (`Targets`), and the registry the pipeline
finds a data config's `data.targets` in.

A task hands the pipeline its `Targets` (tl_research/tasks: `task.target_spec`): the batch keys it adds next
to "image" with the value of a padded eval row, whether it reads the image-level label `data.label_key` (the
pipeline's own path: class subsets, balancing, VTAB apply), and otherwise how a record becomes that example's
fixed-shape arrays for a dataset (`resolve` -> `TargetSpec`). `register` (called by `tasks.register`) makes a
`Targets` findable by its name, the `data.targets` value; `LABEL` (image-level class labels) is built in.
The readers of the built-in dense tasks live with them: tasks/segmentation/targets.py (a mask per image),
tasks/detection/targets.py (padded boxes and their classes).

The mask formats, which a dataset declares: the built-in digit scenes (`DIGIT_MASK`: 0 background, d + 1 for
digit d, 11 classes), and `oxford_iiit_pet`'s trimaps (`PET_TRIMAP`: 1 pet -> 1, 2 background -> 0, 3 border
-> 255 ignored, the usual protocol, as the border is the ambiguous outline). A builder declares its own as
`MASK_FORMAT`; any other dataset is added to `KNOWN_MASKS`.
"""
from __future__ import annotations

import dataclasses
from typing import Callable

import numpy as np

from tl_research.core.errors import ConfigError

IGNORE = 255  # a mask pixel no class is scored on


@dataclasses.dataclass(frozen=True)
class MaskFormat:
    """Class names (index = class id in the yielded mask) and the raw mask value of each class id's pixels;
    raw values not listed become IGNORE."""

    names: tuple[str, ...]
    values: dict[int, int]  # raw value in the record -> class id (or IGNORE)

    def table(self) -> np.ndarray:
        lut = np.full(256, IGNORE, dtype=np.uint8)
        for raw, cls in self.values.items():
            lut[raw] = cls
        return lut


DIGIT_MASK = MaskFormat(("background", *(str(d) for d in range(10))), {v: v for v in range(11)})
PET_TRIMAP = MaskFormat(("background", "pet"), {1: 1, 2: 0, 3: IGNORE})
KNOWN_MASKS = {"oxford_iiit_pet": PET_TRIMAP}


@dataclasses.dataclass(frozen=True)
class TargetSpec:
    """The task targets of one dataset: their classes and how a record becomes the arrays of one example."""

    kind: str  # the Targets' name (data.targets)
    names: list[str]
    read: Callable[[dict], dict[str, np.ndarray]]  # record -> that example's target arrays
    pad: dict = dataclasses.field(default_factory=dict)  # batch key -> the value of a padded eval row
    example_bytes: int = 0  # one example's target arrays, in bytes (what cache_in_memory budgets)


@dataclasses.dataclass(frozen=True)
class Targets:
    """What a task reads from a record and carries in its batches (a task's `target_spec`).

    name          the data.targets value
    pad           the batch keys next to "image" -> the value of a padded eval row (scores nothing)
    image_level   True: the image-level class label (data.label_key), read by the pipeline itself
    resolve(cfg, builder, shape, crop_pct) -> TargetSpec   for image_level False: the dataset's classes and
                  its record reader for images fitted to `shape` (the classes need no shape)
    bytes_per_example(image_shape) -> int   the target arrays of one example, in bytes (a bound)
    """

    name: str
    pad: dict
    image_level: bool = False
    resolve: Callable | None = None
    bytes_per_example: Callable[[tuple], int] = lambda shape: 0

    def spec(self, cfg, b, shape: tuple[int, int, int] = (1, 1, 3), crop_pct: float = 1.0) -> TargetSpec:
        """The resolved targets of builder `b`: its classes, the reader, the padding and the byte bound."""
        s = self.resolve(cfg, b, shape, crop_pct)
        return dataclasses.replace(s, kind=self.name, pad=dict(self.pad),
                                   example_bytes=int(self.bytes_per_example(tuple(shape))))


LABEL = Targets("label", {"label": 0}, image_level=True)
REGISTRY: dict[str, Targets] = {LABEL.name: LABEL}


def register(targets: Targets) -> Targets:
    """Makes `targets` the one `data.targets = targets.name` reads (a task's, through tasks.register)."""
    REGISTRY[targets.name] = targets
    return targets


def get(name: str) -> Targets:
    if name not in REGISTRY:
        raise ConfigError("data.targets", name, ", ".join(REGISTRY),
                          why="no registered task reads it (importing tl_research.tasks registers the built-in "
                              "ones)")
    return REGISTRY[name]


def spec(cfg, b, shape: tuple[int, int, int] = (1, 1, 3), crop_pct: float = 1.0,
         targets: Targets | None = None) -> TargetSpec | None:
    """The targets `cfg` (data config; or `targets`, a task's) reads from builder `b` for images fitted to
    `shape` (which only `read` uses: the classes need none); None for image-level labels (the pipeline reads
    them itself)."""
    targets = targets or get(cfg.targets)
    return None if targets.image_level else targets.spec(cfg, b, shape, crop_pct)


def check(cfg, targets: Targets | None = None) -> None:
    """ConfigError for a targets field, or a classification-only field set with targets that are not
    image-level labels (segmentation, detection)."""
    targets = targets or get(cfg.targets)
    if not isinstance(cfg.max_boxes, (int, np.integer)) or cfg.max_boxes < 1:
        raise ConfigError("data.max_boxes", cfg.max_boxes, "a whole number >= 1")
    if targets.image_level:
        return
    # these select or reweight by an image-level label, which segmentation and detection data lack
    for key, off in (("classes", ()), ("per_class", 0), ("imbalance_ratio", 1.0), ("balance", "none"),
                     ("vtab", "")):
        if (tuple(cfg[key]) if key == "classes" else cfg[key]) != off:
            raise ConfigError(f"data.{key}", cfg[key], f"{off!r} with data.targets={cfg.targets}",
                              why="it selects by an image-level label")
