"""The training input pipeline's images/s against the PyTorch DataLoader a researcher would write, on the same
JPEG folder, the same cores, in one run (ratios only; the machine is shared).

    python benchmarks/input_pipeline.py [--n 512] [--batch 64] [--batches 24] [--sizes 500x375,2000x1500]
                                        [--workers 1,2] [--json out.json]
    python benchmarks/input_pipeline.py --smoke          # a few images, one worker count: the code paths

For each photo size, a folder of --n JPEGs (crops of scikit-image's sample photographs, two classes) is made,
then timed:

    ours    tl_research.data.pipeline.train_batches over `data.name = "folder:ROOT"` (prepared once by the
            folder builder, not timed here: benchmarks/folder_prepare.py measures that), data.cache_mb=0 so
            every batch is decoded, at 224 px with crop 0.875 (shorter side to 256, centre crop 224), uint8
            (B, 224, 224, 3) batches. With W workers: W decoding worker processes (data.workers) where the
            pipeline has them, else W threads (data.threads) in this process.
    torch   torchvision.datasets.ImageFolder on the raw folder, Resize(256) + CenterCrop(224) + PILToTensor
            (uint8), DataLoader(batch_size, shuffle=True, num_workers=W, persistent_workers=True).

Also printed: single-thread CPU-ms per image of each side's decode and resize, and, per size, the images/s of
1, 2, ... workers up to the host's cores with the scaling against 1 worker. The first batches of each loader are
left out of the timing (worker start, imports). Goals (issue: real data at real scale): ours at least 1.2x the
DataLoader's images/s on 500x375 JPEGs and 2x on phone-size photos at equal workers, and at least 80% of
linear scaling from 1 to 16 workers on a 16-core host. Figures go into benchmarks/README.md.
"""
from __future__ import annotations

import argparse
import inspect
import json
import os
import pathlib
import sys
import tempfile
import time

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--n", type=int, default=512, help="JPEGs per folder")
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--batches", type=int, default=24, help="timed batches per loader")
    p.add_argument("--skip", type=int, default=3, help="batches before the timing starts")
    p.add_argument("--sizes", default="500x375,2000x1500", help="photo sizes, WxH")
    p.add_argument("--workers", default="", help="worker counts (default: 1, 2, 4, ... up to the cores)")
    p.add_argument("--json", default="", help="write the figures here")
    p.add_argument("--smoke", action="store_true", help="tiny sizes: the code paths, not speed")
    args = p.parse_args(argv)
    if args.smoke:
        args.n, args.batch, args.batches, args.skip, args.workers = 24, 8, 2, 1, args.workers or "1"
    return args


def worker_counts(text: str) -> list[int]:
    if text:
        return [int(w) for w in text.split(",")]
    cores, out, w = len(os.sched_getaffinity(0)), [], 1
    while w < cores:
        out.append(w)
        w *= 2
    return out + [cores]


# ---------------------------------------------------------------------------------------------- ours

def our_config(root: pathlib.Path, data_dir: pathlib.Path, batch: int):
    from tl_research.data import pipeline
    cfg = pipeline.default_config()
    cfg.name, cfg.data_dir = f"folder:{root}", str(data_dir)
    cfg.image_size, cfg.channels, cfg.crop_pct, cfg.interpolation = 224, 3, 0.875, "bilinear"
    cfg.batch_size, cfg.cache_mb = batch, 0
    return cfg


def our_batches(data, batch: int, steps: int, workers: int):
    """train_batches with `workers` decoding processes where the pipeline takes them, else threads."""
    from tl_research.data import pipeline
    if "workers" in inspect.signature(pipeline.train_batches).parameters:
        return pipeline.train_batches(data, batch, 0, 0, steps, threads=1, prefetch=2 * workers + 2,
                                      workers=workers), "processes"
    return pipeline.train_batches(data, batch, 0, 0, steps, threads=workers, prefetch=2 * workers + 2), "threads"


def our_cpu_ms(data, images: int) -> float:
    """Single-thread CPU-ms per image of the pipeline's own record decoding (read + decode + resize + crop)."""
    from tl_research.data import pipeline
    split = data.train
    ids = [int(i) for i in split.indices[:images]]
    t = time.process_time()
    pipeline._decode(data, split.source.__getitems__(ids))
    return 1000 * (time.process_time() - t) / len(ids)


# ---------------------------------------------------------------------------------------------- torch

def torch_loader(root: pathlib.Path, batch: int, workers: int):
    import torch
    from gpu_throughput import import_torchvision
    tv = import_torchvision()
    t = tv.transforms
    ds = tv.datasets.ImageFolder(str(root), transform=t.Compose([t.Resize(256), t.CenterCrop(224),
                                                                     t.PILToTensor()]))
    return torch.utils.data.DataLoader(ds, batch_size=batch, shuffle=True, num_workers=workers,
                                       persistent_workers=workers > 0, drop_last=True,
                                       generator=torch.Generator().manual_seed(0))


def torch_cpu_ms(root: pathlib.Path, images: int) -> float:
    from gpu_throughput import import_torchvision
    tv = import_torchvision()
    t = tv.transforms
    ds = tv.datasets.ImageFolder(str(root), transform=t.Compose([t.Resize(256), t.CenterCrop(224),
                                                                     t.PILToTensor()]))
    start = time.process_time()
    for i in range(min(images, len(ds))):
        ds[i]
    return 1000 * (time.process_time() - start) / min(images, len(ds))


# ---------------------------------------------------------------------------------------------- timing

def images_per_s(batches, skip: int, timed: int) -> float:
    """Images/s over `timed` batches after `skip` untimed ones."""
    it = iter(batches)
    for _ in range(skip):
        next(it)
    start, images = time.perf_counter(), 0
    for _ in range(timed):
        b = next(it)
        images += len(b["image"]) if isinstance(b, dict) else len(b[0])
    return images / (time.perf_counter() - start)


def epochs_of(loader, n_batches: int):
    """A DataLoader's batches, epoch after epoch, as one stream of `n_batches`."""
    made = 0
    while made < n_batches:
        for b in loader:
            yield b
            made += 1
            if made == n_batches:
                return


def measure_size(args, size: str, tmp: pathlib.Path) -> dict:
    from folder_prepare import make_folder
    from tl_research.data import pipeline
    w, h = (int(v) for v in size.split("x"))
    root = tmp / f"photos_{size}"
    make_folder(root, args.n, (w, h))
    data = pipeline.load(our_config(root, tmp / f"tfds_{size}", args.batch))  # prepares the folder once
    out = {"size": size, "images": args.n, "ours_cpu_ms": round(our_cpu_ms(data, 16), 2),
           "torch_cpu_ms": None, "rows": []}
    try:
        out["torch_cpu_ms"] = round(torch_cpu_ms(root, 16), 2)
    except ImportError as e:
        out["torch_skipped"] = f"{type(e).__name__}: {e}"
    steps = args.skip + args.batches
    for workers in worker_counts(args.workers):
        batches, how = our_batches(data, args.batch, steps, workers)
        row = {"workers": workers, "ours": round(images_per_s(batches, args.skip, args.batches), 1), "how": how}
        del batches
        if "torch_skipped" not in out:
            loader = torch_loader(root, args.batch, workers)
            row["torch"] = round(images_per_s(epochs_of(loader, steps), args.skip, args.batches), 1)
            row["ratio"] = round(row["ours"] / row["torch"], 3)
            del loader
        out["rows"].append(row)
    return out


def report(results: list[dict]) -> None:
    for r in results:
        print(f"\n{r['size']} JPEGs ({r['images']} images): single-thread CPU-ms per image: ours "
              f"{r['ours_cpu_ms']}, DataLoader {r['torch_cpu_ms']}")
        print(f"{'workers':>7}  {'ours img/s':>10}  {'(as)':>9}  {'DataLoader':>10}  {'ratio':>6}  {'scaling':>7}")
        one = r["rows"][0]["ours"] / r["rows"][0]["workers"]
        for row in r["rows"]:
            scaling = row["ours"] / (one * row["workers"])
            print(f"{row['workers']:>7}  {row['ours']:>10.1f}  {row['how']:>9}  {row.get('torch', float('nan')):>10.1f}"
                  f"  {row.get('ratio', float('nan')):>6.2f}  {scaling:>7.2f}")


def main(argv=None) -> list[dict]:
    args = parse_args(argv)
    import jax
    import tensorflow_datasets as tfds
    from absl import logging as absl_logging
    tfds.disable_progress_bar()
    absl_logging.set_verbosity(absl_logging.ERROR)
    print(f"input_pipeline: {os.cpu_count()} cpus ({len(os.sched_getaffinity(0))} usable), jax {jax.__version__}")
    with tempfile.TemporaryDirectory() as tmp:
        results = [measure_size(args, size, pathlib.Path(tmp)) for size in args.sizes.split(",")]
    report(results)
    if args.json:
        pathlib.Path(args.json).write_text(json.dumps(results, indent=1))
    return results


if __name__ == "__main__":
    main()
