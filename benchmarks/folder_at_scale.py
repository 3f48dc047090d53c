"""A user photo folder at real scale (Food-101 has 75,750 photos): preparing it, streaming one training epoch
from it, and a second launch over the unchanged folder, each through the code a launch runs, with wall time,
images/s and peak RSS.

    python benchmarks/folder_at_scale.py [--n 75000] [--size 500x375] [--workers 0 (= the cores)]
                                         [--batch 64] [--image_size 224] [--dir D] [--keep] [--json out.json]

Steps, each timed apart (the folder's making is not a figure):
    make        --n JPEGs of --size in two classes (benchmarks/folder_prepare.py's make_folder: crops of
                scikit-image's sample photographs), under --dir/photos (a temporary folder by default; a
                --dir whose photos/ already holds --n images is reused as it is)
    launch 1    in a child process: `pipeline.load` of `data.name = "folder:PATH"` (what trainer.setup calls
                for a run): the folder is prepared (folder.builder: the listing, the manifest, the images
                decoded once in a pool of processes, one per core, and written as array_record), then the
                splits' labels are scanned. Preparation and label scan are timed apart.
    launch 2    in a second child process: the same `pipeline.load` over the unchanged folder (the manifest:
                one stat per directory, the prepared copy found), then one epoch of training batches from
                `pipeline.train_batches`, called as trainer.Training._train_batches calls it (the run's
                sampler, data.threads, data.prefetch, data.workers = --workers), at --image_size px (crop
                0.875: shorter side to 256, centre 224, bilinear: ResNet-50's torchvision preprocessing),
                batch --batch, data.cache_mb = 0 (every batch decoded; at 75,000 images the default 512 MB
                holds no split either).
Peak RSS per child process (resource.getrusage): the process itself, and the largest of its finished child
processes (the preparation pool's workers, the pipeline's worker processes). Data goes under --dir and is
deleted at the end unless --keep (the folder itself then stays too: a rerun with the same --dir reuses it).
Without TensorFlow, a folder whose training split holds more than about 1 GB of encoded images fails to
prepare (TFDS's shuffle spills to disk through tf.io.gfile): with 500x375 JPEGs, above about 33,000 photos
(benchmarks/README.md); the failure is reported with its time and peak RSS.
"""
from __future__ import annotations

import argparse
import json
import os
import pathlib
import resource
import shutil
import subprocess
import sys
import tempfile
import time

HERE = pathlib.Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
sys.path.insert(0, str(HERE))


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--n", type=int, default=75000, help="JPEGs in the folder")
    p.add_argument("--size", default="500x375", help="the JPEGs' width x height")
    p.add_argument("--workers", type=int, default=0, help="data.workers of the epoch; 0 = the cores")
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--image_size", type=int, default=224)
    p.add_argument("--dir", default="", help="where the folder and the prepared data go (default: a temp dir)")
    p.add_argument("--keep", action="store_true", help="leave --dir's contents in place at the end")
    p.add_argument("--json", default="", help="write the figures here too")
    p.add_argument("--child", nargs=2, metavar=("STEP", "ARGS_JSON"), help=argparse.SUPPRESS)
    return p.parse_args(argv)


def data_config(root: pathlib.Path, data_dir: pathlib.Path, args: dict):
    """config.data as a launch over the folder would hold it (pipeline.default_config, as base_config has)."""
    from tl_research.data import pipeline
    cfg = pipeline.default_config()
    cfg.name, cfg.data_dir = f"folder:{root}", str(data_dir)
    cfg.image_size, cfg.channels, cfg.crop_pct, cfg.interpolation = args["image_size"], 3, 0.875, "bilinear"
    cfg.batch_size, cfg.cache_mb, cfg.workers = args["batch"], 0, args["workers"]
    return cfg


def peak_rss() -> dict:
    """Peak RSS in MB (Linux reports KiB) of this process and of the largest finished child process."""
    me, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return {"rss_mb": me.ru_maxrss / 1024, "child_rss_mb": kids.ru_maxrss / 1024}


def timed_load(cfg) -> tuple[object, dict]:
    """pipeline.load as trainer.setup calls it, with the builder (preparation, or finding the prepared copy)
    timed apart from the rest (the label scans of the three splits)."""
    from tl_research.data import pipeline
    t0 = time.perf_counter()
    pipeline.builder(cfg)  # what load calls first; a second call finds the prepared copy through the manifest
    t1 = time.perf_counter()
    data = pipeline.load(cfg, seed=0)
    t2 = time.perf_counter()
    builder_again = _builder_seconds(cfg)  # load's own call to the builder, now on a prepared folder
    return data, {"builder_s": t1 - t0, "load_s": t2 - t1 - builder_again, "manifest_s": builder_again,
                  "train": len(data.train), "val": len(data.val), "test": len(data.test)}


def _builder_seconds(cfg) -> float:
    from tl_research.data import pipeline
    t = time.perf_counter()
    pipeline.builder(cfg)
    return time.perf_counter() - t


def child_launch1(root: pathlib.Path, data_dir: pathlib.Path, args: dict) -> dict:
    """The first launch: preparation and label scans."""
    _, out = timed_load(data_config(root, data_dir, args))
    return out


def child_launch2(root: pathlib.Path, data_dir: pathlib.Path, args: dict) -> dict:
    """The second launch over the unchanged folder, then one epoch of training batches."""
    from tl_research.data import pipeline
    cfg = data_config(root, data_dir, args)
    data, out = timed_load(cfg)
    steps = len(data.train) // cfg.batch_size  # the whole batches of one epoch
    start = time.perf_counter()
    batches = pipeline.train_batches(data, cfg.batch_size, 0, 0, steps, cfg.threads, cfg.prefetch,
                                     workers=cfg.workers, sampler=pipeline.train_sampler(cfg, data, 0))
    images, first = 0, None
    for batch in batches:
        assert batch["image"].shape == (cfg.batch_size, args["image_size"], args["image_size"], 3)
        images += len(batch["image"])
        if first is None:
            first = time.perf_counter()
    end = time.perf_counter()
    del batches  # the worker processes end here, so their peak RSS counts among the children's
    out.update({"epoch_s": end - start, "epoch_images": images, "first_batch_s": first - start,
                "steady_images_s": (images - cfg.batch_size) / max(end - first, 1e-9)})
    return out


def run_child(step: str, root: pathlib.Path, data_dir: pathlib.Path, args: argparse.Namespace) -> dict:
    payload = json.dumps({"root": str(root), "data_dir": str(data_dir), "image_size": args.image_size,
                          "batch": args.batch, "workers": args.workers})
    t = time.perf_counter()
    proc = subprocess.run([sys.executable, __file__, "--child", step, payload], capture_output=True, text=True)
    lines = proc.stdout.strip().splitlines()
    if proc.returncode or not lines:
        sys.stderr.write(proc.stderr[-3000:])
        raise SystemExit(f"folder_at_scale: the {step} child process died (exit {proc.returncode})")
    out = json.loads(lines[-1])
    out["process_s"] = time.perf_counter() - t  # with Python's and the libraries' start-up
    if "error" in out:
        sys.stderr.write(proc.stderr[-3000:])
    return out


def make(root: pathlib.Path, n: int, size: tuple[int, int]) -> tuple[float, bool]:
    """(seconds, reused): the folder made with folder_prepare.make_folder, or reused when it holds n images."""
    from folder_prepare import make_folder
    if root.is_dir() and sum(1 for _ in root.rglob("*.jpg")) == n:
        return 0.0, True
    if root.exists():
        shutil.rmtree(root)
    t = time.perf_counter()
    make_folder(root, n, size)
    return time.perf_counter() - t, False


def du(path: pathlib.Path) -> int:
    """Bytes allocated on disk under `path`."""
    return sum(p.lstat().st_blocks * 512 for p in path.rglob("*") if p.is_file())


def quiet() -> None:
    """The logging a launch shows (cli.command_line.quiet_logging: no TFDS INFO lines and progress bars, no
    absl WARNING that prints the whole file list of a custom folder config)."""
    import logging
    import tensorflow_datasets as tfds
    tfds.disable_progress_bar()
    for noisy in ("absl", "tensorflow_datasets"):
        logging.getLogger(noisy).setLevel(logging.ERROR)


def report(args, fig: dict) -> None:
    one = fig["launch1"]
    if "error" in one:
        print(f"\nfolder_at_scale: {args.n} JPEGs of {args.size} ({fig['folder_bytes'] / 1e9:.2f} GB): launch 1 "
              f"failed after {one['failed_after_s']:.1f} s, peak RSS {one['rss_mb']:.0f} MB (largest child "
              f"{one['child_rss_mb']:.0f} MB): {one['error']}")
        return
    two = fig["launch2"]
    n_prepared = one["train"] + one["val"] + one["test"]
    print(f"\nfolder_at_scale: {args.n} JPEGs of {args.size} in 2 classes, {fig['cores']} cores usable, "
          f"data.workers={fig['workers']}, batch {args.batch}, {args.image_size} px")
    print(f"folder {fig['folder_bytes'] / 1e9:.2f} GB on disk, prepared copy {fig['prepared_bytes'] / 1e9:.2f} GB; "
          f"splits {one['train']} / {one['val']} / {one['test']}; making the folder took {fig['make_s']:.0f} s"
          + (" (reused)" if fig["made_reused"] else ""))
    print(f"{'step':<34} {'seconds':>9} {'images/s':>9} {'peak RSS MB':>12} {'child RSS MB':>13}")
    rows = [("launch 1: prepare (folder.builder)", one["builder_s"], n_prepared / one["builder_s"], one),
            ("launch 1: label scans", one["load_s"], None, None),
            ("launch 2: find prepared (manifest)", two["builder_s"], None, None),
            ("launch 2: label scans", two["load_s"], None, None),
            ("launch 2: one epoch, train batches", two["epoch_s"], two["epoch_images"] / two["epoch_s"], two),
            ("  (after the first batch)", two["epoch_s"] - two["first_batch_s"], two["steady_images_s"], None)]
    for name, s, ips, rss in rows:
        print(f"{name:<34} {s:9.2f} {ips if ips is not None else float('nan'):9.1f} "
              f"{rss['rss_mb'] if rss else float('nan'):12.0f} {rss['child_rss_mb'] if rss else float('nan'):13.0f}")
    print(f"child processes in all: launch 1 {one['process_s']:.1f} s, launch 2 {two['process_s']:.1f} s "
          "(Python and library start-up included)")


def main(argv=None) -> dict:
    args = parse_args(argv)
    if args.child:
        step, payload = args.child
        a = json.loads(payload)
        fn = {"launch1": child_launch1, "launch2": child_launch2}[step]
        quiet()
        t = time.perf_counter()
        try:
            out = fn(pathlib.Path(a["root"]), pathlib.Path(a["data_dir"]), a)
        except Exception as e:  # noqa: BLE001 - reported with the time and memory it took
            import traceback
            traceback.print_exc()
            out = {"error": f"{type(e).__name__}: {e}", "failed_after_s": time.perf_counter() - t}
        print(json.dumps({**out, **peak_rss()}))
        return out
    from tl_research.data import folder
    args.workers = args.workers or folder.default_workers()
    base = pathlib.Path(args.dir) if args.dir else pathlib.Path(tempfile.mkdtemp(prefix="folder_at_scale_"))
    base.mkdir(parents=True, exist_ok=True)
    root, data_dir = base / "photos", base / "tfds"
    try:
        if data_dir.exists():
            shutil.rmtree(data_dir)  # launch 1 prepares from nothing
        w, h = (int(v) for v in args.size.split("x"))
        make_s, reused = make(root, args.n, (w, h))
        fig = {"cores": folder.default_workers(), "workers": args.workers, "make_s": make_s, "made_reused": reused}
        fig["launch1"] = run_child("launch1", root, data_dir, args)
        if "error" not in fig["launch1"]:
            fig["launch2"] = run_child("launch2", root, data_dir, args)
        fig["folder_bytes"], fig["prepared_bytes"] = du(root), du(data_dir)
        report(args, fig)
        if args.json:
            pathlib.Path(args.json).write_text(json.dumps(fig, indent=1))
        return fig
    finally:
        if not args.keep:
            shutil.rmtree(data_dir, ignore_errors=True)
            shutil.rmtree(root, ignore_errors=True)
            if not args.dir:
                shutil.rmtree(base, ignore_errors=True)


if __name__ == "__main__":
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    main()
