"""PyTorch state dicts with torchvision / timm parameter names -> this codebase's weights.

Files:
- `.safetensors`: read with the safetensors package into numpy; torch is not needed.
- `.pth` / `.pt` / `.bin` in torch.save's zip format (PyTorch 1.6 and later): read without PyTorch by
  `torch_zip`, which unpickles tensors and plain containers and refuses any other object, as
  `torch.load(weights_only=True)` does, so a checkpoint cannot run code. Files of the legacy format are read
  through `torch.load(path, weights_only=True, map_location="cpu")` where PyTorch is installed.
  A training checkpoint that wraps the state dict (`{"state_dict": ...}`, `{"model": ...}`) is unwrapped,
  and DataParallel's `module.` prefix is removed.

Name tables (source name -> dotted path, with the layout change):
- ResNet-18/34/50/101/152: torchvision names (`conv1`, `bn1`, `layer1.0.conv1`, `layer1.0.downsample.0`,
  `fc`), which timm's ResNets share;
- VGG16: torchvision (`features.N`, `classifier.{0,3,6}`); fc6's input rows are permuted from torchvision's
  (channel, height, width) flattening to the (height, width, channel) order of the model here;
- MobileNetV2: torchvision (`features.0.0`, `features.N.conv.M`, `features.18.0`, `classifier.1`);
- EfficientNet-B0: torchvision (`features.S.B.block.M`, `classifier.1`) and timm (`conv_stem`,
  `blocks.S.B.conv_dw`, `conv_head`, `classifier`), recognised by their names.
- Inception-v3: torchvision (`Conv2d_1a_3x3.conv`, `Mixed_5b.branch1x1.bn`, `fc`), which timm's
  `inception_v3` shares; the auxiliary classifier (`AuxLogits.*`) is set aside by name.
- DenseNet-121: torchvision (`features.conv0`, `features.denseblockB.denselayerL.norm1`,
  `features.transitionB`, `features.norm5`, `classifier`), and the names of the published file from before
  torchvision 0.4 (`denselayerL.norm.1`, `conv.2`), which torchvision renames when it loads it.

Conv weights (out, in, h, w) become HWIO kernels, Linear weights (out, in) become (in, out), BatchNorm
`weight/bias/running_mean/running_var` become `scale/bias` params and `mean/var` batch statistics; BatchNorm's
`num_batches_tracked` counters are set aside by name.
"""
from __future__ import annotations

import pathlib

import numpy as np

from tl_research.checkpoints.table import Table, torch_conv, torch_linear
from tl_research.checkpoints import mobilenet_v3_tables
from tl_research.models import efficientnet, mobilenet, resnet, vgg
from tl_research.models import densenet, inception
from tl_research.models.base import ModelMeta

NAME = "PyTorch"
ARCHS = tuple(f"resnet{d}" for d in resnet.DEPTHS) + ("vgg16", "mobilenet_v2", "efficientnet_b0")
# MobileNetV3, torchvision and timm names (their tables: mobilenet_v3_tables.py).
ARCHS += mobilenet_v3_tables.ARCHS_TORCH
ARCHS += ("inception_v3", "densenet121")
_NO_TORCH = ("{path} is in torch.save's legacy (pre-1.6, not zip) format; reading it needs PyTorch "
             "(`pip install torch`), which is not installed here. Either install it, or convert the file to "
             "safetensors where PyTorch is installed:\n"
             "  python -c \"import torch, safetensors.torch as st; "
             "st.save_file(torch.load('{path}', weights_only=True, map_location='cpu'), '{stem}.safetensors')\"\n"
             "and convert the .safetensors file, which needs no PyTorch.")


def _load_pickle(path: pathlib.Path) -> dict:
    """A torch.save file: the zip format (every torch.save since PyTorch 1.6) is read without PyTorch
    (`torch_zip`); the legacy format through torch.load where PyTorch is installed."""
    from tl_research.checkpoints import torch_zip
    if torch_zip.is_zip_checkpoint(path):
        try:
            obj = torch_zip.load(path)
        except torch_zip.Refused as e:
            raise ValueError(_REFUSED.format(path=path, why=e)) from e
        out = _unwrap(obj, path)
        for k, v in out.items():
            if not isinstance(v, np.ndarray):
                raise ValueError(f"{path}: entry {k!r} is a {type(v).__name__}, not a tensor")
        return dict(out)
    return _load_legacy(path)


_REFUSED = ("{path} holds objects other than tensors and plain containers ({why}); such files are not "
            "unpickled, as they can run code. Save just the state dict (torch.save(model.state_dict(), ...)) or "
            "a .safetensors file where the checkpoint was made.")


def _load_legacy(path: pathlib.Path) -> dict:
    try:
        import torch
    except ImportError as e:
        raise ImportError(_NO_TORCH.format(path=path, stem=path.with_suffix(""))) from e
    try:
        obj = torch.load(path, weights_only=True, map_location="cpu")
    except Exception as e:  # torch raises pickle.UnpicklingError (or RuntimeError in older versions)
        if "weights_only" in str(e) or "Unsupported global" in str(e) or "Unpickl" in type(e).__name__:
            raise ValueError(_REFUSED.format(path=path, why=f"torch said: {str(e).splitlines()[0]}")) from e
        raise
    obj = _unwrap(obj, path)
    out = {}
    for k, v in obj.items():
        if not isinstance(v, torch.Tensor):
            raise ValueError(f"{path}: entry {k!r} is a {type(v).__name__}, not a tensor")
        v = v.detach().cpu()
        if v.dtype in (torch.bfloat16, torch.float16):
            v = v.float()
        out[k] = v.numpy()
    return out


def _unwrap(obj, path) -> dict:
    if not isinstance(obj, dict):
        raise ValueError(f"{path} holds a {type(obj).__name__}, not a state dict")
    for key in ("state_dict", "model", "state_dict_ema", "model_ema"):
        if key in obj and isinstance(obj[key], dict) and not _is_state_dict(obj):
            return obj[key]
    if not _is_state_dict(obj):
        raise ValueError(f"{path} is not a state dict and wraps none under 'state_dict' or 'model'; its "
                         f"entries: {sorted(obj)[:10]}")
    return obj


def _is_state_dict(obj: dict) -> bool:
    return all(hasattr(v, "shape") for v in obj.values())


def read(path) -> dict[str, np.ndarray]:
    """{torch parameter name: array} of a .safetensors or a .pth/.pt/.bin state dict."""
    path = pathlib.Path(path)
    if path.suffix == ".safetensors":
        from safetensors.numpy import load_file
        try:
            out = load_file(str(path))
        except (TypeError, ValueError) as e:  # bfloat16 has no numpy dtype
            raise ValueError(f"{path}: {e}; store the tensors as float32/float16 safetensors") from e
    else:
        out = _load_pickle(path)
    if out and all(k.startswith("module.") for k in out):  # saved from torch.nn.DataParallel
        out = {k[len("module."):]: v for k, v in out.items()}
    return {k: (v.astype(np.float32) if v.dtype == np.float16 else v) for k, v in out.items()}


# --- tables ---------------------------------------------------------------------------------------------------

def _conv(t: Table, src: str, dst: str, bias: bool = False) -> None:
    t.add(f"{src}.weight", f"{dst}.kernel", torch_conv)
    if bias:
        t.add(f"{src}.bias", f"{dst}.bias")


def _bn(t: Table, src: str, dst: str) -> None:
    t.add(f"{src}.weight", f"{dst}.scale")
    t.add(f"{src}.bias", f"{dst}.bias")
    t.add(f"{src}.running_mean", f"{dst}.mean", collection="batch_stats")
    t.add(f"{src}.running_var", f"{dst}.var", collection="batch_stats")
    t.set_aside[f"{src}.num_batches_tracked"] = "BatchNorm step counter, not a weight"


def _linear(t: Table, src: str, dst: str, transform=torch_linear, optional: bool = False) -> None:
    t.add(f"{src}.weight", f"{dst}.kernel", transform, optional=optional)
    t.add(f"{src}.bias", f"{dst}.bias", optional=optional)


def resnet_table(depth: int) -> Table:
    t = Table()
    _conv(t, "conv1", "units.0.conv")
    _bn(t, "bn1", "units.0.bn")
    kind, stages = resnet.DEPTHS[depth]
    convs = 2 if kind == "basic" else 3
    unit = 1
    for stage, blocks in enumerate(stages):
        for b in range(blocks):
            src, dst = f"layer{stage + 1}.{b}", f"units.{unit}"
            for i in range(1, convs + 1):
                _conv(t, f"{src}.conv{i}", f"{dst}.conv{i}")
                _bn(t, f"{src}.bn{i}", f"{dst}.bn{i}")
            if b == 0 and (stage > 0 or kind == "bottleneck"):
                _conv(t, f"{src}.downsample.0", f"{dst}.proj")
                _bn(t, f"{src}.downsample.1", f"{dst}.proj_bn")
            unit += 1
    _linear(t, "fc", "head.classifier", optional=True)
    return t


def _fc6_chw_to_hwc(w: np.ndarray) -> np.ndarray:
    """torchvision classifier.0.weight (out, C*7*7 in C,H,W order) -> kernel (7*7*C in H,W,C order, out)."""
    g = vgg.POOL_GRID
    out, n = w.shape
    return w.reshape(out, n // (g * g), g, g).transpose(2, 3, 1, 0).reshape(n, out)


def vgg16_table(fc_units: int) -> Table:
    t = Table(hint=vgg.NO_TOP_HINT)
    index = 0
    for b, widths in enumerate(vgg.CONFIG_D):
        for i in range(len(widths)):
            _conv(t, f"features.{index}", f"units.{b}.convs.{i}", bias=True)
            index += 2  # conv, ReLU
        index += 1  # max-pool
    if fc_units > 0:
        fc = len(vgg.CONFIG_D)
        _linear(t, "classifier.0", f"units.{fc}.fc6", _fc6_chw_to_hwc)
        _linear(t, "classifier.3", f"units.{fc}.fc7")
        _linear(t, "classifier.6", "head.classifier", optional=True)
    return t


def mobilenet_v2_table() -> Table:
    t = Table()
    _conv(t, "features.0.0", "units.0.conv")
    _bn(t, "features.0.1", "units.0.bn")
    block = 1
    for expansion, _, repeats, _ in mobilenet.SETTINGS:
        for _ in range(repeats):
            src, dst = f"features.{block}.conv", f"units.{block}"
            parts = ["depthwise"] if expansion == 1 else ["expand", "depthwise"]
            for i, part in enumerate(parts):  # Conv2dNormActivation: (conv, BN, ReLU6)
                _conv(t, f"{src}.{i}.0", f"{dst}.{part}.conv")
                _bn(t, f"{src}.{i}.1", f"{dst}.{part}.bn")
            _conv(t, f"{src}.{len(parts)}", f"{dst}.project.conv")  # linear projection: bare conv, then BN
            _bn(t, f"{src}.{len(parts) + 1}", f"{dst}.project.bn")
            block += 1
    _conv(t, f"features.{block}.0", f"units.{block}.conv")
    _bn(t, f"features.{block}.1", f"units.{block}.bn")
    _linear(t, "classifier.1", "head.classifier", optional=True)
    return t


def efficientnet_b0_table() -> Table:
    """torchvision: features.0 stem, features.1..7 stages of MBConv (`.block.M`), features.8 top."""
    t = Table()
    _conv(t, "features.0.0", "units.0.conv")
    _bn(t, "features.0.1", "units.0.bn")
    unit = 1
    for stage, (expand, *_, repeats) in enumerate(efficientnet.B0):
        for j in range(repeats):
            src, dst = f"features.{stage + 1}.{j}.block", f"units.{unit}"
            i = 0
            if expand != 1:
                _conv(t, f"{src}.0.0", f"{dst}.expand.conv")
                _bn(t, f"{src}.0.1", f"{dst}.expand.bn")
                i = 1
            _conv(t, f"{src}.{i}.0", f"{dst}.depthwise.conv")
            _bn(t, f"{src}.{i}.1", f"{dst}.depthwise.bn")
            _conv(t, f"{src}.{i + 1}.fc1", f"{dst}.se.reduce", bias=True)
            _conv(t, f"{src}.{i + 1}.fc2", f"{dst}.se.expand", bias=True)
            _conv(t, f"{src}.{i + 2}.0", f"{dst}.project.conv")
            _bn(t, f"{src}.{i + 2}.1", f"{dst}.project.bn")
            unit += 1
    _conv(t, "features.8.0", f"units.{unit}.conv")
    _bn(t, "features.8.1", f"units.{unit}.bn")
    _linear(t, "classifier.1", "head.classifier", optional=True)
    return t


def efficientnet_b0_timm_table() -> Table:
    """timm: conv_stem/bn1, blocks.S.B (depthwise-separable first stage, inverted residuals after), conv_head/bn2."""
    t = Table()
    _conv(t, "conv_stem", "units.0.conv")
    _bn(t, "bn1", "units.0.bn")
    unit = 1
    for stage, (expand, *_, repeats) in enumerate(efficientnet.B0):
        for j in range(repeats):
            src, dst = f"blocks.{stage}.{j}", f"units.{unit}"
            if expand == 1:  # DepthwiseSeparableConv: conv_dw, bn1, se, conv_pw, bn2
                names = {"depthwise": ("conv_dw", "bn1"), "project": ("conv_pw", "bn2")}
            else:  # InvertedResidual: conv_pw, bn1, conv_dw, bn2, se, conv_pwl, bn3
                names = {"expand": ("conv_pw", "bn1"), "depthwise": ("conv_dw", "bn2"),
                         "project": ("conv_pwl", "bn3")}
            for part, (conv, bn) in names.items():
                _conv(t, f"{src}.{conv}", f"{dst}.{part}.conv")
                _bn(t, f"{src}.{bn}", f"{dst}.{part}.bn")
            _conv(t, f"{src}.se.conv_reduce", f"{dst}.se.reduce", bias=True)
            _conv(t, f"{src}.se.conv_expand", f"{dst}.se.expand", bias=True)
            unit += 1
    _conv(t, "conv_head", f"units.{unit}.conv")
    _bn(t, "bn2", f"units.{unit}.bn")
    _linear(t, "classifier", "head.classifier", optional=True)
    return t


# --- Inception-v3 and DenseNet-121 ------------------------------------------------------------------------------

AUX_REASON = "auxiliary classifier, a training-time loss on Mixed_6e, not part of the network"


def inception_v3_table() -> Table:
    """torchvision / timm: BasicConv2d (ConvNormAct in timm) = `.conv` + `.bn` for every conv."""
    t = Table()
    convs = [(f"C{c[1:]}", f"units.0.{c}") for c in inception.Stem.CONVS]  # Conv2d_1a_3x3 ...
    convs += [(f"{name}.{c}", f"units.{i + 1}.{c}") for i, (name, block, *_) in enumerate(inception.MIXED)
              for c in block.CONVS]
    for src, dst in convs:
        _conv(t, f"{src}.conv", f"{dst}.conv")
        _bn(t, f"{src}.bn", f"{dst}.bn")
    _linear(t, "fc", "head.classifier", optional=True)
    for conv in ("conv0", "conv1"):  # torchvision's InceptionAux; timm's published tv_in1k file keeps it too
        t.set_aside[f"AuxLogits.{conv}.conv.weight"] = AUX_REASON
        for stat in ("weight", "bias", "running_mean", "running_var", "num_batches_tracked"):
            t.set_aside[f"AuxLogits.{conv}.bn.{stat}"] = AUX_REASON
    t.set_aside["AuxLogits.fc.weight"] = t.set_aside["AuxLogits.fc.bias"] = AUX_REASON
    return t


def _dense_layer_sep(source) -> str:
    """"." for the published file's names from before torchvision 0.4 (`norm.1`), else "" (`norm1`)."""
    return "." if "features.denseblock1.denselayer1.norm.1.weight" in source else ""


def densenet121_table(source) -> Table:
    """features.conv0/norm0, denseblockB.denselayerL.{norm1,conv1,norm2,conv2}, transitionB, norm5, classifier."""
    t = Table()
    sep = _dense_layer_sep(source)
    _conv(t, "features.conv0", "units.0.conv")
    _bn(t, "features.norm0", "units.0.bn")
    for b, n in enumerate(densenet.BLOCKS):
        for j in range(n):
            src, dst = f"features.denseblock{b + 1}.denselayer{j + 1}", f"units.{b + 1}.layers.{j}"
            for i in (1, 2):
                _bn(t, f"{src}.norm{sep}{i}", f"{dst}.norm{i}")
                _conv(t, f"{src}.conv{sep}{i}", f"{dst}.conv{i}")
        if b + 1 < len(densenet.BLOCKS):
            _bn(t, f"features.transition{b + 1}.norm", f"units.{b + 1}.transition.norm")
            _conv(t, f"features.transition{b + 1}.conv", f"units.{b + 1}.transition.conv")
        else:
            _bn(t, "features.norm5", f"units.{b + 1}.transition.norm")
    _linear(t, "classifier", "head.classifier", optional=True)
    return t


def _inception_densenet(arch: str, source) -> tuple[Table, ModelMeta, list[str]]:
    from tl_research.models import META
    if arch == "inception_v3":
        notes = ["pixels scaled to [-1, 1] (mean 0.5, std 0.5): what torchvision's transform_input=True makes "
                 "of ImageNet-normalised input for these weights, and timm's tv_in1k preprocessing"]
        return inception_v3_table(), META[arch], notes
    t = densenet121_table(source)
    notes = ["dense layer names from before torchvision 0.4 (norm.1, conv.1, ...)"] if _dense_layer_sep(source) else []
    return t, META[arch], notes


def table(arch: str, source: dict[str, np.ndarray], model_cfg) -> tuple[Table, ModelMeta, list[str]]:
    from tl_research.models import META
    notes: list[str] = []
    if arch in mobilenet_v3_tables.ARCHS_TORCH:
        return mobilenet_v3_tables.table(arch, source, model_cfg), META[arch], notes
    if arch in ("inception_v3", "densenet121"):
        return _inception_densenet(arch, source)
    if arch.startswith("resnet") and arch[len("resnet"):].isdigit():
        t = resnet_table(int(arch[len("resnet"):]))
    elif arch == "vgg16":
        t = vgg16_table(int(model_cfg.get("fc_units", 4096)))
        notes.append("fc6 input rows permuted from torchvision's (C, H, W) flattening to (H, W, C)")
    elif arch == "mobilenet_v2":
        t = mobilenet_v2_table()
    elif arch == "efficientnet_b0":
        if "conv_stem.weight" in source:
            t = efficientnet_b0_timm_table()
            notes.append("timm parameter names (conv_stem, blocks.S.B, conv_head)")
        else:
            t = efficientnet_b0_table()
    else:
        raise ValueError(f"no PyTorch converter for architecture {arch!r}; allowed: {', '.join(ARCHS)}")
    return t, META[arch], notes
