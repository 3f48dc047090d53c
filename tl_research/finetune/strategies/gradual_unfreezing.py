"""gradual_unfreezing: the head alone, then one more unit from the top every E epochs (or steps) down to
`frozen_depth` (ULMFiT, Howard & Ruder 2018, arXiv 1801.06146); one schedule (config.schedule) over the run.

The interval is strategy.unfreeze_every_steps (> 0 wins) or unfreeze_every_epochs; a run that ends first simply
stops unfreezing.
"""
from __future__ import annotations

import dataclasses

from tl_research.finetune.strategies.base import Context, Phase, StrategyBase, register, span


class GradualUnfreezing(StrategyBase):
    name = "gradual_unfreezing"

    def phases(self, config, ctx: Context) -> list[Phase]:
        every = span(config.strategy, "unfreeze_every_steps", "unfreeze_every_epochs", ctx.steps_per_epoch)
        total = ctx.total_steps
        phases, start = [], 0
        for k, depth in enumerate(range(ctx.num_units, ctx.frozen_depth - 1, -1)):
            if start >= total:
                break
            last = depth == ctx.frozen_depth
            end = total if last else min(total, start + every)
            phases.append(Phase("head" if k == 0 else f"unfreeze_{k}", start, end, depth))
            start = end
        phases[-1] = dataclasses.replace(phases[-1], end=total)
        return phases


STRATEGY = register(GradualUnfreezing())
