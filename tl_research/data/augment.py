"""On-device augmentation: an ordered list of ops, each a short string, applied to a normalised batch.

Grammar: every op is `name` or `name(a)` or `name(a, b)`, with numbers as arguments, each given by position or
by its name (`cutmix(alpha=1, switch=0.5)`, positions first); a missing argument takes its default.
`config.augment` is a tuple of such strings, applied in order, e.g.

    ("flip", "crop(4)")                                   the CIFAR recipe
    ("rrc(0.08)", "flip", "jitter(0.4)")                  the ImageNet (Inception) recipe
    ("flip", "rotate(15)", "zoom(0.1)", "translate(0.1)", "jitter(0.2)", "mixup(0.2)")
    ("rrc(0.08)", "flip", "randaugment(n=2, m=9)", "mixup(0.8)", "cutmix(1.0, switch=0.5)")   timm's (DeiT's)

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
| cutmix(alpha, switch) | 1, 0.5     | per batch: lambda ~ Beta(alpha, alpha), a box of side sqrt(1 - lambda) of  |
|                       |            | the height and width centred at a uniform pixel (clipped to the image) is  |
|                       |            | pasted from x[perm] (a random permutation, as mixup's; timm pairs the      |
|                       |            | reversed batch) into every image, and targets become lam * y + (1 -        |
|                       |            | lam) * y[perm] with lam = 1 - the box's actual area fraction (Yun et al.   |
|                       |            | 2019, arXiv 1905.04899; timm's rand_bbox and correct_lam). Next to a mixup |
|                       |            | op (just before or after it) the two are one op: each batch takes cutmix   |
|                       |            | with probability `switch`, else mixup (timm's Mixup(mixup_alpha,           |
|                       |            | cutmix_alpha, switch_prob)); on its own `switch` is unused                 |
| randaugment(n, m, p)  | 2, 9, 1    | RandAugment (Cubuk et al. 2020, arXiv 1909.13719): n ops, each drawn       |
|                       |            | uniformly from 14 (with replacement) and applied with probability p (1:    |
|                       |            | the paper's; timm's rand-m9-n2 uses 0.5), at magnitude m on the paper's    |
|                       |            | 0-30 scale (10: each op's reference maximum); in pixel space, see          |
|                       |            | `randaugment_layer`                                                        |

Batch-level ops (mixup, cutmix) split the per-example ops around them: those before run, the batch is mixed,
then those after run. Only the classification task applies them, and randaugment (the dense tasks cannot
mix their labels or move them through it). randaugment works on pixel values, so `apply` needs the pixel
range of the normalised images (`pixels`: the classification objective has it from the run's normalisation,
the model metadata's value range, mean and std, `pixel_values`).

The geometric ops (flip, rotate, zoom, rrc, crop, translate) are affine maps. Consecutive ones are composed
into one matrix and the image is resampled once, bilinearly, with zeros outside the image (the dataset
mean, as images are normalised); whole-pixel shifts and flips land on pixel centres and are exact.

Randomness: `apply` splits its key into one key per example (`jax.random.split`), draws each example's
random numbers from its own key and runs the ops under `vmap`; the batch-level ops draw theirs (lambda, the
box, the permutation, the mixup/cutmix switch) from one more key. With `jax_threefry_partitionable` on, the
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
    "cutmix": ((1.0, 0.5), lambda a: "" if a[0] > 0 and 0 <= a[1] <= 1 else "alpha > 0 and switch in [0, 1]"),
    "randaugment": ((2.0, 9.0, 1.0), lambda a: "" if (a[0] == int(a[0]) and 0 <= a[0] <= 16 and 0 <= a[1] <= 30
                                                      and 0 <= a[2] <= 1) else
                    "n a whole number in [0, 16], m in [0, 30], p in [0, 1]"),
}
# each op's argument names, in order (for `name=value` arguments)
_ARG_NAMES = {"flip": ("p",), "rotate": ("deg",), "zoom": ("a",), "rrc": ("min", "max"), "crop": ("pad",),
              "translate": ("f",), "jitter": ("s",), "mixup": ("alpha",), "cutmix": ("alpha", "switch"),
              "randaugment": ("n", "m", "p")}
BATCH_OPS = ("mixup", "cutmix")  # per batch, not per example: they mix examples
GEOMETRIC = ("flip", "rotate", "zoom", "rrc", "crop", "translate")
GRAMMAR = ("name or name(number, ...) or name(arg=number, ...), with name one of: " + ", ".join(
    f"{name}({', '.join(f'{a}={d:g}' for a, d in zip(_ARG_NAMES[name], _SPECS[name][0]))})" for name in _SPECS))
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
        args = _arguments(op, name, arg_text)
        if len(args) > len(defaults):
            raise ConfigError("augment", op, GRAMMAR, why=f"{name} takes at most {len(defaults)} argument(s)")
        args = tuple(defaults[i] if args.get(i) is None else args[i] for i in range(len(defaults)))
        problem = check(args)
        if problem:
            raise ConfigError("augment", op, GRAMMAR, why=f"{name} needs {problem}")
        out.append(Op(name, args))
    return tuple(out)


def _arguments(op: str, name: str, text: str | None) -> dict[int, float]:
    """An op's argument text -> {position: value}, each argument a number or `argname=number`, positions
    first; ConfigError("augment", ...) for anything else."""
    names, args, named = _ARG_NAMES[name], {}, False
    for i, a in enumerate(text.split(",") if text is not None and text.strip() else ()):
        key, _, value = a.rpartition("=")
        key = key.strip()
        if key:
            if key not in names:
                raise ConfigError("augment", op, GRAMMAR, why=f"{name} has no argument {key!r}")
            if names.index(key) in args:
                raise ConfigError("augment", op, GRAMMAR, why=f"{key} given twice")
            position, named = names.index(key), True
        elif named:
            raise ConfigError("augment", op, GRAMMAR, why="positional arguments come before named ones")
        else:
            position = i
        try:
            v = float(value)
        except ValueError:
            raise ConfigError("augment", op, GRAMMAR, why=f"{value.strip()!r} is not a number") from None
        if not math.isfinite(v):
            raise ConfigError("augment", op, GRAMMAR, why="arguments must be finite")
        args[position] = v
    return args


# ---------------------------------------------------------------------------------------------------------
# The affine sampler. A matrix maps output pixel coordinates (row, col, 1) to the source coordinates read.


def warp(image: jax.Array, matrix: jax.Array, fill=0.0) -> jax.Array:
    """Resamples one image (H, W, C): out[i, j] = image at matrix @ (i, j, 1), bilinear, `fill` outside the
    image."""
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
    return jnp.where(inside[..., None], top * (1 - fr) + bottom * fr, fill)


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
    if op.name == "randaugment":
        return RA_DRAWS * int(op.args[0])
    return _DRAWS.get(op.name, 0)


def matrix(op: Op, u: jax.Array, h: int, w: int) -> jax.Array:
    """The map (output pixel -> source pixel) of one geometric op from its `draws(op)` uniforms: for ops that
    must move masks and boxes with the image (tasks/dense/augment.py)."""
    return _MATRICES[op.name](op, u, h, w)


# ---------------------------------------------------------------------------------------------------------
# Pixel ops.

_LUMA = np.array([0.299, 0.587, 0.114], dtype=np.float32)  # ITU-R 601 (numpy: importing starts no JAX backend)


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


# ---------------------------------------------------------------------------------------------------------
# RandAugment (Cubuk et al. 2020, arXiv 1909.13719), per example, in pixel space (values 0..255).

RA_OPS = ("identity", "autocontrast", "equalize", "rotate", "solarize", "color", "posterize", "contrast",
          "brightness", "sharpness", "shear_x", "shear_y", "translate_x", "translate_y")
_RA_GEOMETRIC = ("rotate", "shear_x", "shear_y", "translate_x", "translate_y")
RA_DRAWS = 3  # per layer: which op, the sign of its magnitude, whether it applies


def pixel_values(value_range, mean, std) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """(zero, full): the normalised values of pixel values 0 and 255 per channel under the input
    normalisation (value_range, mean, std) that the steps apply (run.setup.normaliser: pixels scaled to the
    value range, then (x - mean) / std): ((lo - mean) / std, (hi - mean) / std). Tuples of floats (hashable,
    part of the objective, so of the step's key)."""
    lo, hi = (float(v) for v in value_range)
    mean, std = np.asarray(mean, np.float64).ravel(), np.asarray(std, np.float64).ravel()
    return tuple(float(v) for v in (lo - mean) / std), tuple(float(v) for v in (hi - mean) / std)


def _ra_matrix(name: str, level, sign, h: int, w: int) -> jax.Array:
    """The geometric RandAugment ops' maps at `level` = m / 10 (10: the reference's maximum): rotate 30 *
    level degrees; shear 0.3 * level (about the centre); translate 0.45 * level of the width / height
    (timm's TranslateXRel / TranslateYRel), in whole pixels; each with a random sign."""
    if name == "rotate":
        return rotation_matrix(sign * 30.0 * level, h, w)
    if name in ("shear_x", "shear_y"):
        s = sign * 0.3 * level
        linear = jnp.array([[1.0, 0.0], [s, 1.0]]) if name == "shear_x" else jnp.array([[1.0, s], [0.0, 1.0]])
        return _about_centre(linear.astype(jnp.float32), h, w)
    d = jnp.round(sign * 0.45 * level * (w if name == "translate_x" else h))
    return shift_matrix(0.0, d) if name == "translate_x" else shift_matrix(d, 0.0)


def _grey(image: jax.Array) -> jax.Array:
    """PIL's convert("L"): ITU-R 601 luma of RGB, the image itself with one channel."""
    return (image @ _LUMA)[..., None] if image.shape[-1] == 3 else image


def _blend(image, degenerate, factor):
    """PIL's ImageEnhance: degenerate + factor * (image - degenerate), exactly the image at factor 1."""
    return factor * image + (1.0 - factor) * degenerate


def _smooth(image: jax.Array) -> jax.Array:
    """PIL's SMOOTH filter (3x3, centre 5, the rest 1, / 13) on the interior; the border pixels unchanged."""
    h, w = image.shape[:2]
    total = 4 * image[1:h - 1, 1:w - 1]
    for dr in (0, 1, 2):
        for dc in (0, 1, 2):
            total = total + image[dr:h - 2 + dr, dc:w - 2 + dc]
    return image.at[1:h - 1, 1:w - 1].set(total / 13.0)


def _equalize(image: jax.Array) -> jax.Array:
    """PIL's ImageOps.equalize per channel, on the values rounded to whole levels: the cumulative histogram
    spread over 0..255 (a channel with a single level unchanged)."""
    def channel(c):
        q = jnp.clip(jnp.round(c), 0, 255).astype(jnp.int32)
        hist = jnp.zeros(256, jnp.int32).at[q.ravel()].add(1)
        last = hist[255 - jnp.argmax(hist[::-1] > 0)]  # the count of the highest level present
        step = (hist.sum() - last) // 255
        lut = jnp.minimum((step // 2 + jnp.cumsum(hist) - hist) // jnp.maximum(step, 1), 255)
        return jnp.where(step > 0, lut[q].astype(jnp.float32), c)
    return jnp.moveaxis(jax.vmap(channel, in_axes=-1)(image), 0, -1)


def _autocontrast(image: jax.Array) -> jax.Array:
    """PIL's ImageOps.autocontrast (no cutoff) per channel: its lowest value to 0, its highest to 255."""
    lo, hi = image.min((0, 1)), image.max((0, 1))
    scale = 255.0 / jnp.where(hi > lo, hi - lo, 1.0)
    return jnp.where(hi > lo, (image - lo) * scale, image)


def _ra_pixel_ops(level, sign):
    """The non-geometric ops at `level` = m / 10, as functions of a pixel image (timm's "Increasing" variants,
    the paper's ops with magnitude 0 the identity): solarize inverts the values >= 256 - 256 * level;
    posterize keeps 8 - int(4 * level) bits (the AutoAugment range [4, 8], fewer as m grows); color, contrast,
    brightness and sharpness blend with their PIL degenerate image at factor 1 +- 0.9 * level (at least 0.1)."""
    factor = jnp.maximum(1.0 + sign * 0.9 * level, 0.1)
    threshold = 256.0 - 256.0 * level
    bits = jnp.clip(8 - jnp.floor(4.0 * level), 0, 8)
    quantum = 2.0 ** (8 - bits)
    identity = lambda x: x
    return {
        "identity": identity,
        "autocontrast": _autocontrast,
        "equalize": _equalize,
        "solarize": lambda x: jnp.where(x >= threshold, 255.0 - x, x),
        "color": lambda x: _blend(x, _grey(x), factor),
        "posterize": lambda x: jnp.where(bits >= 8, x, jnp.floor(jnp.round(x) / quantum) * quantum),
        "contrast": lambda x: _blend(x, jnp.floor(jnp.mean(_grey(x)) + 0.5), factor),
        "brightness": lambda x: _blend(x, jnp.zeros_like(x), factor),
        "sharpness": lambda x: _blend(x, _smooth(x), factor),
        **{name: identity for name in _RA_GEOMETRIC},
    }


def randaugment_layer(image: jax.Array, index, level, sign, fill) -> jax.Array:
    """RandAugment op RA_OPS[index] (traced) on one pixel image (H, W, C) with values in 0..255, at `level` =
    m / 10 on the paper's scale (m in 0..30; 10 is each op's maximum in the reference implementations, which
    m > 10 extrapolates, as timm's magnitude_max and the TF reference do), with `sign` +-1 for the signed
    ops; the geometric ones fill with `fill`. The magnitude mapping is timm's (timm/data/auto_augment.py,
    `LEVEL_TO_ARG`, "Increasing" variants, from the TF reference tensorflow/tpu autoaugment.py), so that m = 0
    leaves every op with a magnitude the identity; see `_ra_matrix` and `_ra_pixel_ops`. Output in 0..255."""
    h, w = image.shape[:2]
    matrices = jnp.stack([_ra_matrix(name, level, sign, h, w) if name in _RA_GEOMETRIC
                          else jnp.eye(3, dtype=jnp.float32) for name in RA_OPS])
    geometric = jnp.array([name in _RA_GEOMETRIC for name in RA_OPS])[index]
    image = jnp.where(geometric, warp(image, matrices[index], fill), image)
    ops = _ra_pixel_ops(level, sign)
    image = jax.lax.switch(index, [ops[name] for name in RA_OPS], image)
    return jnp.clip(image, 0.0, 255.0)


def randaugment(op: Op, u: jax.Array, image: jax.Array, pixels) -> jax.Array:
    """randaugment(n, m, p) on one normalised image from its `draws(op)` uniforms: to pixel values with
    `pixels` (pixel_values), n layers (randaugment_layer), back to normalised values."""
    n, m, p = int(op.args[0]), op.args[1], op.args[2]
    if n == 0:
        return image
    if pixels is None:
        raise ValueError("randaugment needs the pixel range of the normalised images (augment.apply's pixels)")
    zero, full = (jnp.asarray(v, jnp.float32) for v in pixels)
    scale = (full - zero) / 255.0
    x = (image - zero) / scale
    fill = -zero / scale  # normalised 0: the dataset mean, as the other geometric ops fill
    for layer in range(n):
        which, sign, apply = u[RA_DRAWS * layer:RA_DRAWS * (layer + 1)]
        index = jnp.minimum(jnp.floor(which * len(RA_OPS)).astype(jnp.int32), len(RA_OPS) - 1)
        out = randaugment_layer(x, index, m / 10.0, jnp.where(sign < 0.5, -1.0, 1.0), fill)
        x = jnp.where(apply < p, out, x)
    return zero + x * scale


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


def cutmix_box(key: jax.Array, alpha: float, h: int, w: int):
    """CutMix's box for a batch of (h, w) images: lambda ~ Beta(alpha, alpha), a box of int(h * sqrt(1 -
    lambda)) by int(w * sqrt(1 - lambda)) pixels centred at a uniform pixel, clipped to the image (timm's
    rand_bbox). Returns (top, bottom, left, right) (rows top..bottom-1, columns left..right-1) and lam = 1 -
    the clipped box's area fraction, the weight of each image's own target."""
    k_lam, k_row, k_col = jax.random.split(key, 3)
    ratio = jnp.sqrt(1.0 - beta_symmetric(k_lam, alpha))
    cut_h, cut_w = (jnp.floor(h * ratio).astype(jnp.int32), jnp.floor(w * ratio).astype(jnp.int32))
    cy, cx = jax.random.randint(k_row, (), 0, h), jax.random.randint(k_col, (), 0, w)
    top, bottom = jnp.clip(cy - cut_h // 2, 0, h), jnp.clip(cy + cut_h // 2, 0, h)
    left, right = jnp.clip(cx - cut_w // 2, 0, w), jnp.clip(cx + cut_w // 2, 0, w)
    lam = 1.0 - ((bottom - top) * (right - left)).astype(jnp.float32) / (h * w)
    return (top, bottom, left, right), lam


def _cutmix(op, key, images, targets):
    k_box, k_perm = jax.random.split(key)
    (top, bottom, left, right), lam = cutmix_box(k_box, op.args[0], images.shape[1], images.shape[2])
    perm = jax.random.permutation(k_perm, images.shape[0])
    rows = jnp.arange(images.shape[1])[:, None]
    cols = jnp.arange(images.shape[2])[None, :]
    inside = (rows >= top) & (rows < bottom) & (cols >= left) & (cols < right)
    return (jnp.where(inside[None, :, :, None], images[perm], images), lam * targets + (1 - lam) * targets[perm])


_MIXERS = {"mixup": _mixup, "cutmix": _cutmix}


def _mix(group, key, images, targets):
    """One batch-level op: mixup or cutmix, or a mixup next to a cutmix: each batch one of the two, cutmix with
    the probability of the cutmix op's `switch` (timm's Mixup switch_prob)."""
    if len(group) == 1:
        return _MIXERS[group[0].name](group[0], key, images, targets)
    mixup, cutmix = sorted(group, key=lambda op: op.name != "mixup")
    k_switch, k_mix = jax.random.split(key)
    return jax.lax.cond(jax.random.uniform(k_switch) < cutmix.args[1],
                        lambda: _cutmix(cutmix, k_mix, images, targets),
                        lambda: _mixup(mixup, k_mix, images, targets))


def batch_groups(ops) -> tuple[list[list[Op]], list[list[Op]]]:
    """(segments, groups): the per-example ops between batch-level ones, and the batch-level ops, a mixup
    and a cutmix next to each other forming one group (switched, `_mix`); segment i runs before group i."""
    segments: list[list[Op]] = [[]]
    groups: list[list[Op]] = []
    for op in parse(ops):
        if op.name not in BATCH_OPS:
            segments[-1].append(op)
        elif (groups and not segments[-1] and len(groups[-1]) == 1
              and {groups[-1][0].name, op.name} == set(BATCH_OPS)):
            groups[-1].append(op)
        else:
            groups.append([op])
            segments.append([])
    return segments, groups


def _per_example(ops, image, u, pixels=None):
    h, w = image.shape[:2]
    matrix = None
    for op in ops:
        mine, u = u[:draws(op)], u[draws(op):]
        if op.name in _MATRICES:
            m = _MATRICES[op.name](op, mine, h, w)
            # ops apply in order, so the first op's inverse map is applied last: M = M1 @ M2 @ ...
            matrix = m if matrix is None else matrix @ m
        else:
            if matrix is not None:
                image, matrix = warp(image, matrix), None
            image = randaugment(op, mine, image, pixels) if op.name == "randaugment" else _jitter(op, mine, image)
    return image if matrix is None else warp(image, matrix)


def apply(ops, images: jax.Array, targets: jax.Array, key: jax.Array,
          pixels: tuple | None = None) -> tuple[jax.Array, jax.Array]:
    """Augments a batch: images (B, H, W, C) float32, normalised; targets (B, K) float32 (one-hot or soft).

    `ops` are strings (parsed here, at trace time) or `parse`d Ops. `pixels` = (zero, full): the normalised
    values of pixel values 0 and 255, per channel (`pixel_values`), which randaugment needs. Pure and
    jit-traceable; the same key gives the same result on any number of devices.
    """
    ops = parse(ops)
    images = jnp.asarray(images, jnp.float32)
    targets = jnp.asarray(targets, jnp.float32)
    if not ops:
        return images, targets
    b = images.shape[0]
    keys = jax.random.split(key, b + 1)  # one key per example, one for the batch-level ops
    segments, groups = batch_groups(ops)  # per-example ops between batch-level ops (mixup, cutmix)
    # every random number an example needs, drawn at once from its key (one random-bit computation per
    # example instead of one per op keeps compilation fast)
    counts = [sum(draws(op) for op in segment) for segment in segments]
    u = jax.vmap(lambda k: jax.random.uniform(k, (max(sum(counts), 1),)))(keys[:b])
    start = 0
    for i, segment in enumerate(segments):
        if segment:
            mine = u[:, start:start + counts[i]]
            images = jax.vmap(lambda im, v: _per_example(segment, im, v, pixels))(images, mine)
            start += counts[i]
        if i < len(groups):
            images, targets = _mix(groups[i], jax.random.fold_in(keys[b], i), images, targets)
    return images, targets
