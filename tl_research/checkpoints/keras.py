"""Keras applications weight files (.h5) -> this codebase's weights.

Reads with h5py alone (no Keras, no TensorFlow) the legacy layer-named layout that `keras.applications`
downloads (and Keras 2's `save_weights`, Keras 3's `model.save("x.h5")` and its
`legacy_h5_format.save_weights_to_hdf5_group` write): root attribute `layer_names`, one group per layer whose
attribute `weight_names` lists its datasets, e.g. `conv1_conv/conv1_conv/kernel:0`; a full-model .h5 holds the
same under `model_weights/`. Keras 3's own `.weights.h5` layout names layers by class and position
(`layers/batch_normalization_10/vars/0`), which no name table can follow; it is refused with that advice.

Source tensors are named `<layer name>/<weight>` (`conv1_conv/kernel`, `conv1_bn/moving_mean`); the Keras 2
name `depthwise_kernel` is read as `kernel`.

Caffe-style weights (ResNet50, VGG16: "caffe" preprocessing, BGR input) get their first conv's input
channels reversed, so the converted network takes RGB like every other one here; the metadata's mean is in
RGB order accordingly. EfficientNet's in-network input normalisation (a Normalization layer's mean and
variance) becomes the metadata's mean/std.

InceptionV3 leaves its conv and BatchNorm layers unnamed: Keras numbers them `conv2d_N` and
`batch_normalization_N` in the order the model creates them (from 1 in the published files, which Keras 2.0
wrote; from 0, i.e. `conv2d`, `conv2d_1`, ..., or from wherever the session's counter stood in a file saved by
Keras 3). The table numbers the 94 convs of Inception-v3 in that creation order from the file's lowest number.
"""
from __future__ import annotations

import dataclasses
import pathlib
import re

import numpy as np

from tl_research.checkpoints.table import Table, identity, keras_depthwise, reverse_input_channels
from tl_research.checkpoints import mobilenet_v3_tables, resnet_v2_tables
from tl_research.models import efficientnet, mobilenet, resnet, vgg
from tl_research.models import densenet, inception
from tl_research.models.base import ModelMeta

# keras.applications.efficientnet: the published files store the ImageNet std as the Normalization layer's
# "variance", and the model built for them divides once more by sqrt(std) so the input is divided by std.
IMAGENET_STDDEV_RGB = (0.229, 0.224, 0.225)
NAME = "Keras"
ARCHS = ("resnet50_keras", "vgg16_keras", "mobilenet_v2_keras", "efficientnet_b0_keras")
# MobileNetV3 and ResNet50V2, whose tables live in mobilenet_v3_tables.py and resnet_v2_tables.py.
ARCHS += mobilenet_v3_tables.ARCHS_KERAS + resnet_v2_tables.ARCHS_KERAS
ARCHS += ("inception_v3_keras", "densenet121_keras")


def _decode(x) -> str:
    return x.decode("utf8") if isinstance(x, bytes) else str(x)


def _legacy(group) -> dict[str, np.ndarray]:
    out = {}
    for layer in (_decode(n) for n in group.attrs["layer_names"]):
        g = group[layer]
        for wname in (_decode(n) for n in g.attrs.get("weight_names", [])):
            base = wname.split("/")[-1].split(":")[0]
            base = "kernel" if base == "depthwise_kernel" else base
            key = f"{layer}/{base}"
            if key in out:
                raise ValueError(f"two weights of layer {layer!r} are both named {base!r}")
            out[key] = np.asarray(g[wname])
    return out


def read(path) -> dict[str, np.ndarray]:
    """{`<layer>/<weight>`: array} of a Keras weights file, in either layout (see module doc)."""
    import h5py
    path = pathlib.Path(path)
    with h5py.File(path, "r") as f:
        root = f["model_weights"] if "model_weights" in f else f
        if "layer_names" in root.attrs:
            return _legacy(root)
        if "layers" in root:
            raise ValueError(
                f"{path} is a Keras 3 .weights.h5 file, which names layers by class and position "
                f"('layers/batch_normalization_10/vars/0'), not by layer name, so it cannot be converted by name. "
                f"Re-save the model in the legacy HDF5 layout the keras.applications downloads use: "
                f"model.save('model.h5'), or keras.src.legacy.saving.legacy_h5_format.save_weights_to_hdf5_group")
    raise ValueError(f"{path} is not a legacy Keras weights file (no 'layer_names' attribute)")


# --- tables ---------------------------------------------------------------------------------------------------

def _conv(t: Table, src: str, dst: str, transform=identity, bias: bool = False) -> None:
    t.add(f"{src}/kernel", f"{dst}.kernel", transform)
    if bias:
        t.add(f"{src}/bias", f"{dst}.bias")


def _bn(t: Table, src: str, dst: str) -> None:
    t.add(f"{src}/gamma", f"{dst}.scale")
    t.add(f"{src}/beta", f"{dst}.bias")
    t.add(f"{src}/moving_mean", f"{dst}.mean", collection="batch_stats")
    t.add(f"{src}/moving_variance", f"{dst}.var", collection="batch_stats")


def _dense(t: Table, src: str, dst: str, optional: bool = False) -> None:
    t.add(f"{src}/kernel", f"{dst}.kernel", optional=optional)
    t.add(f"{src}/bias", f"{dst}.bias", optional=optional)


def resnet50_table() -> Table:
    """keras.applications.ResNet50 (keras/src/applications/resnet.py): conv{2..5}_block{i}_{0..3}_{conv,bn}."""
    t = Table()
    _conv(t, "conv1_conv", "units.0.conv", reverse_input_channels, bias=True)
    _bn(t, "conv1_bn", "units.0.bn")
    unit = 1
    for stage, blocks in enumerate(resnet.DEPTHS[50][1]):
        for b in range(blocks):
            name, dst = f"conv{stage + 2}_block{b + 1}", f"units.{unit}"
            if b == 0:  # projection shortcut
                _conv(t, f"{name}_0_conv", f"{dst}.proj", bias=True)
                _bn(t, f"{name}_0_bn", f"{dst}.proj_bn")
            for i in (1, 2, 3):
                _conv(t, f"{name}_{i}_conv", f"{dst}.conv{i}", bias=True)
                _bn(t, f"{name}_{i}_bn", f"{dst}.bn{i}")
            unit += 1
    _dense(t, "predictions", "head.classifier", optional=True)
    return t


def vgg16_table(fc_units: int) -> Table:
    """keras.applications.VGG16: block{b}_conv{i}, fc1, fc2, predictions."""
    t = Table(hint=vgg.NO_TOP_HINT)
    for b, widths in enumerate(vgg.CONFIG_D):
        for i in range(len(widths)):
            first = b == 0 and i == 0
            _conv(t, f"block{b + 1}_conv{i + 1}", f"units.{b}.convs.{i}",
                  reverse_input_channels if first else identity, bias=True)
    if fc_units > 0:  # Keras' Flatten is (height, width, channel) order, as the fc unit here
        _dense(t, "fc1", f"units.{len(vgg.CONFIG_D)}.fc6")
        _dense(t, "fc2", f"units.{len(vgg.CONFIG_D)}.fc7")
        _dense(t, "predictions", "head.classifier", optional=True)
    return t


def mobilenet_v2_table() -> Table:
    """keras.applications.MobileNetV2: Conv1, expanded_conv_*, block_{1..16}_*, Conv_1."""
    t = Table()
    _conv(t, "Conv1", "units.0.conv")
    _bn(t, "bn_Conv1", "units.0.bn")
    block = 0
    for expansion, _, repeats, _ in mobilenet.SETTINGS:
        for _ in range(repeats):
            prefix, dst = ("expanded_conv" if block == 0 else f"block_{block}"), f"units.{block + 1}"
            if expansion != 1:
                _conv(t, f"{prefix}_expand", f"{dst}.expand.conv")
                _bn(t, f"{prefix}_expand_BN", f"{dst}.expand.bn")
            _conv(t, f"{prefix}_depthwise", f"{dst}.depthwise.conv", keras_depthwise)
            _bn(t, f"{prefix}_depthwise_BN", f"{dst}.depthwise.bn")
            _conv(t, f"{prefix}_project", f"{dst}.project.conv")
            _bn(t, f"{prefix}_project_BN", f"{dst}.project.bn")
            block += 1
    _conv(t, "Conv_1", f"units.{block + 1}.conv")
    _bn(t, "Conv_1_bn", f"units.{block + 1}.bn")
    _dense(t, "predictions", "head.classifier", optional=True)
    return t


def efficientnet_b0_table() -> Table:
    """keras.applications.EfficientNetB0: stem_*, block{stage}{a,b,...}_*, top_*."""
    t = Table()
    t.set_aside["normalization/mean"] = "input normalisation, recorded as the metadata's mean"
    t.set_aside["normalization/variance"] = "input normalisation, recorded as the metadata's std"
    t.set_aside["normalization/count"] = "sample count of Normalization.adapt, not a weight"
    _conv(t, "stem_conv", "units.0.conv")
    _bn(t, "stem_bn", "units.0.bn")
    unit = 1
    for stage, (expand, *_, repeats) in enumerate(efficientnet.B0):
        for j in range(repeats):
            name, dst = f"block{stage + 1}{chr(ord('a') + j)}_", f"units.{unit}"
            if expand != 1:
                _conv(t, f"{name}expand_conv", f"{dst}.expand.conv")
                _bn(t, f"{name}expand_bn", f"{dst}.expand.bn")
            _conv(t, f"{name}dwconv", f"{dst}.depthwise.conv", keras_depthwise)
            _bn(t, f"{name}bn", f"{dst}.depthwise.bn")
            _conv(t, f"{name}se_reduce", f"{dst}.se.reduce", bias=True)
            _conv(t, f"{name}se_expand", f"{dst}.se.expand", bias=True)
            _conv(t, f"{name}project_conv", f"{dst}.project.conv")
            _bn(t, f"{name}project_bn", f"{dst}.project.bn")
            unit += 1
    _conv(t, "top_conv", f"units.{unit}.conv")
    _bn(t, "top_bn", f"units.{unit}.bn")
    _dense(t, "predictions", "head.classifier", optional=True)
    return t


def efficientnet_normalisation(source: dict[str, np.ndarray], meta: ModelMeta) -> tuple[ModelMeta, str]:
    """The metadata's mean/std from the file's Normalization layer (applied after x/255 in the network)."""
    if "normalization/mean" not in source:
        return meta, "no Normalization layer in the file: the metadata keeps the published ImageNet mean/std"
    mean = np.asarray(source["normalization/mean"], np.float64).reshape(-1)
    var = np.asarray(source["normalization/variance"], np.float64).reshape(-1)
    if np.allclose(var, IMAGENET_STDDEV_RGB, atol=1e-6):
        std = np.asarray(IMAGENET_STDDEV_RGB)  # the published files (see IMAGENET_STDDEV_RGB)
    else:
        std = np.sqrt(var)
    meta = dataclasses.replace(meta, mean=tuple(float(m) for m in mean), std=tuple(float(s) for s in std))
    return meta, f"input normalisation folded into the metadata: mean={meta.mean}, std={meta.std} on [0, 1] pixels"


# --- Inception-v3 and DenseNet-121 ------------------------------------------------------------------------------

def _first_number(source, prefix: str) -> int:
    """The lowest N among the file's layers auto-named `prefix` (N = 0) or `prefix_N` (0 when there are none)."""
    pattern = re.compile(rf"{prefix}(?:_(\d+))?")
    found = [m.group(1) for m in (pattern.fullmatch(k.split("/")[0]) for k in source) if m]
    return min((int(n or 0) for n in found), default=0)


def _auto_name(prefix: str, n: int) -> str:
    return prefix if n == 0 else f"{prefix}_{n}"


def inception_v3_table(source) -> Table:
    """keras.applications.InceptionV3: the i-th conv2d_N / batch_normalization_N (scale=False: beta, moving
    statistics) in creation order -> the i-th conv of the stem and each block's CONVS (see module doc)."""
    t = Table(hint="Keras numbers InceptionV3's layers conv2d_N, batch_normalization_N in creation order; "
                   "a file missing one of them, or holding another model's, does not convert")
    paths = [f"units.0.{c}" for c in inception.Stem.CONVS]
    paths += [f"units.{i + 1}.{c}" for i, (_, block, *_) in enumerate(inception.MIXED) for c in block.CONVS]
    c0, b0 = _first_number(source, "conv2d"), _first_number(source, "batch_normalization")
    for i, dst in enumerate(paths):
        _conv(t, _auto_name("conv2d", c0 + i), f"{dst}.conv")
        bn = _auto_name("batch_normalization", b0 + i)
        t.add(f"{bn}/beta", f"{dst}.bn.bias")
        t.add(f"{bn}/moving_mean", f"{dst}.bn.mean", collection="batch_stats")
        t.add(f"{bn}/moving_variance", f"{dst}.bn.var", collection="batch_stats")
    _dense(t, "predictions", "head.classifier", optional=True)
    return t


def densenet121_table() -> Table:
    """keras.applications.DenseNet121: conv1_*, conv{2..5}_block{i}_{0_bn,1_conv,1_bn,2_conv}, pool{2..4}_*, bn."""
    t = Table()
    _conv(t, "conv1_conv", "units.0.conv")
    _bn(t, "conv1_bn", "units.0.bn")
    for b, n in enumerate(densenet.BLOCKS):
        for j in range(n):
            name, dst = f"conv{b + 2}_block{j + 1}", f"units.{b + 1}.layers.{j}"
            _bn(t, f"{name}_0_bn", f"{dst}.norm1")
            _conv(t, f"{name}_1_conv", f"{dst}.conv1")
            _bn(t, f"{name}_1_bn", f"{dst}.norm2")
            _conv(t, f"{name}_2_conv", f"{dst}.conv2")
        if b + 1 < len(densenet.BLOCKS):
            _bn(t, f"pool{b + 2}_bn", f"units.{b + 1}.transition.norm")
            _conv(t, f"pool{b + 2}_conv", f"units.{b + 1}.transition.conv")
        else:
            _bn(t, "bn", f"units.{b + 1}.transition.norm")
    _dense(t, "predictions", "head.classifier", optional=True)
    return t


def table(arch: str, source: dict[str, np.ndarray], model_cfg) -> tuple[Table, ModelMeta, list[str]]:
    from tl_research.models import META
    meta, notes = META[arch], []
    if arch in mobilenet_v3_tables.ARCHS_KERAS:  # Keras rescales inside the model: the metadata's mean/std
        return mobilenet_v3_tables.table(arch, source, model_cfg), meta, [
            "the model's own input Rescaling (include_preprocessing) is the metadata's mean/std 0.5"]
    if arch in resnet_v2_tables.ARCHS_KERAS:
        return resnet_v2_tables.keras_table(), meta, notes
    if arch == "inception_v3_keras":
        return inception_v3_table(source), meta, notes
    if arch == "densenet121_keras":
        return densenet121_table(), meta, notes
    if arch == "resnet50_keras":
        t = resnet50_table()
    elif arch == "vgg16_keras":
        t = vgg16_table(int(model_cfg.get("fc_units", 4096)))
    elif arch == "mobilenet_v2_keras":
        t = mobilenet_v2_table()
    elif arch == "efficientnet_b0_keras":
        t = efficientnet_b0_table()
        meta, note = efficientnet_normalisation(source, meta)
        notes.append(note)
    else:
        raise ValueError(f"no Keras converter for architecture {arch!r}; allowed: {', '.join(ARCHS)}")
    if arch in ("resnet50_keras", "vgg16_keras"):
        notes.append("first conv's input channels reversed: the converted network takes RGB "
                     "(mean subtraction in RGB order, 0..255 pixels, as in the metadata)")
    return t, meta, notes
