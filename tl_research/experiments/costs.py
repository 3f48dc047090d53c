"""The GPU cost model of a dry run (`python -m tl_research.experiments run NAME --dry_run`): how long a run's
training steps and evaluations take on one A100 or one H100, from the model's FLOPs and the GPU's peak.

    forward FLOPs   XLA's cost analysis of the configured model's forward pass at the run's input size (the
                    abstract model: no weights, nothing run; ResNet-50 at 224 px counts 7.9 GFLOP, ViT-B/16
                    35.3 GFLOP, within 3% of the published 4.1 and 17.6 GMACs)
    a training step batch x 3 x forward (forward and backward); 1 x forward when the backbone is frozen
                    (frozen_depth=all, feature_extraction, and two_phase's head-only phase): the head's own
                    cost is left out
    an evaluation   1 x forward for every image of the validation split at each eval, of the test split at the
                    end (at each eval with train.eval_test), and of each extra test set once
    time            FLOPs / (the GPU's dense peak at the run's precision x UTILISATION), and at least
                    STEP_FLOOR_S for every training step and every evaluation batch, plus RUN_OVERHEAD_S a run
                    (compilation, loading the data and weights, checkpoints)

The utilisation of a convolutional network is measured, not assumed: NVIDIA's ResNet-50 v1.5 (PyTorch,
DeepLearningExamples, pytorch-21.03 container) trains at 2,470 images/s in mixed precision and 938 images/s in
TF32 on one A100 80GB; at 23.8 GFLOP a training image (3 x 7.94) that is 0.19 of the A100's 312 TFLOP/s bf16
peak and 0.14 of its 156 TFLOP/s TF32 peak. A transformer's 0.35 is an assumption (benchmarks/README.md sets
40% MFU for ViT-B/16 as this codebase's goal; not measured yet). The H100 figures use the same utilisation
on its peak (989.4 TFLOP/s bf16, as benchmarks/README.md; 494.7 TF32), which flatters convolutional networks
(benchmarks/README.md: 6,000 ResNet-50 images/s would be about 15% of it). STEP_FLOOR_S stands for what a
small model's step costs whatever its FLOPs (kernel launches, the host's input pipeline) and RUN_OVERHEAD_S
for what a run costs besides its steps (XLA compilation, shared by runs of the same shapes through the persistent
cache, data and weights loading): assumptions, not measured on a GPU here. float32 runs are counted at the TF32 peak (JAX's default matmul precision on these GPUs).
"""
from __future__ import annotations

import dataclasses
import functools
import json
import math

PEAK_TFLOPS = {"A100": {"bfloat16": 312.0, "float32": 156.0}, "H100": {"bfloat16": 989.4, "float32": 494.7}}
UTILISATION = {"conv": {"bfloat16": 0.19, "float32": 0.14}, "transformer": {"bfloat16": 0.35, "float32": 0.35}}
STEP_FLOOR_S = 0.005
RUN_OVERHEAD_S = 30.0
GPUS = tuple(PEAK_TFLOPS)
TRAIN_FACTOR, FROZEN_FACTOR = 3.0, 1.0  # forward + backward; forward only


def kind(model_name: str) -> str:
    """The utilisation class of an architecture: transformer for the ViTs, conv for the rest."""
    return "transformer" if model_name.startswith("vit") else "conv"


@functools.lru_cache(maxsize=64)
def _forward_flops(model_json: str, size: int, channels: int) -> float:
    import jax
    import jax.numpy as jnp
    import ml_collections
    from flax import nnx
    from tl_research import models
    model_cfg = ml_collections.ConfigDict(json.loads(model_json))
    graphdef, state = nnx.split(models.abstract(model_cfg, 10, channels))

    def forward(state, x):
        return nnx.merge(graphdef, state)(x)

    cost = jax.jit(forward).lower(state, jax.ShapeDtypeStruct((1, size, size, channels), jnp.float32)).cost_analysis()
    cost = cost[0] if isinstance(cost, (list, tuple)) else cost
    return float(cost["flops"])


def forward_flops(model_cfg, size: int, channels: int = 3) -> float:
    """FLOPs of one image's forward pass through the model `model_cfg` describes at size x size x channels
    (XLA's cost analysis of the lowered computation; nothing is allocated or run). Cached per process."""
    return _forward_flops(model_cfg.to_json(), int(size), int(channels))


@dataclasses.dataclass(frozen=True)
class RunCost:
    """What one run (or source model) computes: its training steps and images, its evaluation batches and
    images, and the FLOPs of one image's forward pass."""

    model: str
    size: int
    precision: str
    steps: int
    train_images: float  # steps x batch
    train_factor: float  # TRAIN_FACTOR, or FROZEN_FACTOR for a frozen backbone
    eval_batches: int
    eval_images: float
    forward: float  # FLOPs

    def images_per_second(self, gpu: str, batch: int) -> float:
        """Training images a second on one `gpu` at `batch` images a step (the step floor included)."""
        return batch / max(STEP_FLOOR_S, batch * self.train_factor * self.forward / self._rate(gpu))

    def _rate(self, gpu: str) -> float:
        precision = self.precision if self.precision in PEAK_TFLOPS[gpu] else "float32"
        return PEAK_TFLOPS[gpu][precision] * 1e12 * UTILISATION[kind(self.model)][precision]

    def seconds(self, gpu: str) -> float:
        rate = self._rate(gpu)
        train = max(self.steps * STEP_FLOOR_S, self.train_images * self.train_factor * self.forward / rate)
        evals = max(self.eval_batches * STEP_FLOOR_S, self.eval_images * self.forward / rate)
        return train + evals + RUN_OVERHEAD_S


def frozen_backbone(cfg) -> bool:
    return str(cfg.frozen_depth) in ("all", "-1") or cfg.strategy.get("name") == "feature_extraction"


def run_cost(cfg, train_n: float, val_n: float, test_n: float, extra_n: float, size: int, channels: int,
             flops=None) -> RunCost:
    """The cost of the run `cfg` given the sizes of its training set, validation and test splits and extra
    test sets (examples) and its input size: its steps (train.steps, else train.epochs over the training
    set), evaluations (train.eval_every steps apart, else once an epoch) and forward FLOPs."""
    batch = cfg.data.batch_size
    per_epoch = max(1, math.ceil(train_n / batch))
    steps = int(cfg.train.steps or math.ceil(cfg.train.epochs * per_epoch))
    evals = steps // cfg.train.eval_every if cfg.train.eval_every else math.ceil(steps / per_epoch)
    evals = max(1, evals)
    eval_images = evals * (val_n + (test_n if cfg.train.get("eval_test") else 0)) + test_n + extra_n
    eval_batches = math.ceil(eval_images / max(1, cfg.data.eval_batch_size))
    factor = FROZEN_FACTOR if frozen_backbone(cfg) else TRAIN_FACTOR
    if factor == TRAIN_FACTOR and cfg.strategy.get("name") == "two_phase":  # the head-only phase: frozen
        s = cfg.strategy
        head = min(steps, s.boundary_steps or round(s.boundary_epochs * per_epoch))
        factor = (head * FROZEN_FACTOR + (steps - head) * TRAIN_FACTOR) / steps
    return RunCost(cfg.model.name, size, cfg.get("precision", "float32"), steps, float(steps * batch), factor,
                   eval_batches, float(eval_images), (flops or forward_flops)(cfg.model, size, channels))


def hours(costs: list[RunCost], gpu: str) -> float:
    return sum(c.seconds(gpu) for c in costs) / 3600.0
