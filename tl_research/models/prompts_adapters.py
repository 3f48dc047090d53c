"""The parameters the `adapter`, `vpt_shallow` and `vpt_deep` strategies add to a built model (their strategy files:
tl_research/finetune/strategies/adapter.py, vpt.py): bottleneck adapters and visual prompt tokens.

`add_adapters` and `add_prompts` wrap depth units of a built UnitModel in place, after the transferred weights
are loaded into it. A wrapper takes over the wrapped unit's own attributes (the same submodules: every original
parameter keeps its path, `units.3.attn.query.kernel`) and adds its own beside them in the same unit
(`units.3.adapter_mlp.down.kernel`, `units.1.prompts`), so the added parameters are part of the model's tree:
labelled, checkpointed, resumed and exported like the rest.

    Adapter        s * up(act(down(x))) over the last axis (a token's, or a map position's, channels): `up` starts
                   at zero, so the model computes exactly what it computed before; `down` starts random (LeCun
                   normal, N(0, 1 / width)), so `up` gets a gradient from the first step on
    add_adapters   ViT encoder blocks (vit_*), placement
                     houlsby   Houlsby et al. 2019 (arXiv 1902.00751): h + Adapter(h) on the output h of the
                               attention and of the MLP, before each residual sum (`adapter_attn`, `adapter_mlp`;
                               GELU, s = 1)
                     parallel  AdaptFormer (Chen et al. 2022, arXiv 2205.13535, eq. 1): x' + MLP(LN(x')) +
                               s * Adapter(LN(x')) beside each block's MLP, reading the MLP's normalised input
                               (`adapter_mlp`; ReLU, s = 0.1; outside drop-path, as in the released code)
                   ResNet residual blocks (resnet_cifar, resnet*): y + Adapter(y) on each block's output
                   (`adapter`; ReLU): residual adapters in series after every residual block (Rebuffi et al.
                   2017, arXiv 1705.08045), with Houlsby's bottleneck as the adapter (1x1 convolutions down and up)
    add_prompts    VPT (Jia et al. 2022, arXiv 2203.12119): P learnable tokens of the model's width inserted after
                   the class token at the input of the first encoder block (shallow; carried through the later
                   blocks), or a block's own P tokens at the input of every block (deep), uniform Xavier
                   initialised over the patch dimension as the paper's code: U(-v, v), v = sqrt(6 / (patch
                   pixels x input channels + width)). The prompt outputs are dropped at the last block's output
                   (deep: at every block's), so the final norm unit and the head's pooling (class token, or
                   average over the tokens) see the tokens of the plain model. Optional dropout on the prompts in
                   training (the paper's code: `MODEL.PROMPT.DROPOUT`).

The added parameters are drawn on the host from a numpy Generator the strategy seeds from config.seed (no
accelerator computation, nothing compiled per shape), so a resumed run rebuilds the same tree.
"""
from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from tl_research.models import resnet, resnet_cifar, vit
from tl_research.models.base import UnitModel

PLACEMENTS = ("houlsby", "parallel")
DEFAULT_SCALE = {"houlsby": 1.0, "parallel": 0.1}  # the papers' s (AdaptFormer's image experiments: 0.1)
VIT_MODELS = tuple(vit.BUILDERS)  # the registry names adapters (both placements) and prompts apply to
RESNET_MODELS = ("resnet_cifar", *resnet.BUILDERS)  # the registry names adapters (houlsby: after each block) apply to
ACTIVATIONS = {"gelu": lambda x: jax.nn.gelu(x, approximate=True), "relu": jax.nn.relu}


def adopt(wrapper: nnx.Module, module: nnx.Module) -> None:
    """`wrapper` takes `module`'s attributes (the same objects, not copies): every parameter of `module` keeps
    its path under `wrapper`."""
    for name, value in vars(module).items():
        if not name.startswith("_"):
            setattr(wrapper, name, value)


class Dense(nnx.Module):
    """x @ kernel + bias, from a host kernel; the bias starts at zero (nnx.Linear's parameters and names)."""

    def __init__(self, kernel: np.ndarray):
        self.kernel = nnx.Param(jnp.asarray(kernel, jnp.float32))
        self.bias = nnx.Param(jnp.asarray(np.zeros(kernel.shape[1], np.float32)))

    def __call__(self, x: jax.Array) -> jax.Array:
        return x @ self.kernel[...] + self.bias[...]


class Adapter(nnx.Module):
    """The bottleneck s * up(act(down(x))), `up` zero-initialised (the caller adds it to a residual)."""

    def __init__(self, width: int, dim: int, *, scale: float, activation: str, rng: np.random.Generator):
        self.down = Dense(rng.normal(0.0, 1.0 / math.sqrt(width), (width, dim)))  # LeCun normal
        self.up = Dense(np.zeros((dim, width)))
        self.scale, self.activation = float(scale), activation

    def __call__(self, x: jax.Array) -> jax.Array:
        return self.scale * self.up(ACTIVATIONS[self.activation](self.down(x)))


class HoulsbyBlock(vit.EncoderBlock):
    """An encoder block with an adapter on the output of its attention and of its MLP (Houlsby et al. 2019)."""

    def __init__(self, block: vit.EncoderBlock, dim: int, scale: float, *, rng: np.random.Generator):
        adopt(self, block)
        width = block.norm1.num_features
        self.adapter_attn = Adapter(width, dim, scale=scale, activation="gelu", rng=rng)
        self.adapter_mlp = Adapter(width, dim, scale=scale, activation="gelu", rng=rng)

    def __call__(self, x: jax.Array, drop_key: jax.Array | None = None) -> jax.Array:
        h = self.attn(self.norm1(x))
        x = x + self.branch(h + self.adapter_attn(h), drop_key, 0)
        h = self.mlp(self.norm2(x))
        return x + self.branch(h + self.adapter_mlp(h), drop_key, 1)


class ParallelBlock(vit.EncoderBlock):
    """An encoder block with a scaled adapter beside its MLP (AdaptFormer, Chen et al. 2022)."""

    def __init__(self, block: vit.EncoderBlock, dim: int, scale: float, *, rng: np.random.Generator):
        adopt(self, block)
        self.adapter_mlp = Adapter(block.norm2.num_features, dim, scale=scale, activation="relu", rng=rng)

    def __call__(self, x: jax.Array, drop_key: jax.Array | None = None) -> jax.Array:
        x = x + self.branch(self.attn(self.norm1(x)), drop_key, 0)
        y = self.norm2(x)
        return x + self.branch(self.mlp(y), drop_key, 1) + self.adapter_mlp(y)


class AfterBlock:
    """Mixed in before a ResNet block class: the block's output y, then y + Adapter(y)."""

    def __init__(self, block: nnx.Module, adapter: Adapter):
        adopt(self, block)
        self.adapter = adapter

    def __call__(self, x: jax.Array, drop_key: jax.Array | None = None) -> jax.Array:
        y = super().__call__(x, drop_key)
        return y + self.adapter(y)


class CifarBlockWithAdapter(AfterBlock, resnet_cifar.BasicBlock):
    pass


class BasicBlockWithAdapter(AfterBlock, resnet.BasicBlock):
    pass


class BottleneckWithAdapter(AfterBlock, resnet.Bottleneck):
    pass


AFTER = {resnet_cifar.BasicBlock: CifarBlockWithAdapter, resnet.BasicBlock: BasicBlockWithAdapter,
         resnet.Bottleneck: BottleneckWithAdapter}


def _block_channels(block: nnx.Module) -> int:
    """The output channels of a ResNet block: its last BatchNorm's (bn3 of a bottleneck, else bn2)."""
    return (block.bn3 if isinstance(block, resnet.Bottleneck) else block.bn2).num_features


def add_adapters(model: UnitModel, *, dim: int, placement: str, scale: float,
                 rng: np.random.Generator) -> UnitModel:
    """`model` with an adapter of bottleneck width `dim` in every ViT encoder block (`placement` houlsby or
    parallel) or after every ResNet residual block (houlsby only), its output scaled by `scale`. ValueError for
    a model with no such unit (the strategy's config check refuses the other families first)."""
    wrapped = 0
    for i, unit in enumerate(model.units):
        if type(unit) is vit.EncoderBlock:
            block_class = HoulsbyBlock if placement == "houlsby" else ParallelBlock
            model.units[i] = block_class(unit, dim, scale, rng=rng)
        elif type(unit) in AFTER and placement == "houlsby":
            adapter = Adapter(_block_channels(unit), dim, scale=scale, activation="relu", rng=rng)
            model.units[i] = AFTER[type(unit)](unit, adapter)
        else:
            continue
        wrapped += 1
    if not wrapped:
        raise ValueError(f"no unit of this model takes a {placement} adapter (ViT encoder blocks take both "
                         "placements, ResNet residual blocks houlsby)")
    return model


# ---------------------------------------------------------------------------------------------- prompts

class PromptedBlock(vit.EncoderBlock):
    """An encoder block that inserts its `prompts` (P, width) after the class token of its input (when it holds
    any) and drops the `strip` tokens after the class token from its output (when > 0)."""

    def __init__(self, block: vit.EncoderBlock, prompts: nnx.Param | None, strip: int, dropout: float):
        adopt(self, block)
        self.prompts = prompts
        self.strip = int(strip)
        self.prompt_dropout = float(dropout)

    def draws(self) -> bool:
        drops_prompts = self.prompts is not None and self.prompt_dropout > 0.0
        return not self.deterministic and (self.drop_path_rate > 0.0 or drops_prompts)

    def _prompt_tokens(self, x: jax.Array, drop_key: jax.Array | None) -> jax.Array:
        """The prompts broadcast over the batch (with the batch's sharding, as the class token), dropped out
        per example and entry in training."""
        n, _, width = x.shape
        p = jnp.broadcast_to(self.prompts[...], (n, *self.prompts.shape), out_sharding=jax.typeof(x).sharding)
        if self.prompt_dropout == 0.0 or self.deterministic:
            return p
        if drop_key is None:
            raise ValueError("prompt dropout in training needs a drop_key")
        keep = 1.0 - self.prompt_dropout
        mask = jax.random.bernoulli(jax.random.fold_in(drop_key, 2), keep, p.shape)
        return jnp.where(mask, p / keep, jnp.zeros_like(p))

    def __call__(self, x: jax.Array, drop_key: jax.Array | None = None) -> jax.Array:
        if self.prompts is not None:
            x = jnp.concatenate([x[:, :1], self._prompt_tokens(x, drop_key).astype(x.dtype), x[:, 1:]], axis=1)
        y = super().__call__(x, drop_key)
        if self.strip:
            y = jnp.concatenate([y[:, :1], y[:, 1 + self.strip:]], axis=1)
        return y


def prompt_bound(model: UnitModel) -> float:
    """VPT's init range v = sqrt(6 / (fan_in + width)), fan_in = the patch embedding's inputs per patch."""
    h, w, c, width = model.units[0].patch.kernel.shape
    return math.sqrt(6.0 / float(h * w * c + width))


def add_prompts(model: UnitModel, *, prompts: int, deep: bool, dropout: float,
                rng: np.random.Generator) -> UnitModel:
    """`model` (a ViT) with `prompts` tokens at the first encoder block's input (shallow) or at every block's
    (deep), the prompt outputs dropped at the last block's output (deep: at each block's). ValueError for a model
    without a ViT's patch embedding and encoder blocks."""
    blocks = [i for i, unit in enumerate(model.units) if type(unit) is vit.EncoderBlock]
    if not blocks or not isinstance(model.units[0], vit.Embedding):
        raise ValueError("visual prompts need a ViT: a patch embedding (unit 0) and encoder blocks")
    width, bound = model.units[0].patch.kernel.shape[-1], prompt_bound(model)
    for j, i in enumerate(blocks):
        holds = deep or j == 0
        strip = prompts if (deep or j == len(blocks) - 1) else 0
        if not (holds or strip):
            continue  # a shallow run's middle blocks carry the prompt tokens as any other
        param = nnx.Param(jnp.asarray(rng.uniform(-bound, bound, (prompts, width)), jnp.float32)) \
            if holds else None
        model.units[i] = PromptedBlock(model.units[i], param, strip, dropout)
    return model
