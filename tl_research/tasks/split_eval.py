"""The evaluator any task may hand the trainer (`Task.evaluator`): a split's eval batches through the compiled
eval step (the task objective's `reduce`), folded on the devices (`add`, `append`), then scored on the host
into the task's Score. Segmentation and detection use it, and so can a task from outside the package."""
from __future__ import annotations

from typing import Callable

import jax

from tl_research.core import sharding
from tl_research.data import pipeline


def add(total, out):
    """Sums on the devices, batch by batch (a confusion matrix, loss sums)."""
    return out if total is None else jax.tree.map(lambda a, b: a + b, total, out)


def append(total, out):
    """Keeps every batch's outputs (decoded detections), still on the devices until the one transfer."""
    return [out] if total is None else [*total, out]


class SplitEval:
    """One split through `eval_step(params, stats, batch)` (the task objective's `reduce`, replicated across
    devices and processes), its outputs folded by `combine` and turned into a Score by `score` on the host."""

    def __init__(self, eval_step: Callable, data: pipeline.Dataset, split: pipeline.Split, put: Callable, *,
                 batch_size: int, threads: int = 2, combine: Callable = add, score: Callable):
        self.eval_step, self.data, self.split, self.put = eval_step, data, split, put
        self.batch_size, self.threads, self.combine, self.score = batch_size, threads, combine, score

    def counts(self, params, stats):
        total = None
        for batch in pipeline.eval_batches(self.data, self.split, self.batch_size, self.threads):
            total = self.combine(total, self.eval_step(params, stats, self.put(batch)))
        # one transfer after every batch is queued; replicated, so every process reads the same numbers
        # (and selects the same best step)
        return self.score(sharding.to_host(total))
