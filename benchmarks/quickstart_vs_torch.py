"""Wall time of the quickstart sweep (`python launch.py`, configs/quickstart.py) against a plain PyTorch CPU
script doing the same work, interleaved, as ratios JAX / torch from an empty and from a warm compilation cache.

The same work: the source (resnet_cifar stage_sizes (1, 1, 1), width 16, 5 epochs on digits 0-4, from
scratch), then 24 runs on digits 5-9 (seeds {0, 1} x schedule {constant, cyclical triangular} x (frozen depth
0..4 from the source, and scratch at depth 0)), 3 epochs each; SGD momentum 0.9, decoupled weight decay 5e-4,
lr 0.05 (triangular: lr / 4 to lr, half cycle 1.5 epochs), batch 64, validation every epoch, test accuracy at
the best validation epoch; the same examples in the same order (benchmarks/torch_sweep.py has the torch side).

Each round runs, in turn: the JAX sweep cold (TL_RESEARCH_CACHE a fresh directory: no compiled step on disk),
the JAX sweep warm (the cache the first round's cold sweep filled), and the torch script (2 threads,
OMP_WAIT_POLICY=PASSIVE), each into a fresh workdir. Medians over rounds; each side's mean test accuracy shows
the work is the same. The torch script reads the decoded splits from an .npz written once before the rounds
(untimed), so it pays no PNG decoding; the JAX side reads the prepared TFDS dataset as `launch.py` does.

    python benchmarks/quickstart_vs_torch.py [--rounds 3] [--epochs 3] [--source_epochs 5] [--seeds 0,1]
        [--launch_args "--launcher=local --jobs=2 --wait"] [--keep DIR]

Timings are of this machine as it is (2 shared CPU cores here): run it under the shared CPU lock.
"""
from __future__ import annotations

import argparse
import csv
import json
import math
import os
import pathlib
import shlex
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = pathlib.Path(__file__).resolve().parents[1]
HERE = pathlib.Path(__file__).resolve().parent
STAGES, WIDTH, BATCH, LR, MOMENTUM, WD, STEP_EPOCHS, UNITS = (1, 1, 1), 16, 64, 0.05, 0.9, 5e-4, 1.5, 4


def export_data(path: pathlib.Path) -> None:
    """The quickstart's decoded source and target splits (uint8 NHWC, relabelled), as the sweep reads them."""
    sys.path.insert(0, str(ROOT))
    import numpy as np
    from configs import quickstart
    from tl_research.data import pipeline
    c = quickstart.get_config()
    out = {}
    for prefix, data_cfg in (("target", c.data), ("source", c.source.data)):
        data = pipeline.load(data_cfg)
        for name in ("train", "val", "test"):
            split = getattr(data, name)
            images = split.images
            if images is None:
                images = np.stack([data.load_image(r) for r in split.source.__getitems__(
                    [int(i) for i in split.indices])])
            out[f"{prefix}_{name}_x"], out[f"{prefix}_{name}_y"] = images, split.labels
    np.savez(path, **out)


def torch_sweep(npz_path: str, epochs: float, source_epochs: float, seeds: list[int], threads: int) -> dict:
    """The torch script: source, then the 24 runs; returns the runs' test accuracies."""
    import numpy as np
    import torch
    sys.path.insert(0, str(HERE))
    import torch_sweep as ts
    torch.set_num_threads(threads)
    raw = np.load(npz_path)
    sets = {p: ts.tensors({f"{s}_{k}": raw[f"{p}_{s}_{k}"] for s in ("train", "val", "test") for k in "xy"},
                          (0.5,), (0.5,)) for p in ("source", "target")}
    common = dict(batch=BATCH, momentum=MOMENTUM, weight_decay=WD, eval_batch=250)

    def steps_of(data, ep):
        per_epoch = math.ceil(len(data["train_x"]) / BATCH)
        return per_epoch, math.ceil(ep * per_epoch)

    per_epoch, steps = steps_of(sets["source"], source_epochs)
    source = ts.resnet_cifar(STAGES, WIDTH, 1, 5, seed=0)
    ts.train_run(source, sets["source"], frozen_depth=0, seed=0, steps=steps, lrs=np.full(steps, LR),
                 eval_every=per_epoch, **common)
    per_epoch, steps = steps_of(sets["target"], epochs)
    schedules = {"constant": np.full(steps, LR),
                 "cyclical": ts.triangular(LR / 4, LR, int(round(STEP_EPOCHS * per_epoch)), steps)}
    results = []
    for seed in seeds:
        for name, lrs in schedules.items():
            for init, depth in [("source", d) for d in range(UNITS + 1)] + [("scratch", 0)]:
                net = (ts.with_new_head(source, 5) if init == "source"
                       else ts.resnet_cifar(STAGES, WIDTH, 1, 5, seed=seed))
                r = ts.train_run(net, sets["target"], frozen_depth=depth, seed=seed, steps=steps, lrs=lrs,
                                 eval_every=per_epoch, **common)
                results.append({"seed": seed, "schedule": name, "init": init, "frozen_depth": depth, **r})
    return {"runs": results}


def timed(cmd: list[str], env: dict) -> tuple[float, str]:
    t0 = time.perf_counter()
    out = subprocess.run(cmd, env=env, capture_output=True, text=True, cwd=ROOT)
    wall = time.perf_counter() - t0
    if out.returncode:
        sys.exit(f"{' '.join(cmd[:4])} ... failed ({out.returncode}):\n{out.stdout[-2000:]}\n{out.stderr[-3000:]}")
    return wall, out.stdout


def jax_mean_accuracy(workdir: pathlib.Path) -> tuple[float, int]:
    with open(workdir / "results.csv") as f:
        rows = [r for r in csv.DictReader(f) if r["status"] == "done"]
    return statistics.mean(float(r["test_accuracy"]) for r in rows), len(rows)


def compare(jax_cmd: list[str], torch_cmd: list[str], tmp: pathlib.Path, rounds: int, goal: str) -> dict:
    """Interleaved rounds of JAX cold, JAX warm and torch (torch_cmd + [OUT.json], which writes {"runs": [...]}
    with each run's test_accuracy); prints the medians, the ratios and each side's mean test accuracy."""
    env = {k: v for k, v in os.environ.items() if k not in ("XLA_FLAGS", "TL_RESEARCH_CACHE")}
    warm_cache = tmp / "cache-round0"
    times = {"cold": [], "warm": [], "torch": []}
    acc = {}
    for r in range(rounds):
        cold_cache = tmp / f"cache-round{r}"
        shutil.rmtree(cold_cache, ignore_errors=True)
        for kind, cache in (("cold", cold_cache), ("warm", warm_cache)):
            workdir = tmp / f"{kind}-{r}"
            shutil.rmtree(workdir, ignore_errors=True)
            wall, _ = timed([*jax_cmd, "--workdir", str(workdir)], {**env, "TL_RESEARCH_CACHE": str(cache)})
            times[kind].append(wall)
            acc["jax"] = jax_mean_accuracy(workdir)
            print(f"round {r + 1}: JAX {kind} {wall:.1f} s", flush=True)
        out = tmp / f"torch-{r}.json"
        wall, _ = timed([*torch_cmd, str(out)], {**env, "OMP_WAIT_POLICY": "PASSIVE"})
        times["torch"].append(wall)
        runs = json.loads(out.read_text())["runs"]
        acc["torch"] = (statistics.mean(x["test_accuracy"] for x in runs), len(runs))
        print(f"round {r + 1}: torch {wall:.1f} s", flush=True)
    med = {k: statistics.median(v) for k, v in times.items()}
    print(f"\n{rounds} round(s), medians: JAX cold {med['cold']:.1f} s, JAX warm {med['warm']:.1f} s, "
          f"torch {med['torch']:.1f} s (all: " + "; ".join(f"{k} " + ", ".join(f"{t:.1f}" for t in v)
                                                  for k, v in times.items()) + ")")
    print(f"ratio JAX / torch: cold {med['cold'] / med['torch']:.2f}, warm {med['warm'] / med['torch']:.2f}; "
          f"torch / JAX: cold {med['torch'] / med['cold']:.2f}x, warm {med['torch'] / med['warm']:.2f}x "
          f"(goal: {goal})")
    print(f"mean test accuracy: JAX {acc['jax'][0]:.4f} over {acc['jax'][1]} runs, torch {acc['torch'][0]:.4f} "
          f"over {acc['torch'][1]} runs")
    return med


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--epochs", type=float, default=3.0)
    ap.add_argument("--source_epochs", type=float, default=5.0)
    ap.add_argument("--seeds", default="0,1")
    ap.add_argument("--threads", type=int, default=2, help="torch.set_num_threads")
    ap.add_argument("--launch_args", default="", help="more launch.py flags for the JAX side")
    ap.add_argument("--keep", help="a directory to keep workdirs and caches in (default: a temporary one)")
    ap.add_argument("--torch_worker", nargs=2, metavar=("NPZ", "OUT"), help=argparse.SUPPRESS)
    ap.add_argument("--export", help=argparse.SUPPRESS)
    args = ap.parse_args()
    seeds = [int(s) for s in args.seeds.split(",")]
    if args.export:
        return export_data(pathlib.Path(args.export))
    if args.torch_worker:
        res = torch_sweep(args.torch_worker[0], args.epochs, args.source_epochs, seeds, args.threads)
        pathlib.Path(args.torch_worker[1]).write_text(json.dumps(res))
        return None

    tmp = pathlib.Path(args.keep or tempfile.mkdtemp(prefix="quickstart_vs_torch-"))
    tmp.mkdir(parents=True, exist_ok=True)
    npz = tmp / "quickstart_splits.npz"
    subprocess.run([sys.executable, __file__, "--export", str(npz)], check=True, cwd=ROOT)
    overrides = [f"--config.train.epochs={args.epochs}", f"--config.source.train.epochs={args.source_epochs}"]
    if seeds != [0, 1]:
        overrides.append(f"--config.seed={seeds[0]}" if len(seeds) == 1 else f"--config.seed={tuple(seeds)}")
    jax_cmd = [sys.executable, "launch.py", "--no_progress", *overrides, *shlex.split(args.launch_args)]
    torch_cmd = [sys.executable, __file__, "--epochs", str(args.epochs), "--source_epochs",
                 str(args.source_epochs), "--seeds", args.seeds, "--threads", str(args.threads)]
    compare(jax_cmd, [*torch_cmd, "--torch_worker", str(npz)], tmp, args.rounds, goal="cold <= 0.7")
    if not args.keep:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
