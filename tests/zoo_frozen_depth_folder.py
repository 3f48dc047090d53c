"""configs/frozen_depth_folder.py with each ImageNet architecture at a small input size, as a user runs it.

    python tests/zoo_frozen_depth_folder.py [--workdir DIR] [ARCH ...]     # default: every architecture below

For each architecture: a file with random weights in its published layout (built as the parity tests build
them: keras.applications, torchvision's and timm's own models, big_transfer's and big_vision's npz layouts) is
converted with `python -m tl_research.convert`; then `launch.py --config configs/frozen_depth_folder.py:
PHOTOS,WEIGHTS` runs two runs of its sweep (`--shard 0/UNITS` with `--config.seed=0`: frozen depth 0, every
unit trained, and frozen depth all, the linear probe), one step each and the evaluation after it, on a folder of
3 classes x 16 scikit-learn digits. Prints one line per architecture and exits 1 if a run did not finish.

Not collected by pytest: every architecture compiles its own train steps (minutes on a CPU); benchmarks/README.md records
the result. Needs the test dependencies (requirements-dev.txt).
"""
from __future__ import annotations

import argparse
import csv
import os
import pathlib
import subprocess
import sys
import tempfile
import time

os.environ["KERAS_BACKEND"] = "torch"  # as in the parity tests (test_convert_keras.py)
ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

#: registry name -> (how the file is made, its extension, input size in pixels, extra convert options)
ARCHS = {
    "inception_v3": ("torchvision", "pth", 75, []),
    "inception_v3_keras": ("keras", "h5", 75, []),
    "mobilenet_v2_keras": ("keras", "h5", 32, ["--width-multiplier", "0.35"]),
    "mobilenet_v3_small": ("torchvision", "pth", 32, []),
    "mobilenet_v3_large": ("torchvision", "pth", 32, []),
    "mobilenet_v3_small_timm": ("timm", "safetensors", 32, []),
    "mobilenet_v3_large_timm": ("timm", "safetensors", 32, []),
    "mobilenet_v3_small_keras": ("keras", "h5", 32, []),
    "mobilenet_v3_large_keras": ("keras", "h5", 32, []),
    "resnetv2_50x1_bit": ("bit", "npz", 32, []),
    "resnet50_v2_keras": ("keras", "h5", 32, []),
    "densenet121": ("torchvision", "pth", 32, []),
    "densenet121_keras": ("keras", "h5", 32, []),
    "vit_s16": ("big_vision", "npz", 32, ["--image-size", "32"]),
    "vit_b16": ("big_vision", "npz", 32, ["--image-size", "32"]),
}
KERAS = {"inception_v3_keras": "InceptionV3", "mobilenet_v2_keras": "MobileNetV2",
         "mobilenet_v3_small_keras": "MobileNetV3Small", "mobilenet_v3_large_keras": "MobileNetV3Large",
         "resnet50_v2_keras": "ResNet50V2", "densenet121_keras": "DenseNet121"}
TORCH = {"inception_v3": "inception_v3", "mobilenet_v3_small": "mobilenet_v3_small",
         "mobilenet_v3_large": "mobilenet_v3_large", "densenet121": "densenet121",
         "mobilenet_v3_small_timm": "mobilenetv3_small_100", "mobilenet_v3_large_timm": "mobilenetv3_large_100"}


def write_source(arch: str, path: pathlib.Path) -> None:
    """A random-weight checkpoint of `arch` (1000 classes) in its published layout at `path`."""
    kind, _, size, _ = ARCHS[arch]
    if kind == "keras":
        import keras
        from test_convert_keras import randomize, save_legacy_h5
        kwargs = {"alpha": 0.35} if arch == "mobilenet_v2_keras" else {}
        save_legacy_h5(randomize(getattr(keras.applications, KERAS[arch])(
            weights=None, input_shape=(size, size, 3), **kwargs)), path)
    elif kind in ("torchvision", "timm"):
        import torch
        from real_torchvision import build, models
        from safetensors.torch import save_file
        if kind == "timm":
            import timm
            state = build(timm.create_model, model_name=TORCH[arch]).state_dict()
            save_file(state, path)
        else:
            kwargs = {"aux_logits": True, "init_weights": False} if arch == "inception_v3" else {}
            torch.save(build(getattr(models, TORCH[arch]), **kwargs).state_dict(), path)
    elif kind == "bit":
        from test_convert_resnet_v2 import bit_npz
        bit_npz(path, 1000)
    else:
        from test_convert_big_vision import VIT
        from test_convert_common import augreg_vit_npz
        augreg_vit_npz(path, grid=size // 16, num_classes=1000, **VIT[arch])


def photo_folder(root: pathlib.Path) -> pathlib.Path:
    import numpy as np
    from PIL import Image
    from sklearn.datasets import load_digits
    digits = load_digits()
    for c in range(3):
        (root / f"class{c}").mkdir(parents=True)
        for i, img in enumerate(digits.images[digits.target == c][:16]):
            Image.fromarray((img * 16).astype(np.uint8)).save(root / f"class{c}" / f"{i}.png")
    return root


def check(arch: str, work: pathlib.Path, photos: pathlib.Path) -> tuple[bool, str]:
    """Converts and launches `arch`; (every run done, the line to print)."""
    from tl_research import config as C, models
    from tl_research.cli.convert import main as convert
    kind, ext, size, options = ARCHS[arch]
    start = time.perf_counter()
    source = work / f"{arch}.{ext}"
    write_source(arch, source)
    if convert([str(source), "--arch", arch, "--out", str(work / arch), *options]) != 0:
        return False, f"{arch}: conversion failed"
    source.unlink()
    config = C.load_module(str(ROOT / "configs" / "frozen_depth_folder.py")).get_config(f"{photos},{work / arch}")
    units = models.abstract(config.model, 2, 3).num_units  # as the config's sweep counts them
    cmd = [sys.executable, str(ROOT / "launch.py"), f"--config=configs/frozen_depth_folder.py:{photos},{work / arch}",
           f"--workdir={work / 'runs' / arch}", f"--config.data.image_size={size}", "--config.seed=0",
           "--config.train.steps=1", "--config.train.eval_every=1", "--config.schedule.warmup_epochs=0.0",
           f"--config.data.data_dir={work / 'data'}", f"--shard=0/{units}", "--no_progress"]
    out = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, env={**os.environ, "WANDB_MODE": "disabled"})
    rows = []
    if (work / "runs" / arch / "results.csv").is_file():
        with open(work / "runs" / arch / "results.csv") as f:
            rows = list(csv.DictReader(f))
    done = out.returncode == 0 and len(rows) == 2 and all(r["status"] == "done" for r in rows)
    runs = ", ".join(f"frozen_depth={r['frozen_depth']} {r['status']} val_accuracy={r['val_accuracy']}"
                     for r in rows)
    line = f"{arch} ({kind} {ext}, {size} px, {units} units): {runs or 'no runs'}; {time.perf_counter() - start:.0f} s"
    if not done:
        line += "\n" + out.stderr[-2000:]
    return done, line


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("archs", nargs="*", metavar="ARCH", help=f"default: every one of {', '.join(ARCHS)}")
    ap.add_argument("--workdir", default=None, help="where files, runs and data go (default: a temporary one)")
    args = ap.parse_args(argv)
    unknown = [a for a in args.archs if a not in ARCHS]
    if unknown:
        ap.error(f"unknown ARCH {unknown[0]!r}; allowed: {', '.join(ARCHS)}")
    with tempfile.TemporaryDirectory() as tmp:
        work = pathlib.Path(args.workdir or tmp)
        photos = work / "photos"
        if not photos.is_dir():
            photo_folder(photos)
        failed = 0
        for arch in args.archs or list(ARCHS):
            ok, line = check(arch, work, photos)
            failed += not ok
            print(line, flush=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
