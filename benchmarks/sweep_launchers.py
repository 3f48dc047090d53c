"""Wall time of one small sweep, sequential (one process, one run after the other) vs
--launcher=local --jobs=N (N submitit worker processes, each on its share of the cores or GPUs), as a ratio.

Both launches start from the same warm JAX compilation cache (a first, untimed sweep fills it) and each
trains its own source model, so the difference is the launcher: N processes at once, each paying Python's
and JAX's start-up, against one process. On 2 CPU cores expect little gain (one core each, and the source
model trains while the other worker waits for it); on a GPU host the goal is at least 0.8 x N.

    python benchmarks/sweep_launchers.py [--jobs 2] [--steps 40] [--seeds 3] [--keep DIR]

With --quickstart it times the quickstart sweep (configs/quickstart.py, source and 24 runs) three ways,
interleaved over --rounds, each into a fresh workdir from the same warm compilation cache: in one process
(`--jobs=0`), as `python launch.py` runs it (the source on both cores, then two workers pinned to one core
each), and the same two workers unpinned (each free to use both cores), and prints the ratios to the
one-process time.

    python benchmarks/sweep_launchers.py --quickstart [--rounds 1] [--epochs 3]
"""
from __future__ import annotations

import argparse
import os
import pathlib
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = pathlib.Path(__file__).resolve().parents[1]
CONFIG = '''
from tl_research.config import base_config, axis, copy_config, product
def get_config(arg=None):
    c = base_config()
    c.name = "bench_launchers"
    c.data.name = "sklearn_digits"
    c.data.classes = (5, 6, 7, 8, 9)
    c.data.batch_size = 32
    c.model.stage_sizes = (1, 1)
    c.model.width = 8
    c.train.steps = {steps}
    c.train.eval_every = 10
    c.wandb.mode = "disabled"
    source = copy_config(c)
    source.data.classes = (0, 1, 2, 3, 4)
    c.init = "source"
    c.source = source
    return c
def get_sweep(arg=None):
    return product(axis("frozen_depth", [0, "all"]), axis("seed", list(range({seeds}))))
'''


def timed(argv: list[str], env: dict) -> float:
    t0 = time.perf_counter()
    out = subprocess.run([sys.executable, str(ROOT / "launch.py"), *argv, "--no_progress"], env=env,
                         capture_output=True, text=True)
    if out.returncode:
        sys.exit(f"launch failed ({out.returncode}):\n{out.stderr[-3000:]}")
    return time.perf_counter() - t0


UNPINNED = """import runpy, sys
from tl_research.sweeps import launchers
launchers.device_slices = lambda platform, devices, jobs: [list(devices)] * jobs  # every worker on every core
sys.argv = ["launch.py", *sys.argv[1:]]
runpy.run_path("launch.py", run_name="__main__")
"""


def quickstart(args, tmp: pathlib.Path, env: dict) -> None:
    """--quickstart: one process vs two pinned workers vs two unpinned workers (see the module docstring)."""
    base = ["--no_progress", f"--config.train.epochs={args.epochs}"]
    variants = {"one process": [sys.executable, str(ROOT / "launch.py"), "--jobs=0"],
                "2 workers, one core each": [sys.executable, str(ROOT / "launch.py")],
                "2 workers, unpinned": [sys.executable, "-c", UNPINNED]}
    subprocess.run(variants["one process"] + base + ["--workdir", str(tmp / "fill")], env=env, cwd=ROOT,
                   check=True, capture_output=True)  # fills the compilation cache, untimed
    times = {k: [] for k in variants}
    for r in range(args.rounds):
        for name, cmd in variants.items():
            t0 = time.perf_counter()
            out = subprocess.run(cmd + base + ["--workdir", str(tmp / f"{name.replace(' ', '_')}-{r}")],
                                 env=env, cwd=ROOT, capture_output=True, text=True)
            if out.returncode:
                sys.exit(f"{name} failed:\n{out.stderr[-3000:]}")
            times[name].append(time.perf_counter() - t0)
            print(f"round {r + 1}: {name} {times[name][-1]:.1f} s", flush=True)
    one = statistics.median(times["one process"])
    for name, ts in times.items():
        med = statistics.median(ts)
        print(f"quickstart, {name}: {med:.1f} s (median of {len(ts)}), {med / one:.2f}x the one-process time")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--quickstart", action="store_true", help="time the quickstart sweep three ways")
    ap.add_argument("--rounds", type=int, default=1)
    ap.add_argument("--epochs", type=float, default=3.0, help="--quickstart: epochs of each run")
    ap.add_argument("--jobs", type=int, default=2)
    ap.add_argument("--steps", type=int, default=150)
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--keep", help="a directory to keep the workdirs in (default: a temporary one)")
    args = ap.parse_args()
    tmp = pathlib.Path(args.keep or tempfile.mkdtemp(prefix="bench_launchers-"))
    tmp.mkdir(parents=True, exist_ok=True)
    config = tmp / "bench_launchers.py"
    config.write_text(CONFIG.format(steps=args.steps, seeds=args.seeds))
    env = {**os.environ, "TL_RESEARCH_CACHE": str(tmp / "cache"), "WANDB_MODE": "disabled"}
    if args.quickstart:
        return quickstart(args, tmp, {k: v for k, v in env.items() if k != "WANDB_MODE"})
    base = ["--config", str(config)]
    timed([*base, "--workdir", str(tmp / "warm")], env)  # fills the compilation cache, untimed
    sequential = timed([*base, "--workdir", str(tmp / "sequential")], env)
    jobs = timed([*base, "--workdir", str(tmp / "jobs"), "--launcher=local", f"--jobs={args.jobs}", "--wait"], env)
    runs = 2 * args.seeds
    print(f"{runs} runs + 1 source, {args.steps} steps each, {os.cpu_count()} CPUs: sequential {sequential:.1f} s, "
          f"--jobs={args.jobs} {jobs:.1f} s; speed-up {sequential / jobs:.2f}x")


if __name__ == "__main__":
    main()
