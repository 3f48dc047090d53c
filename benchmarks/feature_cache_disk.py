"""The frozen-prefix feature cache's disk use on a ResNet-50 frozen-depth sweep over a photo folder, with the
size cap large and with a cap smaller than the sweep needs, through the real launcher.

    python benchmarks/feature_cache_disk.py [--n 1024] [--image_size 224] [--depths 2,4,6,8] [--small_gb 2]
                                            [--large_gb 0] [--eval_images 16] [--dir D] [--keep] [--json out.json]

A folder of --n JPEGs of 500x375 in two classes (benchmarks/folder_prepare.py's make_folder) is swept over
frozen depth (--depths) with `python launch.py --config benchmarks/feature_cache_disk.py:PHOTOS,DEPTHS`, once
per cap, each pass into a fresh workdir (its own `feature_cache/` folder), the prepared folder shared. The
launcher runs as `python -c "...; runpy.run_path('launch.py')"` only to show the cache's INFO lines (which
entries were computed, read or evicted; a user sees its WARNING lines only). This file is also that config:
ResNet-50 in torchvision's layout with random weights (`init=scratch`: nothing is downloaded), every unit
below the frozen depth fixed as in a probe sweep, 2 training steps of batch 32, evaluation on the first
--eval_images validation and test images (the cache fills the whole training split's activations whatever
the steps; only the on-disk entries matter here). After each pass: the bytes allocated under
`WORKDIR/feature_cache/` and its entries, the runs whose results.csv `feature_path` is cached (`cached@k`) or
the images (`input`), the line a run prints when its activations do not fit, and the evictions.

Only an entry (one split at one depth) above 1 GiB goes to disk (feature_cache.DISK_ENTRY_MB); smaller ones
stay in the sweep process's memory and never count against the cap. ResNet-50's depth-k activations per image
at 224 px, float32: 3.2 MB (k = 2..4, 56x56x256), 1.6 MB (k = 5..8), 0.8 MB (k = 9..14), 0.4 MB (k = 15..17),
so with the default 1024 photos (716 in the training split) the training entries of depths 2 to 8 go to disk
(2.3 GB at depths 2 and 4, 1.15 GB at 6 and 8; 6.9 GB for the sweep) and the cap of 2 GB holds one of the
1.15 GB entries: depths 2 and 4 take the image path, 6 is written, 8 evicts it. `--disk_entry_mb M` runs the
launcher with DISK_ENTRY_MB set to M in its process (a check of the code path at tiny sizes, not what a user
gets). --large_gb 0 is the automatic cap (the smaller of 50 GB and 25% of the free space).
The default took 14 min 50 s on a shared 2-core CPU (another benchmark running; figures in benchmarks/README.md);
`--depths 6,8` about halves it.
"""
from __future__ import annotations

import argparse
import csv
import json
import os
import pathlib
import re
import shutil
import subprocess
import sys
import tempfile
import time

HERE = pathlib.Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(HERE))

STEPS, BATCH, EVAL_IMAGES = 2, 32, 16
# launch.py as `python launch.py` runs it, with the feature cache's INFO lines shown (which entries were computed,
# read or evicted; a user sees its WARNING lines only) and, for checks at tiny sizes, DISK_ENTRY_MB set ("-": kept)
_LAUNCH = ("import logging, runpy, sys; "
           "logging.getLogger('tl_research.run.feature_cache').setLevel(logging.INFO); mb = sys.argv.pop(1); "
           "from tl_research.run import feature_cache; "
           "feature_cache.DISK_ENTRY_MB = feature_cache.DISK_ENTRY_MB if mb == '-' else float(mb); "
           "sys.argv[0] = 'launch.py'; runpy.run_path('launch.py', run_name='__main__')")


# ---------------------------------------------------------------------------------------------- the config

def _parse(arg: str) -> tuple[str, list[int]]:
    """'PHOTOS,D1,D2,...' -> (PHOTOS, [D1, D2, ...])."""
    parts = (arg or "").split(",")
    depths = []
    while parts and parts[-1].strip().isdigit():
        depths.insert(0, int(parts.pop()))
    return ",".join(parts), depths or [2, 4, 6, 8]


def get_config(arg=None):
    """The sweep's base run (launch.py reads this file as a config file)."""
    from tl_research.config import base_config
    photos, _ = _parse(arg)
    c = base_config()
    c.name = "feature_cache_disk"
    c.data.name = f"folder:{photos}"
    c.data.image_size, c.data.channels = 224, 3
    c.data.val_split, c.data.test_split = f"val[:{EVAL_IMAGES}]", f"test[:{EVAL_IMAGES}]"
    c.data.batch_size, c.data.eval_batch_size = BATCH, EVAL_IMAGES
    c.model.name = "resnet50"
    c.init = "scratch"
    c.optimizer.name = "sgd"
    c.schedule.lr = 0.01
    c.train.steps = STEPS
    c.train.log_every = 1
    c.wandb.mode = "disabled"
    c.report.x = "frozen_depth"
    c.report.series = ()
    return c


def get_sweep(arg=None):
    from tl_research.config import axis
    return axis("frozen_depth", _parse(arg)[1])


# ---------------------------------------------------------------------------------------------- the benchmark

def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--n", type=int, default=1024, help="JPEGs of 500x375 in the folder")
    p.add_argument("--image_size", type=int, default=224)
    p.add_argument("--eval_images", type=int, default=EVAL_IMAGES, help="validation and test images evaluated")
    p.add_argument("--depths", default="2,4,6,8", help="frozen depths swept (ResNet-50 has 17 units)")
    p.add_argument("--large_gb", type=float, default=0.0, help="the large cap (0: automatic)")
    p.add_argument("--small_gb", type=float, default=2.0, help="the cap smaller than the sweep needs")
    p.add_argument("--disk_entry_mb", type=float, default=None,
                   help="set feature_cache.DISK_ENTRY_MB in the launcher's process (tiny checks only)")
    p.add_argument("--dir", default="", help="where the folder and the workdirs go (default: a temp dir)")
    p.add_argument("--keep", action="store_true", help="leave --dir's contents in place at the end")
    p.add_argument("--json", default="", help="write the figures here too")
    return p.parse_args(argv)


def launch(args, photos: pathlib.Path, workdir: pathlib.Path, data_dir: pathlib.Path, cap: float) -> dict:
    """One pass of the sweep through launch.py; its log kept in workdir.log."""
    spec = f"{pathlib.Path(__file__).resolve()}:{photos},{args.depths}"
    flags = [f"--config={spec}", f"--workdir={workdir}", "--no_progress",
             f"--config.train.feature_cache_max_gb={cap}", f"--config.data.data_dir={data_dir}",
             f"--config.data.image_size={args.image_size}", f"--config.data.val_split=val[:{args.eval_images}]",
             f"--config.data.test_split=test[:{args.eval_images}]"]
    mb = "-" if args.disk_entry_mb is None else str(args.disk_entry_mb)
    cmd = [sys.executable, "-c", _LAUNCH, mb, *flags]
    t = time.perf_counter()
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
    seconds = time.perf_counter() - t
    log = proc.stdout + proc.stderr
    pathlib.Path(f"{workdir}.log").write_text(log)
    if proc.returncode:
        sys.stderr.write(log[-4000:])
        raise SystemExit(f"feature_cache_disk: launch.py failed (exit {proc.returncode}); log: {workdir}.log")
    return {"seconds": seconds, **inspect(workdir, log)}


def inspect(workdir: pathlib.Path, log: str) -> dict:
    """What a pass left: the cache folder's bytes and entries, results.csv's paths, the cache's log lines."""
    cache = workdir / "feature_cache"
    files = [p for p in cache.rglob("*") if p.is_file()] if cache.is_dir() else []
    with open(workdir / "results.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    paths = {r["frozen_depth"]: r.get("feature_path", "") for r in rows}
    lines = [line.strip() for line in log.splitlines() if "feature cache" in line]
    return {"allocated_bytes": sum(p.stat().st_blocks * 512 for p in files),
            "apparent_bytes": sum(p.stat().st_size for p in files),
            "entries": {p.stem: p.stat().st_size for p in files if p.suffix == ".bin"},
            "paths": paths,
            "cached_runs": sum(1 for v in paths.values() if v.startswith("cached")),
            "input_runs": sum(1 for v in paths.values() if not v.startswith("cached")),
            "no_room_lines": sorted({line for line in lines if "training from the images" in line}),
            "evictions": sum(1 for line in lines if "evicted" in line),
            "cache_lines": [_message(line) for line in lines],
            "reasons": {r["frozen_depth"]: _reason(workdir / r["run_id"]) for r in rows}}


def _reason(run_dir: pathlib.Path) -> str:
    """The run's `feature_path_reason` (metrics.jsonl's start row), or ''."""
    try:
        for line in (run_dir / "metrics.jsonl").read_text().splitlines():
            if '"feature_path_reason"' in line:
                return json.loads(line).get("feature_path_reason", "")
    except (OSError, ValueError):
        pass
    return ""


def _message(line: str) -> str:
    """A log line without its logger's prefix (time, level, file)."""
    i = line.find("feature cache:")
    return line[i:] if i >= 0 else line


def report(args, passes: dict) -> None:
    print(f"\nfeature_cache_disk: ResNet-50 (random weights), {args.n} photos of 500x375 at {args.image_size} px, "
          f"frozen depths {args.depths}, {STEPS} steps of batch {BATCH} each"
          + (f"; DISK_ENTRY_MB={args.disk_entry_mb:g} (a code-path check)" if args.disk_entry_mb is not None else ""))
    print(f"{'cap':<22} {'on disk GB':>10} {'entries':>7} {'cached runs':>11} {'image runs':>10} "
          f"{'evictions':>9} {'launch s':>8}")
    for name, p in passes.items():
        print(f"{name:<22} {p['allocated_bytes'] / 1e9:10.3f} {len(p['entries']):7d} {p['cached_runs']:11d} "
              f"{p['input_runs']:10d} {p['evictions']:9d} {p['seconds']:8.0f}")
    for name, p in passes.items():
        print(f"{name}: feature_path per frozen depth: "
              + ", ".join(f"{d}: {v}" for d, v in sorted(p["paths"].items(), key=lambda kv: int(kv[0]))))
        reasons = {d: r for d, r in p["reasons"].items() if r}
        if reasons:
            print(f"{name}: feature_path_reason (metrics.jsonl): "
                  + "; ".join(f"{d}: {r}" for d, r in reasons.items()))
        print(f"{name}: entries on disk (GB): "
              + (", ".join(f"{b / 1e9:.3f}" for b in p["entries"].values()) or "none"))
        for line in p["no_room_lines"]:
            print(f"{name}: a run printed: {line}")
        for line in p["cache_lines"]:
            if "evicted" in line:
                print(f"{name}: {line}")


def main(argv=None) -> dict:
    args = parse_args(argv)
    from folder_prepare import make_folder
    base = pathlib.Path(args.dir) if args.dir else pathlib.Path(tempfile.mkdtemp(prefix="feature_cache_disk_"))
    base.mkdir(parents=True, exist_ok=True)
    photos, data_dir = base / "photos", base / "tfds"
    made = []
    try:
        if not (photos.is_dir() and sum(1 for _ in photos.rglob("*.jpg")) == args.n):
            shutil.rmtree(photos, ignore_errors=True)
            make_folder(photos, args.n, (500, 375))
        made.append(photos)
        passes = {}
        for name, cap in ((f"large ({args.large_gb:g} GB{': automatic' if not args.large_gb else ''})", args.large_gb),
                          (f"small ({args.small_gb:g} GB)", args.small_gb)):
            workdir = base / re.sub(r"[^a-z0-9]+", "_", name.split(" (")[0] + f"_{cap:g}gb")
            shutil.rmtree(workdir, ignore_errors=True)
            made += [workdir, pathlib.Path(f"{workdir}.log")]
            passes[name] = launch(args, photos, workdir, data_dir, cap)
            if not args.keep:
                shutil.rmtree(workdir / "feature_cache", ignore_errors=True)  # the next pass's free space
        made.append(data_dir)
        report(args, passes)
        if args.json:
            pathlib.Path(args.json).write_text(json.dumps(passes, indent=1))
        return passes
    finally:
        if not args.keep:
            for p in made + [data_dir]:
                shutil.rmtree(p, ignore_errors=True) if p.is_dir() else p.unlink(missing_ok=True)
            if not args.dir:
                shutil.rmtree(base, ignore_errors=True)


if __name__ == "__main__":
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    main()
