"""L2-SP (Li, Grandvalet & Davoine 2018, arXiv 1802.01483): alpha/2 ||w - w0||^2 on the transferred weights
that train, plus beta/2 ||w_head||^2; the anchor w0 the starting weights of the units, placed like them."""
from __future__ import annotations

import dataclasses

import jax.numpy as jnp

from tl_research.finetune.regularizers import base as R


def l2_sp_penalty(params: dict, anchor: dict, alpha: float, beta: float):
    """alpha/2 * sum ||w - w0||^2 over the transferred parameters given (those in `anchor`), plus
    beta/2 * sum ||w||^2 over the head's (Li, Grandvalet & Davoine 2018, arXiv 1802.01483, eq. 3)."""
    sp = sum(jnp.sum(jnp.square(v - anchor[k])) for k, v in params.items() if k in anchor)
    head = sum(jnp.sum(jnp.square(v)) for k, v in params.items() if k.startswith("head."))
    return 0.5 * alpha * sp + 0.5 * beta * head


@R.register
@dataclasses.dataclass(frozen=True)
class L2SP(R.Term):
    name = "l2_sp"
    transfer_only = True

    alpha: float = 0.01
    beta: float = 0.01

    @classmethod
    def from_config(cls, s) -> "L2SP":
        return cls(float(s.l2sp_alpha), float(s.l2sp_beta))

    def anchor(self, params: dict, stats: dict, prepared: dict):
        return {k: v for k, v in params.items() if not k.startswith("head.")}

    def anchor_shardings(self, param_shardings: dict, repl):
        return {k: s for k, s in param_shardings.items() if not k.startswith("head.")}

    def apply(self, model, images, targets: dict, call: dict, ctx: R.Pass):
        penalty = l2_sp_penalty(ctx.train_params, ctx.anchor, self.alpha, self.beta)
        return model(images, **call), penalty, {"reg_l2_sp": penalty}

    def summary(self) -> str:
        return f"l2_sp {self.alpha:g}/{self.beta:g}"
