"""lora: low-rank updates beside the units' dense kernels (and, with `strategy.lora.convs`, their 1x1
convolutions), trained with the new task's head; every other weight frozen (LoRA, Hu et al. 2021, arXiv
2106.09685).

`extend` adds to each target layer W the factors A (d_in, r), random, and B (r, d_out), zero (models/peft.py:
flax's nnx.LoRA beside the layer, its own parameters keeping their paths), so the layer computes
x W + b + (alpha / r) x A B and the model starts where the transferred one was. The targets
(`strategy.lora.targets`) are a regex searched in each layer's module path: `.*` (the default) adapts every dense
layer of the units, a ViT's attention query/key/value/out and MLP fc1/fc2; `attn\\.(query|value)$` is Hu et al.'s
choice. Trainable count: r (d_in + d_out) per adapted kernel, plus the head, which trains whole for the reason
bitfit's does (its classifier starts at zero). The factors get no weight decay (only `.kernel`s decay).
`merge` folds W + (alpha / r) A B back into each kernel: the run's exported weights/ are then the plain model's.
"""
from __future__ import annotations

import dataclasses
import functools
import json
import math
import re

import ml_collections

from tl_research import models
from tl_research.finetune.strategies.base import Context, Phase, StrategyBase, err, register
from tl_research.models import peft

SEED_STREAM = 0x10A  # the factors' initial values: numpy's generator at (config.seed, SEED_STREAM)


@dataclasses.dataclass(frozen=True)
class LoRAPhase(Phase):
    def trainable(self, path: str) -> bool:
        return path.startswith("head.") or peft.is_lora(path)


@functools.lru_cache(maxsize=32)
def _count_targets(model_json: str, targets: str, convs: bool) -> int:
    cfg = ml_collections.ConfigDict(json.loads(model_json))
    return len(peft.lora_targets(models.abstract(cfg, 2, 3), targets, convs))


class LoRA(StrategyBase):
    name = "lora"

    def check(self, config) -> None:
        c = config.strategy.lora
        if isinstance(c.rank, bool) or not isinstance(c.rank, int) or c.rank < 1:
            raise err("lora.rank", c.rank, "an integer >= 1")
        if isinstance(c.alpha, bool) or not isinstance(c.alpha, (int, float)) or not (
                math.isfinite(c.alpha) and c.alpha > 0):
            raise err("lora.alpha", c.alpha, "a number > 0 (the update is scaled by alpha / rank)")
        if not isinstance(c.convs, bool):
            raise err("lora.convs", c.convs, "True or False")
        try:
            re.compile(c.targets)
        except (re.error, TypeError) as e:
            raise err("lora.targets", c.targets, "a regex over module paths, e.g. '.*' or 'attn\\.(query|value)$'",
                      why=str(e)) from None
        if not _count_targets(config.model.to_json(), c.targets, c.convs):
            kinds = "dense layer or 1x1 convolution" if c.convs else "dense layer"
            hint = "" if c.convs else " (strategy.lora.convs=True also adapts 1x1 convolutions)"
            raise err("lora.targets", c.targets, f"a regex matching the path of a {kinds} in the units",
                      why=f"it matches none in {config.model.name}{hint}")

    def phases(self, config, ctx: Context) -> list[Phase]:
        return [LoRAPhase("lora", 0, ctx.total_steps, 0)]

    def extend(self, model, config):
        c = config.strategy.lora
        peft.add_lora(model, rank=c.rank, alpha=float(c.alpha), targets=c.targets, convs=c.convs,
                      seed=(int(config.seed), SEED_STREAM))
        return model

    def merge(self, params: dict, config) -> dict:
        return peft.merge_lora(params, float(config.strategy.lora.alpha))


STRATEGY = register(LoRA())
