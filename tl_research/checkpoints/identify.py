"""Which registry architecture, and which shape options, a checkpoint file converts to: the advice the
convert command gives when the `--arch` it was given does not fit the file.

Candidates are the format's architectures, each at the option values its weights are published with
(MobileNetV2's width multipliers, VGG16 with and without fc6/fc7, a ViT's input size read from its position
embedding). A candidate must first have exactly the file's tensor names (cheap: no model is built), then
pass the full conversion check against the model's shapes.
"""
from __future__ import annotations

import numpy as np

from tl_research.checkpoints import convert as convert_lib
from tl_research.checkpoints.weights import CheckpointMismatch

# config key -> the convert command's option that sets it
OPTIONS = {"width_multiplier": "--width-multiplier", "fc_units": "--fc-units", "image_size": "--image-size"}


def variants(arch: str, source: dict) -> list[dict]:
    from tl_research.models import mobilenet, vit
    if arch.startswith("mobilenet_v2"):  # the widths whose channel counts are the file's (no model built)
        layout = "keras" if arch.endswith("_keras") else "torch"
        found = _mobilenet_channels(arch, source)
        return [{"width_multiplier": w} for w in mobilenet.PUBLISHED_WIDTHS
                if found is None or mobilenet.channels(w, layout) == found]
    if arch.startswith("vgg16"):
        return [{"fc_units": 4096}, {"fc_units": 0}]
    if arch.startswith("mobilenet_v3_") and arch.endswith("_keras"):  # with and without the pre-logits layer
        return [{"fc_units": 4096}, {"fc_units": 0}]
    if arch.startswith("vit_"):
        pos = source.get("Transformer/posembed_input/pos_embedding")
        grid = int(round(np.sqrt(pos.shape[1] - 1))) if pos is not None and pos.ndim == 3 else 14
        return [{"image_size": grid * vit.PATCH}]
    return [{}]


def _mobilenet_channels(arch: str, source: dict):
    """(stem, [block outputs], top) channels of a MobileNetV2 file, or None if its names are not the table's."""
    from tl_research.checkpoints.table import out_features
    from tl_research.models import mobilenet
    reader = convert_lib.READERS["keras" if arch.endswith("_keras") else "torch"]
    table, _, _ = reader.table(arch, source, None)
    blocks = sum(n for *_, n, _ in mobilenet.SETTINGS)
    found = [out_features(source, table, f"units.{u}.{part}.kernel", axis=3)
             for u, part in [(0, "conv")] + [(i, "project.conv") for i in range(1, blocks + 1)]
             + [(blocks + 1, "conv")]]
    return None if None in found else (found[0], found[1:-1], found[-1])


def _names_fit(source: dict, table) -> bool:
    rows = {r.source for r in table.rows}
    required = {r.source for r in table.rows if not r.optional}
    return required <= source.keys() and set(source) <= rows | set(table.set_aside)


def _fits(fmt: str, source: dict, arch: str, options: dict) -> bool:
    """Whether `source` has exactly the tensor names of `arch` at `options`, and converts to it."""
    from tl_research import models
    cfg = models.default_config()
    cfg.name = arch
    cfg.update(options)
    try:
        table, _, _ = convert_lib.READERS[fmt].table(arch, source, cfg)
        if not _names_fit(source, table):
            return False
        convert_lib.convert_source(fmt, source, arch, cfg)
    except (CheckpointMismatch, ValueError):
        return False
    return True


def candidates(fmt: str, source: dict) -> list[tuple[str, dict]]:
    """[(arch, {config key: value})] that `source` (a read file of format `fmt`) converts to."""
    return [(arch, options) for arch in convert_lib.READERS[fmt].ARCHS for options in variants(arch, source)
            if _fits(fmt, source, arch, options)]


def fitting_options(fmt: str, source: dict, arch: str, given: dict) -> list[dict]:
    """The shape options (the published variants of `arch`, with the `given` ones on top) at which `source`
    converts to `arch`: one entry when the file decides them (a MobileNetV2's width from its channel counts,
    a VGG16 with or without fc6/fc7, a ViT's input size from its position embedding)."""
    found = []
    for options in variants(arch, source):
        options = {**options, **given}
        if options not in found and _fits(fmt, source, arch, options):
            found.append(options)
    return found


def family_arch(fmt: str, arch: str) -> str | None:
    """The format's converter architecture for `arch` given by its family name: `mobilenet_v2` for a Keras
    file is `mobilenet_v2_keras`, `resnet50_keras` for a PyTorch file is `resnet50` (None: no such one)."""
    names = convert_lib.READERS[fmt].ARCHS
    if arch in names:
        return arch
    base = arch[: -len("_keras")] if arch.endswith("_keras") else arch
    fits = [a for a in (f"{base}_keras", base) if a in names]
    return fits[0] if len(fits) == 1 else None


def command_line(arch: str, options: dict) -> str:
    """`--arch X --width-multiplier 0.35`, the options that differ from the defaults only."""
    from tl_research import models
    default = models.default_config()
    parts = [f"--arch {arch}"] + [f"{OPTIONS[k]} {v}" for k, v in options.items() if default.get(k) != v]
    return " ".join(parts)
