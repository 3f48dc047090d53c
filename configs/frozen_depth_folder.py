"""Frozen depth on your own photos: how many pretrained depth units to keep frozen when fine-tuning on a folder
with one subfolder of images per class (Yosinski et al. 2014's layer-transfer question, arXiv 1411.1792, on
your data), against training from scratch.

    python -m tl_research.convert resnet18-f37072fd.pth --arch resnet18 --out weights/resnet18   # once
    python launch.py --config configs/frozen_depth_folder.py:photos,weights/resnet18 --workdir runs/photos

The argument is PHOTOS,WEIGHTS. PHOTOS is the folder (PNG or JPEG, any sizes; prepared once as a TFDS dataset
with stratified 70/15/15 train/val/test splits, unreadable images skipped and listed: data/folder.py).
WEIGHTS is a converted checkpoint (python -m tl_research.convert; see docs/pretrained.md) or a run directory
of this codebase; the architecture is read from it. Images are resized to the checkpoint's input size and
normalised as its weights expect (a checkpoint without an input size: 64 pixels; --config.data.image_size=N
to change). Runs: frozen depth 0 (fine-tune everything) .. all (linear probe) from the weights, and scratch;
2 seeds; 10 epochs, SGD with cosine decay, test accuracy at the best validation epoch.

The trend to expect depends on how close your photos are to the checkpoint's source data: usually a plateau
over the low depths and a fall as source-specific top units stay frozen; from scratch trails far behind on a
few hundred photos.
"""
import json
import pathlib

from tl_research import models
from tl_research.config import axis, base_config, chain, product
from tl_research.core.errors import ConfigError

SEEDS = (0, 1)
_ARG = "PHOTOS,WEIGHTS: a folder of class subfolders and a converted checkpoint or run directory"


def _parse(arg):
    photos, sep, weights = (arg or "").rpartition(",")
    if not sep or not photos or not weights:
        raise ConfigError("--config", f"configs/frozen_depth_folder.py:{arg or ''}", _ARG)
    return photos, weights


def _model_and_meta(weights: str):
    """(model config, ModelMeta dict) of a converted checkpoint directory or a run directory."""
    d = pathlib.Path(weights)
    cfg = models.default_config()
    if (d / "config.json").is_file() and (d / "weights" / "meta.json").is_file():  # a run directory
        cfg.update(json.loads((d / "config.json").read_text())["model"])
        return cfg, json.loads((d / "weights" / "meta.json").read_text())["meta"]
    if (d / "meta.json").is_file():
        info = json.loads((d / "meta.json").read_text())
        if "converted_from" in info:
            arch = info["converted_from"]
            cfg.name, cfg.fc_units, cfg.image_size = arch["arch"], arch["fc_units"], arch["image_size"]
            cfg.width_multiplier = float(arch.get("width_multiplier", 1.0))
            return cfg, info["meta"]
        if (d.parent / "config.json").is_file():  # a run's weights/ directory
            return _model_and_meta(str(d.parent))
    raise ConfigError("--config", f"configs/frozen_depth_folder.py:{weights}", _ARG,
                      why=f"{weights} is neither a converted checkpoint nor a run directory")


def get_config(arg=None):
    photos, weights = _parse(arg)
    model, meta = _model_and_meta(weights)
    c = base_config()
    c.name = "frozen_depth_folder"
    c.data.name = f"folder:{photos}"
    c.data.image_size = 0 if meta.get("input_size") else 64  # 0: the checkpoint's input size
    c.data.channels = 3
    c.data.batch_size = 32
    c.data.eval_batch_size = 64
    c.model = model
    c.init = weights
    c.optimizer.name = "sgd"
    c.optimizer.momentum = 0.9
    c.optimizer.weight_decay = 1e-4
    c.schedule.name = "cosine"
    c.schedule.lr = 0.01
    c.schedule.warmup_epochs = 1.0
    c.train.epochs = 10
    c.report.x = "frozen_depth"
    c.report.series = ("init",)
    return c


def get_sweep(arg=None):
    config = get_config(arg)
    units = models.abstract(config.model, 2, 3).num_units
    transfer = axis("frozen_depth", list(range(units + 1)))
    scratch = [{"init": "scratch", "frozen_depth": 0}]
    return product(axis("seed", list(SEEDS)), chain(transfer, scratch))
