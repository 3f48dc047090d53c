"""torchvision's own model code for the parity tests, imported on the CPU torch wheel.

torchvision 0.28.0's import registers Python implementations for C++ operators (`torchvision::nms`,
`torchvision::qnms`) whose schemas its compiled extension would declare; the extension here is a CUDA build
that does not load on the CPU torch wheel, so the schemas are declared first with torch.library. The
classification models never call these detection operators. Test-only: the library never imports this.
"""
from __future__ import annotations

import torch

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
