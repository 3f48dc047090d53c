"""StochNorm (Kou, You, Long & Wang, "Stochastic Normalization", NeurIPS 2020): every BatchNorm of the units
becomes a StochNorm (models.norm), which in training normalises each channel by the batch's statistics with
probability p (0.5, TLlib's default), else by the moving statistics; plain BatchNorm in inference. A model change,
no penalty: the layers keep their parameter paths, so the weights export and load as BatchNorm's."""
from __future__ import annotations

import dataclasses

from tl_research.finetune.regularizers import base as R


def _has_batch_norm(model) -> bool:
    from flax import nnx
    return any(type(m) is nnx.BatchNorm for unit in model.units for _, m in nnx.iter_modules(unit))


@R.register
@dataclasses.dataclass(frozen=True)
class StochNorm(R.Term):
    name = "stochnorm"
    keeps_weight_decay = True

    p: float = 0.5  # the probability of the batch-statistics branch, per channel and step

    @classmethod
    def from_config(cls, s) -> "StochNorm":
        return cls(float(s.stochnorm_p))

    @classmethod
    def check(cls, config) -> None:
        from tl_research import models
        if config.strategy.bn == "source":
            raise R.err("regularizer", "stochnorm", "weight_decay, l2_sp, none, ... with strategy.bn=source",
                        why="strategy.bn=source keeps every BatchNorm on its running statistics, so nothing is "
                            "drawn")
        if not _has_batch_norm(models.abstract(config.model, 2, 3)):
            raise R.err("regularizer", "stochnorm", "a regularizer other than stochnorm for this model",
                        why=f"{config.model.name} has no BatchNorm in its units")

    def extend(self, model, config, weights):
        from tl_research.models import norm
        norm.to_stochnorm(model.units, self.p)
        return model

    def summary(self) -> str:
        return f"stochnorm p {self.p:g}"
