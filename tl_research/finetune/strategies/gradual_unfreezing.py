"""gradual_unfreezing: the head alone, then one more unit from the top every E epochs (or steps) down to
`frozen_depth` (ULMFiT, Howard & Ruder 2018, arXiv 1801.06146); one schedule (config.schedule) over the run.

The interval is strategy.unfreeze_every_steps (> 0 wins) or unfreeze_every_epochs. A run that would end before
the last unfreezing (frozen_depth not reached) is a Shortfall: refused when the config is validated, naming the
interval key, the largest interval that reaches frozen_depth, and the depth the run would stop at.
"""
from __future__ import annotations

import dataclasses

from tl_research.finetune.strategies.base import Context, Phase, Shortfall, StrategyBase, register, span


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

    def shortfall(self, config, ctx: Context, phases: list[Phase]) -> Shortfall | None:
        """The run ends before the last unfreezing: its final phase trains above frozen_depth."""
        reached = phases[-1].frozen_depth
        if reached <= ctx.frozen_depth:
            return None
        s, spe, total = config.strategy, ctx.steps_per_epoch, ctx.total_steps
        every = span(s, "unfreeze_every_steps", "unfreeze_every_epochs", spe)
        n = ctx.num_units - ctx.frozen_depth  # unfreezings: the last starts at step n * every
        longest = (total - 1) // n  # the largest interval whose last unfreezing leaves the run a step
        by_steps = bool(s.unfreeze_every_steps)
        key = "strategy.unfreeze_every_steps" if by_steps else "strategy.unfreeze_every_epochs"
        if longest < 1:
            allowed = f"none for this run: train.steps above {n}, or frozen_depth >= {reached}"
        elif by_steps:
            allowed = f"at most {longest} steps, or train.steps above {n * every}, or frozen_depth >= {reached}"
        else:
            allowed = (f"at most {longest / spe:.4g} epochs ({longest} steps of the run's {spe} per epoch), or "
                       f"train.steps above {n * every}, or frozen_depth >= {reached}")
        why = (f"unfreezing a unit every {every} steps from the head down to frozen_depth={ctx.frozen_depth} "
               f"({n} unfreezings) needs more than {n * every} steps; the run's {total} stop at frozen depth "
               f"{reached}")
        return Shortfall(key, s.unfreeze_every_steps if by_steps else s.unfreeze_every_epochs, allowed, why,
                         reached)


STRATEGY = register(GradualUnfreezing())
