"""big_vision / AugReg ViT checkpoints (.npz) -> this codebase's weights.

The AugReg release (gs://vit_models/augreg/*.npz, Steiner et al. 2022) and the original ViT release store a
flat npz whose keys are the Flax parameter paths joined by "/":

    embedding/kernel (16, 16, 3, D)            cls (1, 1, D)
    Transformer/posembed_input/pos_embedding (1, 1 + N, D)
    Transformer/encoderblock_{i}/LayerNorm_0/{scale,bias}
    Transformer/encoderblock_{i}/MultiHeadDotProductAttention_1/{query,key,value}/kernel (D, heads, D/heads)
    Transformer/encoderblock_{i}/MultiHeadDotProductAttention_1/out/kernel (heads, D/heads, D)
    Transformer/encoderblock_{i}/LayerNorm_2/{scale,bias}
    Transformer/encoderblock_{i}/MlpBlock_3/Dense_{0,1}/{kernel,bias}
    Transformer/encoder_norm/{scale,bias}      head/{kernel,bias}    [pre_logits/{kernel,bias}]

Checkpoints written by today's big_vision (models/vit.py) differ in three ways, all handled: the modules of a
block are numbered per type (LayerNorm_0, MultiHeadDotProductAttention_0, LayerNorm_1, MlpBlock_0), the
position embedding is top-level `pos_embedding` and covers only the N patches (it is added before the class
token is prepended, which is the same as a zero position embedding for the class token), and keys may carry a
`params/` prefix. Only class-token models (`pool_type="tok"`) convert; a `pre_logits` layer (the tanh
"representation" layer of the original i21k checkpoints) belongs to the source head and is set aside by
name together with the classifier that reads it, as vit_jax does when fine-tuning.

Models trained with `scan=True` (an nn.scan over the blocks) store one stacked tensor per block parameter,
`Transformer/encoderblock/<module>/<param>` with the blocks on a leading axis of length depth; they are
unstacked into the per-block names on reading, so one table serves both layouts.

The `.npz` files of big_transfer's BiT ResNets (`resnet/...` keys) are read here too; their table is in
resnet_v2_tables.py.
"""
from __future__ import annotations

import pathlib

import numpy as np

from tl_research.checkpoints.table import Table, TableMismatch
from tl_research.checkpoints import resnet_v2_tables
from tl_research.models import vit
from tl_research.models.base import ModelMeta

_NEW_TO_OLD = {"LayerNorm_0": "LayerNorm_0", "MultiHeadDotProductAttention_0": "MultiHeadDotProductAttention_1",
               "LayerNorm_1": "LayerNorm_2", "MlpBlock_0": "MlpBlock_3"}
POS = "Transformer/posembed_input/pos_embedding"
NAME = "big_vision"
ARCHS = tuple(f"vit_{v}16" for v in vit.VARIANTS)
ARCHS += resnet_v2_tables.ARCHS_NPZ  # BiT
SCANNED = "Transformer/encoderblock/"


def read(path) -> dict[str, np.ndarray]:
    """{AugReg key: array}; today's big_vision names are rewritten to the AugReg ones (see module doc)."""
    path = pathlib.Path(path)
    with np.load(path, allow_pickle=False) as f:
        src = {k: np.asarray(f[k]) for k in f.files}
    for prefix in ("params/", "opt/target/"):
        if src and all(k.startswith(prefix) for k in src):
            src = {k[len(prefix):]: v for k, v in src.items()}
    src = unstack_scanned_blocks(src)
    if "Transformer/encoderblock_0/MlpBlock_0/Dense_0/kernel" in src:
        renamed = {}
        for k, v in src.items():
            parts = k.split("/")
            if len(parts) > 2 and parts[0] == "Transformer" and parts[1].startswith("encoderblock_"):
                parts[2] = _NEW_TO_OLD.get(parts[2], parts[2])
            renamed["/".join(parts)] = v
        src = renamed
    if "pos_embedding" in src:
        pos = src.pop("pos_embedding")
        if "cls" in src and int(round(np.sqrt(pos.shape[1]))) ** 2 == pos.shape[1]:
            pos = np.concatenate([np.zeros_like(pos[:, :1]), pos], axis=1)
        src[POS] = pos
    return src


def unstack_scanned_blocks(src: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """`Transformer/encoderblock/X` of shape (depth, ...) -> `Transformer/encoderblock_{i}/X` (see module doc)."""
    stacked = {k: v for k, v in src.items() if k.startswith(SCANNED)}
    if not stacked:
        return src
    depths = {v.shape[0] if v.ndim else 0 for v in stacked.values()}
    if len(depths) != 1 or 0 in depths:
        raise ValueError(f"the scanned encoder blocks ({SCANNED}...) do not share one leading depth axis: "
                         f"lengths {sorted(depths)}")
    out = {k: v for k, v in src.items() if not k.startswith(SCANNED)}
    for k, v in stacked.items():
        for i in range(v.shape[0]):
            out[f"Transformer/encoderblock_{i}/{k[len(SCANNED):]}"] = v[i]
    return out


def _split_heads_in(x: np.ndarray) -> np.ndarray:
    """(D, heads, D/heads) -> (D, D) and a (heads, D/heads) bias -> (D,)."""
    return x.reshape(x.shape[0], -1) if x.ndim == 3 else x.reshape(-1)


def _split_heads_out(x: np.ndarray) -> np.ndarray:
    """(heads, D/heads, D) -> (D, D)."""
    return x.reshape(-1, x.shape[-1])


def vit_table(depth: int) -> Table:
    t = Table()
    t.add("embedding/kernel", "units.0.patch.kernel")
    t.add("embedding/bias", "units.0.patch.bias")
    t.add("cls", "units.0.cls")
    t.add(POS, "units.0.pos_embed")
    for i in range(depth):
        src, dst = f"Transformer/encoderblock_{i}", f"units.{i + 1}"
        for ln, norm in (("LayerNorm_0", "norm1"), ("LayerNorm_2", "norm2")):
            t.add(f"{src}/{ln}/scale", f"{dst}.{norm}.scale")
            t.add(f"{src}/{ln}/bias", f"{dst}.{norm}.bias")
        att = f"{src}/MultiHeadDotProductAttention_1"
        for proj in ("query", "key", "value"):
            t.add(f"{att}/{proj}/kernel", f"{dst}.attn.{proj}.kernel", _split_heads_in)
            t.add(f"{att}/{proj}/bias", f"{dst}.attn.{proj}.bias", _split_heads_in)
        t.add(f"{att}/out/kernel", f"{dst}.attn.out.kernel", _split_heads_out)
        t.add(f"{att}/out/bias", f"{dst}.attn.out.bias")
        for d, fc in (("Dense_0", "fc1"), ("Dense_1", "fc2")):
            t.add(f"{src}/MlpBlock_3/{d}/kernel", f"{dst}.mlp.{fc}.kernel")
            t.add(f"{src}/MlpBlock_3/{d}/bias", f"{dst}.mlp.{fc}.bias")
    t.add("Transformer/encoder_norm/scale", f"units.{depth + 1}.norm.scale")
    t.add("Transformer/encoder_norm/bias", f"units.{depth + 1}.norm.bias")
    t.add("head/kernel", "head.classifier.kernel", optional=True)
    t.add("head/bias", "head.classifier.bias", optional=True)
    t.set_aside["pre_logits/kernel"] = "source head's representation layer (dropped, as vit_jax does)"
    t.set_aside["pre_logits/bias"] = "source head's representation layer (dropped, as vit_jax does)"
    return t


def table(arch: str, source: dict[str, np.ndarray], model_cfg) -> tuple[Table, ModelMeta, list[str]]:
    from tl_research.models import META
    if arch not in ARCHS:
        raise ValueError(f"no big_vision converter for architecture {arch!r}; allowed: {', '.join(ARCHS)}")
    if arch in resnet_v2_tables.ARCHS_NPZ:
        return resnet_v2_tables.bit_table(), META[arch], []
    if resnet_v2_tables.is_bit(source):  # a mismatch, so that the convert command names the right --arch
        raise TableMismatch(f"the checkpoint is a BiT ResNet, not a ViT ({arch})",
                            [("BiT ResNet tensors, no ViT's", sorted(source)[:3])])
    if "cls" not in source:
        raise ValueError("the checkpoint has no class token ('cls'): only pool_type='tok' ViTs convert; "
                         "global-average-pool or MAP-head big_vision models are not supported")
    notes = []
    t = vit_table(vit.VARIANTS[arch[len("vit_"):-2]][1])
    if "pre_logits/kernel" in source:  # the source classifier reads pre_logits' output: it goes with it
        t.rows = [r for r in t.rows if not r.target.startswith("head.")]
        for k in ("head/kernel", "head/bias"):
            t.set_aside[k] = "source classifier on top of pre_logits (dropped with it)"
        notes.append("pre_logits (representation layer) and the classifier on top of it set aside")
    pos = source.get(POS)
    grid = int(model_cfg.get("image_size", 224)) // vit.PATCH
    if pos is not None and pos.shape[1] != 1 + grid * grid:
        src_grid = int(round(np.sqrt(pos.shape[1] - 1)))
        t.hint = (f"the position embedding is laid out for a {src_grid}x{src_grid} grid: set "
                  f"model.image_size={src_grid * vit.PATCH} to load it; other input sizes resample it at run time")
    return t, META[arch], notes
