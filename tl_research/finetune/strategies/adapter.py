"""adapter: bottleneck adapters added to a frozen model; the adapters, the new task's head and (per the papers) the
normalisation layers train, every transferred weight else stays as it was.

The modules and where they go: tl_research/models/prompts_adapters.py (`strategy.adapter`):
    dim        the bottleneck width (Houlsby et al. 2019 sweep 8..256; V-PETL / NOAH's VTAB-1k adapter: 8)
    placement  houlsby: after the attention and after the MLP of each ViT encoder block (Houlsby et al. 2019,
               arXiv 1902.00751); ResNets (resnet_cifar, resnet*): after each residual block (residual adapters
               in series, Rebuffi et al. 2017, arXiv 1705.08045)
               parallel: beside each ViT block's MLP (AdaptFormer, Chen et al. 2022, arXiv 2205.13535); ViTs only
    scale      s, the factor on the adapter's output; 0 = the paper's: 1 (houlsby), 0.1 (parallel, AdaptFormer)

What trains follows the papers: houlsby trains the adapters, the layer norms and the head (Houlsby et al.,
section 2.1: "the layer normalization parameters are also trained"); on ResNets the adapters, the BatchNorm
scales and biases and the head (Rebuffi et al. train their adapters' and the network's BatchNorms per domain);
parallel (AdaptFormer) trains the adapters and the head only. The head trains whole (its classifier starts at
zero, as for bitfit). Trainable count per adapter: 2 * width * dim + dim + width. `frozen_depth` is not read;
`strategy.trainable_units` / `strategy.trainable` narrow what trains (an adapter left frozen stays the identity).
The adapters are initialised from config.seed, so a resumed run rebuilds the same tree.
"""
from __future__ import annotations

import dataclasses
import math
import re

import numpy as np

from tl_research.core.errors import ConfigError
from tl_research.finetune.strategies.base import Context, Phase, StrategyBase, err, register
from tl_research.finetune.strategies.norm_only import is_norm
from tl_research.models import prompts_adapters as pa

ADAPTER_MODULE = re.compile(r"(^|\.)adapter(_[a-z]+)?\.")
SEED_SALT = 0xADA  # the adapters' initialisation: config.seed folded with this


def is_adapter(path: str) -> bool:
    """Whether the parameter at `path` belongs to an adapter (`units.3.adapter_mlp.up.kernel`)."""
    return bool(ADAPTER_MODULE.search(path))


@dataclasses.dataclass(frozen=True)
class AdapterPhase(Phase):
    norms: bool = False  # the normalisation layers' scales and biases train too (houlsby)

    def trainable(self, path: str) -> bool:
        return path.startswith("head.") or is_adapter(path) or (self.norms and is_norm(path))


def settings(config) -> tuple[int, str, float]:
    """(dim, placement, scale) of config.strategy.adapter, the scale resolved (0: the placement's paper value)."""
    a = config.strategy.adapter
    return int(a.dim), a.placement, float(a.scale) or pa.DEFAULT_SCALE[a.placement]


class AdapterStrategy(StrategyBase):
    name = "adapter"

    def check(self, config) -> None:
        a = config.strategy.adapter
        if isinstance(a.dim, bool) or not isinstance(a.dim, int) or a.dim < 1:
            raise err("adapter.dim", a.dim, "a bottleneck width >= 1 (e.g. 8)")
        if a.placement not in pa.PLACEMENTS:
            raise err("adapter.placement", a.placement, ", ".join(pa.PLACEMENTS))
        s = a.scale
        if isinstance(s, bool) or not isinstance(s, (int, float)) or not math.isfinite(s) or s < 0:
            raise err("adapter.scale", s, "a number >= 0 (0: 1 for houlsby, 0.1 for parallel)")
        model = config.model.name
        if model in pa.RESNET_MODELS and a.placement != "houlsby":
            raise err("adapter.placement", a.placement, f"houlsby for {model} (an adapter after each residual "
                      "block)", why="parallel (AdaptFormer) places adapters beside a ViT block's MLP")
        if model not in pa.VIT_MODELS + pa.RESNET_MODELS:
            raise ConfigError("model.name", model, "vit_* (houlsby, parallel), resnet_cifar or resnet* (houlsby) "
                              "for strategy.name=adapter", why="adapters go into ViT encoder blocks or after "
                              "ResNet residual blocks")

    def phases(self, config, ctx: Context) -> list[Phase]:
        return [AdapterPhase("adapter", 0, ctx.total_steps, 0, norms=settings(config)[1] == "houlsby")]

    def extend(self, model, config):
        dim, placement, scale = settings(config)
        rng = np.random.default_rng((config.seed, SEED_SALT))
        return pa.add_adapters(model, dim=dim, placement=placement, scale=scale, rng=rng)


STRATEGY = register(AdapterStrategy())
