"""The depth units' outputs as feature maps (B, h, w, C): what dense heads (segmentation decoders, detection
heads) read, whatever the backbone family.

A CNN unit's output already is one. A ViT unit's output is a token sequence (B, 1 + h*w, D): the class token
is dropped and the patch tokens are laid back on their (H/p, W/p) grid, row-major as the patch embedding
flattened them. A unit whose output is a vector (VGG's fc6/fc7 unit) has no map; dense heads cannot read it.
"""
from __future__ import annotations

import math
from typing import Sequence

import jax
import jax.numpy as jnp
from flax import nnx


def token_grid(num_tokens: int, image_hw: tuple[int, int]) -> tuple[int, int] | None:
    """(h, w) of the patch grid of an image of size image_hw whose unit emits `num_tokens` tokens (one of
    them the class token), or None when no square patch size gives that count."""
    height, width = image_hw
    patches = num_tokens - 1
    if patches <= 0:
        return None
    stride = math.sqrt(height * width / patches)
    grid = (round(height / stride), round(width / stride))
    return grid if grid[0] * grid[1] == patches else None


def as_map(x: jax.Array, image_hw: tuple[int, int]) -> jax.Array | None:
    """A unit's output as (B, h, w, C); None for a vector output."""
    if x.ndim == 4:
        return x
    if x.ndim == 3:
        grid = token_grid(x.shape[1], image_hw)
        if grid is None:
            raise ValueError(f"{x.shape[1]} tokens do not form a class token + patch grid of a "
                             f"{image_hw[0]}x{image_hw[1]} image")
        return x[:, 1:].reshape(x.shape[0], grid[0], grid[1], x.shape[2])
    return None


def unit_map_shapes(model, image_shape: Sequence[int]) -> list[tuple[int, int, int] | None]:
    """(h, w, C) of every depth unit's feature map for one input of shape (H, W, C_in); None for a unit
    without a map. Traced abstractly (jax.eval_shape): nothing is computed or allocated."""
    graphdef, state = nnx.split(model)

    def run(state, x):
        _, outs = nnx.merge(graphdef, state).features(x, return_units=True)
        return outs

    image = jax.ShapeDtypeStruct((1, *image_shape), jnp.float32)
    outs = jax.eval_shape(run, state, image)
    shapes = []
    for o in outs:
        m = jax.eval_shape(lambda y: as_map(y, tuple(image_shape[:2])), o) if o.ndim in (3, 4) else None
        shapes.append(None if m is None else tuple(m.shape[1:]))
    return shapes


def resize(x: jax.Array, hw: tuple[int, int]) -> jax.Array:
    """Bilinear resize of (B, h, w, C) to (B, *hw, C); the identity when the size already matches."""
    if tuple(x.shape[1:3]) == tuple(hw):
        return x
    return jax.image.resize(x, (x.shape[0], *hw, x.shape[3]), method="bilinear", antialias=False)
