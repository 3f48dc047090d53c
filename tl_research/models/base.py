"""The interface every architecture family implements: ordered depth units and a replaceable head.

A network is `UnitModel(units, head)`. `units` is an ordered `nnx.List` (stem first, then each block) and
`head` pools, runs optional hidden dense layers, applies dropout and ends in one dense `classifier`.
`frozen_depth = k` then means the same for every family: units 0..k-1 are frozen; `k = len(units)` leaves
only the head trainable (a linear probe with the default linear head).

Units are plain callables `unit(x) -> x`. Their mode (BatchNorm statistics, internal dropout, drop-path) is set
through module attributes (`use_running_average`, `deterministic`) before each call, so a family needs no `train`
argument threaded through every layer. A unit that drops paths (stochastic depth: `DropPathBlock`, `model.drop_path`)
also takes `drop_key=`, which `call_unit` hands it only when it drops anything.
"""
from __future__ import annotations

import dataclasses
from typing import Sequence

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from tl_research.models import norm


@dataclasses.dataclass(frozen=True)
class ModelMeta:
    """What a network (or a checkpoint of it) expects of its input and how its parameters are named.

    Mirrors the metadata timm attaches to every pretrained checkpoint, so that preprocessing follows the
    weights rather than the user's memory.
    """

    input_size: tuple[int, int, int] | None = None  # (height, width, channels); None = the dataset's own
    value_range: tuple[float, float] = (0.0, 1.0)  # range of pixel values before mean/std normalisation
    mean: tuple[float, ...] = (0.5,)
    std: tuple[float, ...] = (0.5,)
    interpolation: str = "bilinear"
    crop_pct: float = 1.0
    num_classes: int | None = None  # classes of the source task the weights were trained on
    first_conv: str = "units.0"
    classifier: str = "head.classifier"
    source: str = ""
    license: str = ""

    def to_json(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_json(cls, d: dict) -> "ModelMeta":
        fields = {f.name for f in dataclasses.fields(cls)}
        kw = {k: (tuple(v) if isinstance(v, list) else v) for k, v in d.items() if k in fields}
        return cls(**kw)


def _adaptive_pool_matrix(n_in: int, n_out: int) -> np.ndarray:
    """Row i averages input positions floor(i*n/m) .. ceil((i+1)*n/m) - 1 (torch's adaptive_avg_pool)."""
    m = np.zeros((n_out, n_in), np.float32)
    for i in range(n_out):
        start, end = (i * n_in) // n_out, -(-((i + 1) * n_in) // n_out)
        m[i, start:end] = 1.0 / (end - start)
    return m


def adaptive_avg_pool(x: jax.Array, size: int) -> jax.Array:
    """(B, H, W, C) -> (B, size, size, C) as torch's AdaptiveAvgPool2d (the identity at H = W = size)."""
    h, w = x.shape[1:3]
    if (h, w) == (size, size):
        return x
    ph, pw = _adaptive_pool_matrix(h, size), _adaptive_pool_matrix(w, size)
    return jnp.einsum("ih,jw,nhwc->nijc", ph, pw, x)


def global_pool(x: jax.Array, pool: str) -> jax.Array:
    """The head's pooling of the last unit's output: `avg`, `max` (over every axis between batch and
    features: spatial, or tokens), `token` (the class token), `none`, or `flatten:G` (the map average-pooled
    to a GxG grid, then flattened in (height, width, channel) order)."""
    if pool in ("avg", "max"):
        if x.ndim <= 2:
            return x
        axes = tuple(range(1, x.ndim - 1))
        return x.mean(axis=axes) if pool == "avg" else x.max(axis=axes)
    if pool == "token":  # class token
        return x[:, 0]
    if pool == "none":
        return x
    if pool.startswith("flatten:"):
        return adaptive_avg_pool(x, int(pool.split(":")[1])).reshape(x.shape[0], -1)
    raise ValueError(f"unknown pool {pool!r}; allowed: avg, max, token, none, flatten:G")


HEADS = ("linear", "mlp")
HIDDEN_INIT = nnx.initializers.he_normal()  # He et al. 2015 (arXiv 1502.01852): for the ReLU that follows
POOLS = ("avg", "max", "flatten")


class Head(nnx.Module):
    """Global pooling -> [dense + ReLU per `hidden` width] -> dropout -> dense classifier: the part that is
    re-initialised on transfer (every parameter under `head.`; `frozen_depth=all` trains all of it).

    The classifier starts at zero (as in BiT): a new task begins from uniform predictions and the
    transferred features are not disturbed by a random projection in the first steps. Hidden layers start
    from He et al. 2015's normal initialisation (ReLU), so gradients reach them through the zero classifier
    from the first step on. `pool="flatten"` keeps the spatial layout of the final map (the classic
    "Flatten, Dense 256 ReLU, Dropout, Dense" head), average-pooled to `flatten_grid` first so the head's
    size does not depend on the input size (the identity at 224 px for stride-32 networks and grid 7).
    """

    def __init__(self, in_features: int, num_classes: int, *, dropout: float = 0.0, pool: str = "avg",
                 hidden: Sequence[int] = (), flatten_grid: int = 7, rngs: nnx.Rngs):
        if pool == "flatten":
            pool, in_features = f"flatten:{flatten_grid}", in_features * flatten_grid * flatten_grid
        self.pool = pool
        self.dropout_rate = float(dropout)
        widths = (in_features, *(int(h) for h in hidden))
        self.hidden = nnx.List([nnx.Linear(a, b, kernel_init=HIDDEN_INIT, rngs=rngs)
                                for a, b in zip(widths[:-1], widths[1:])])
        self.classifier = nnx.Linear(widths[-1], num_classes, kernel_init=nnx.initializers.zeros,
                                     rngs=rngs)

    def __call__(self, x: jax.Array, *, train: bool = False, dropout_key: jax.Array | None = None):
        return self.classifier(head_input(self, x, train=train, dropout_key=dropout_key))

    def embed(self, x: jax.Array, *, train: bool = False, dropout_key: jax.Array | None = None):
        """What the classifier reads: the pooled last unit's output after the hidden layers and dropout."""
        return head_input(self, x, train=train, dropout_key=dropout_key)


def head_input(head, x: jax.Array, *, train: bool = False, dropout_key: jax.Array | None = None):
    """A head's classifier input (Head.embed): global pooling, the hidden layers, dropout in training. Of any
    object with Head's `pool`, `hidden` and `dropout_rate` (a head that extends Head's computation calls
    `Head.__call__` on itself)."""
    x = global_pool(x, head.pool)
    for layer in head.hidden:
        x = nnx.relu(layer(x))
    if train and head.dropout_rate > 0.0:
        if dropout_key is None:
            raise ValueError("head dropout in training needs a dropout_key")
        keep = 1.0 - head.dropout_rate
        mask = jax.random.bernoulli(dropout_key, keep, x.shape)
        x = jnp.where(mask, x / keep, 0.0)
    return x


def make_head(cfg, in_features: int, num_classes: int, *, rngs: nnx.Rngs, default_pool: str = "avg",
         pools: Sequence[str] = POOLS) -> Head:
    """The head `cfg` (a `config.model`) asks for: `model.head` linear | mlp (`model.head_hidden` widths),
    `model.pool` ("" = the family's own, `default_pool`), `model.dropout`, `model.flatten_grid`. Bad values
    are a ConfigError (raised while the config is validated, which builds the model abstractly)."""
    from tl_research.core.errors import ConfigError
    kind, pool = cfg.get("head", "linear"), cfg.get("pool", "") or default_pool
    hidden = tuple(cfg.get("head_hidden", (256,))) if kind == "mlp" else ()
    if kind not in HEADS:
        raise ConfigError("model.head", kind, ", ".join(HEADS))
    if pool not in (default_pool, *pools):
        raise ConfigError("model.pool", pool, ", ".join(dict.fromkeys(("", default_pool, *pools))))
    if kind == "mlp" and (not hidden or any(int(h) <= 0 for h in hidden)):
        raise ConfigError("model.head_hidden", hidden, "one or more positive widths, e.g. (256,)")
    if not 0.0 <= float(cfg.get("dropout", 0.0)) < 1.0:
        raise ConfigError("model.dropout", cfg.dropout, "a rate in [0, 1)")
    grid = int(cfg.get("flatten_grid", 7))
    if pool == "flatten" and grid <= 0:
        raise ConfigError("model.flatten_grid", grid, "a positive grid size")
    return Head(in_features, num_classes, dropout=float(cfg.get("dropout", 0.0)), pool=pool, hidden=hidden,
                flatten_grid=grid, rngs=rngs)


def drop_path_rates(cfg, blocks: int) -> list[float]:
    """The drop-path (stochastic depth) rate of each of `blocks` residual blocks, in order, for `cfg` (a
    `config.model`): `model.drop_path` decayed linearly over depth, from 0 at the first block to the full rate at
    the last, as timm's ResNet and ViT and DeiT (Touvron et al. 2021) lay it out (Huang et al. 2016, arXiv
    1603.09382: the linear decay rule). ConfigError for a rate outside [0, 1)."""
    from tl_research.core.errors import ConfigError
    rate = cfg.get("drop_path", 0.0)
    if isinstance(rate, bool) or not isinstance(rate, (int, float)) or not 0.0 <= rate < 1.0:
        raise ConfigError("model.drop_path", rate, "a rate in [0, 1) (0: no drop-path)")
    return [float(rate) * i / max(blocks - 1, 1) for i in range(blocks)]


def drop_path(x: jax.Array, rate: float, key: jax.Array) -> jax.Array:
    """Each example's `x` (a residual branch) zeroed with probability `rate`, the kept ones scaled by
    1 / (1 - rate) so that its expectation is unchanged (timm's `drop_path`, scale_by_keep)."""
    keep = 1.0 - rate
    mask = jax.random.bernoulli(key, keep, (x.shape[0],) + (1,) * (x.ndim - 1))
    return jnp.where(mask, x / keep, jnp.zeros_like(x))


class DropPathBlock(nnx.Module):
    """A residual block that may drop its residual branches in training (stochastic depth). A subclass sets
    `self.drop_path_rate` (drop_path_rates) in its __init__ and passes each residual branch through
    `self.branch(y, drop_key, i)` (i: the branch's index within the block) before adding it to the shortcut.
    At rate 0, or in inference mode (`deterministic`, set by set_unit_mode), a branch passes through untouched:
    the block computes exactly what it computed without drop-path."""

    drop_path_rate: float = 0.0
    deterministic: bool = True

    def draws(self) -> bool:
        """Whether the block, in its current mode, draws random numbers (and so needs a drop_key): it drops
        paths in training. A subclass with other random draws (VPT's prompt dropout) says so here."""
        return self.drop_path_rate > 0.0 and not self.deterministic

    def branch(self, y: jax.Array, drop_key: jax.Array | None, index: int = 0) -> jax.Array:
        if self.drop_path_rate == 0.0 or self.deterministic:
            return y
        if drop_key is None:
            raise ValueError("drop-path in training needs a drop_key")
        return drop_path(y, self.drop_path_rate, jax.random.fold_in(drop_key, index))


def drops_paths(unit: nnx.Module) -> bool:
    """Whether `unit`, in its current mode, drops residual branches or draws otherwise (and so needs a
    drop_key): DropPathBlock.draws."""
    return isinstance(unit, DropPathBlock) and unit.draws()


def call_unit(unit: nnx.Module, x: jax.Array, index: int, key: jax.Array | None) -> jax.Array:
    """unit(x), with unit `index`'s own drop-path key (folded from the step's dropout key) when it drops paths,
    and this step's draws for its StochNorm layers (models.norm.seed_stochnorm), from another fold of the key."""
    if key is not None and norm.has_stochnorm(unit):
        norm.seed_stochnorm(unit, key, index)
    if key is not None and drops_paths(unit):
        return unit(x, drop_key=jax.random.fold_in(key, index))
    return unit(x)


def set_unit_mode(unit: nnx.Module, *, train: bool, update_stats: bool = True) -> None:
    """Training mode for one depth unit: BatchNorm uses batch statistics (and updates its running ones)
    only when the unit trains and the BatchNorm policy allows it; internal dropout runs only in training."""
    unit.set_attributes(use_running_average=not (train and update_stats), deterministic=not train,
                        raise_if_not_found=False)


class UnitModel(nnx.Module):
    """units[0] -> ... -> units[-1] -> head."""

    def __init__(self, units: Sequence[nnx.Module], head: Head, meta: ModelMeta | None = None):
        self.units = nnx.List(list(units))
        self.head = head
        self.meta = meta or ModelMeta()

    @property
    def num_units(self) -> int:
        return len(self.units)

    def prefix(self, x: jax.Array, depth: int) -> jax.Array:
        """Units 0..depth-1 in inference mode: what a frozen prefix of that depth hands to unit `depth`
        (tl_research.run.feature_cache computes it once per example)."""
        for i in range(depth):
            set_unit_mode(self.units[i], train=False)
            x = self.units[i](x)
        return x

    def features(self, x: jax.Array, *, train: bool = False, frozen_depth: int = 0,
                 update_stats: bool = True, return_units: bool = False, start: int = 0,
                 drop_key: jax.Array | None = None, frozen_units: frozenset = frozenset()):
        """Runs the depth units. Units below `frozen_depth` run in inference mode and the gradient stops at
        their output, so no backward pass goes through a frozen prefix. The `frozen_units` above it (none of
        their parameters train) run in inference mode too, the gradient passing through them to the trainable
        units below. `start = k` runs units k.. only, on
        `x` = unit k-1's output (`prefix(images, k)`); `return_units` then lists the outputs of those.
        `drop_key`: where the training units that drop paths (model.drop_path) draw from (call_unit)."""
        outs = []
        for i, unit in enumerate(self.units):
            if i < start:
                continue
            set_unit_mode(unit, train=train and i >= frozen_depth and i not in frozen_units,
                          update_stats=update_stats)
            x = call_unit(unit, x, i, drop_key)
            if i + 1 == frozen_depth:
                x = jax.lax.stop_gradient(x)
            if return_units:
                outs.append(x)
        return (x, outs) if return_units else x

    def __call__(self, x: jax.Array, *, train: bool = False, frozen_depth: int = 0,
                 update_stats: bool = True, dropout_key: jax.Array | None = None,
                 return_units: bool = False, start: int = 0, frozen_units: frozenset = frozenset()):
        feats = self.features(x, train=train, frozen_depth=frozen_depth, update_stats=update_stats,
                              return_units=return_units, start=start, drop_key=dropout_key,
                              frozen_units=frozen_units)
        if return_units:
            feats, outs = feats
            return self.head(feats, train=train, dropout_key=dropout_key), outs
        return self.head(feats, train=train, dropout_key=dropout_key)

    def outputs(self, x: jax.Array, *, train: bool = False, frozen_depth: int = 0, update_stats: bool = True,
                dropout_key: jax.Array | None = None, start: int = 0, frozen_units: frozenset = frozenset()):
        """(logits, the outputs of units start.., the classifier's input (Head.embed)): the forward pass of
        `__call__`, with what the fine-tuning regularisers read (tl_research.finetune.regularizers)."""
        feats, outs = self.features(x, train=train, frozen_depth=frozen_depth, update_stats=update_stats,
                                    return_units=True, start=start, drop_key=dropout_key, frozen_units=frozen_units)
        z = self.head.embed(feats, train=train, dropout_key=dropout_key)
        return self.head.classifier(z), outs, z
