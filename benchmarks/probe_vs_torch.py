"""Wall time of a frozen-depth sweep on a converted ResNet-18 over a photo folder against a plain PyTorch CPU
script doing the same work with the same weights, interleaved, as ratios (cold and warm compilation cache).

The work (configs/frozen_depth_folder.py at 64 px): frozen depth from the middle of ResNet-18's 9 depth units
(the stem and 8 basic blocks) to all (5, 6, 7, 8, all), 2 seeds, 10 epochs each; SGD momentum 0.9, decoupled
weight decay 1e-4, lr 0.01 with one epoch of linear warmup then cosine decay, batch 32, validation every epoch,
test accuracy at the best validation epoch. The data: a photo folder of crops of four scikit-image
photographs (one class each, 30 per class or --crops), prepared by the project's folder builder (70/15/15
splits), resized as the checkpoint's metadata says (shorter side to 64 / 0.875, centre crop) and normalised
with ImageNet's statistics.

The weights: torchvision's own ResNet-18 code (tests/real_torchvision.py imports it on this CPU wheel) with
random weights and BatchNorm statistics, saved as the published .pth state dict, converted with
`python -m tl_research.convert --arch resnet18` for the JAX side and loaded as is into torchvision's model on
the torch side (2 threads, OMP_WAIT_POLICY=PASSIVE; frozen blocks by requires_grad=False, eval-mode BatchNorm
and torch.no_grad). Rounds as in benchmarks/quickstart_vs_torch.py (whose `compare` this reuses).

    python benchmarks/probe_vs_torch.py [--rounds 3] [--epochs 10] [--crops 30] [--keep DIR]

Timings are of this machine as it is (2 shared CPU cores here): run it under the shared CPU lock.
"""
from __future__ import annotations

import argparse
import json
import math
import pathlib
import shutil
import subprocess
import sys
import tempfile

HERE = pathlib.Path(__file__).resolve().parent
ROOT = HERE.parent
DEPTHS, SEEDS, CLASSES, CROPS = (5, 6, 7, 8, 9), (0, 1), ("astronaut", "chelsea", "coffee", "rocket"), 30
BATCH, EVAL_BATCH, LR, MOMENTUM, WD, IMAGE = 32, 64, 0.01, 0.9, 1e-4, 64
CONFIG = '''"""The probe benchmark's sweep: configs/frozen_depth_folder.py at {image} px, frozen depths {depths}."""
from configs import frozen_depth_folder as base
from tl_research.config import axis, product


def get_config(arg=None):
    c = base.get_config(arg)
    c.name = "probe_vs_torch"
    c.data.image_size = {image}
    c.train.epochs = {epochs}
    return c


def get_sweep(arg=None):
    return product(axis("seed", {seeds}), axis("frozen_depth", {depths}))
'''


def make_inputs(tmp: pathlib.Path, crops: int = CROPS) -> tuple[pathlib.Path, pathlib.Path, pathlib.Path]:
    """The photo folder (`crops` per class), the random-weight ResNet-18 .pth (torchvision's layout) and its
    conversion."""
    import numpy as np
    import skimage.data
    import torch
    from PIL import Image
    sys.path.insert(0, str(ROOT / "tests"))
    from real_torchvision import models
    photos = tmp / "photos"
    rng = np.random.default_rng(0)
    for name in CLASSES:
        img = getattr(skimage.data, name)()[..., :3]
        (photos / name).mkdir(parents=True, exist_ok=True)
        for i in range(crops):
            side = int(rng.integers(min(img.shape[:2]) // 3, min(img.shape[:2]) * 2 // 3))
            y, x = (int(rng.integers(0, img.shape[d] - side)) for d in (0, 1))
            Image.fromarray(img[y:y + side, x:x + side]).save(photos / name / f"crop_{i:03d}.png")
    torch.manual_seed(0)
    net = models.resnet18(weights=None)
    with torch.no_grad():  # BatchNorm statistics of a trained network rather than (0, 1)
        for m in net.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.weight.uniform_(0.5, 1.5), m.bias.normal_(0, 0.2)
                m.running_mean.normal_(0, 0.2), m.running_var.uniform_(0.5, 1.5)
    pth = tmp / "resnet18-random.pth"
    torch.save(net.state_dict(), pth)
    weights = tmp / "weights-resnet18"
    subprocess.run([sys.executable, "-m", "tl_research.cli.convert", str(pth), "--arch", "resnet18", "--out",
                    str(weights)], check=True, cwd=ROOT, capture_output=True)
    return photos, pth, weights


def export_data(config_path: str, arg: str, out: str) -> None:
    """The sweep's decoded splits (uint8 NHWC) as a run reads them, and its LR schedule (checked below)."""
    sys.path.insert(0, str(ROOT))
    import numpy as np
    from tl_research import config as config_lib
    from tl_research.finetune import strategies
    from tl_research.run import setup
    from tl_research.data import pipeline
    cfg = config_lib.read_config(config_lib.load_module(config_path), arg, config_path)
    cfg.frozen_depth = DEPTHS[0]
    _, meta = setup.init_weights(cfg.init, cfg.model)
    data = pipeline.load(cfg.data, meta)
    arrays = {}
    for name in ("train", "val", "test"):
        split = getattr(data, name)
        images = split.images
        if images is None:
            images = np.stack([data.load_image(r) for r in split.source.__getitems__([int(i) for i in split.indices])])
        arrays[f"{name}_x"], arrays[f"{name}_y"] = images, split.labels
    per_epoch = math.ceil(len(data.train) / cfg.data.batch_size)
    total = math.ceil(cfg.train.epochs * per_epoch)
    plan = strategies.plan(cfg, num_units=9, frozen_depth=DEPTHS[0], total_steps=total, steps_per_epoch=per_epoch)
    np.savez(out, **arrays, lrs=plan.lrs, mean=np.asarray(meta.mean), std=np.asarray(meta.std))


def torch_units(net):
    """torchvision's ResNet-18 in tl_research's depth units: the stem (conv1, bn1, relu, maxpool), then each
    basic block."""
    from torch import nn
    stem = nn.Sequential(net.conv1, net.bn1, net.relu, net.maxpool)
    return [stem] + [block for layer in (net.layer1, net.layer2, net.layer3, net.layer4) for block in layer]


def torch_sweep(npz_path: str, pth: str, epochs: float, threads: int) -> dict:
    import numpy as np
    import torch
    sys.path.insert(0, str(HERE))
    sys.path.insert(0, str(ROOT / "tests"))
    import torch_sweep as ts
    from real_torchvision import models
    torch.set_num_threads(threads)
    raw = np.load(npz_path)
    data = ts.tensors(raw, tuple(raw["mean"]), tuple(raw["std"]))
    per_epoch = math.ceil(len(data["train_x"]) / BATCH)
    steps = math.ceil(epochs * per_epoch)
    lrs = ts.cosine_with_warmup(LR, per_epoch, steps)
    if not np.allclose(lrs, raw["lrs"], rtol=1e-5, atol=1e-8):
        raise SystemExit(f"the torch schedule differs from the sweep's: {lrs[:5]} vs {raw['lrs'][:5]}")
    state = torch.load(pth, weights_only=True)
    results = []
    for seed in SEEDS:
        for depth in DEPTHS:
            net = models.resnet18(weights=None)
            net.load_state_dict(state)
            model = ts.UnitNet(torch_units(net), 512, len(CLASSES))
            r = ts.train_run(model, data, frozen_depth=depth, seed=seed, steps=steps, batch=BATCH, lrs=lrs,
                             momentum=MOMENTUM, weight_decay=WD, eval_every=per_epoch, eval_batch=EVAL_BATCH)
            results.append({"seed": seed, "frozen_depth": depth, **r})
    return {"runs": results}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--epochs", type=float, default=10.0)
    ap.add_argument("--threads", type=int, default=2, help="torch.set_num_threads")
    ap.add_argument("--crops", type=int, default=CROPS, help="photos per class (70%% of them train)")
    ap.add_argument("--keep", help="a directory to keep the inputs, workdirs and caches in")
    ap.add_argument("--torch_worker", nargs=3, metavar=("NPZ", "PTH", "OUT"), help=argparse.SUPPRESS)
    ap.add_argument("--export", nargs=3, metavar=("CONFIG", "ARG", "OUT"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.export:
        return export_data(*args.export)
    if args.torch_worker:
        npz, pth, out = args.torch_worker
        pathlib.Path(out).write_text(json.dumps(torch_sweep(npz, pth, args.epochs, args.threads)))
        return None
    sys.path.insert(0, str(HERE))
    from quickstart_vs_torch import compare
    tmp = pathlib.Path(args.keep or tempfile.mkdtemp(prefix="probe_vs_torch-"))
    tmp.mkdir(parents=True, exist_ok=True)
    photos, pth, weights = make_inputs(tmp, args.crops)
    config = tmp / "probe_config.py"
    config.write_text(CONFIG.format(image=IMAGE, epochs=args.epochs, seeds=list(SEEDS),
                                    depths=[*DEPTHS[:-1], "all"]))
    arg = f"{photos},{weights}"
    npz = tmp / "probe_splits.npz"
    subprocess.run([sys.executable, __file__, "--export", str(config), arg, str(npz)], check=True, cwd=ROOT)
    jax_cmd = [sys.executable, "launch.py", "--no_progress", "--config", f"{config}:{arg}"]
    torch_cmd = [sys.executable, __file__, "--epochs", str(args.epochs), "--threads", str(args.threads),
                 "--torch_worker", str(npz), str(pth)]
    compare(jax_cmd, torch_cmd, tmp, args.rounds, goal="torch / JAX >= 5x")
    if not args.keep:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
