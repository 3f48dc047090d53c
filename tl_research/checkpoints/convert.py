"""Converting published checkpoints into this codebase's weights: one entry point and the table machinery.

    weights, meta = convert("keras" | "torch" | "npz", path, arch)

A converter is an explicit table: every row names one source tensor, the dotted path it becomes
(`units.3.conv1.kernel`, `units.0.bn.mean`, ...) and the layout change it needs (a torch conv OIHW -> HWIO, a
Linear (out, in) -> (in, out), ...). The format modules (keras.py, torch.py, big_vision.py) read a file into a
flat {source name: array} dictionary and write the table for an architecture; `apply_table` then checks the
conversion in both directions before anything is returned:

- every source tensor is used by a row or explicitly set aside with a reason (e.g. BatchNorm's
  `num_batches_tracked` counter);
- every row's source tensor exists (only the classifier may be absent: "no top" files);
- every converted array has the shape of the target model's parameter, and every parameter of the target
  model (built abstractly, nothing allocated) receives one.

Any failure raises `CheckpointMismatch` listing all offending names at once. Loading the result into a model
for another task (other class count, grayscale input) is `weights.transfer`'s job, which re-initialises the
head and adapts the first conv, and reports both.
"""
from __future__ import annotations

import dataclasses
import functools
import json
import pathlib
from typing import Callable

import ml_collections
import numpy as np
from flax import nnx

from tl_research.checkpoints.weights import COLLECTIONS, CheckpointMismatch, Weights
from tl_research.models.base import ModelMeta

FORMATS = ("keras", "torch", "npz")
_EXTENSIONS = {".h5": "keras", ".hdf5": "keras", ".keras": "keras", ".safetensors": "torch", ".pth": "torch",
               ".pt": "torch", ".bin": "torch", ".npz": "npz"}


# --- layout changes, each named so a table row reads as what it does ------------------------------------------

def identity(x: np.ndarray) -> np.ndarray:
    return x


def torch_conv(x: np.ndarray) -> np.ndarray:
    """torch Conv2d weight (out, in, h, w) -> Flax HWIO; a depthwise (C, 1, h, w) becomes (h, w, 1, C)."""
    return x.transpose(2, 3, 1, 0)


def torch_linear(x: np.ndarray) -> np.ndarray:
    """torch Linear weight (out, in) -> Flax (in, out)."""
    return x.T


def keras_depthwise(x: np.ndarray) -> np.ndarray:
    """Keras DepthwiseConv2D kernel (h, w, C, multiplier=1) -> Flax grouped conv (h, w, 1, C)."""
    return x.transpose(0, 1, 3, 2)


def reverse_input_channels(x: np.ndarray) -> np.ndarray:
    """HWIO kernel of a network fed BGR -> the same network fed RGB (for Caffe-style Keras weights)."""
    return x[:, :, ::-1, :]


@dataclasses.dataclass(frozen=True)
class Row:
    source: str  # name in the source file
    target: str  # dotted path in this codebase's model
    transform: Callable[[np.ndarray], np.ndarray] = identity
    collection: str = "params"  # or "batch_stats"
    optional: bool = False  # only the source classifier: absent from "no top" files


@dataclasses.dataclass
class Table:
    rows: list[Row] = dataclasses.field(default_factory=list)
    # Source tensors that carry no weight of the target network, each with the reason it is not loaded.
    set_aside: dict[str, str] = dataclasses.field(default_factory=dict)
    hint: str = ""  # added to a mismatch error: the usual cause for this family

    def add(self, source: str, target: str, transform=identity, *, collection: str = "params",
            optional: bool = False) -> None:
        self.rows.append(Row(source, target, transform, collection, optional))

    def extend(self, other: "Table") -> None:
        self.rows += other.rows
        self.set_aside.update(other.set_aside)


@dataclasses.dataclass
class Conversion:
    weights: Weights
    meta: ModelMeta
    loaded: list[str]  # target paths written
    set_aside: dict[str, str]  # source name -> why it is not a weight of the target
    no_classifier: bool  # the file has no classifier ("no top"): the head stays freshly initialised
    notes: list[str]  # layout changes worth telling the user (channel order, folded normalisation, ...)

    def summary(self) -> str:
        n = sum(len(t) for t in self.weights.values())
        lines = [f"{n} tensors converted ({len(self.weights['params'])} params, "
                 f"{len(self.weights['batch_stats'])} batch statistics)"]
        if self.no_classifier:
            lines.append("no classifier in the checkpoint (a 'no top' file): the head will be initialised fresh")
        elif self.meta.num_classes:
            lines.append(f"source classifier: {self.meta.num_classes} classes")
        if self.set_aside:
            reasons: dict[str, list[str]] = {}
            for name, why in self.set_aside.items():
                reasons.setdefault(why, []).append(name)
            for why, names in reasons.items():
                shown = ", ".join(names[:4]) + (f", ... ({len(names)} in all)" if len(names) > 4 else "")
                lines.append(f"not loaded ({why}): {shown}")
        lines += self.notes
        return "\n".join(lines)


def _list(items: list[str], limit: int = 20) -> str:
    return ", ".join(items[:limit]) + (f", ... ({len(items)} in all)" if len(items) > limit else "")


def abstract_model(arch: str, model_cfg=None, *, num_classes: int = 1000, in_channels: int = 3):
    """The registry model `arch` with shapes only (cached: conversions and loads of one architecture share
    it; callers must not modify it)."""
    from tl_research import models
    cfg = model_cfg if model_cfg is not None else models.default_config()
    return _abstract(arch, cfg.to_json(), num_classes, in_channels)


@functools.lru_cache(maxsize=8)
def _abstract(arch: str, cfg_json: str, num_classes: int, in_channels: int):
    from tl_research import models
    cfg = ml_collections.ConfigDict(json.loads(cfg_json))
    cfg.name = arch
    return models.abstract(cfg, num_classes, in_channels)


def target_shapes(arch: str, model_cfg=None, *, num_classes: int = 1000, in_channels: int = 3
                  ) -> dict[str, dict[str, tuple[int, ...]]]:
    """{collection: {dotted path: shape}} of the registry model `arch`, built without allocating arrays."""
    model = abstract_model(arch, model_cfg, num_classes=num_classes, in_channels=in_channels)
    return {coll: {".".join(str(p) for p in path): tuple(v.get_value().shape)
                   for path, v in nnx.to_flat_state(nnx.state(model, var_type))}
            for coll, var_type in COLLECTIONS.items()}


def apply_table(source: dict[str, np.ndarray], table: Table,
                target: dict[str, dict[str, tuple[int, ...]]], classifier: str = "head.classifier"
                ) -> tuple[Weights, list[str], bool]:
    """Runs `table` over `source` and checks the result against the target model's shapes (see module doc).
    Returns (weights, loaded target paths, whether the source classifier was absent)."""
    used = {r.source for r in table.rows}
    unmapped = sorted(k for k in source if k not in used and k not in table.set_aside)
    # Optional rows (the classifier) are all or nothing: a classifier without its bias is a broken file.
    has_optional = any(r.optional and r.source in source for r in table.rows)
    missing = [r.source for r in table.rows if r.source not in source and (has_optional or not r.optional)]
    weights: Weights = {coll: {} for coll in COLLECTIONS}
    mismatched, unknown = [], []
    for r in table.rows:
        if r.source not in source:
            continue
        arr = np.ascontiguousarray(r.transform(np.asarray(source[r.source])))
        want = target.get(r.collection, {}).get(r.target)
        if want is None:
            unknown.append(f"{r.source} -> {r.target}")
        elif tuple(arr.shape) != want:
            mismatched.append(f"{r.source} -> {r.target}: checkpoint {tuple(arr.shape)} vs model {want}")
        else:
            weights[r.collection][r.target] = arr
    is_head = lambda k: k == classifier or k.startswith(classifier + ".")
    no_classifier = not any(is_head(r.target) and r.source in source for r in table.rows)
    targeted = {(r.collection, r.target) for r in table.rows}
    not_filled = [k for coll, shapes in target.items() for k in shapes
                  if (coll, k) not in targeted and not (no_classifier and is_head(k))]
    problems = []
    for label, items in (("source tensors the table does not map", unmapped),
                         ("tensors missing from the checkpoint", missing),
                         ("shape mismatch", mismatched),
                         ("target paths the model does not have", unknown),
                         ("model parameters no source tensor fills", not_filled)):
        if items:
            problems.append(f"{label}: {_list(items)}")
    if problems:
        hint = f" ({table.hint})" if table.hint else ""
        raise CheckpointMismatch("checkpoint does not convert to this architecture: " + "; ".join(problems)
                                 + hint)
    loaded = sorted(k for t in weights.values() for k in t)
    return weights, loaded, no_classifier


def _out_features(source, table: Table, target: str, axis: int) -> int | None:
    """Size of `axis` of the converted tensor that becomes `target`, or None when the file lacks it."""
    for r in table.rows:
        if r.target == target and r.source in source:
            return int(r.transform(np.asarray(source[r.source])).shape[axis])
    return None


def infer_format(path) -> str:
    suffix = pathlib.Path(path).suffix.lower()
    if suffix not in _EXTENSIONS:
        raise ValueError(f"cannot tell the format of {path} from its extension {suffix!r}; pass the format "
                         f"explicitly, one of: {', '.join(FORMATS)}")
    return _EXTENSIONS[suffix]


def run(fmt: str, path, arch: str, *, model_cfg=None) -> Conversion:
    """Reads `path` (a file in format `fmt`) and converts it for the registry architecture `arch`; `model_cfg`
    (a `config.model`) matters only for families with shape options (vgg `fc_units`, vit `image_size`)."""
    from tl_research import models
    if fmt not in FORMATS:
        raise ValueError(f"unknown checkpoint format {fmt!r}; allowed: {', '.join(FORMATS)}")
    if arch not in models.META:
        raise ValueError(f"no converter for architecture {arch!r}; allowed: {', '.join(sorted(models.META))}")
    path = pathlib.Path(path)
    if not path.exists():
        raise FileNotFoundError(f"checkpoint {path} does not exist")
    if fmt == "keras":
        from tl_research.checkpoints import keras as reader
    elif fmt == "torch":
        from tl_research.checkpoints import torch as reader
    else:
        from tl_research.checkpoints import big_vision as reader
    if arch not in reader.ARCHS:
        raise ValueError(f"no {reader.NAME} converter for architecture {arch!r}; "
                         f"allowed: {', '.join(reader.ARCHS)}")
    # A plain, unfrozen copy: the caller's config (possibly a FrozenConfigDict) is left untouched.
    cfg = ml_collections.ConfigDict(model_cfg.to_dict()) if model_cfg is not None else models.default_config()
    cfg.name = arch
    source = reader.read(path)
    table, meta, notes = reader.table(arch, source, cfg)
    num_classes = _out_features(source, table, meta.classifier + ".kernel", axis=1)
    in_channels = _out_features(source, table, meta.first_conv + ".kernel", axis=2) or 3
    target = target_shapes(arch, cfg, num_classes=num_classes or meta.num_classes or 1000,
                           in_channels=in_channels)
    weights, loaded, no_classifier = apply_table(source, table, target, meta.classifier)
    if num_classes:
        meta = dataclasses.replace(meta, num_classes=num_classes)
    set_aside = {k: why for k, why in table.set_aside.items() if k in source}
    return Conversion(weights, meta, loaded, set_aside, no_classifier, list(notes))


def convert(fmt: str, path, arch: str, *, model_cfg=None) -> tuple[Weights, ModelMeta]:
    """A published checkpoint -> (Weights, the ModelMeta of the weights). See `run` for the arguments."""
    c = run(fmt, path, arch, model_cfg=model_cfg)
    return c.weights, c.meta


def parse_init(init: str) -> tuple[str, str] | None:
    """`config.init` of the form "keras:PATH" | "torch:PATH" | "npz:PATH" -> (format, path); else None."""
    fmt, sep, path = init.partition(":")
    return (fmt, path) if sep and fmt in FORMATS else None
