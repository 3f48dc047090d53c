"""The convolution every architecture uses: `nnx.Conv` whose 2-D NHWC convolutions take a faster exact form on
the CPU backend where XLA's CPU convolution is far off its FLOPs, and XLA's own convolution everywhere else.

Measured on XLA's CPU backend (benchmarks/backward_conv.py prints the figures of the machine it runs on):
- Depthwise convolutions (MobileNet, EfficientNet) run 3-65x slower, forward and backward, than the same sum
  written as one shifted multiply-add per kernel tap. On CPU they always take that form.
- Dense convolutions with a tiny output (at most 3x3 positions: ResNet's last stage at 64 px, any network's
  top at small inputs) run up to 50x slower than an explicit patch matrix times the kernel (im2col), e.g.
  300 ms against 5 ms for a 3x3 512->512 convolution on a 2x2 map, and their strided input gradient up to
  20x slower. Those take the patch form.
Both forms compute the same sums in another order (differences of float rounding, ~1e-6 relative), and their
gradients are those of pads, slices and matrix products, which XLA's CPU backend runs near its FLOP rate.
Accelerators keep XLA's convolution: cuDNN and TPU convolutions have no such gaps.

`TL_RESEARCH_CONV=xla` in the environment makes every convolution XLA's own (to measure against, or to
reproduce a run made before these forms existed to the last bit).
"""
from __future__ import annotations

import os

import jax
import jax.numpy as jnp
from flax import nnx
from jax import lax

ENV = "TL_RESEARCH_CONV"
MAX_PATCH_OUTPUT = 9  # output positions (oh * ow) at or under which a dense convolution takes the patch form


def conv_general_dilated(lhs, rhs, window_strides, padding, lhs_dilation=None, rhs_dilation=None,
                         dimension_numbers=None, feature_group_count=1, precision=None,
                         preferred_element_type=None, **kwargs):
    """`lax.conv_general_dilated`, in the tap or patch form where `form` picks one (the same arguments)."""
    chosen = form(lhs, rhs, window_strides, padding, lhs_dilation, rhs_dilation, dimension_numbers,
                  feature_group_count, kwargs)
    if chosen is None:
        extra = {} if preferred_element_type is None else {"preferred_element_type": preferred_element_type}
        return lax.conv_general_dilated(lhs, rhs, window_strides, padding, lhs_dilation=lhs_dilation,
                                        rhs_dilation=rhs_dilation, dimension_numbers=dimension_numbers,
                                        feature_group_count=feature_group_count, precision=precision,
                                        **extra, **kwargs)
    name, pads = chosen
    xp = jnp.pad(lhs, ((0, 0), pads[0], pads[1], (0, 0)))
    if name == "taps":
        return _taps(xp, rhs, tuple(window_strides), preferred_element_type)
    return _patches(xp, rhs, tuple(window_strides), precision, preferred_element_type)


def form(lhs, rhs, strides, padding, lhs_dilation, rhs_dilation, dimension_numbers, groups, kwargs=None):
    """("taps" | "patches", explicit (lo, hi) pads of H and W) where a faster form applies, else None."""
    if os.environ.get(ENV, "auto") == "xla" or jax.default_backend() != "cpu":
        return None
    if lhs.ndim != 4 or any(v is not None for v in (kwargs or {}).values()):
        return None
    if any(d not in (None, 1) and tuple(d) != (1, 1) for d in (lhs_dilation, rhs_dilation)):
        return None
    if dimension_numbers is not None and (lax.conv_dimension_numbers(lhs.shape, rhs.shape, dimension_numbers)
                                          != lax.conv_dimension_numbers(lhs.shape, rhs.shape,
                                                                        ("NHWC", "HWIO", "NHWC"))):
        return None
    kh, kw, per_group, c_out = rhs.shape
    c_in = lhs.shape[3]
    pads = (lax.padtype_to_pads(lhs.shape[1:3], (kh, kw), strides, padding) if isinstance(padding, str)
            else [tuple(p) for p in padding])
    if any(p < 0 for pair in pads for p in pair):
        return None
    if groups == c_in and per_group == 1 and c_out == c_in and groups > 1:
        return "taps", pads
    oh, ow = (_out(lhs.shape[1 + a], pads[a], rhs.shape[a], strides[a]) for a in (0, 1))
    if groups == 1 and kh * kw > 1 and oh * ow <= MAX_PATCH_OUTPUT:
        return "patches", pads
    return None


def _out(size: int, pad: tuple, k: int, stride: int) -> int:
    return (size + pad[0] + pad[1] - k) // stride + 1


def _tap(xp, i: int, j: int, oh: int, ow: int, strides: tuple):
    """The padded input's values under kernel tap (i, j) at every output position."""
    return xp[:, i:i + (oh - 1) * strides[0] + 1:strides[0], j:j + (ow - 1) * strides[1] + 1:strides[1], :]


def _taps(xp, rhs, strides: tuple, out_dtype):
    """A depthwise convolution as one multiply-add per kernel tap."""
    kh, kw = rhs.shape[:2]
    oh, ow = (_out(xp.shape[1 + a], (0, 0), rhs.shape[a], strides[a]) for a in (0, 1))
    dtype = out_dtype or jnp.result_type(xp, rhs)
    acc = _accumulator(dtype)
    y = jnp.zeros((xp.shape[0], oh, ow, rhs.shape[3]), acc)
    for i in range(kh):
        for j in range(kw):
            y = y + _tap(xp, i, j, oh, ow, strides).astype(acc) * rhs[i, j, 0].astype(acc)
    return y.astype(dtype)


def _accumulator(dtype):
    """float32 sums for 16-bit floats (bfloat16 compute), as XLA's convolution accumulates them."""
    return jnp.float32 if jnp.issubdtype(dtype, jnp.floating) and jnp.finfo(dtype).bits < 32 else dtype


def _patches(xp, rhs, strides: tuple, precision, out_dtype):
    """A dense convolution as its patch matrix (B, oh, ow, kh*kw*c_in) times the kernel as (kh*kw*c_in, c_out):
    the rows of both are ordered by kernel row, kernel column, input channel."""
    kh, kw, c_in, c_out = rhs.shape
    oh, ow = (_out(xp.shape[1 + a], (0, 0), rhs.shape[a], strides[a]) for a in (0, 1))
    patches = jnp.concatenate([_tap(xp, i, j, oh, ow, strides) for i in range(kh) for j in range(kw)], axis=-1)
    dtype = out_dtype or jnp.result_type(xp, rhs)
    y = lax.dot_general(patches, rhs.reshape(kh * kw * c_in, c_out), (((3,), (0,)), ((), ())),
                        precision=precision, preferred_element_type=_accumulator(dtype))
    return y.astype(dtype)


class Conv(nnx.Conv):
    """`nnx.Conv` with `conv_general_dilated` above (the same parameters, names and checkpoints)."""

    def __init__(self, *args, **kwargs):
        kwargs.setdefault("conv_general_dilated", conv_general_dilated)
        super().__init__(*args, **kwargs)
