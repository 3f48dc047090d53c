"""Batch Spectral Shrinkage (Chen, Wang, Fu, Long & Wang, "Catastrophic Forgetting Meets Negative Transfer",
NeurIPS 2019): eta * the sum of the k smallest squared singular values of the batch's feature matrix, the
classifier's input (B, D) (TLlib's BatchSpectralShrinkage on the bottleneck features; eta 0.001, k 1)."""
from __future__ import annotations

import dataclasses

import jax.numpy as jnp

from tl_research.finetune.regularizers import base as R


def bss_penalty(features, k: int):
    """sum_{i=1..k} sigma_{-i}^2: the k smallest squared singular values of the (B, D) matrix (there are
    min(B, D) of them)."""
    s = jnp.linalg.svd(features.astype(jnp.float32), compute_uv=False)  # descending
    return jnp.sum(jnp.square(s[-k:]))


@R.register
@dataclasses.dataclass(frozen=True)
class BSS(R.Term):
    name = "bss"
    classification_only = True
    keeps_weight_decay = True

    eta: float = 0.001
    k: int = 1

    @classmethod
    def from_config(cls, s) -> "BSS":
        return cls(float(s.bss_eta), int(s.bss_k))

    @classmethod
    def check(cls, config) -> None:
        micro = config.data.batch_size // max(1, int(config.train.accumulate))
        if config.strategy.bss_k > micro:
            raise R.err("bss_k", config.strategy.bss_k, f"at most the {micro} examples of a (micro-)batch",
                        why="a batch's feature matrix has no more singular values than examples")

    def apply(self, model, images, targets: dict, call: dict, ctx: R.Pass):
        logits, _, features = model.outputs(images, **call)
        penalty = self.eta * bss_penalty(features, self.k)
        return logits, penalty, {"reg_bss": penalty}

    def summary(self) -> str:
        return f"bss {self.eta:g} (k {self.k})"
