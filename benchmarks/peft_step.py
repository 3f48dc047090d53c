"""Step time, compiled memory and optimizer state of each parameter-efficient method against full fine-tuning on
the same model and batch, measured in the same run (ViT-S/16 at 224 px by default).

Every method runs through the trainer's own code path (benchmarks/gpu_throughput.py's `JaxRun`: loop.Training's
setup, the phase's step from the StepCache, the fresh state), on a JPEG folder of scikit-image's photographs.
The feature cache is off, so every method's step starts from the images and the ratios compare the steps
themselves. Timings interleave the methods round-robin, so machine noise hits them alike; the printed figures
are ratios of medians to full fine-tuning.

    FLOP ratio  XLA's FLOP count of the compiled step (cost_analysis) over full fine-tuning's
    temp MB     XLA's scratch memory of the compiled step (memory_analysis().temp_size_in_bytes): the
                activations kept for the backward pass and the gradients, what a method saves in memory
    opt MB      the optimizer state the run holds (frozen parameters hold none: optax.set_to_zero)
    trainable   the run's trainable parameter count (its result.json `trainable_params`)

Expected: LoRA and VPT-shallow cost less per step than full fine-tuning (no weight gradients for the frozen
kernels); the adapter methods hold optimizer state for their own parameters only.

    python benchmarks/peft_step.py [--model vit_s16] [--size 224] [--batch 8] [--rounds 3] [--steps 2]
    python benchmarks/peft_step.py --smoke          # vit_ti16 at 32 px: every method's code path, not speed
"""
from __future__ import annotations

import argparse
import gc
import pathlib
import statistics
import sys
import tempfile
import time

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))

import gpu_throughput as gt  # noqa: E402

METHODS = (  # (label, config overrides); the first is the baseline
    ("full fine-tuning", {"strategy.name": "fine_tune"}),
    ("linear probe", {"strategy.name": "feature_extraction"}),
    ("bitfit", {"strategy.name": "bitfit"}),
    ("norm_only", {"strategy.name": "norm_only"}),
    ("lora r=8", {"strategy.name": "lora"}),
    ("lora r=8 (q, v)", {"strategy.name": "lora", "strategy.lora.targets": r"attn\.(query|value)$"}),
    ("ssf", {"strategy.name": "ssf"}),
    ("adapter (houlsby)", {"strategy.name": "adapter", "strategy.adapter.placement": "houlsby"}),
    ("adapter (parallel)", {"strategy.name": "adapter", "strategy.adapter.placement": "parallel"}),
    ("vpt_shallow", {"strategy.name": "vpt_shallow"}),
    ("vpt_deep", {"strategy.name": "vpt_deep"}),
)


def parse_args(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--smoke", action="store_true", help="vit_ti16 at 32 px, batch 2 (code paths, not speed)")
    ap.add_argument("--model", default=None, help="a vit_* registry name (default vit_s16; smoke vit_ti16)")
    ap.add_argument("--size", type=int, default=None, help="image side (default 224; smoke 32)")
    ap.add_argument("--batch", type=int, default=None, help="batch size (default 8; smoke 2)")
    ap.add_argument("--rounds", type=int, default=3, help="round-robin rounds (the median is reported)")
    ap.add_argument("--steps", type=int, default=2, help="steps per timed block")
    ap.add_argument("--methods", default="", help="semicolon list of labels to run (default: all registered)")
    args = ap.parse_args(argv)
    args.model = args.model or ("vit_ti16" if args.smoke else "vit_s16")
    args.size = args.size or (32 if args.smoke else 224)
    args.batch = args.batch or (2 if args.smoke else 8)
    return args


def registered(methods):
    """The methods whose strategy is registered here (one line names the others)."""
    from tl_research.finetune import strategies
    names = set(strategies.names())
    keep = [m for m in methods if m[1]["strategy.name"] in names]
    missing = [label for label, o in methods if o["strategy.name"] not in names]
    if missing:
        print(f"not registered here, skipped: {', '.join(missing)}")
    return keep


def config_for(args, data: dict, overrides: dict):
    from tl_research import config as C
    ns = argparse.Namespace(size=args.size, batch=args.batch, threads=2, prefetch=2, warmup=1, steps=args.steps)
    c = gt.run_config(ns, data, args.model)
    c.precision = "float32"
    c.train.feature_cache = False  # every step from the images: the steps themselves are compared
    return C.apply_overrides(c, overrides)


def measure(args, data: dict, workdir: pathlib.Path, label: str, overrides: dict) -> dict:
    """One method: its run set up and compiled, the first step run; what it holds."""
    import jax
    run = gt.JaxRun(config_for(args, data, overrides), workdir / "runs" / label.replace(" ", "_"))
    mem = run.compiled.memory_analysis()
    run.steps(1, lambda: run.dev)
    opt = sum(x.nbytes for x in jax.tree.leaves(run.state["opt_state"]) if hasattr(x, "nbytes"))
    return {"run": run, "temp_mb": (getattr(mem, "temp_size_in_bytes", 0) or 0) / 2**20, "opt_mb": opt / 2**20,
            "trainable": int(run.t.trainable_params), "compile_s": run.compile_s, "gflop": run.flops / 1e9,
            "times": []}


def main(argv=None):
    args = parse_args(argv)
    methods = registered(METHODS)
    if args.methods:
        wanted = {m.strip() for m in args.methods.split(";")}
        methods = [m for m in methods if m[0] in wanted or m is METHODS[0]]
    workdir = pathlib.Path(tempfile.mkdtemp(prefix="peft_step-"))
    data = gt.Bench(argparse.Namespace(smoke=True, peak_tflops=0, workdir=str(workdir), jpegs=max(32, 4 * args.batch),
                                       budget_s=0, sections=[]), {}).data()
    res = {}
    for label, overrides in methods:
        print(f"== {label}: compiling", flush=True)
        res[label] = measure(args, data, workdir, label, overrides)
    for _ in range(args.rounds):
        for label in res:
            run = res[label]["run"]
            res[label]["times"].append(run.steps(args.steps, lambda: run.dev) / args.steps)
    report(args, res)
    for r in res.values():
        r["run"].close()
    gc.collect()


def report(args, res: dict) -> None:
    import jax
    base = next(iter(res.values()))
    bt, bm, bo = statistics.median(base["times"]), base["temp_mb"], base["opt_mb"]
    print(f"\ndevice: {jax.devices()[0].platform} ({jax.devices()[0].device_kind}) x{jax.device_count()}  model: "
          f"{args.model} {args.size} px  batch {args.batch}  float32  rounds {args.rounds}x{args.steps} steps  "
          f"({time.strftime('%Y-%m-%d')})")
    print("ratios to full fine-tuning measured in this run")
    print(f"| method | trainable | ms/step | time ratio | FLOP ratio | temp MB | temp ratio | opt MB | opt ratio |")
    print("|---|---|---|---|---|---|---|---|---|")
    for label, r in res.items():
        t = statistics.median(r["times"])
        flop = f"{r['gflop'] / base['gflop']:.2f}" if base["gflop"] else "?"
        print(f"| {label} | {r['trainable']:,} | {t * 1e3:.0f} | {t / bt:.2f} | {flop} | {r['temp_mb']:.0f} | "
              f"{r['temp_mb'] / bm:.2f} | {r['opt_mb']:.1f} | {r['opt_mb'] / bo if bo else 0:.3f} |")


if __name__ == "__main__":
    main()
