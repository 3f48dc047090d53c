"""Per-device memory of a ViT-B/16's parameters and optimizer state: FSDP over 8 devices vs replicated.

The bytes each device holds are read from the shardings a run uses (steps.Placement, built from
config.sharding over config.mesh): for every parameter and every leaf of its optimizer state, the shape of
one device's shard. Nothing is allocated, so it runs on any machine; by default on 8 simulated CPU devices.
Goal: FSDP at most 1/6 of replicated (ideal 1/8; small tensors, biases and norms stay replicated).

    python benchmarks/sharding_memory.py [--model vit_b16] [--devices 8] [--optimizer adam]
"""
from __future__ import annotations

import argparse
import math
import os
import pathlib
import sys

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))


def per_device_bytes(placement, tx) -> int:
    """The most bytes of parameters + optimizer state any one device holds under `placement`."""
    import jax
    state = {"params": placement.shapes, "opt_state": jax.eval_shape(tx.init, placement.shapes)}
    shardings = {"params": placement.params, "opt_state": placement.opt_state(tx)}
    per = {}
    for leaf, sh in zip(jax.tree.leaves(state), jax.tree.leaves(shardings)):
        shard = sh.shard_shape(leaf.shape)
        for d in sh.device_set:
            per[d] = per.get(d, 0) + math.prod(shard) * leaf.dtype.itemsize
    return max(per.values())


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="vit_b16")
    ap.add_argument("--devices", type=int, default=8)
    ap.add_argument("--optimizer", default="adam", choices=("adam", "sgd"))
    ap.add_argument("--classes", type=int, default=1000)
    args = ap.parse_args()
    os.environ.setdefault("XLA_FLAGS", f"--xla_force_host_platform_device_count={args.devices}")
    os.environ.setdefault("JAX_PLATFORMS", "cpu")
    import jax

    from tl_research import config as C, models

    from tl_research.finetune import freezing

    from tl_research.core import sharding

    from tl_research.run import steps

    cfg = C.base_config()
    cfg.model.name, cfg.optimizer.name = args.model, args.optimizer
    abstract = steps.split_model(models.abstract(cfg.model, args.classes, 3))[3]  # shapes only
    params = {k: jax.ShapeDtypeStruct(v.shape, v.dtype) for k, v in abstract.items()}
    tx = freezing.build_optimizer(cfg.optimizer, freezing.labels(list(params), 0))
    n = jax.device_count()
    results = {}
    for label, mesh_cfg, rules in (("replicated", (("data", -1),), ((".*", "replicate"),)),
                                   (f"fsdp={n}", (("fsdp", -1),), ((".*", "fsdp"),))):
        placement = steps.Placement.of(sharding.make_mesh(mesh_cfg), params, rules)
        results[label] = per_device_bytes(placement, tx)
        print(f"{label:>12}: {results[label] / 2**20:9.1f} MiB per device (parameters + {args.optimizer} state)")
    total = sum(math.prod(p.shape) for p in params.values())
    ratio = results[f"fsdp={n}"] / results["replicated"]
    print(f"{args.model}: {total / 1e6:.1f}M parameters on {n} devices; fsdp / replicated = {ratio:.3f} "
          f"(goal <= {1 / 6:.3f}, ideal {1 / n:.3f})")


if __name__ == "__main__":
    main()
