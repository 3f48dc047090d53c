"""Vision Transformer (Dosovitskiy et al. 2021, arXiv 2010.11929) with a class token, as trained in
big_vision / the AugReg study (Steiner et al. 2022, arXiv 2106.10270): ViT-Ti/16, ViT-S/16 and ViT-B/16.

Depth units: unit 0 is the patch embedding (16x16 stride-16 conv) + class token + position embedding; units
1..depth are the encoder blocks (pre-LayerNorm attention and MLP, each residual); the last unit is the final
LayerNorm on its own, so freezing every block can still leave that normalisation trainable. ViT-B/16 has
1 + 12 + 1 = 14 units; so do S/16 and Ti/16. `vit_micro` (width 64, 4 blocks, 4 heads, MLP 128, 4x4 patches: 6
units) is no published model: it is the ViT a source can be trained from scratch on 28x28 digits in minutes on a
CPU, for experiments that compare methods on the ViT family (set `model.image_size=28`).

The position embedding is laid out for `model.image_size` (224 by default: a 14x14 grid plus the class
token, the layout of the published checkpoints). An input of another size bilinearly resamples the grid part
at run time (big_vision resamples at load time with the same order-1 interpolation, up to how the grid
corners are aligned), so a converted checkpoint loads unchanged and runs at any multiple of 16.

The MLP uses tanh-approximated GELU, as flax's `nn.gelu` that trained these checkpoints. `model.drop_path` drops
each block's attention and MLP branches in training, independently (stochastic depth, linear over the blocks as
in timm and DeiT: models.base.drop_path_rates).
"""
from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
from flax import nnx

from tl_research.models.base import DropPathBlock, ModelMeta, UnitModel, drop_path_rates, make_head
from tl_research.models.conv import Conv

VARIANTS = {  # width, depth, MLP width, heads (Table 1 of arXiv 2106.10270)
    "ti": (192, 12, 768, 3),
    "s": (384, 12, 1536, 6),
    "b": (768, 12, 3072, 12),
}
MICRO = (64, 4, 128, 4)  # vit_micro: width, depth, MLP width, heads
PATCH = 16
MICRO_PATCH = 4
LN_EPS = 1e-6


class Embedding(nnx.Module):
    def __init__(self, in_channels: int, width: int, grid: int, *, rngs: nnx.Rngs, patch: int = PATCH):
        self.patch = Conv(in_channels, width, (patch, patch), strides=patch, padding="VALID", rngs=rngs)
        self.cls = nnx.Param(jnp.zeros((1, 1, width), jnp.float32))
        self.pos_embed = nnx.Param(0.02 * jax.random.normal(rngs.params(), (1, 1 + grid * grid, width)))

    def __call__(self, x: jax.Array) -> jax.Array:
        x = self.patch(x)
        n, h, w, c = x.shape
        x = x.reshape(n, h * w, c)
        # The class token takes the batch's sharding: under an explicit-sharding mesh (the trainer's) a
        # replicated token cannot be concatenated to batch-sharded patches.
        cls = jnp.broadcast_to(self.cls[...], (n, 1, c), out_sharding=jax.typeof(x).sharding)
        x = jnp.concatenate([cls, x], axis=1)
        return x + resample_pos_embed(self.pos_embed[...], h, w)


def resample_pos_embed(pos: jax.Array, h: int, w: int) -> jax.Array:
    """(1, 1 + g*g, d) -> (1, 1 + h*w, d): the class-token entry unchanged, the grid resized bilinearly."""
    g = int(round((pos.shape[1] - 1) ** 0.5))
    if (g, g) == (h, w):
        return pos
    grid = pos[:, 1:].reshape(1, g, g, -1)
    grid = jax.image.resize(grid, (1, h, w, grid.shape[-1]), method="bilinear", antialias=False)
    return jnp.concatenate([pos[:, :1], grid.reshape(1, h * w, -1)], axis=1)


class Attention(nnx.Module):
    def __init__(self, width: int, heads: int, *, rngs: nnx.Rngs):
        self.heads = heads
        self.query = nnx.Linear(width, width, rngs=rngs)
        self.key = nnx.Linear(width, width, rngs=rngs)
        self.value = nnx.Linear(width, width, rngs=rngs)
        self.out = nnx.Linear(width, width, rngs=rngs)

    def __call__(self, x: jax.Array) -> jax.Array:
        n, t, d = x.shape
        split = lambda y: y.reshape(n, t, self.heads, d // self.heads)
        q, k, v = split(self.query(x)), split(self.key(x)), split(self.value(x))
        logits = jnp.einsum("nqhd,nkhd->nhqk", q, k) / jnp.sqrt(jnp.float32(d // self.heads))
        weights = jax.nn.softmax(logits, axis=-1)
        return self.out(jnp.einsum("nhqk,nkhd->nqhd", weights, v).reshape(n, t, d))


class Mlp(nnx.Module):
    def __init__(self, width: int, hidden: int, *, rngs: nnx.Rngs):
        self.fc1 = nnx.Linear(width, hidden, rngs=rngs)
        self.fc2 = nnx.Linear(hidden, width, rngs=rngs)

    def __call__(self, x: jax.Array) -> jax.Array:
        return self.fc2(jax.nn.gelu(self.fc1(x), approximate=True))


class EncoderBlock(DropPathBlock):
    def __init__(self, width: int, hidden: int, heads: int, *, rngs: nnx.Rngs, drop_path_rate: float = 0.0):
        self.drop_path_rate, self.deterministic = float(drop_path_rate), True
        self.norm1 = nnx.LayerNorm(width, epsilon=LN_EPS, rngs=rngs)
        self.attn = Attention(width, heads, rngs=rngs)
        self.norm2 = nnx.LayerNorm(width, epsilon=LN_EPS, rngs=rngs)
        self.mlp = Mlp(width, hidden, rngs=rngs)

    def __call__(self, x: jax.Array, drop_key: jax.Array | None = None) -> jax.Array:
        x = x + self.branch(self.attn(self.norm1(x)), drop_key, 0)
        return x + self.branch(self.mlp(self.norm2(x)), drop_key, 1)


class FinalNorm(nnx.Module):
    def __init__(self, width: int, *, rngs: nnx.Rngs):
        self.norm = nnx.LayerNorm(width, epsilon=LN_EPS, rngs=rngs)

    def __call__(self, x: jax.Array) -> jax.Array:
        return self.norm(x)


def build(cfg, num_classes: int, in_channels: int, rngs: nnx.Rngs, *, variant: str,
          meta: ModelMeta | None = None) -> UnitModel:
    width, depth, hidden, heads = MICRO if variant == "micro" else VARIANTS[variant]
    patch = MICRO_PATCH if variant == "micro" else PATCH
    image_size = int(cfg.get("image_size", 224))
    if image_size % patch:
        from tl_research.core.errors import ConfigError
        raise ConfigError("model.image_size", image_size, f"a multiple of the patch size {patch}")
    units: list[nnx.Module] = [Embedding(in_channels, width, image_size // patch, rngs=rngs, patch=patch)]
    units += [EncoderBlock(width, hidden, heads, rngs=rngs, drop_path_rate=rate)
              for rate in drop_path_rates(cfg, depth)]
    units.append(FinalNorm(width, rngs=rngs))
    head = make_head(cfg, width, num_classes, rngs=rngs, default_pool="token", pools=("avg", "max"))
    return UnitModel(units, head, meta)


def _meta(variant: str) -> ModelMeta:
    return ModelMeta(
        input_size=(224, 224, 3), value_range=(0.0, 1.0), mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5),
        interpolation="bilinear", crop_pct=1.0, num_classes=1000, first_conv="units.0.patch",
        classifier="head.classifier",
        source=f"big_vision / AugReg ViT-{variant.capitalize()}/16 .npz (gs://vit_models/augreg/)",
        license="Apache-2.0")


META: dict[str, ModelMeta] = {f"vit_{v}16": _meta(v) for v in VARIANTS}
BUILDERS = {f"vit_{v}16": functools.partial(build, variant=v, meta=META[f"vit_{v}16"]) for v in VARIANTS}
BUILDERS["vit_micro"] = functools.partial(build, variant="micro", meta=None)
