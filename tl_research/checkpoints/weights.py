"""Model weights as a flat table of named arrays: saving, loading and transferring them into a model.

The interchange format between this codebase's models, its orbax checkpoints and every converter is
`Weights = {"params": {dotted_path: array}, "batch_stats": {dotted_path: array}}`, where a dotted path is the
NNX attribute path, e.g. `units.3.conv1.kernel` or `units.0.bn.mean`. A converter is then an explicit table
from source names to these paths, and loading can report every missing or unexpected tensor by name.
"""
from __future__ import annotations

import dataclasses
import json
import os
import pathlib
import shutil
import socket

import jax
import numpy as np
import orbax.checkpoint as ocp
from flax import nnx
from flax.traverse_util import flatten_dict, unflatten_dict

from tl_research.core import durable, memo
from tl_research.models.base import ModelMeta, UnitModel

Weights = dict[str, dict[str, np.ndarray]]
COLLECTIONS = {"params": nnx.Param, "batch_stats": nnx.BatchStat}
META_FILE = "meta.json"


class CheckpointMismatch(ValueError):
    """A checkpoint does not fit the model; the message lists every offending tensor by name."""


def _dotted(path) -> str:
    return ".".join(str(p) for p in path)


def flat_state(model: nnx.Module) -> Weights:
    out: Weights = {}
    for coll, var_type in COLLECTIONS.items():
        out[coll] = {_dotted(p): np.asarray(v.get_value())
                     for p, v in nnx.to_flat_state(nnx.state(model, var_type))}
    return out


def assign(model: nnx.Module, weights: Weights) -> None:
    """Writes arrays into the model by path (every path must exist; shapes are checked by the caller)."""
    for coll, var_type in COLLECTIONS.items():
        table = weights.get(coll, {})
        flat = nnx.to_flat_state(nnx.state(model, var_type))
        new = [(p, v.replace(jax.numpy.asarray(table[_dotted(p)], dtype=v.get_value().dtype))
                if _dotted(p) in table else v) for p, v in flat]
        nnx.update(model, nnx.from_flat_state(new))


def save_weights(directory, weights: Weights | nnx.Module, meta: ModelMeta, extra: dict | None = None):
    """Writes an orbax checkpoint of the weights plus `meta.json` (the weights' metadata)."""
    directory = pathlib.Path(directory).absolute()
    if isinstance(weights, nnx.Module):
        weights = flat_state(weights)
    directory.mkdir(parents=True, exist_ok=True)
    # device arrays stay as they are: a sharded model is written shard by shard (every process writes its
    # own), never gathered onto one device
    tree = {coll: unflatten_dict({k: v if isinstance(v, jax.Array) else np.asarray(v) for k, v in table.items()},
                                 sep=".") for coll, table in weights.items() if table}
    with ocp.StandardCheckpointer() as ckptr:
        ckptr.save(directory / "state", tree, force=True)
    if jax.process_index() == 0:  # multi-host: one process writes the metadata
        info = {"meta": meta.to_json(), **(extra or {})}
        # the marker that the weights are complete (is_weights_dir): written last, atomically
        durable.write_json(directory / META_FILE, info, point=f"{directory.name}/{META_FILE}")


def copy_weights_dir(source, directory) -> None:
    """Makes `directory` a copy of the weights directory `source` (the same weights without saving them
    again): the arrays first, `meta.json` last and atomically, so that an interrupted copy reads as absent.
    Multi-host: process 0 copies (the files of a finished save are all there)."""
    source, directory = pathlib.Path(source).absolute(), pathlib.Path(directory).absolute()
    if jax.process_index() != 0:
        return
    directory.mkdir(parents=True, exist_ok=True)
    (directory / META_FILE).unlink(missing_ok=True)  # no marker while the arrays change
    for old in directory.glob(f".state{durable.TMP_MARK}*"):  # an earlier copy cut short (the run's lock
        shutil.rmtree(old, ignore_errors=True)  # is held: nobody else writes here)
    tmp = directory / f".state{durable.TMP_MARK}{socket.gethostname()}-{os.getpid()}"
    shutil.copytree(source / "state", tmp)
    shutil.rmtree(directory / "state", ignore_errors=True)
    os.replace(tmp, directory / "state")
    durable.fsync_dir(directory)
    durable.write_bytes(directory / META_FILE, (source / META_FILE).read_bytes(),
                        point=f"{directory.name}/{META_FILE}")


def is_weights_dir(directory) -> bool:
    d = pathlib.Path(directory)
    return (d / "state").is_dir() and (d / META_FILE).is_file()


# The weights this process read last (a config's check, then the run; a sweep's runs from one checkpoint),
# kept while their files stay as they were (tl_research.core.memo): load_weights and convert.convert.
LOADED = memo.FileMemo(entries=2)


def shared(loaded: tuple[Weights, ModelMeta]) -> tuple[Weights, ModelMeta]:
    """(weights, meta) of LOADED for one caller: the arrays read-only (every caller reads the same ones), the
    tables its own."""
    weights, meta = loaded
    for table in weights.values():
        for a in table.values():
            if isinstance(a, np.ndarray):
                a.flags.writeable = False
    return {coll: dict(table) for coll, table in weights.items()}, meta


def load_weights(directory) -> tuple[Weights, ModelMeta]:
    """The weights and metadata of a weights directory, read once per process while its files stay as they
    were (LOADED); the arrays are read-only."""
    directory = pathlib.Path(directory).absolute()
    if not is_weights_dir(directory):
        raise FileNotFoundError(f"{directory} holds no weights (expected state/ and {META_FILE})")
    return shared(LOADED.get(("weights", str(directory)), lambda: _read_weights(directory), lambda _: [directory]))


def _read_weights(directory: pathlib.Path) -> tuple[Weights, ModelMeta]:
    with ocp.StandardCheckpointer() as ckptr:
        # into host arrays of the saved shapes: weights saved sharded on another device count load anywhere
        saved = ckptr.metadata(directory / "state").item_metadata.tree
        tree = ckptr.restore(directory / "state", jax.tree.map(lambda m: np.empty(m.shape, m.dtype), saved))
    weights = {coll: {k: np.asarray(v) for k, v in flatten_dict(tree.get(coll, {}), sep=".").items()}
               for coll in COLLECTIONS}
    meta = ModelMeta.from_json(json.loads((directory / META_FILE).read_text())["meta"])
    return weights, meta


@dataclasses.dataclass
class TransferReport:
    loaded: list[str]
    head_reinitialised: list[str]
    adapted: list[str]
    ignored_source: list[str]
    # (classes of the checkpoint's classifier or None when it has none, classes of the model's)
    head_classes: tuple[int | None, int] | None = None
    fresh_units: set = dataclasses.field(default_factory=set)  # depth units left at their fresh initialisation

    def summary(self) -> str:
        parts = [f"{len(self.loaded)} tensors loaded"]
        if self.head_reinitialised:
            head = f"head re-initialised ({', '.join(self.head_reinitialised)})"
            if self.head_classes:
                src, new = self.head_classes
                head += f" for {new} classes" + (f", the checkpoint's {src}-class head not loaded" if src else "")
            parts.append(head)
        if self.fresh_units:
            parts.append(f"units {min(self.fresh_units)}-{max(self.fresh_units)} re-initialised (transfer_depth)")
        if self.adapted:
            parts.append(f"adapted: {', '.join(self.adapted)}")
        if self.ignored_source:
            parts.append(f"source head dropped: {', '.join(self.ignored_source)}")
        return "; ".join(parts)


def adapt_first_conv(kernel: np.ndarray, in_channels: int) -> np.ndarray:
    """Adapts an HWIO first-conv kernel to another number of input channels, as timm's adapt_input_conv:
    to one channel by summing over the source channels (grey = equal parts of R, G, B); to more channels by
    repeating the source channels and rescaling so the response to a constant image is unchanged."""
    src_in = kernel.shape[2]
    if in_channels == 1:
        return kernel.sum(axis=2, keepdims=True)
    reps = -(-in_channels // src_in)
    return np.tile(kernel, (1, 1, reps, 1))[:, :, :in_channels] * (src_in / in_channels)


def transfer(model: UnitModel, weights: Weights, *, reinit_head: bool = True,
             first_conv: str | None = None, fresh_from_unit: int = -1) -> TransferReport:
    """Loads `weights` into `model`. Everything must match by name and shape except the head (classifier and
    hidden layers), which keeps the model's fresh initialisation when `reinit_head` (a new task has new classes),
    and, with fresh_from_unit=n >= 0, depth units n and above, which keep theirs too (config.transfer_depth).
    A first conv whose input channels differ is adapted (see adapt_first_conv). Any other difference is an
    error naming every tensor involved; nothing is loaded in that case."""
    target = flat_state(model)
    classifier = model.meta.classifier
    first_conv = first_conv or model.meta.first_conv
    # the whole head module (the classifier and an mlp head's hidden layers) starts fresh on a new task
    head = classifier.split(".")[0]
    is_head = lambda k: k == head or k.startswith(head + ".")
    fresh = lambda k: fresh_from_unit >= 0 and k.startswith("units.") and int(k.split(".")[1]) >= fresh_from_unit
    missing, unexpected, mismatched = [], [], []
    report = TransferReport([], [], [], [])
    new: Weights = {}
    for coll in COLLECTIONS:
        src, tgt = weights.get(coll, {}), target[coll]
        new[coll] = {}
        for key, t in tgt.items():
            if reinit_head and is_head(key):
                report.head_reinitialised.append(key)
                continue
            if fresh(key):
                report.fresh_units.add(int(key.split(".")[1]))
                continue
            if key not in src:
                missing.append(key)
                continue
            s = np.asarray(src[key])
            if s.shape != t.shape:
                if (key.startswith(first_conv + ".") and key.endswith("kernel") and s.ndim == 4
                        and s.shape[:2] == t.shape[:2] and s.shape[3] == t.shape[3]):
                    s = adapt_first_conv(s, t.shape[2])
                    report.adapted.append(f"{key} {src[key].shape[2]}->{t.shape[2]} input channels")
                else:
                    mismatched.append(f"{key} checkpoint {tuple(s.shape)} vs model {tuple(t.shape)}")
                    continue
            new[coll][key] = s
            report.loaded.append(key)
        for key in src:
            if key not in tgt:
                if reinit_head and is_head(key):
                    report.ignored_source.append(key)
                else:
                    unexpected.append(key)
    if missing or unexpected or mismatched:
        lines = []
        for name, items in (("missing in checkpoint", missing), ("unexpected in checkpoint", unexpected),
                            ("shape mismatch", mismatched)):
            if items:
                shown = ", ".join(items[:20]) + (f", ... ({len(items)} in all)" if len(items) > 20 else "")
                lines.append(f"{name}: {shown}")
        raise CheckpointMismatch("checkpoint does not fit the model: " + "; ".join(lines))
    if report.head_reinitialised:
        src_kernel = weights.get("params", {}).get(classifier + ".kernel")
        model_kernel = target["params"].get(classifier + ".kernel")
        if model_kernel is not None:
            report.head_classes = (None if src_kernel is None else int(np.shape(src_kernel)[-1]),
                                   int(model_kernel.shape[-1]))
    assign(model, new)
    return report
