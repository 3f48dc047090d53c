"""Cost of a train step vs frozen depth, as a ratio to full fine-tuning measured in the same run, from the
images and from cached frozen-prefix activations (tl_research.run.feature_cache), next to the step's FLOP ratio.

No backward pass runs through frozen units (the gradient stops at the boundary), so a step should get
cheaper as more units are frozen; with the cache the frozen prefix's forward pass goes too (it runs once per
example, not once per step), leaving only the trainable suffix. The FLOP ratios are XLA's own counts of the
compiled steps (`cost_analysis`). Timings interleave the variants round-robin, so machine noise hits them
alike; the printed figures are ratios of medians.

    python benchmarks/frozen_step.py [--stage_sizes="(2,2,2)"] [--batch 128] [--rounds 5]
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
import pathlib

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
from jax.sharding import NamedSharding, PartitionSpec as P  # noqa: E402

from tl_research import config as C, models  # noqa: E402

from tl_research.run import feature_cache, setup, steps
from tl_research.tasks.classification import task as classification

from tl_research.finetune import freezing


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--steps", type=int, default=10, help="steps per timed block")
    ap.add_argument("--width", type=int, default=16)
    ap.add_argument("--stage_sizes", default="(1,1,1)")
    ap.add_argument("--image", type=int, default=28)
    args = ap.parse_args()

    cfg = C.base_config()
    cfg.model.width = args.width
    cfg.model.stage_sizes = C.parse_value(args.stage_sizes)
    model = models.build(cfg.model, 5, 1)
    n = model.num_units
    graphdef, pp, sp, params, stats = steps.split_model(model)
    mesh = setup.mesh()
    repl, data = NamedSharding(mesh, P()), NamedSharding(mesh, P("data"))
    rng = np.random.default_rng(0)
    images = rng.integers(0, 255, (args.batch, args.image, args.image, 1), np.uint8)
    labels = rng.integers(0, 5, args.batch).astype(np.int32)
    hp = {"lr": np.float32(0.01), "momentum": np.float32(0.9), "class_weights": np.ones(5, np.float32)}
    norm = dict(value_range=(0.0, 1.0), mean=np.array([0.5], np.float32), std=np.array([0.5], np.float32))
    model_of = steps._merger(graphdef, pp, sp)
    variants = [(d, False) for d in range(n + 1)] + [(d, True) for d in range(1, n + 1)]
    runners, flops = {}, {}
    for d, cached in variants:
        labels_map = freezing.labels(list(params), d)
        tx, train = steps.build_train(steps.TrainSpec(
            net=steps.Net(graphdef, pp, sp), frozen_depth=d, labels=labels_map, optimizer=cfg.optimizer,
            objective=classification.Objective(5), mesh=mesh, start_unit=d if cached else 0, **norm))
        x = images
        if cached:  # the batch's frozen-prefix activations, computed as the cache computes them
            prefix = feature_cache.build_prefix(model_of, steps.preprocessor(**norm), d, mesh, repl)
            x = np.asarray(prefix(params, stats, jax.device_put(images, data)))
        batch = steps.to_device({"image": x, "label": labels}, data)
        state = jax.device_put({"params": jax.tree.map(jnp.copy, params), "batch_stats": jax.tree.map(jnp.copy, stats),
                                "opt_state": tx.init(params),
                                "step": jnp.zeros((), jnp.int32), "key": jax.random.key_data(jax.random.key(0))},
                               repl)
        flops[d, cached] = _flops(train, state, batch, hp)
        state, m = train(state, batch, hp, {})  # compile
        jax.block_until_ready(m)
        runners[d, cached] = [train, state, batch]
    times = {v: [] for v in variants}
    for _ in range(args.rounds):
        for v in variants:
            train, state, batch = runners[v]
            t = time.perf_counter()
            for _ in range(args.steps):
                state, m = train(state, batch, hp, {})
            jax.block_until_ready(m)
            times[v].append((time.perf_counter() - t) / args.steps)
            runners[v][1] = state
    base, base_flops = statistics.median(times[0, False]), flops[0, False]
    print(f"device: {jax.devices()[0].platform} x{jax.device_count()}  model: resnet_cifar "
          f"stage_sizes={cfg.model.stage_sizes} width={args.width}  units={n}  batch={args.batch}  "
          f"rounds={args.rounds}x{args.steps} steps")
    print("ratios to the full fine-tuning step from the images (frozen_depth=0), measured in this run")
    print(f"{'frozen_depth':>12} {'path':>7} {'ms/step':>9} {'time ratio':>10} {'FLOP ratio':>10} {'examples/s':>11}")
    for d, cached in variants:
        med = statistics.median(times[d, cached])
        fl = f"{flops[d, cached] / base_flops:10.4f}" if base_flops and flops[d, cached] else f"{'?':>10}"
        print(f"{f'{d}/{n}':>12} {'cached' if cached else 'images':>7} {med * 1e3:9.2f} {med / base:10.3f} {fl} "
              f"{args.batch / med:11,.0f}")


def _flops(train, state, batch, hp) -> float:
    """XLA's FLOP count of the compiled step (0 where the backend does not report one)."""
    try:
        cost = train.lower(state, batch, hp, {}).compile().cost_analysis()
        cost = cost[0] if isinstance(cost, (list, tuple)) else cost
        return float(cost.get("flops", 0.0))
    except Exception:  # noqa: BLE001 - a backend without cost analysis: the time ratios alone
        return 0.0


if __name__ == "__main__":
    main()
