"""XLA's CPU convolutions against the exact forms tl_research.models.conv uses on CPU, as ratios measured in the
same run (variants interleaved round-robin, medians): per convolution (forward, weight gradient, input
gradient) and per whole train step of a network.

The layers: a ResNet-18 at 64 px (its last stages are 4x4 and 2x2 maps, where XLA's dense convolution is far
off its FLOPs) and MobileNet/EfficientNet depthwise convolutions (slow at every size on XLA's CPU backend).
The steps: tl_research.run.steps.build_train's step of ResNet-18 at 64 px (frozen depth 0, and from cached
activations at frozen depth 8 as the probe sweep trains it) and MobileNetV2 at 96 px (frozen depth 0), each
compiled twice: with TL_RESEARCH_CONV=xla (XLA's convolution everywhere) and with the CPU forms.

    python benchmarks/conv_forms.py [--rounds 5] [--inner 5] [--batch 32] [--no_steps]

Timings are of this machine as it is (2 shared CPU cores here): run it under the shared CPU lock.
"""
from __future__ import annotations

import argparse
import os
import pathlib
import statistics
import sys
import time

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
from jax import lax  # noqa: E402

from tl_research.models import conv  # noqa: E402

DN = ("NHWC", "HWIO", "NHWC")
LAYERS = [  # (name, size, c_in, c_out, kernel, stride, groups)
    ("resnet18@64 layer1 3x3 64 @16", 16, 64, 64, 3, 1, 1),
    ("resnet18@64 layer3 3x3 256 @4", 4, 256, 256, 3, 1, 1),
    ("resnet18@64 layer4.0 3x3 s2 256->512 @4", 4, 256, 512, 3, 2, 1),
    ("resnet18@64 layer4 3x3 512 @2", 2, 512, 512, 3, 1, 1),
    ("depthwise 3x3 32 @112", 112, 32, 32, 3, 1, 32),
    ("depthwise 3x3 s2 96 @112", 112, 96, 96, 3, 2, 96),
    ("depthwise 3x3 144 @56", 56, 144, 144, 3, 1, 144),
    ("depthwise 5x5 240 @28", 28, 240, 240, 5, 1, 240),
    ("depthwise 3x3 960 @2", 2, 960, 960, 3, 1, 960),
]


def _block_time(fn, args, inner: int) -> float:
    """Seconds per call over `inner` calls in a row."""
    t = time.perf_counter()
    for _ in range(inner):
        out = fn(*args)
    jax.block_until_ready(out)
    return (time.perf_counter() - t) / inner


def layers(batch: int, rounds: int, inner: int) -> None:
    print(f"per convolution, batch {batch}: XLA's ms and the CPU form's time as a fraction of it")
    print(f"{'convolution':42} {'form':>8} {'fwd ms':>8} {'ratio':>6} {'dW ms':>8} {'ratio':>6} {'dX ms':>8} "
          f"{'ratio':>6} {'max rel err':>11}")
    rng = np.random.default_rng(0)
    for name, size, c_in, c_out, k, stride, groups in LAYERS:
        x = jnp.asarray(rng.normal(size=(batch, size, size, c_in)), jnp.float32)
        w = jnp.asarray(rng.normal(size=(k, k, c_in // groups, c_out)) * 0.1, jnp.float32)
        form = conv.form(x, w, (stride, stride), "SAME", None, None, DN, groups)
        fns = {}
        for impl, f in (("xla", lax.conv_general_dilated), ("form", conv.conv_general_dilated)):
            def c(x, w, f=f):
                return f(x, w, (stride, stride), "SAME", dimension_numbers=DN, feature_group_count=groups)
            fns[impl] = [jax.jit(c), jax.jit(jax.grad(lambda w, x, c=c: jnp.sum(c(x, w) ** 2))),
                         jax.jit(jax.grad(lambda x, w, c=c: jnp.sum(c(x, w) ** 2)))]
        err = max(float(jnp.max(jnp.abs(a - b)) / jnp.max(jnp.abs(b))) for a, b in
                  zip([f(*args) for f, args in zip(fns["form"], [(x, w), (w, x), (x, w)])],
                      [f(*args) for f, args in zip(fns["xla"], [(x, w), (w, x), (x, w)])]))
        times = {(impl, i): [] for impl in fns for i in range(3)}
        for _ in range(rounds):
            for (impl, i), ts in times.items():
                args = (w, x) if i == 1 else (x, w)
                ts.append(_block_time(fns[impl][i], args, inner))
        med = {key: statistics.median(ts) for key, ts in times.items()}
        cells = " ".join(f"{med['xla', i] * 1e3:8.2f} {med['form', i] / med['xla', i]:6.3f}" for i in range(3))
        print(f"{name:42} {form[0] if form else 'xla':>8} {cells} {err:11.1e}", flush=True)


def _step(arch: str, image: int, batch: int, depth: int, cached: bool):
    """(step, state, batch, hp) of tl_research's train step for `arch`, traced with the current conv mode."""
    from jax.sharding import NamedSharding, PartitionSpec as P
    from tl_research import config as C, models
    from tl_research.run import feature_cache, setup, steps
    from tl_research.tasks import classification
    from tl_research.finetune import freezing
    cfg = C.base_config()
    cfg.model.name, cfg.model.image_size = arch, image
    cfg.optimizer.name, cfg.optimizer.momentum = "sgd", 0.9
    model = models.build(cfg.model, 10, 3)
    graphdef, pp, sp, params, stats = steps.split_model(model)
    mesh = setup.mesh()
    repl, data = NamedSharding(mesh, P()), NamedSharding(mesh, P("data"))
    rng = np.random.default_rng(0)
    images = rng.integers(0, 255, (batch, image, image, 3), np.uint8)
    norm = dict(value_range=(0.0, 1.0), mean=np.full(3, 0.5, np.float32), std=np.full(3, 0.5, np.float32))
    labels = freezing.labels(list(params), depth)
    tx, train = steps.build_train(steps.TrainSpec(
        net=steps.Net(graphdef, pp, sp), frozen_depth=depth, labels=labels, optimizer=cfg.optimizer,
        objective=classification.Objective(10), mesh=mesh, start_unit=depth if cached else 0, **norm))
    x = images
    if cached:
        prefix = feature_cache.build_prefix(steps._merger(graphdef, pp, sp), steps.preprocessor(**norm), depth,
                                            mesh, repl)
        x = np.asarray(prefix(params, stats, jax.device_put(images, data)))
    b = steps.to_device({"image": x, "label": rng.integers(0, 10, batch).astype(np.int32)}, data)
    state = jax.device_put({"params": params, "batch_stats": stats, "opt_state": tx.init(params),
                            "step": jnp.zeros((), jnp.int32), "key": jax.random.key_data(jax.random.key(0))}, repl)
    hp = {"lr": np.float32(0.01), "momentum": np.float32(0.9), "class_weights": np.ones(10, np.float32)}
    compiled = train.lower(state, b, hp, {}).compile()
    return [compiled, state, b, hp]


def steps(batch: int, rounds: int, inner: int) -> None:
    print(f"\nwhole train steps, batch {batch}: XLA's convolutions everywhere vs the CPU forms")
    print(f"{'step':46} {'xla ms':>8} {'forms ms':>9} {'ratio':>6} {'loss diff':>10}")
    for arch, image, depth, cached in (("resnet18", 64, 0, False), ("resnet18", 64, 8, True),
                                       ("mobilenet_v2", 96, 0, False)):
        runs = {}
        for mode in ("xla", "auto"):
            os.environ[conv.ENV] = mode
            runs[mode] = _step(arch, image, batch, depth, cached)
        os.environ.pop(conv.ENV)
        losses, times = {}, {m: [] for m in runs}
        for m, (f, s, b, hp) in runs.items():  # the first step's loss from the same weights
            runs[m][1], out = f(s, b, hp, {})
            losses[m] = float(jax.device_get(out["loss"]))
        for _ in range(rounds):
            for m, run in runs.items():  # the state is donated to each step: carried from step to step
                f, _, b, hp = run
                t = time.perf_counter()
                for _ in range(inner):
                    run[1], out = f(run[1], b, hp, {})
                jax.block_until_ready(out)
                times[m].append((time.perf_counter() - t) / inner)
        xla, forms = (statistics.median(times[m]) for m in ("xla", "auto"))
        label = f"{arch} @{image} frozen_depth={depth}{' cached' if cached else ''}"
        print(f"{label:46} {xla * 1e3:8.1f} {forms * 1e3:9.1f} {forms / xla:6.3f} "
              f"{abs(losses['xla'] - losses['auto']):10.1e}", flush=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--inner", type=int, default=5, help="calls per timed block")
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--no_steps", action="store_true", help="the single convolutions only")
    args = ap.parse_args()
    print(f"device: {jax.devices()[0].platform} x{jax.device_count()}  rounds={args.rounds}x{args.inner}")
    layers(args.batch, args.rounds, args.inner)
    if not args.no_steps:
        steps(args.batch, args.rounds, args.inner)


if __name__ == "__main__":
    main()
