"""Parameters that parameter-efficient fine-tuning adds to a built model's units, and the merges that fold them
back into the plain architecture's weights.

    LoRA  (Hu et al. 2021, arXiv 2106.09685) beside a dense kernel W (an `nnx.Linear`) or a 1x1 convolution's:
          y = x W + b + (alpha / r) (x A) B, with A (d_in, r) random (He-uniform, flax's LoRA default, drawn from
          the run's seed) and B (r, d_out) zero, so the layer computes what it did until B moves. The factors are
          flax's own `nnx.LoRA` module, at `<layer>.lora.lora_a` / `<layer>.lora.lora_b` (nnx.LoRALinear's
          layout). A 1x1 convolution applies them to its strided input (the positions its kernel sees). The
          factors' path costs r (d_in + d_out) per token, forward and backward, and the frozen W needs no weight
          gradient: a step costs less than fine-tuning W.
    SSF   (Lian et al. 2022, arXiv 2210.08823) after an op (dense, convolution, normalisation): y' = y * s + t per
          output channel, s (`<op>.ssf_scale`) starting at 1 and t (`<op>.ssf_shift`) at 0. An op gets exactly
          the parts its own weights absorb when merged: a dense layer or convolution with a bias both (into its
          kernel's output channels and its bias), a normalisation a scale where it has one and a shift where it
          has a bias. A dense layer or convolution without a bias gets none: in every family here such an op
          feeds a normalisation (ResNet's conv -> BatchNorm), which cancels a per-channel scale and shift before
          it while it normalises with batch statistics (they would never train) and, on running statistics, is a
          per-channel affine map itself, so the SSF after the normalisation expresses whatever one before it
          could; and its shift could not be merged into an op without a bias.

Both keep the layer object, and so every path it had: its class becomes a subclass made once per class
(`LoRALinear`, `SSFConv`, ...) whose `__call__` adds the new term, and the new parameters are attributes of the same
module. `units.3.attn.query.kernel` stays where it is (transferred weights and exports keep their names); the
factors sit beside it. Ops outside the units (the head) are never touched; neither are layers of other classes
(e.g. ResNetV2's weight-standardised StdConv, whose kernel is standardised at every call and so could not absorb
either addition).

The merges are pure functions over the flat dotted-path params dict (the run's and the checkpoints' format): the
same dict with the added paths gone and their effect folded into the layers' own weights, which the plain
architecture (models.build) then loads and runs with the same outputs, up to float rounding.
"""
from __future__ import annotations

import functools
import re

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

LORA_A, LORA_B = "lora.lora_a", "lora.lora_b"  # leaves under an adapted layer
SSF_SCALE, SSF_SHIFT = "ssf_scale", "ssf_shift"
NORMS = (nnx.BatchNorm, nnx.LayerNorm, nnx.GroupNorm, nnx.RMSNorm)


def is_lora(path: str) -> bool:
    """Whether the parameter at dotted `path` is a LoRA factor (`units.3.attn.query.lora.lora_a`)."""
    return path.endswith(("." + LORA_A, "." + LORA_B))


def is_ssf(path: str) -> bool:
    """Whether the parameter at dotted `path` is an SSF scale or shift (`units.1.bn1.ssf_shift`)."""
    return path.rsplit(".", 1)[-1] in (SSF_SCALE, SSF_SHIFT)


def _unit_modules(model) -> list[tuple[str, nnx.Module]]:
    """(dotted path, module) of every module inside the depth units, in path order."""
    found = [(".".join(map(str, p)), m) for p, m in nnx.iter_modules(model) if p and p[0] == "units"]
    return sorted(found, key=lambda item: item[0])


def _pair(v) -> tuple[int, ...]:
    return (1, 1) if v is None else (v, v) if isinstance(v, int) else tuple(v)


def is_1x1(conv: nnx.Conv) -> bool:
    """A 2-D 1x1 convolution LoRA can sit beside: dense over channels (no groups, no input dilation, no padding),
    so that it is x[:, ::sh, ::sw] @ kernel. 'SAME' and 'VALID' pad a 1x1 kernel by nothing."""
    pad = conv.padding
    no_pad = pad in ("SAME", "VALID") if isinstance(pad, str) else all(p == 0 for p in jax.tree.leaves(pad))
    return (tuple(conv.kernel_size) == (1, 1) and conv.feature_group_count == 1 and no_pad
            and _pair(conv.input_dilation) == (1, 1))


def lora_targets(model, targets: str, convs: bool) -> list[tuple[str, nnx.Module]]:
    """The layers LoRA adapts: every `nnx.Linear` inside the units (and every 1x1 `nnx.Conv` with `convs`) whose
    dotted module path (`units.3.attn.query`) the regex `targets` matches somewhere (re.search)."""
    pattern = re.compile(targets)
    out = []
    for path, m in _unit_modules(model):
        kind_ok = isinstance(m, nnx.Linear) or (convs and isinstance(m, nnx.Conv) and is_1x1(m))
        if kind_ok and not hasattr(m, "lora") and pattern.search(path):
            out.append((path, m))
    return out


@functools.cache
def lora_class(cls: type) -> type:
    """`cls` (nnx.Linear, nnx.Conv or a subclass) with (alpha / r) (x A) B added to its output."""
    conv = issubclass(cls, nnx.Conv)

    def __call__(self, x, *args, **kwargs):
        y = cls.__call__(self, x, *args, **kwargs)
        if conv:
            sh, sw = _pair(self.strides)
            x = x[..., ::sh, ::sw, :]
        return y + (self.lora_scale * self.lora(x)).astype(y.dtype)

    return type(f"LoRA{cls.__name__}", (cls,), {"__call__": __call__, "__module__": __name__,
                                                "__doc__": f"{cls.__name__} with a LoRA update (models/peft.py)."})


def add_lora(model, *, rank: int, alpha: float, targets: str, convs: bool, seed) -> list[str]:
    """Adds LoRA factors to `model`'s target layers (lora_targets), in place; returns their module paths. Each A is
    drawn He-uniform over its d_in (flax's LoRA default: U(-b, b), b = sqrt(6 / d_in)) from numpy's generator at
    `seed` (an int or a sequence of ints), layer after layer in path order: the same seed gives the same factors
    (a resumed run rebuilds the tree it checkpointed), at no compilation per shape."""
    rng = np.random.default_rng(seed)
    unused = nnx.Rngs(0)  # nnx.LoRA hands its initialisers keys; these draw from `rng` instead
    done = []
    for path, m in lora_targets(model, targets, convs):
        bound = np.sqrt(6.0 / m.in_features)
        a = rng.uniform(-bound, bound, (m.in_features, rank)).astype(m.param_dtype)
        m.__class__ = lora_class(type(m))
        m.lora = nnx.LoRA(m.in_features, rank, m.out_features, param_dtype=m.param_dtype, rngs=unused,
                          a_initializer=lambda *_, a=a: jnp.asarray(a),
                          b_initializer=lambda _, shape, dtype: jnp.asarray(np.zeros(shape, dtype)))
        m.lora_scale = float(alpha) / rank
        done.append(path)
    return done


def _matmul(a, b):
    """a @ b at full float32 precision: numpy's for host arrays, XLA's HIGHEST for device arrays (an accelerator's
    default may round the inputs to bfloat16 or TF32)."""
    if isinstance(a, jax.Array) or isinstance(b, jax.Array):
        return jnp.matmul(a, b, precision=jax.lax.Precision.HIGHEST)
    return np.matmul(a, b)


def merge_lora(params: dict, alpha: float) -> dict:
    """The flat params with every adapted kernel W replaced by W + (alpha / r) A B (a 1x1 convolution's kernel
    takes it reshaped to (1, 1, d_in, d_out)) and the factors' paths dropped. Host arrays stay numpy's, device
    arrays XLA's (placed as the run placed them)."""
    out = {k: v for k, v in params.items() if not is_lora(k)}
    for key, a in params.items():
        if key.endswith("." + LORA_A):
            layer = key[:-len(LORA_A) - 1]
            kernel = params[layer + ".kernel"]
            delta = _matmul(a, params[f"{layer}.{LORA_B}"]) * (float(alpha) / a.shape[-1])
            out[layer + ".kernel"] = kernel + delta.reshape(kernel.shape).astype(kernel.dtype)
    return out


def _feature_last(m: nnx.Module) -> bool:
    """Whether a normalisation's per-channel parameters act on the last axis (the channels of NHWC and tokens)."""
    axes = getattr(m, "feature_axes", getattr(m, "axis", getattr(m, "feature_axis", -1)))
    return axes in (-1, (-1,), [-1])


def ssf_slots(m: nnx.Module) -> tuple[int, bool, bool] | None:
    """(channels, scale, shift) SSF adds after op `m`; None where it adds nothing (not an op it knows, no part
    the op could absorb, or a normalisation over another axis than the last)."""
    if isinstance(m, (nnx.Linear, nnx.Conv)):  # without a bias: nothing (a normalisation follows; module doc)
        return (int(m.out_features), True, True) if m.use_bias else None
    if isinstance(m, NORMS) and _feature_last(m):
        scale, bias = getattr(m, "scale", None), getattr(m, "bias", None)
        if scale is None and bias is None:
            return None
        return int((scale if scale is not None else bias).shape[-1]), scale is not None, bias is not None
    return None


@functools.cache
def ssf_class(cls: type) -> type:
    """`cls` with its output scaled and shifted per channel (y * ssf_scale + ssf_shift, either may be None)."""

    def __call__(self, x, *args, **kwargs):
        y = cls.__call__(self, x, *args, **kwargs)
        if self.ssf_scale is not None:
            y = y * self.ssf_scale[...].astype(y.dtype)
        if self.ssf_shift is not None:
            y = y + self.ssf_shift[...].astype(y.dtype)
        return y

    return type(f"SSF{cls.__name__}", (cls,), {"__call__": __call__, "__module__": __name__,
                                               "__doc__": f"{cls.__name__} followed by SSF (models/peft.py)."})


def add_ssf(model) -> list[str]:
    """Adds an SSF scale and/or shift after every op inside `model`'s units (ssf_slots), in place; returns the
    paths of the ops."""
    done = []
    for path, m in _unit_modules(model):
        slots = None if hasattr(m, SSF_SCALE) else ssf_slots(m)
        if slots is None:
            continue
        channels, scale, shift = slots
        m.__class__ = ssf_class(type(m))
        m.ssf_scale = nnx.Param(jnp.asarray(np.ones(channels, np.float32))) if scale else None
        m.ssf_shift = nnx.Param(jnp.asarray(np.zeros(channels, np.float32))) if shift else None
        done.append(path)
    return done


def merge_ssf(params: dict) -> dict:
    """The flat params with every op's SSF folded into it and the SSF paths dropped: a kernel's output channels
    (last axis) or a normalisation's scale times s; its bias b * s + t."""
    out = {k: v for k, v in params.items() if not is_ssf(k)}
    ops = sorted({k.rsplit(".", 1)[0] for k in params if is_ssf(k)})
    for op in ops:
        s, t = params.get(f"{op}.{SSF_SCALE}"), params.get(f"{op}.{SSF_SHIFT}")
        weight = next((f"{op}.{w}" for w in ("kernel", "scale") if f"{op}.{w}" in params), None)
        if s is not None:
            if weight is None:
                raise ValueError(f"{op} has an SSF scale but no kernel or scale to fold it into")
            out[weight] = params[weight] * s.astype(params[weight].dtype)
        if f"{op}.bias" in params:
            b = params[f"{op}.bias"]
            b = b * s.astype(b.dtype) if s is not None else b
            out[f"{op}.bias"] = b + t.astype(b.dtype) if t is not None else b
        elif t is not None:
            raise ValueError(f"{op} has an SSF shift but no bias to fold it into")
    return out

