"""Segmentation's record reader (data.targets = "segmentation"): the record's mask `data.mask_key` (default
"segmentation_mask", an Image feature) mapped through the dataset's `MaskFormat` (data/targets.py) to class
ids 0..C-1, with `IGNORE` (255) for pixels no class is scored on, fitted to the image's (h, w) by nearest
neighbour. Batches carry `"segmentation_mask"`: uint8 (B, h, w); a padded eval row's mask is all IGNORE."""
from __future__ import annotations

import numpy as np
import tensorflow_datasets as tfds
from PIL import Image

from tl_research.core.errors import ConfigError
from tl_research.data import geometry
from tl_research.data.targets import IGNORE, KNOWN_MASKS, TargetSpec, Targets


def _resolve(cfg, b, shape, crop_pct) -> TargetSpec:
    features = b.info.features
    fmt = getattr(b, "MASK_FORMAT", None) or KNOWN_MASKS.get(b.name)
    if cfg.mask_key not in features or not isinstance(features[cfg.mask_key], tfds.features.Image):
        images = [k for k, f in features.items() if isinstance(f, tfds.features.Image) and k != cfg.image_key]
        raise ConfigError("data.mask_key", cfg.mask_key, ", ".join(images) or "(no mask feature)",
                          why=f"data.targets=segmentation reads a mask image of {cfg.name}")
    if fmt is None:
        raise ConfigError("data.name", cfg.name, f"a dataset whose mask values are known: the built-in "
                          f"scenes, {', '.join(KNOWN_MASKS)}", why="data.targets=segmentation needs their classes")
    lut, (h, w), key = fmt.table(), shape[:2], cfg.mask_key

    def read(record: dict) -> dict[str, np.ndarray]:
        raw = np.asarray(record[key])
        mask = lut[raw.reshape(raw.shape[0], raw.shape[1], 1)]
        return {"segmentation_mask": geometry.fit(mask, h, w, crop_pct, Image.NEAREST)[..., 0]}

    return TargetSpec(TARGETS.name, list(fmt.names), read)


TARGETS = Targets("segmentation", {"segmentation_mask": IGNORE}, resolve=_resolve,
                  bytes_per_example=lambda shape: shape[0] * shape[1])
