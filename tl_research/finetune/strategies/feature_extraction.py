"""feature_extraction: one phase with every unit frozen, a new head on fixed features (a linear probe)."""
from __future__ import annotations

from tl_research.finetune.strategies.base import Context, Phase, StrategyBase, err, register


class FeatureExtraction(StrategyBase):
    name = "feature_extraction"

    def check(self, config) -> None:
        if config.frozen_depth not in (0, -1, "all"):
            raise err("name", self.name, "fine_tune (or two_phase / gradual_unfreezing) with frozen_depth="
                      f"{config.frozen_depth}", why="feature extraction freezes every unit")

    def phases(self, config, ctx: Context) -> list[Phase]:
        return [Phase("train", 0, ctx.total_steps, ctx.num_units)]


STRATEGY = register(FeatureExtraction())
