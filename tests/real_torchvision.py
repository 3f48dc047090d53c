"""torchvision's own model code for the parity tests, imported on the CPU torch wheel, and the helpers those
tests share on the PyTorch side (random weights, NHWC outputs, torchvision ResNet's depth units).

torchvision 0.28.0's import registers Python implementations for C++ operators (`torchvision::nms`,
`torchvision::qnms`) whose schemas its compiled extension would declare; the extension here is a CUDA build
that does not load on the CPU torch wheel, so the schemas are declared first with torch.library. The
classification models never call these detection operators. Test-only: the library never imports this.
"""
from __future__ import annotations

import numpy as np
import torch
from torch import nn

_SCHEMAS = ("nms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor",
            "qnms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor")


def _declare_operator_schemas() -> None:
    if hasattr(torch.ops.torchvision, "nms"):
        return  # a working extension (or an earlier call) declared them
    lib = torch.library.Library("torchvision", "DEF")
    for schema in _SCHEMAS:
        lib.define(schema)
    _declare_operator_schemas.lib = lib  # the declarations live as long as the Library object


_declare_operator_schemas()

import torchvision  # noqa: E402

models = torchvision.models


def nhwc(t: torch.Tensor) -> np.ndarray:
    """A PyTorch output as numpy, NCHW maps transposed to the Flax models' NHWC."""
    t = t.detach()
    return (t.permute(0, 2, 3, 1) if t.ndim == 4 else t).numpy()


def randomize_(model: nn.Module, seed: int = 0) -> nn.Module:
    """Random weights and non-trivial BatchNorm statistics, scaled so activations stay O(1) in deep nets; sets
    every Conv2d, Linear and BatchNorm2d tensor, so a model built on the meta device and moved with
    `to_empty` (no library initialisation, which takes seconds for the large ones) is fully defined."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, (nn.Conv2d, nn.Linear)):
                fan_in = m.weight[0].numel()
                m.weight.copy_(torch.randn(m.weight.shape, generator=g) * (1.0 / fan_in) ** 0.5)
                if m.bias is not None:
                    m.bias.copy_(0.1 * torch.randn(m.bias.shape, generator=g))
            elif isinstance(m, nn.BatchNorm2d):
                n = m.num_features
                m.weight.copy_(0.5 + torch.rand(n, generator=g))
                m.bias.copy_(0.2 * torch.randn(n, generator=g))
                m.running_mean.copy_(0.2 * torch.randn(n, generator=g))
                m.running_var.copy_(0.5 + torch.rand(n, generator=g))
                m.num_batches_tracked.fill_(1234)
    return model.eval()


def build(make, seed: int = 0, **kwargs) -> nn.Module:
    """`make(**kwargs)` (a torchvision or timm constructor) built on the meta device, then given random
    weights by `randomize_`."""
    with torch.device("meta"):
        model = make(**kwargs)
    return randomize_(model.to_empty(device="cpu"), seed)


def resnet_units(model, x: torch.Tensor):
    """(logits of the model's own forward, [stem, every residual block]) of a torchvision ResNet, the
    partition of this codebase's ResNet units."""
    with torch.no_grad():
        h = model.maxpool(model.relu(model.bn1(model.conv1(x))))
        outs = [h]
        for stage in (model.layer1, model.layer2, model.layer3, model.layer4):
            for block in stage:
                h = block(h)
                outs.append(h)
        return model(x), outs
