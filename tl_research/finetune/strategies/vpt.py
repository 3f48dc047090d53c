"""vpt_shallow and vpt_deep: visual prompt tuning (VPT, Jia et al. 2022, arXiv 2203.12119) for the ViT family;
the prompt tokens and the new task's head train, every transferred weight stays as it was.

`strategy.vpt.prompts` learnable tokens of the model's width go in after the class token: at the input of the
first encoder block (vpt_shallow; the later blocks carry them) or, a block's own, at the input of every block
(vpt_deep). The modules and their initialisation: tl_research/models/prompts_adapters.py. Their outputs are
dropped at the last block's output, so the final norm unit and the head's pooling see the plain model's tokens.
`strategy.vpt.dropout` drops prompt entries in training (the paper's code: MODEL.PROMPT.DROPOUT; 0 = off).

Trainable count: prompts x width x (1 for shallow, the number of encoder blocks for deep) + the head's
parameters. The patch embedding (unit 0) is untouched: the lowest trainable unit is the first block (1), so a
run on un-augmented data trains from cached patch embeddings (feature_path cached@1). ViTs only, and
vpt_shallow for classification only (a dense head reads the blocks' token grids, which carry the prompts in a
shallow run); `frozen_depth` is not read.
"""
from __future__ import annotations

import dataclasses

import numpy as np

from tl_research.core.errors import ConfigError
from tl_research.finetune.strategies.base import Context, Phase, StrategyBase, err, register
from tl_research.models import prompts_adapters as pa

SEED_SALT = 0x7E7  # the prompts' initialisation: config.seed folded with this


def is_prompt(path: str) -> bool:
    return path.rsplit(".", 1)[-1] == "prompts"


@dataclasses.dataclass(frozen=True)
class PromptPhase(Phase):
    def trainable(self, path: str) -> bool:
        return path.startswith("head.") or is_prompt(path)


class VisualPromptTuning(StrategyBase):
    def __init__(self, name: str, deep: bool):
        self.name, self.deep = name, deep

    def check(self, config) -> None:
        v = config.strategy.vpt
        if isinstance(v.prompts, bool) or not isinstance(v.prompts, int) or v.prompts < 1:
            raise err("vpt.prompts", v.prompts, "a number of prompt tokens >= 1 (the paper: 1 .. 200)")
        d = v.dropout
        if isinstance(d, bool) or not isinstance(d, (int, float)) or not 0.0 <= d < 1.0:
            raise err("vpt.dropout", d, "a rate in [0, 1) (0: off)")
        if config.model.name not in pa.VIT_MODELS:
            raise ConfigError("model.name", config.model.name, f"{', '.join(pa.VIT_MODELS)} for "
                              f"strategy.name={self.name}", why="prompt tokens go into a ViT's encoder blocks")
        task = config.get("task", "classification")
        if not self.deep and task != "classification":
            raise err("name", self.name, f"vpt_deep (or another strategy) for task={task}", why="a dense head "
                      "reads the blocks' token grids, which carry the prompts of a shallow run")

    def phases(self, config, ctx: Context) -> list[Phase]:
        return [PromptPhase(self.name, 0, ctx.total_steps, 0)]

    def extend(self, model, config):
        v = config.strategy.vpt
        rng = np.random.default_rng((config.seed, SEED_SALT))
        return pa.add_prompts(model, prompts=int(v.prompts), deep=self.deep, dropout=float(v.dropout), rng=rng)


SHALLOW = register(VisualPromptTuning("vpt_shallow", deep=False))
DEEP = register(VisualPromptTuning("vpt_deep", deep=True))
