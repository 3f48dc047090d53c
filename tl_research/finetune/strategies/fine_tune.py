"""fine_tune: one phase over the whole run with units below `frozen_depth` frozen (0 = full fine-tuning)."""
from __future__ import annotations

from tl_research.finetune.strategies.base import Context, Phase, StrategyBase, register


class FineTune(StrategyBase):
    name = "fine_tune"

    def phases(self, config, ctx: Context) -> list[Phase]:
        return [Phase("train", 0, ctx.total_steps, ctx.frozen_depth)]


STRATEGY = register(FineTune())
