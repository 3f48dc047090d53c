"""The table a converter is written as, and the check that runs it (no format reader is imported here).

Every row of a `Table` names one source tensor, the dotted path it becomes (`units.3.conv1.kernel`,
`units.0.bn.mean`, ...) and the layout change it needs (a torch conv OIHW -> HWIO, a Linear (out, in) ->
(in, out), ...). The format modules (keras.py, torch.py, big_vision.py) write the table for an architecture
from these parts; `apply_table` then checks the conversion in both directions before anything is returned:

- every source tensor is used by a row or explicitly set aside with a reason (e.g. BatchNorm's
  `num_batches_tracked` counter);
- every row's source tensor exists (only the classifier may be absent: "no top" files);
- every converted array has the shape of the target model's parameter, and every parameter of the target
  model receives one.

Any failure raises `TableMismatch` (a `CheckpointMismatch`) listing all offending names at once; its
`problems` keep them by kind, so a command can show the first few and a count.
"""
from __future__ import annotations

import dataclasses
from typing import Callable

import numpy as np

from tl_research.checkpoints.weights import COLLECTIONS, CheckpointMismatch, Weights


class TableMismatch(CheckpointMismatch):
    """A checkpoint does not convert to an architecture: `problems` = [(kind, [names...]), ...]."""

    def __init__(self, message: str, problems: list[tuple[str, list[str]]], hint: str = ""):
        super().__init__(message)
        self.problems, self.hint = problems, hint

    def count(self) -> int:
        return sum(len(items) for _, items in self.problems)

    def short(self, per_kind: int = 3) -> list[str]:
        """A few lines: per kind, its first `per_kind` names and how many there are."""
        lines = []
        for kind, items in self.problems:
            more = f" (+{len(items) - per_kind} more)" if len(items) > per_kind else ""
            lines.append(f"  {kind} ({len(items)}): " + ", ".join(items[:per_kind]) + more)
        return lines


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


def conv1x1_to_dense(x: np.ndarray) -> np.ndarray:
    """A 1x1 conv kernel (1, 1, C, N) applied to a pooled map (Keras' and BiT's classifiers) -> dense (C, N)."""
    return x.reshape(x.shape[-2], x.shape[-1])


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


def _list(items: list[str], limit: int = 20) -> str:
    return ", ".join(items[:limit]) + (f", ... ({len(items)} in all)" if len(items) > limit else "")


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
    problems = [(label, items) for label, items in (
        ("source tensors the table does not map", unmapped), ("tensors missing from the checkpoint", missing),
        ("shape mismatch", mismatched), ("target paths the model does not have", unknown),
        ("model parameters no source tensor fills", not_filled)) if items]
    if problems:
        hint = f" ({table.hint})" if table.hint else ""
        raise TableMismatch("checkpoint does not convert to this architecture: "
                            + "; ".join(f"{label}: {_list(items)}" for label, items in problems) + hint,
                            problems, table.hint)
    loaded = sorted(k for t in weights.values() for k in t)
    return weights, loaded, no_classifier


def out_features(source, table: Table, target: str, axis: int) -> int | None:
    """Size of `axis` of the converted tensor that becomes `target`, or None when the file lacks it."""
    for r in table.rows:
        if r.target == target and r.source in source:
            return int(r.transform(np.asarray(source[r.source])).shape[axis])
    return None
