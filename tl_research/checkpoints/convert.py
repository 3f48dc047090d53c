"""Converting published checkpoints into this codebase's weights: the one entry point.

    weights, meta = convert("keras" | "torch" | "npz", path, arch)

The format modules (keras.py, torch.py, big_vision.py) read a file into a flat {source name: array}
dictionary and write the conversion table for an architecture (table.py: rows of source name -> dotted target
path -> layout change). This module picks the format's reader, builds the target model abstractly (shapes
only, nothing allocated) and has `table.apply_table` check the conversion in both directions against it.

Any failure raises `CheckpointMismatch` listing all offending names at once. Loading the result into a model
for another task (other class count, grayscale input) is `weights.transfer`'s job, which re-initialises the
head and adapts the first conv, and reports both.
"""
from __future__ import annotations

import dataclasses
import functools
import json
import pathlib

import ml_collections
from flax import nnx

from tl_research.checkpoints import big_vision, keras as keras_reader, torch as torch_reader
from tl_research.checkpoints import table as table_lib
from tl_research.checkpoints import weights as weights_lib
from tl_research.checkpoints.weights import COLLECTIONS, Weights
from tl_research.models.base import ModelMeta

# Each reader module provides NAME, ARCHS, read(path) and table(arch, source, model_cfg).
READERS = {"keras": keras_reader, "torch": torch_reader, "npz": big_vision}
FORMATS = tuple(READERS)
_EXTENSIONS = {".h5": "keras", ".hdf5": "keras", ".keras": "keras", ".safetensors": "torch", ".pth": "torch",
               ".pt": "torch", ".bin": "torch", ".npz": "npz"}


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


def abstract_model(arch: str, model_cfg=None, *, num_classes: int = 1000, in_channels: int = 3):
    """The registry model `arch` with shapes only (cached: conversions and loads of one architecture share
    it; callers must not modify it)."""
    from tl_research import models
    cfg = model_cfg if model_cfg is not None else models.default_config()
    # Keys sorted: a config copied through to_dict() (as `run` does) must hit the same entry; tracing a large
    # model abstractly costs seconds (Inception-v3: about 5 s on two CPU cores).
    return _abstract(arch, cfg.to_json(sort_keys=True), num_classes, in_channels)


@functools.lru_cache(maxsize=16)
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


def infer_format(path) -> str:
    """keras | torch | npz, from the file's extension, else from its first bytes (an HDF5 signature, a
    torch.save or numpy .npz zip archive)."""
    suffix = pathlib.Path(path).suffix.lower()
    if suffix in _EXTENSIONS:
        return _EXTENSIONS[suffix]
    sniffed = sniff_format(path)
    if sniffed is None:
        raise ValueError(f"cannot tell the format of {path} from its extension {suffix!r} or its contents; pass "
                         f"the format explicitly, one of: {', '.join(FORMATS)}")
    return sniffed


def sniff_format(path) -> str | None:
    """The format a file's contents show, or None (no file, or no known signature)."""
    import zipfile
    try:
        with open(path, "rb") as f:
            head = f.read(8)
    except OSError:
        return None
    if head == b"\x89HDF\r\n\x1a\n":
        return "keras"
    if zipfile.is_zipfile(path):
        with zipfile.ZipFile(path) as z:
            names = z.namelist()
        if any(n.endswith("/data.pkl") for n in names):
            return "torch"
        if names and all(n.endswith(".npy") for n in names):
            return "npz"
    return None


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
    reader = READERS[fmt]
    if arch not in reader.ARCHS:
        raise ValueError(f"no {reader.NAME} converter for architecture {arch!r}; "
                         f"allowed: {', '.join(reader.ARCHS)}")
    # A plain, unfrozen copy: the caller's config (possibly a FrozenConfigDict) is left untouched.
    cfg = ml_collections.ConfigDict(model_cfg.to_dict()) if model_cfg is not None else models.default_config()
    cfg.name = arch
    # The file holds the published head (a pooled linear classifier); the run's own head (model.head,
    # model.pool) is fresh on transfer anyway, so the conversion is checked against the published one.
    cfg.head, cfg.pool = "linear", ""
    return convert_source(fmt, reader.read(path), arch, cfg)


def convert_source(fmt: str, source: dict, arch: str, cfg) -> Conversion:
    """The conversion of an already read file (`source`) for `arch` under the model config `cfg`."""
    table, meta, notes = READERS[fmt].table(arch, source, cfg)
    num_classes = table_lib.out_features(source, table, meta.classifier + ".kernel", axis=1)
    in_channels = table_lib.out_features(source, table, meta.first_conv + ".kernel", axis=2) or 3
    target = target_shapes(arch, cfg, num_classes=num_classes or meta.num_classes or 1000,
                           in_channels=in_channels)
    weights, loaded, no_classifier = table_lib.apply_table(source, table, target, meta.classifier)
    if num_classes:
        meta = dataclasses.replace(meta, num_classes=num_classes)
    set_aside = {k: why for k, why in table.set_aside.items() if k in source}
    return Conversion(weights, meta, loaded, set_aside, no_classifier, list(notes))


def convert(fmt: str, path, arch: str, *, model_cfg=None) -> tuple[Weights, ModelMeta]:
    """A published checkpoint -> (Weights, the ModelMeta of the weights). See `run` for the arguments. Converted
    once per process while the file stays as it was (weights.LOADED); the arrays are read-only."""
    cfg = json.dumps(model_cfg.to_dict() if model_cfg is not None else None, sort_keys=True, default=str)
    key = ("convert", fmt, str(pathlib.Path(path).absolute()), arch, cfg)

    def read():
        c = run(fmt, path, arch, model_cfg=model_cfg)
        return c.weights, c.meta
    return weights_lib.shared(weights_lib.LOADED.get(key, read, lambda _: [path]))


def parse_init(init: str) -> tuple[str, str] | None:
    """`config.init` of the form "keras:PATH" | "torch:PATH" | "npz:PATH" -> (format, path); else None."""
    fmt, sep, path = init.partition(":")
    return (fmt, path) if sep and fmt in FORMATS else None
