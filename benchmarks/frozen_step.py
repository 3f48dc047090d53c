"""Cost of a train step vs frozen depth, as a ratio to full fine-tuning measured in the same run.

No backward pass runs through frozen units (the gradient stops at the boundary), so a step should get
cheaper as more units are frozen. Timings interleave the variants round-robin, so machine noise hits them
alike; the printed figures are ratios of medians.

    python benchmarks/frozen_step.py [--model.stage_sizes=(2,2,2)] [--batch 128] [--rounds 5]
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

from tl_research import config as C, freezing, models, trainer  # noqa: E402


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
    depths = sorted({0, n // 2, n})
    graphdef, pp, sp, params, stats = trainer.split_model(model)
    mesh = trainer.mesh()
    repl, data = NamedSharding(mesh, P()), NamedSharding(mesh, P("data"))
    rng = np.random.default_rng(0)
    batch = trainer.to_device({"image": rng.integers(0, 255, (args.batch, args.image, args.image, 1), np.uint8),
                               "label": rng.integers(0, 5, args.batch).astype(np.int32)}, data)
    hp = {"lr": np.float32(0.01), "momentum": np.float32(0.9), "class_weights": np.ones(5, np.float32)}
    runners = {}
    for d in depths:
        labels = freezing.labels(list(params), d)
        tx, train = trainer.build_train(graphdef, pp, sp, frozen_depth=d, label_map=labels, opt_cfg=cfg.optimizer,
                                        num_classes=5, label_smoothing=0.0, value_range=(0.0, 1.0),
                                        mean=np.array([0.5], np.float32), std=np.array([0.5], np.float32),
                                        augment_ops=(), mesh_=mesh)
        steps = trainer.Steps(tx, train, None)
        state = jax.device_put({"params": jax.tree.map(jnp.copy, params), "batch_stats": jax.tree.map(jnp.copy, stats),
                                "opt_state": tx.init(params),
                                "step": jnp.zeros((), jnp.int32), "key": jax.random.key_data(jax.random.key(0))},
                               repl)
        state, m = steps.train(state, batch, hp, {})  # compile
        jax.block_until_ready(m)
        runners[d] = [steps, state]
    times = {d: [] for d in depths}
    for _ in range(args.rounds):
        for d in depths:
            steps, state = runners[d]
            t = time.perf_counter()
            for _ in range(args.steps):
                state, m = steps.train(state, batch, hp, {})
            jax.block_until_ready(m)
            times[d].append((time.perf_counter() - t) / args.steps)
            runners[d][1] = state
    base = statistics.median(times[0])
    print(f"device: {jax.devices()[0].platform} x{jax.device_count()}  model: resnet_cifar "
          f"stage_sizes={cfg.model.stage_sizes} width={args.width}  units={n}  batch={args.batch}")
    for d in depths:
        med = statistics.median(times[d])
        print(f"frozen_depth={d}/{n}: {med * 1e3:8.2f} ms/step  ratio to full fine-tuning {med / base:.2f}"
              f"  ({args.batch / med:,.0f} examples/s)")


if __name__ == "__main__":
    main()
