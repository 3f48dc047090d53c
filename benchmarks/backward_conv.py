"""XLA's CPU backward convolutions for the quickstart's shapes against hand-written VJPs, as ratios measured in
the same run (variants interleaved round-robin, medians).

What XLA emits for the gradient of a stride-1 3x3 convolution (NHWC, HWIO; read from
jax.jit(jax.grad(f)).lower(...).compile().as_text()): the input gradient is an ordinary 3x3 convolution of
the output gradient with the reversed, in/out-swapped kernel (a small transpose fusion); the weight gradient
is a convolution whose "batch" is the input channels and whose "features" are the examples, with a window as
large as the image (28x28 -> a 3x3 output), after transposing both the input (N,H,W,C -> C,H,W,N) and the
output gradient into that layout; on this jaxlib it runs as a YNNPACK fusion.

The variants keep XLA's input gradient and replace the weight gradient, except subpixel:
  slices   dW[i, j] = sum over (n, h, w) of x_pad[n, h*s + i, w*s + j, :]^T dy[n, h, w, :]: one matmul per
           kernel offset on a strided slice of the padded input
  im2col   the kh*kw slices concatenated along channels, then one (N*H*W, kh*kw*Cin)^T (N*H*W, Cout) matmul
  matmul   (1x1 convolutions) both gradients as matmuls: for a strided one XLA computes the input gradient
           as a convolution of a zero-stuffed (lhs-dilated) output gradient, which YNNPACK does not take
  subpixel (strided convolutions) XLA's weight gradient, and the input gradient split by output phase: for
           stride s, the input positions congruent to (r, q) mod s get a stride-1 convolution of the output
           gradient with the kernel taps w[r::s, q::s] (reversed, in/out swapped), and the s*s phases are
           interleaved by a reshape: the zero-stuffed copy's multiplications by zero are never made
Each variant's gradients are checked against jax.grad's (max abs difference over max abs value).

    python benchmarks/backward_conv.py [--rounds 7] [--inner 10] [--step | --step-only]

--step also times the quickstart network's whole train step (tl_research.run.steps.build_train, frozen depth 0,
batch 64) with the convolutions' weight gradients replaced (all of them, or the strided 1x1 projections'
only), against XLA's own.
"""
from __future__ import annotations

import argparse
import pathlib
import statistics
import sys
import time

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
from jax import lax  # noqa: E402

DN = ("NHWC", "HWIO", "NHWC")
SHAPES = [  # (name, batch, size, c_in, c_out, kernel, stride): the convolutions of resnet_cifar (1, 1, 1) w16
    ("stem 3x3 1->16 @28", 64, 28, 1, 16, 3, 1),
    ("block1 3x3 16->16 @28", 64, 28, 16, 16, 3, 1),
    ("block2.conv1 3x3 s2 16->32", 64, 28, 16, 32, 3, 2),
    ("block2.conv2 3x3 32->32 @14", 64, 14, 32, 32, 3, 1),
    ("block2.proj 1x1 s2 16->32", 64, 28, 16, 32, 1, 2),
    ("block3.conv1 3x3 s2 32->64", 64, 14, 32, 64, 3, 2),
    ("block3.conv2 3x3 64->64 @7", 64, 7, 64, 64, 3, 1),
    ("block3.proj 1x1 s2 32->64", 64, 14, 32, 64, 1, 2),
]


def _offset_slices(x, padding, kshape, strides, out_hw):
    """The strided slices of the padded input that kernel offset (i, j) multiplies, in (i, j) order."""
    xp = jnp.pad(x, ((0, 0), tuple(padding[0]), tuple(padding[1]), (0, 0)))
    (sh, sw), (h, w) = strides, out_hw
    return [lax.slice(xp, (0, i, j, 0), (xp.shape[0], i + (h - 1) * sh + 1, j + (w - 1) * sw + 1, xp.shape[3]),
                      (1, sh, sw, 1)) for i in range(kshape[0]) for j in range(kshape[1])]


def weight_grad(kind, x, dy, kshape, strides, padding):
    cols = _offset_slices(x, padding, kshape, strides, dy.shape[1:3])
    ci, co = x.shape[3], dy.shape[3]
    if kind == "slices":
        g = jnp.stack([jnp.einsum("nhwc,nhwd->cd", c, dy) for c in cols])
    else:  # im2col
        patches = jnp.concatenate(cols, axis=-1).reshape(-1, len(cols) * ci)
        g = (patches.T @ dy.reshape(-1, co)).reshape(len(cols), ci, co)
    return g.reshape(kshape[0], kshape[1], ci, co)


def pointwise_grads(x, w, dy, strides):
    """Both gradients of an unpadded 1x1 convolution with strides as matmuls: the input gradient placed on
    the strided grid (XLA instead convolves a zero-stuffed, lhs-dilated copy of dy), the weight gradient
    from the strided input."""
    sh, sw = strides
    xs = x[:, ::sh, ::sw, :][:, :dy.shape[1], :dy.shape[2], :]
    dw = jnp.einsum("nhwc,nhwd->cd", xs, dy)[None, None]
    dxs = jnp.einsum("nhwd,cd->nhwc", dy, w[0, 0])
    dx = jnp.zeros_like(x).at[:, ::sh, ::sw, :].set(dxs) if (sh, sw) != (1, 1) else dxs
    return dx.astype(x.dtype), dw.astype(w.dtype)


def subpixel_input_grad(dy, w, strides, pads, x_hw):
    """The input gradient of a strided convolution (NHWC, HWIO, explicit pads) as s*s stride-1 convolutions
    of dy, one per phase of the padded input, interleaved and cropped to the input."""
    (sh, sw), (h, w_) = strides, x_hw
    n, oh, ow, ci = dy.shape[0], dy.shape[1], dy.shape[2], w.shape[2]
    a = -(-(h + pads[0][0] + pads[0][1]) // sh)
    b = -(-(w_ + pads[1][0] + pads[1][1]) // sw)
    rows = []
    for r in range(sh):
        cols = []
        for q in range(sw):
            sub = w[r::sh, q::sw]
            t, u = sub.shape[:2]
            if t == 0 or u == 0:
                cols.append(jnp.zeros((n, a, b, ci), dy.dtype))
            elif (t, u) == (1, 1):
                d = jnp.pad(dy, ((0, 0), (0, max(a - oh, 0)), (0, max(b - ow, 0)), (0, 0)))[:, :a, :b]
                cols.append(jnp.einsum("nhwd,cd->nhwc", d, sub[0, 0]))
            else:
                k = jnp.flip(sub, (0, 1)).transpose(0, 1, 3, 2)
                cols.append(lax.conv_general_dilated(dy, k, (1, 1), ((t - 1, a - oh), (u - 1, b - ow)),
                                                     dimension_numbers=DN))
        rows.append(jnp.stack(cols, axis=3))
    g = jnp.stack(rows, axis=2).reshape(n, a * sh, b * sw, ci)
    return g[:, pads[0][0]:pads[0][0] + h, pads[1][0]:pads[1][0] + w_]


def custom_conv(kind, only_1x1: bool = False):
    """A drop-in for lax.conv_general_dilated (nnx.Conv's conv_general_dilated argument) whose weight gradient
    is `kind`; anything but a plain NHWC/HWIO 2-D convolution (with only_1x1: a 1x1 one) goes to
    lax.conv_general_dilated."""

    def conv(x, w, window_strides, padding, lhs_dilation=None, rhs_dilation=None, dimension_numbers=None,
             feature_group_count=1, precision=None, **kw):
        plain = (x.ndim == 4 and feature_group_count == 1 and not kw.get("preferred_element_type")
                 and all(d == 1 for d in (lhs_dilation or (1, 1))) and all(d == 1 for d in (rhs_dilation or (1, 1)))
                 and lax.conv_dimension_numbers(x.shape, w.shape, dimension_numbers)
                 == lax.conv_dimension_numbers(x.shape, w.shape, DN))
        if not plain or (only_1x1 and w.shape[:2] != (1, 1)):
            return lax.conv_general_dilated(x, w, window_strides, padding, lhs_dilation, rhs_dilation,
                                            dimension_numbers, feature_group_count=feature_group_count,
                                            precision=precision, **kw)
        strides = tuple(window_strides)
        pads = tuple(tuple(p) for p in (lax.padtype_to_pads(x.shape[1:3], w.shape[:2], strides, padding)
                                        if isinstance(padding, str) else padding))

        def fwd_conv(x, w):
            return lax.conv_general_dilated(x, w, strides, pads, dimension_numbers=DN, precision=precision)

        @jax.custom_vjp
        def f(x, w):
            return fwd_conv(x, w)

        def f_fwd(x, w):
            return fwd_conv(x, w), (x, w)

        def f_bwd(res, dy):
            x, w = res
            if kind in ("matmul", "subpixel+matmul") and w.shape[:2] == (1, 1) and not any(map(any, pads)):
                return pointwise_grads(x, w, dy, strides)
            if kind.startswith("subpixel"):
                dw = jax.vjp(lambda w_: fwd_conv(x, w_), w)[1](dy)[0]  # XLA's own weight gradient
                if strides == (1, 1):
                    return jax.vjp(lambda x_: fwd_conv(x_, w), x)[1](dy)[0], dw
                return subpixel_input_grad(dy, w, strides, pads, x.shape[1:3]).astype(x.dtype), dw
            dx = jax.vjp(lambda x_: fwd_conv(x_, w), x)[1](dy)[0]  # XLA's own input gradient
            return dx, weight_grad(kind, x, dy, w.shape[:2], strides, pads).astype(w.dtype)

        f.defvjp(f_fwd, f_bwd)
        return f(x, w)

    return conv


def _time(fn, args, inner):
    t = time.perf_counter()
    for _ in range(inner):
        out = fn(*args)
    jax.block_until_ready(out)
    return (time.perf_counter() - t) / inner


def _error(got, ref):
    return max(float(jnp.max(jnp.abs(a - b)) / (jnp.max(jnp.abs(b)) + 1e-30)) for a, b in zip(got, ref))


def layers(rounds: int, inner: int) -> None:
    rng = np.random.default_rng(0)
    for name, n, size, ci, co, k, s in SHAPES:
        x = jnp.asarray(rng.standard_normal((n, size, size, ci)), jnp.float32)
        w = jnp.asarray(rng.standard_normal((k, k, ci, co)) / np.sqrt(k * k * ci), jnp.float32)
        ct = jnp.asarray(rng.standard_normal((n, -(-size // s), -(-size // s), co)), jnp.float32)
        convs = {"default": lax.conv_general_dilated, "slices": custom_conv("slices"),
                 "im2col": custom_conv("im2col"), **({"matmul": custom_conv("matmul")} if k == 1 else {}),
                 **({"subpixel": custom_conv("subpixel")} if s > 1 else {})}
        fns = {v: jax.jit(jax.grad(lambda x, w, c=c: jnp.vdot(c(x, w, (s, s), "SAME", dimension_numbers=DN), ct),
                                   argnums=(0, 1))) for v, c in convs.items()}
        ref = fns["default"](x, w)
        errs = {v: _error(fn(x, w), ref) for v, fn in fns.items()}
        times = {v: [] for v in fns}
        for _ in range(rounds):
            for v, fn in fns.items():
                times[v].append(_time(fn, (x, w), inner))
        med = {v: statistics.median(t) * 1e3 for v, t in times.items()}
        print(f"{name:28s} grad default {med['default']:6.2f} ms | " + " | ".join(
            f"{v} {med[v]:6.2f} ms = {med[v] / med['default']:.2f}x (err {errs[v]:.1e})"
            for v in list(fns)[1:]), flush=True)


def whole_step(rounds: int, inner: int) -> None:
    from flax import nnx
    from jax.sharding import NamedSharding, PartitionSpec as P
    from tl_research import config as C, models
    from tl_research.finetune import freezing
    from tl_research.run import setup, steps
    from tl_research.tasks import classification
    cfg = C.base_config()
    cfg.model.width, cfg.model.stage_sizes = 16, (1, 1, 1)
    cfg.optimizer.momentum, cfg.optimizer.weight_decay = 0.9, 5e-4
    mesh = setup.mesh()
    rng = np.random.default_rng(0)
    batch = steps.to_device({"image": rng.integers(0, 255, (64, 28, 28, 1), np.uint8),
                               "label": rng.integers(0, 5, 64).astype(np.int32)}, NamedSharding(mesh, P("data")))
    hp = {"lr": np.float32(0.05), "momentum": np.float32(0.9), "class_weights": np.ones(5, np.float32)}
    runners, outs = {}, {}
    kinds = {"default": None, "slices": custom_conv("slices"), "im2col": custom_conv("im2col"),
             "slices, 1x1 convs only": custom_conv("slices", only_1x1=True),
             "1x1 convs as matmuls": custom_conv("matmul", only_1x1=True),
             "subpixel strided input gradients": custom_conv("subpixel"),
             "subpixel, 1x1 convs as matmuls": custom_conv("subpixel+matmul")}
    for kind, conv in kinds.items():
        model = models.build(cfg.model, 5, 1)
        if conv is not None:
            for _, m in nnx.iter_graph(model):
                if isinstance(m, nnx.Conv):
                    m.conv_general_dilated = conv
        graphdef, pp, sp, params, stats = steps.split_model(model)
        labels = freezing.labels(list(params), 0)
        tx, train = steps.build_train(steps.TrainSpec(
            net=steps.Net(graphdef, pp, sp), frozen_depth=0, labels=labels, optimizer=cfg.optimizer,
            objective=classification.Objective(5), value_range=(0.0, 1.0), mean=np.array([0.5], np.float32),
            std=np.array([0.5], np.float32), mesh=mesh))
        state = jax.device_put({"params": params, "batch_stats": stats, "opt_state": tx.init(params),
                                "step": jnp.zeros((), jnp.int32), "key": jax.random.key_data(jax.random.key(0))},
                               NamedSharding(mesh, P()))
        ahead = jax.tree.map(jnp.copy, state)
        for _ in range(3):  # the head starts at zero, so the first step's convolution gradients are zero
            ahead, m = train(ahead, batch, hp, {})
        outs[kind] = jax.tree.leaves(ahead["params"])
        runners[kind] = [train, state]
    errs = {k: _error(outs[k], outs["default"]) for k in runners}
    times = {k: [] for k in runners}
    for _ in range(rounds):
        for k, (train, state) in runners.items():
            t = time.perf_counter()
            for _ in range(inner):
                state, m = train(state, batch, hp, {})
            jax.block_until_ready(m)
            times[k].append((time.perf_counter() - t) / inner)
            runners[k][1] = state
    med = {k: statistics.median(t) * 1e3 for k, t in times.items()}
    print(f"whole train step (frozen depth 0, batch 64): default {med['default']:.1f} ms | " + " | ".join(
        f"{k} {med[k]:.1f} ms = {med[k] / med['default']:.2f}x (params after 3 steps: err {errs[k]:.1e})"
        for k in list(kinds)[1:]))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--inner", type=int, default=10, help="calls per timed block")
    ap.add_argument("--step", action="store_true", help="also the whole quickstart train step")
    ap.add_argument("--step-only", action="store_true", help="the whole train step alone")
    args = ap.parse_args()
    print(f"{jax.devices()[0].platform} x{jax.device_count()}, jax {jax.__version__}")
    if not args.step_only:
        layers(args.rounds, args.inner)
    if args.step or args.step_only:
        whole_step(args.rounds, args.inner)


if __name__ == "__main__":
    main()
