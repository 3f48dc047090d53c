"""MobileNetV3 Small / Large name tables: Keras applications, torchvision and timm (see models/mobilenet_v3.py
for the units). keras.py and torch.py dispatch here; the readers stay theirs.

Target paths: `units.0.{conv,bn}` stem; `units.S.blocks.B.{expand,depthwise,project}.{conv,bn}` and
`.se.{reduce,expand}` per stage S = 1..; the last 1x1 conv `units.L.{conv,bn}`; the pre-logits dense
`units.L+1.dense`; `head.classifier`.

Keras names exist in two spellings, both read: Keras 3's (`conv_bn`, `expanded_conv_3_squeeze_excite_conv`,
what keras.applications builds and saves today) and Keras 2's (`Conv/BatchNorm`,
`expanded_conv_3/squeeze_excite/Conv`, the names of the published .h5 files). Keras' pre-logits and
classifier are 1x1 convs on the pooled map (kernels (1, 1, C, N)), reshaped to dense kernels.
"""
from __future__ import annotations

import numpy as np

from tl_research.checkpoints.table import Table, conv1x1_to_dense, keras_depthwise, torch_conv, torch_linear
from tl_research.models import mobilenet_v3

ARCHS_KERAS = tuple(n for n in mobilenet_v3.NAMES if n.endswith("_keras"))
ARCHS_TORCH = tuple(n for n in mobilenet_v3.NAMES if not n.endswith("_keras"))


def torch_conv1x1_to_dense(x: np.ndarray) -> np.ndarray:
    """A torch 1x1 conv weight (N, C, 1, 1) on a pooled map -> a dense kernel (C, N)."""
    return x.reshape(x.shape[0], x.shape[1]).T


def _units(variant: str):
    """(stage unit, block index in the stage, whether the block has an expand conv, SE) for every block."""
    stages, _ = mobilenet_v3.VARIANTS[variant]
    c_in, out = mobilenet_v3.STEM, []
    for s, specs in enumerate(stages):
        for b, (_, hidden, c_out, se, _, _) in enumerate(specs):
            out.append((s + 1, b, hidden != c_in, se))
            c_in = c_out
    return out


# --- Keras ------------------------------------------------------------------------------------------------------

_KERAS3 = dict(stem="conv", stem_bn="conv_bn", block=lambda i: "expanded_conv_" if i == 0 else f"expanded_conv_{i}_",
               bn="_bn", se="squeeze_excite_conv", se1="squeeze_excite_conv_1", last="conv_1", last_bn="conv_1_bn",
               pre="conv_2", logits="logits")
_KERAS2 = dict(stem="Conv", stem_bn="Conv/BatchNorm", block=lambda i: "expanded_conv/" if i == 0 else f"expanded_conv_{i}/",
               bn="/BatchNorm", se="squeeze_excite/Conv", se1="squeeze_excite/Conv_1", last="Conv_1",
               last_bn="Conv_1/BatchNorm", pre="Conv_2", logits="Logits")


def _keras_bn(t: Table, src: str, dst: str) -> None:
    t.add(f"{src}/gamma", f"{dst}.scale")
    t.add(f"{src}/beta", f"{dst}.bias")
    t.add(f"{src}/moving_mean", f"{dst}.mean", collection="batch_stats")
    t.add(f"{src}/moving_variance", f"{dst}.var", collection="batch_stats")


def keras_table(variant: str, source: dict, pre_logits: bool) -> Table:
    """keras.applications.MobileNetV3{Small,Large}; the spelling (Keras 3 or 2) is read from the file."""
    n = _KERAS2 if "Conv/BatchNorm/gamma" in source else _KERAS3
    t = Table(hint="a Keras 'no top' file has no conv_2 (pre-logits) layer: set model.fc_units=0 (--fc-units 0)")
    t.add(f"{n['stem']}/kernel", "units.0.conv.kernel")
    _keras_bn(t, n["stem_bn"], "units.0.bn")
    for i, (unit, b, expand, se) in enumerate(_units(variant)):
        p, dst = n["block"](i), f"units.{unit}.blocks.{b}"
        if expand:
            t.add(f"{p}expand/kernel", f"{dst}.expand.conv.kernel")
            _keras_bn(t, f"{p}expand{n['bn']}", f"{dst}.expand.bn")
        t.add(f"{p}depthwise/kernel", f"{dst}.depthwise.conv.kernel", keras_depthwise)
        _keras_bn(t, f"{p}depthwise{n['bn']}", f"{dst}.depthwise.bn")
        if se:
            for src, part in ((n["se"], "reduce"), (n["se1"], "expand")):
                t.add(f"{p}{src}/kernel", f"{dst}.se.{part}.kernel")
                t.add(f"{p}{src}/bias", f"{dst}.se.{part}.bias")
        t.add(f"{p}project/kernel", f"{dst}.project.conv.kernel")
        _keras_bn(t, f"{p}project{n['bn']}", f"{dst}.project.bn")
    last = len(mobilenet_v3.VARIANTS[variant][0]) + 1
    t.add(f"{n['last']}/kernel", f"units.{last}.conv.kernel")
    _keras_bn(t, n["last_bn"], f"units.{last}.bn")
    if pre_logits:
        t.add(f"{n['pre']}/kernel", f"units.{last + 1}.dense.kernel", conv1x1_to_dense)
        t.add(f"{n['pre']}/bias", f"units.{last + 1}.dense.bias")
        t.add(f"{n['logits']}/kernel", "head.classifier.kernel", conv1x1_to_dense, optional=True)
        t.add(f"{n['logits']}/bias", "head.classifier.bias", optional=True)
    return t


# --- torchvision and timm ---------------------------------------------------------------------------------------

def _conv(t: Table, src: str, dst: str, bias: bool = False, transform=torch_conv) -> None:
    t.add(f"{src}.weight", f"{dst}.kernel", transform)
    if bias:
        t.add(f"{src}.bias", f"{dst}.bias")


def _bn(t: Table, src: str, dst: str) -> None:
    t.add(f"{src}.weight", f"{dst}.scale")
    t.add(f"{src}.bias", f"{dst}.bias")
    t.add(f"{src}.running_mean", f"{dst}.mean", collection="batch_stats")
    t.add(f"{src}.running_var", f"{dst}.var", collection="batch_stats")
    t.set_aside[f"{src}.num_batches_tracked"] = "BatchNorm step counter, not a weight"


def torchvision_table(variant: str) -> Table:
    """torchvision: features.0 stem, features.1.. blocks (`.block.M`: [expand,] depthwise, [SE,] project,
    each conv+BN as `.0`/`.1`), the last conv, classifier.0 (pre-logits) and classifier.3."""
    t = Table()
    _conv(t, "features.0.0", "units.0.conv")
    _bn(t, "features.0.1", "units.0.bn")
    blocks = _units(variant)
    for i, (unit, b, expand, se) in enumerate(blocks):
        src, dst = f"features.{i + 1}.block", f"units.{unit}.blocks.{b}"
        parts = (["expand"] if expand else []) + ["depthwise"] + (["se"] if se else []) + ["project"]
        for m, part in enumerate(parts):
            if part == "se":
                _conv(t, f"{src}.{m}.fc1", f"{dst}.se.reduce", bias=True)
                _conv(t, f"{src}.{m}.fc2", f"{dst}.se.expand", bias=True)
            else:
                _conv(t, f"{src}.{m}.0", f"{dst}.{part}.conv")
                _bn(t, f"{src}.{m}.1", f"{dst}.{part}.bn")
    last = len(mobilenet_v3.VARIANTS[variant][0]) + 1
    _conv(t, f"features.{len(blocks) + 1}.0", f"units.{last}.conv")
    _bn(t, f"features.{len(blocks) + 1}.1", f"units.{last}.bn")
    _conv(t, "classifier.0", f"units.{last + 1}.dense", bias=True, transform=torch_linear)
    t.add("classifier.3.weight", "head.classifier.kernel", torch_linear, optional=True)
    t.add("classifier.3.bias", "head.classifier.bias", optional=True)
    return t


def timm_table(variant: str) -> Table:
    """timm mobilenetv3_*_100: conv_stem/bn1; blocks.S.B (a depthwise-separable first block: conv_dw, bn1,
    se, conv_pw, bn2; inverted residuals: conv_pw, bn1, conv_dw, bn2, se, conv_pwl, bn3); the last conv
    blocks.S.0.{conv,bn1}; conv_head (pre-logits, a 1x1 conv with bias); classifier."""
    t = Table()
    _conv(t, "conv_stem", "units.0.conv")
    _bn(t, "bn1", "units.0.bn")
    for unit, b, expand, se in _units(variant):
        src, dst = f"blocks.{unit - 1}.{b}", f"units.{unit}.blocks.{b}"
        if expand:
            names = {"expand": ("conv_pw", "bn1"), "depthwise": ("conv_dw", "bn2"), "project": ("conv_pwl", "bn3")}
        else:
            names = {"depthwise": ("conv_dw", "bn1"), "project": ("conv_pw", "bn2")}
        for part, (conv, bn) in names.items():
            _conv(t, f"{src}.{conv}", f"{dst}.{part}.conv")
            _bn(t, f"{src}.{bn}", f"{dst}.{part}.bn")
        if se:
            _conv(t, f"{src}.se.conv_reduce", f"{dst}.se.reduce", bias=True)
            _conv(t, f"{src}.se.conv_expand", f"{dst}.se.expand", bias=True)
    stages = len(mobilenet_v3.VARIANTS[variant][0])
    _conv(t, f"blocks.{stages}.0.conv", f"units.{stages + 1}.conv")
    _bn(t, f"blocks.{stages}.0.bn1", f"units.{stages + 1}.bn")
    _conv(t, "conv_head", f"units.{stages + 2}.dense", bias=True, transform=torch_conv1x1_to_dense)
    t.add("classifier.weight", "head.classifier.kernel", torch_linear, optional=True)
    t.add("classifier.bias", "head.classifier.bias", optional=True)
    return t


def table(arch: str, source: dict, model_cfg) -> Table:
    variant, layout = mobilenet_v3.NAMES[arch]
    if layout == "keras":
        pre_logits = int((model_cfg or {}).get("fc_units", 4096)) != 0
        return keras_table(variant, source, pre_logits)
    return timm_table(variant) if layout == "timm" else torchvision_table(variant)

