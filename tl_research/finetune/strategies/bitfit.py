"""bitfit: the biases of every unit and the new task's head train, nothing else (BitFit, Ben Zaken et al. 2021,
arXiv 2106.10199).

The head trains whole, not only its bias: its classifier starts at zero (models/base.py: Head), so with the
classifier's kernel frozen no gradient would ever reach a unit's bias. One phase over the whole run; its
trainable count (result.json `trainable_params`) is the number of bias entries of the units plus the head's
parameters. `strategy.trainable_units` / `strategy.trainable` narrow it further (strategies/selection.py)."""
from __future__ import annotations

import dataclasses

from tl_research.finetune.strategies.base import Context, Phase, StrategyBase, register


def is_bias(path: str) -> bool:
    return path.rsplit(".", 1)[-1] == "bias"


@dataclasses.dataclass(frozen=True)
class BitFitPhase(Phase):
    def trainable(self, path: str) -> bool:
        return path.startswith("head.") or is_bias(path)


class BitFit(StrategyBase):
    name = "bitfit"

    def phases(self, config, ctx: Context) -> list[Phase]:
        return [BitFitPhase("bitfit", 0, ctx.total_steps, 0)]


STRATEGY = register(BitFit())
