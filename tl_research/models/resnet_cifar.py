"""CIFAR-style ResNet (He et al. 2016, arXiv 1512.03385, section 4.2): a 3x3 stem and stages of basic blocks.

Depth units: the stem, then every residual block, in order. `stage_sizes=(1, 1, 1)` with width 16 is the
small network the quickstart uses (4 depth units); (3, 3, 3) is the paper's ResNet-20. `stem_stride=2` makes
the stem a stride-2 conv, halving every unit's map: for inputs larger than CIFAR's 32x32 (64x64 scenes), at a
quarter of the stride-1 network's FLOPs. `model.drop_path` drops each block's residual branch in training
(stochastic depth, linear over the blocks: models.base.drop_path_rates).
"""
from __future__ import annotations

import jax
from flax import nnx

from tl_research.core.errors import ConfigError
from tl_research.models.base import DropPathBlock, UnitModel, drop_path_rates, make_head
from tl_research.models.conv import Conv

_BN = dict(momentum=0.9, epsilon=1e-5)


class Stem(nnx.Module):
    def __init__(self, in_channels: int, width: int, stride: int = 1, *, rngs: nnx.Rngs):
        self.conv = Conv(in_channels, width, (3, 3), strides=stride, use_bias=False, rngs=rngs)
        self.bn = nnx.BatchNorm(width, **_BN, rngs=rngs)

    def __call__(self, x):
        return nnx.relu(self.bn(self.conv(x)))


class BasicBlock(DropPathBlock):
    def __init__(self, in_channels: int, out_channels: int, stride: int, *, rngs: nnx.Rngs,
                 drop_path_rate: float = 0.0):
        self.drop_path_rate, self.deterministic = float(drop_path_rate), True
        self.conv1 = Conv(in_channels, out_channels, (3, 3), strides=stride, use_bias=False, rngs=rngs)
        self.bn1 = nnx.BatchNorm(out_channels, **_BN, rngs=rngs)
        self.conv2 = Conv(out_channels, out_channels, (3, 3), use_bias=False, rngs=rngs)
        self.bn2 = nnx.BatchNorm(out_channels, **_BN, rngs=rngs)
        if stride != 1 or in_channels != out_channels:
            self.proj = Conv(in_channels, out_channels, (1, 1), strides=stride, use_bias=False, rngs=rngs)
            self.proj_bn = nnx.BatchNorm(out_channels, **_BN, rngs=rngs)
        else:
            self.proj = None
            self.proj_bn = None

    def __call__(self, x: jax.Array, drop_key: jax.Array | None = None) -> jax.Array:
        y = nnx.relu(self.bn1(self.conv1(x)))
        y = self.branch(self.bn2(self.conv2(y)), drop_key)
        shortcut = x if self.proj is None else self.proj_bn(self.proj(x))
        return nnx.relu(y + shortcut)


def build(cfg, num_classes: int, in_channels: int, rngs: nnx.Rngs) -> UnitModel:
    width = int(cfg.width)
    stem_stride = cfg.get("stem_stride", 1)
    if isinstance(stem_stride, bool) or not isinstance(stem_stride, int) or stem_stride < 1:
        raise ConfigError("model.stem_stride", stem_stride, "a positive integer (1: CIFAR's stem)")
    units = [Stem(in_channels, width, stem_stride, rngs=rngs)]
    channels = width
    rates = iter(drop_path_rates(cfg, sum(cfg.stage_sizes)))
    for stage, size in enumerate(cfg.stage_sizes):
        out = width * 2**stage
        for b in range(size):
            stride = 2 if (stage > 0 and b == 0) else 1
            units.append(BasicBlock(channels, out, stride, rngs=rngs, drop_path_rate=next(rates)))
            channels = out
    head = make_head(cfg, channels, num_classes, rngs=rngs)
    return UnitModel(units, head)
