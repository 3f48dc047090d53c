"""norm_only: the normalisation layers' scales and biases (BatchNorm, LayerNorm, GroupNorm) of every unit and
the new task's head train, nothing else (the "train only BatchNorm" baseline: Frankle et al. 2021, arXiv
2003.00152; LayerNorm tuning for ViTs).

The head trains whole for the reason bitfit's does: its classifier starts at zero, so a frozen classifier
kernel would pass no gradient down. A normalisation parameter is recognised by its module's name, as every
model family names them (`bn`, `bn1`, `proj_bn`, `norm`, `norm1`, `final_norm`, `ln`, `gn`: NORM_MODULE); its
leaf is `scale` or `bias`. Running statistics are not parameters: they follow strategy.bn as in any run. One
phase over the whole run; `strategy.trainable_units` / `strategy.trainable` narrow it further."""
from __future__ import annotations

import dataclasses
import re

from tl_research.finetune.strategies.base import Context, Phase, StrategyBase, register

NORM_MODULE = re.compile(r"(^|_)(bn|norm|ln|gn)\d*$")


def is_norm(path: str) -> bool:
    """Whether the parameter at `path` is a normalisation layer's scale or bias (`units.1.bn1.scale`)."""
    parts = path.split(".")
    return len(parts) >= 2 and parts[-1] in ("scale", "bias") and bool(NORM_MODULE.search(parts[-2]))


@dataclasses.dataclass(frozen=True)
class NormOnlyPhase(Phase):
    def trainable(self, path: str) -> bool:
        return path.startswith("head.") or is_norm(path)


class NormOnly(StrategyBase):
    name = "norm_only"

    def phases(self, config, ctx: Context) -> list[Phase]:
        return [NormOnlyPhase("norm_only", 0, ctx.total_steps, 0)]


STRATEGY = register(NormOnly())
