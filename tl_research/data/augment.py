"""On-device augmentation: an ordered list of ops, each a short string, applied to a normalised batch.

Grammar: every op is `name` or `name(a)` or `name(a, b)`, with numbers as arguments; a missing argument
takes its default. `config.augment` is a tuple of such strings, applied in order, e.g.

    ("flip", "crop(4)")                                   the CIFAR recipe
    ("rrc(0.08)", "flip", "jitter(0.4)")                  the ImageNet (Inception) recipe
    ("flip", "rotate(15)", "zoom(0.1)", "translate(0.1)", "jitter(0.2)", "mixup(0.2)")

| op                    | default    | what it does, per example unless said                                      |
|-----------------------|------------|----------------------------------------------------------------------------|
| flip(p)               | 0.5        | mirror left-right with probability p                                       |
| rotate(deg)           | 15         | rotate about the centre by an angle uniform in [-deg, deg] degrees         |
| zoom(a)               | 0.1        | scale about the centre by a factor uniform in [1 - a, 1 + a] (>1 magnifies) |
| rrc(min, max)         | 0.08, 1    | random-resized crop: a box of area fraction U(min, max), aspect ratio      |
|                       |            | log-uniform in [3/4, 4/3], at a random place, resized to the full size     |
| crop(pad)             | 4          | pad by `pad` pixels, crop a random window of the original size (a whole-   |
|                       |            | pixel shift in [-pad, pad] on each axis)                                   |
| translate(f)          | 0.1        | shift by a whole number of pixels, up to f of the height / width           |
| jitter(s)             | 0.2        | colour jitter: brightness shift U(-s, s) (in normalised units), contrast   |
|                       |            | and saturation (3 channels only) factors U(1 - s, 1 + s), in that order    |
| mixup(alpha)          | 0.2        | per batch: lambda ~ Beta(alpha, alpha) and a random permutation; images    |
|                       |            | and targets become lambda * x + (1 - lambda) * x[perm] (Zhang et al. 2018, |
|                       |            | arXiv 1710.09412)                                                          |

The geometric ops (flip, rotate, zoom, rrc, crop, translate) are affine maps. Consecutive ones are composed
into one matrix and the image is resampled once, bilinearly, with zeros outside the image (the dataset
mean, as images are normalised); whole-pixel shifts and flips land on pixel centres and are exact.

Randomness: `apply` splits its key into one key per example (`jax.random.split`), draws each example's
random numbers from its own key and runs the ops under `vmap`. With `jax_threefry_partitionable` on, the
result for a key is the same whether the batch is on one device or sharded over many.
"""
from __future__ import annotations

import dataclasses
import math
import re

import jax
import jax.numpy as jnp
import numpy as np

from tl_research.core.errors import ConfigError


@dataclasses.dataclass(frozen=True)
class Op:
    name: str
    args: tuple[float, ...]

    def __str__(self) -> str:
        return f"{self.name}({', '.join(f'{a:g}' for a in self.args)})"


# name -> (defaults, check(args) -> error message or "")
_SPECS: dict[str, tuple[tuple[float, ...], object]] = {
    "flip": ((0.5,), lambda a: "" if 0 <= a[0] <= 1 else "p in [0, 1]"),
    "rotate": ((15.0,), lambda a: "" if 0 <= a[0] <= 180 else "deg in [0, 180]"),
    "zoom": ((0.1,), lambda a: "" if 0 <= a[0] < 1 else "a in [0, 1)"),
    "rrc": ((0.08, 1.0), lambda a: "" if 0 < a[0] <= a[1] <= 1 else "0 < min <= max <= 1"),
    "crop": ((4.0,), lambda a: "" if a[0] >= 0 and a[0] == int(a[0]) else "a whole number of pixels >= 0"),
    "translate": ((0.1,), lambda a: "" if 0 <= a[0] < 1 else "f in [0, 1)"),
    "jitter": ((0.2,), lambda a: "" if 0 <= a[0] <= 1 else "s in [0, 1]"),
    "mixup": ((0.2,), lambda a: "" if a[0] > 0 else "alpha > 0"),
}
GEOMETRIC = ("flip", "rotate", "zoom", "rrc", "crop", "translate")
GRAMMAR = ("name or name(number, ...), with name one of: flip(p=0.5), rotate(deg=15), zoom(a=0.1), "
           "rrc(min=0.08, max=1), crop(pad=4), translate(f=0.1), jitter(s=0.2), mixup(alpha=0.2)")
_OP_RE = re.compile(r"^\s*([a-z_]+)\s*(?:\((.*)\))?\s*$")


def parse(ops) -> tuple[Op, ...]:
    """Strings (see the module docstring) -> Ops with every argument filled in; ConfigError("augment", ...)
    on anything else. Already-parsed Ops pass through."""
    if isinstance(ops, (str, Op)):
        ops = (ops,)
    out = []
    for op in ops:
        if isinstance(op, Op):
            out.append(op)
            continue
        m = _OP_RE.match(op) if isinstance(op, str) else None
        if not m or m.group(1) not in _SPECS:
            raise ConfigError("augment", op, GRAMMAR)
        name, arg_text = m.group(1), m.group(2)
        defaults, check = _SPECS[name]
        args = []
        if arg_text is not None and arg_text.strip():
            for a in arg_text.split(","):
                try:
                    v = float(a)
                except ValueError:
                    raise ConfigError("augment", op, GRAMMAR, why=f"{a.strip()!r} is not a number") from None
                if not math.isfinite(v):
                    raise ConfigError("augment", op, GRAMMAR, why="arguments must be finite")
                args.append(v)
        if len(args) > len(defaults):
            raise ConfigError("augment", op, GRAMMAR, why=f"{name} takes at most {len(defaults)} argument(s)")
        args = tuple(args) + defaults[len(args):]
        problem = check(args)
        if problem:
            raise ConfigError("augment", op, GRAMMAR, why=f"{name} needs {problem}")
        out.append(Op(name, args))
    return tuple(out)


# ---------------------------------------------------------------------------------------------------------
# The affine sampler. A matrix maps output pixel coordinates (row, col, 1) to the source coordinates read.


def warp(image: jax.Array, matrix: jax.Array) -> jax.Array:
    """Resamples one image (H, W, C): out[i, j] = image at matrix @ (i, j, 1), bilinear, 0 outside the image."""
    h, w = image.shape[:2]
    rows, cols = jnp.meshgrid(jnp.arange(h, dtype=jnp.float32), jnp.arange(w, dtype=jnp.float32),
                              indexing="ij")
    src_r = matrix[0, 0] * rows + matrix[0, 1] * cols + matrix[0, 2]
    src_c = matrix[1, 0] * rows + matrix[1, 1] * cols + matrix[1, 2]
    # the image covers [-0.5, H - 0.5] x [-0.5, W - 0.5] (pixel centres at integers): zero outside it,
    # the edge pixels repeated in the half-pixel border
    inside = (src_r >= -0.5) & (src_r <= h - 0.5) & (src_c >= -0.5) & (src_c <= w - 0.5)
    r0, c0 = jnp.floor(src_r), jnp.floor(src_c)
    fr, fc = (src_r - r0)[..., None], (src_c - c0)[..., None]
    r0, c0 = r0.astype(jnp.int32), c0.astype(jnp.int32)
    r1, c1 = jnp.clip(r0 + 1, 0, h - 1), jnp.clip(c0 + 1, 0, w - 1)
    r0, c0 = jnp.clip(r0, 0, h - 1), jnp.clip(c0, 0, w - 1)
    top = image[r0, c0] * (1 - fc) + image[r0, c1] * fc
    bottom = image[r1, c0] * (1 - fc) + image[r1, c1] * fc
    return jnp.where(inside[..., None], top * (1 - fr) + bottom * fr, 0.0)


def _affine(a, b, c, d, tr, tc):
    return jnp.array([[a, b, tr], [c, d, tc], [0.0, 0.0, 1.0]], dtype=jnp.float32)


def _about_centre(linear: jax.Array, h: int, w: int) -> jax.Array:
    """src = L (out - centre) + centre, centre = ((H-1)/2, (W-1)/2)."""
    centre = jnp.array([(h - 1) / 2, (w - 1) / 2], dtype=jnp.float32)
    t = centre - linear @ centre
    return _affine(linear[0, 0], linear[0, 1], linear[1, 0], linear[1, 1], t[0], t[1])


def shift_matrix(dr, dc) -> jax.Array:
    """Moves the content by (dr, dc) pixels (down, right)."""
    return _affine(1.0, 0.0, 0.0, 1.0, -dr, -dc)


def rotation_matrix(degrees, h: int, w: int) -> jax.Array:
    """Turns the content counter-clockwise (as displayed, rows down) by `degrees` about the centre."""
    t = jnp.deg2rad(degrees)
    cos, sin = jnp.cos(t), jnp.sin(t)
    return _about_centre(jnp.array([[cos, sin], [-sin, cos]], dtype=jnp.float32), h, w)


# Each per-example op reads its random numbers from `u`, its slice of its example's uniform draws.


def _flip(op, u, h, w):
    s = jnp.where(u[0] < op.args[0], -1.0, 1.0)
    return _affine(1.0, 0.0, 0.0, s, 0.0, (1 - s) * (w - 1) / 2)


def _rotate(op, u, h, w):
    return rotation_matrix((2 * u[0] - 1) * op.args[0], h, w)


def _zoom(op, u, h, w):
    s = 1 + (2 * u[0] - 1) * op.args[0]
    return _about_centre(jnp.eye(2, dtype=jnp.float32) / s, h, w)


def _rrc(op, u, h, w):
    area = op.args[0] + u[0] * (op.args[1] - op.args[0])
    ratio = jnp.exp(math.log(3 / 4) + u[1] * math.log(16 / 9))  # width / height, log-uniform
    ch = jnp.minimum(h * jnp.sqrt(area / ratio), h)
    cw = jnp.minimum(w * jnp.sqrt(area * ratio), w)
    top, left = u[2] * (h - ch), u[3] * (w - cw)  # box edges in pixel-extent units
    sr, sc = ch / h, cw / w
    # output pixel centre i + 0.5 maps to top + (i + 0.5) * ch / h, in pixel-centre coordinates - 0.5
    return _affine(sr, 0.0, 0.0, sc, top + 0.5 * sr - 0.5, left + 0.5 * sc - 0.5)


def _crop(op, u, h, w):
    pad = int(op.args[0])
    d = jnp.clip(jnp.floor(u[:2] * (2 * pad + 1)), 0, 2 * pad) - pad  # uniform in {-pad, ..., pad}
    return shift_matrix(d[0], d[1])


def _translate(op, u, h, w):
    d = (2 * u[:2] - 1) * op.args[0]
    return shift_matrix(jnp.round(d[0] * h), jnp.round(d[1] * w))


_MATRICES = {"flip": _flip, "rotate": _rotate, "zoom": _zoom, "rrc": _rrc, "crop": _crop,
             "translate": _translate}
_DRAWS = {"flip": 1, "rotate": 1, "zoom": 1, "rrc": 4, "crop": 2, "translate": 2, "jitter": 3}



def draws(op: Op) -> int:
    """How many uniform numbers per example `op` reads."""
    return _DRAWS.get(op.name, 0)


def matrix(op: Op, u: jax.Array, h: int, w: int) -> jax.Array:
    """The map (output pixel -> source pixel) of one geometric op from its `draws(op)` uniforms: for ops that
    must move masks and boxes with the image (tasks/dense/augment.py)."""
    return _MATRICES[op.name](op, u, h, w)


# ---------------------------------------------------------------------------------------------------------
# Pixel ops.

# a host array: a device array here would start JAX's backend on import, before a launcher forks
_LUMA = np.array([0.299, 0.587, 0.114], dtype=np.float32)  # ITU-R 601


def _jitter(op, u, image):
    s = op.args[0]
    image = image + (2 * u[0] - 1) * s
    mean = jnp.mean(image)
    image = (image - mean) * (1 + (2 * u[1] - 1) * s) + mean
    if image.shape[-1] == 3:
        grey = (image @ _LUMA)[..., None]
        image = grey + (image - grey) * (1 + (2 * u[2] - 1) * s)
    return image


def recolour(op: Op, u: jax.Array, image: jax.Array) -> jax.Array:
    """One pixel op (jitter) on one image, from its `draws(op)` uniforms."""
    return _jitter(op, u, image)


def beta_symmetric(key: jax.Array, alpha: float) -> jax.Array:
    """One draw of Beta(alpha, alpha) by Johnk's rejection method (X = U^(1/a), Y = V^(1/a), accept when
    X + Y <= 1, return X / (X + Y)), in log space. Exact, and far cheaper to compile than
    jax.random.beta's gamma sampler; expects about Gamma(2a + 1) / Gamma(a + 1)^2 tries (1.05 at a = 0.2,
    2 at a = 1)."""

    def body(state):
        key, _, _ = state
        key, sub = jax.random.split(key)
        u = jax.random.uniform(sub, (2,), minval=jnp.finfo(jnp.float32).tiny)
        log_x, log_y = jnp.log(u) / alpha
        log_sum = jnp.logaddexp(log_x, log_y)
        return key, log_sum <= 0, jnp.exp(log_x - log_sum)

    init = (key, jnp.array(False), jnp.array(0.5, jnp.float32))
    return jax.lax.while_loop(lambda state: ~state[1], body, init)[2]


def _mixup(op, key, images, targets):
    k_lam, k_perm = jax.random.split(key)
    lam = beta_symmetric(k_lam, op.args[0])
    perm = jax.random.permutation(k_perm, images.shape[0])
    return (lam * images + (1 - lam) * images[perm], lam * targets + (1 - lam) * targets[perm])


def _per_example(ops, image, u):
    h, w = image.shape[:2]
    matrix = None
    for op in ops:
        mine, u = u[:_DRAWS[op.name]], u[_DRAWS[op.name]:]
        if op.name in _MATRICES:
            m = _MATRICES[op.name](op, mine, h, w)
            # ops apply in order, so the first op's inverse map is applied last: M = M1 @ M2 @ ...
            matrix = m if matrix is None else matrix @ m
        else:
            if matrix is not None:
                image, matrix = warp(image, matrix), None
            image = _jitter(op, mine, image)
    return image if matrix is None else warp(image, matrix)


def apply(ops, images: jax.Array, targets: jax.Array, key: jax.Array) -> tuple[jax.Array, jax.Array]:
    """Augments a batch: images (B, H, W, C) float32, normalised; targets (B, K) float32 (one-hot or soft).

    `ops` are strings (parsed here, at trace time) or `parse`d Ops. Pure and jit-traceable; the same key
    gives the same result on any number of devices.
    """
    ops = parse(ops)
    images = jnp.asarray(images, jnp.float32)
    targets = jnp.asarray(targets, jnp.float32)
    if not ops:
        return images, targets
    b = images.shape[0]
    keys = jax.random.split(key, b + 1)  # one key per example, one for the batch-level ops
    segments: list[list[Op]] = [[]]  # per-example ops between batch-level ops (mixup)
    for op in ops:
        segments.append([]) if op.name == "mixup" else segments[-1].append(op)
    mixups = [op for op in ops if op.name == "mixup"]
    # every random number an example needs, drawn at once from its key (one random-bit computation per
    # example instead of one per op keeps compilation fast)
    draws = [sum(_DRAWS[op.name] for op in segment) for segment in segments]
    u = jax.vmap(lambda k: jax.random.uniform(k, (max(sum(draws), 1),)))(keys[:b])
    start = 0
    for i, segment in enumerate(segments):
        if segment:
            mine = u[:, start:start + draws[i]]
            images = jax.vmap(lambda im, v: _per_example(segment, im, v))(images, mine)
            start += draws[i]
        if i < len(mixups):
            images, targets = _mixup(mixups[i], jax.random.fold_in(keys[b], i), images, targets)
    return images, targets
