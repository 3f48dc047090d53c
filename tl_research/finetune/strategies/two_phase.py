"""two_phase: the head alone, then units frozen_depth.. also train (LP-FT, Kumar et al. 2022, arXiv 2202.10054).

The head phase lasts strategy.boundary_steps (> 0 wins) or boundary_epochs and follows strategy.head_schedule;
the rest of the run follows config.schedule, restarted at the boundary.
"""
from __future__ import annotations

import numpy as np

from tl_research.finetune.strategies.base import (Context, Phase, StrategyBase, default_momentum, err, register,
                                                  schedule_arrays, span)

HEAD_PREFIX = "strategy.head_schedule."


class TwoPhase(StrategyBase):
    name = "two_phase"

    def check(self, config) -> None:
        schedule_arrays(config.strategy.head_schedule, 10**6, 1000, 0.9, HEAD_PREFIX)

    def phases(self, config, ctx: Context) -> list[Phase]:
        s, total = config.strategy, ctx.total_steps
        b = span(s, "boundary_steps", "boundary_epochs", ctx.steps_per_epoch)
        if b >= total:
            raise err("boundary_steps" if s.boundary_steps else "boundary_epochs",
                      s.boundary_steps or s.boundary_epochs, f"a boundary before the run's last step "
                      f"({total} steps)", why=f"the head phase would take {b} steps")
        if ctx.frozen_depth == ctx.num_units:
            raise err("name", self.name, "fine_tune, or frozen_depth below the number of units "
                      f"({ctx.num_units})", why="phase 2 would unfreeze nothing")
        return [Phase("head", 0, b, ctx.num_units), Phase("fine_tune", b, total, ctx.frozen_depth)]

    def schedule(self, config, ctx: Context, phases: list[Phase]) -> tuple[np.ndarray, np.ndarray]:
        b, m = phases[0].end, default_momentum(config)
        lr1, m1 = schedule_arrays(config.strategy.head_schedule, b, ctx.steps_per_epoch, m, HEAD_PREFIX)
        lr2, m2 = schedule_arrays(config.schedule, ctx.total_steps - b, ctx.steps_per_epoch, m)
        return np.concatenate([lr1, lr2]), np.concatenate([m1, m2])


STRATEGY = register(TwoPhase())
