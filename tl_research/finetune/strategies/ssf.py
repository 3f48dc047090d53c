"""ssf: a per-channel scale and shift after every op of the units (dense, convolution, normalisation), trained
with the new task's head; every other weight frozen (SSF, Lian et al. 2022, arXiv 2210.08823).

`extend` adds to each op y' = y * s + t, s (`<op>.ssf_scale`) starting at 1 and t (`<op>.ssf_shift`) at 0, so
the model starts where the transferred one was (models/peft.py). An op gets the parts its own weights absorb
when merged: a dense layer or convolution with a bias a scale and a shift, a normalisation a scale where it has
one and a shift where it has a bias. A dense layer or convolution without a bias (every ResNet convolution) gets
none: the normalisation it feeds would cancel them while it uses batch statistics (they would never train), and
that normalisation's own SSF expresses the same per-channel affine maps on running statistics. Trainable count:
the channels of every scale and shift, plus the head, which trains whole for the reason bitfit's does; neither
gets weight decay. `merge` folds them into the op's kernel (or normalisation scale) and bias: the run's exported
weights/ are then the plain model's. SSF touches unit 0 (the stem or patch embedding), so no prefix is cached.
"""
from __future__ import annotations

import dataclasses

from tl_research.finetune.strategies.base import Context, Phase, StrategyBase, register
from tl_research.models import peft


@dataclasses.dataclass(frozen=True)
class SSFPhase(Phase):
    def trainable(self, path: str) -> bool:
        return path.startswith("head.") or peft.is_ssf(path)


class SSF(StrategyBase):
    name = "ssf"

    def phases(self, config, ctx: Context) -> list[Phase]:
        return [SSFPhase("ssf", 0, ctx.total_steps, 0)]

    def extend(self, model, config):
        peft.add_ssf(model)
        return model

    def merge(self, params: dict, config) -> dict:
        return peft.merge_ssf(params)


STRATEGY = register(SSF())
