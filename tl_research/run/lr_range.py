"""The LR range test (Smith 2017, arXiv 1506.01186, section 3.3): train briefly while the learning rate
rises exponentially, watch the smoothed loss, and read the bounds of a cyclical schedule off the curve.

    python launch.py --config configs/X.py --lr_range_test [--config.frozen_depth=2 ...] [--workdir DIR]

It uses the run config's model, data, initial weights, frozen depth (the last phase of its strategy),
optimizer, discriminative LRs and regulariser, and replaces the schedule with

    lr(t) = min_lr * (max_lr / min_lr) ** (t / (steps - 1)),   t = 0 .. steps - 1.

The loss is smoothed with a bias-corrected exponential moving average (factor `smoothing`); the test stops
early once the smoothed loss exceeds `diverge` times its minimum. The suggestion follows Smith's rule:

    max_lr   the LR at the minimum of the smoothed loss (past it the loss turns and rises);
    base_lr  the LR where the loss starts to fall: the first LR at which the smoothed loss has dropped by
             `start_drop` (default 10%) of its total fall from the start to the minimum.

It also records max_lr / 4, Smith's other rule of thumb for the lower bound. The output folder holds
`range_test.json` ({"base_lr", "max_lr", ...}, readable by `schedule.range_test`), `range_test.png` and
the per-step curve. A schedule then takes its bounds from it:

    python launch.py --config configs/X.py --config.schedule.name=cyclical \
        --config.schedule.range_test=DIR/lr_range_test/range_test.json
"""
from __future__ import annotations

import math
import pathlib

import numpy as np

from tl_research.core import durable, sharding

from tl_research.run import loop, setup, steps as steps_lib
from tl_research.data import pipeline
from tl_research.core.errors import ConfigError

OUT = "lr_range_test"


def exponential_lrs(min_lr: float, max_lr: float, steps: int) -> np.ndarray:
    return (min_lr * (max_lr / min_lr) ** (np.arange(steps) / (steps - 1))).astype(np.float32)


def smooth(losses, factor: float) -> np.ndarray:
    """Bias-corrected exponential moving average: avg_t / (1 - factor^(t+1))."""
    out, avg = [], 0.0
    for t, loss in enumerate(losses):
        avg = factor * avg + (1 - factor) * loss
        out.append(avg / (1 - factor ** (t + 1)))
    return np.asarray(out)


def suggest(lrs: np.ndarray, smoothed: np.ndarray, start_drop: float = 0.1) -> dict:
    """Smith's bounds from a range-test curve (see the module docstring)."""
    i_min = int(np.argmin(smoothed))
    fall = smoothed[0] - smoothed[i_min]
    if i_min == 0 or fall <= 0:
        raise ConfigError("lr_range.min_lr", float(lrs[0]), "a smaller starting LR",
                          why="the loss never fell below its value at the first LR")
    i_base = int(np.argmax(smoothed[: i_min + 1] <= smoothed[0] - start_drop * fall))
    return {"base_lr": float(lrs[i_base]), "max_lr": float(lrs[i_min]), "base_lr_quarter": float(lrs[i_min] / 4),
            "min_loss": float(smoothed[i_min]), "rule": f"max_lr: LR at the smoothed-loss minimum; base_lr: first "
            f"LR where the smoothed loss fell {start_drop:.0%} of the way to that minimum (Smith 2017, 3.3)"}


def run(config, out_dir, *, init_path: str | None = None, cache=None, progress: bool = True, echo=print) -> dict:
    """Runs the range test of `config` into `out_dir`; returns the JSON it writes. After config.validate (which
    runs `check` on config.lr_range; sweep.range_test, its one caller, validates first)."""
    cfg = config.lr_range
    out_dir = pathlib.Path(out_dir)
    s = setup.setup(config, init_path)
    phase = s.plan.phases[-1]
    mesh_ = setup.mesh(config)
    prog = steps_lib.Program(s, config, mesh_, cache or steps_lib.StepCache())
    steps = prog.steps(phase)  # the very step the run's last phase trains with
    state = prog.fresh_state(steps.tx)
    data_sharding = prog.placement.batch
    lrs = exponential_lrs(float(cfg.min_lr), float(cfg.max_lr), int(cfg.steps))
    batches = pipeline.train_batches(s.data, config.data.batch_size, config.seed, 0, len(lrs), config.data.threads,
                                     config.data.prefetch,
                                     sampler=pipeline.train_sampler(config.data, s.data, config.seed))
    momentum = float(s.plan.momenta[0])
    losses, best, diverged, avg = [], math.inf, False, 0.0
    bar = loop.progress_bar(progress, len(lrs), 0, "lr range test")
    for t, lr in enumerate(lrs):
        hp = {"lr": lr, "momentum": np.float32(momentum), "class_weights": s.class_weights}
        state, m = steps.train(state, steps_lib.to_device(next(batches), data_sharding), hp, prog.anchor)
        loss = float(sharding.to_host(m["loss"]))
        losses.append(loss if math.isfinite(loss) else math.inf)
        avg = cfg.smoothing * avg + (1 - cfg.smoothing) * losses[-1]  # smooth()'s recursion, one step
        smoothed = avg / (1 - cfg.smoothing ** (t + 1))
        best = min(best, smoothed)
        if bar:
            bar.update(1)
        if not math.isfinite(smoothed) or (t > 0 and smoothed > cfg.diverge * best):
            diverged = True
            break
    if bar:
        bar.close()
    n = len(losses)
    curve = smooth(losses, float(cfg.smoothing))
    finite = np.isfinite(curve)
    result = suggest(lrs[:n][finite], curve[finite], float(cfg.start_drop))
    result.update(steps_run=n, diverged=diverged, frozen_depth=s.depth(phase),
                  settings=cfg.to_dict(), lrs=[float(x) for x in lrs[:n]],
                  losses=[float(x) for x in losses], smoothed=[float(x) for x in curve])
    if not diverged:
        result["note"] = "the loss did not diverge: lr_range.max_lr may be too low to show the upper bound"
    out_dir.mkdir(parents=True, exist_ok=True)
    durable.write_json(out_dir / "range_test.json", result)
    _plot(out_dir / "range_test.png", lrs[:n], np.asarray(losses), curve, result)
    echo(f"LR range test: {n} steps{' (stopped: loss diverged)' if diverged else ''}; suggested base_lr="
         f"{result['base_lr']:.3g}, max_lr={result['max_lr']:.3g} -> {out_dir / 'range_test.json'}")
    return result


def _plot(path, lrs, losses, smoothed, result) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(6, 4))
    ax.plot(lrs, np.where(np.isfinite(losses), losses, np.nan), alpha=0.3, label="loss")
    ax.plot(lrs, smoothed, label="smoothed loss")
    for key, style in (("base_lr", ":"), ("max_lr", "--")):
        ax.axvline(result[key], color="k", linestyle=style, label=f"{key} {result[key]:.3g}")
    ax.set_xscale("log")
    finite = smoothed[np.isfinite(smoothed)]
    ax.set_ylim(top=min(finite.max(), 2.5 * finite[0]) * 1.05, bottom=max(0.0, finite.min() * 0.9))
    ax.set_xlabel("learning rate")
    ax.set_ylabel("training loss")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
