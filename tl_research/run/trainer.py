"""One run of one config, the public face of the run wing: `run()` trains a run into its folder (resuming
from its checkpoint if there is one) and returns its `RunResult`, also written to result.json.

The rooms behind it, in the order a run passes through them:
    setup.py   data -> model -> initial weights -> the strategy's plan -> schedule length -> mesh
    steps.py   the compiled steps (train per phase, eval, features), each built from a hashable spec that is
               its key in the StepCache a sweep's runs share; `Program`, what a run executes
    state.py   HostState, what the loop has decided so far, checkpointed next to the arrays
    loop.py    `Training`: restore, the step loop (train, log, evaluate and select, switch phase, checkpoint)
               and finish

There is one loop for every strategy: strategies change the labels, the optimizer or the phases, never its
structure. A run is a function of its config and seed: batch k, the dropout key of step k and the LR of step
k are pure functions of k, so a resumed run ends where the uninterrupted one would have.
"""
from __future__ import annotations

import dataclasses
import os
import pathlib
import time
from typing import Any

import jax

from tl_research import config as config_lib
from tl_research.checkpoints import weights as weights_lib
from tl_research.core import distributed, durable, timing
from tl_research.run.loop import Training, TrainingFailed
# used across the package (sweeps, cli, config): the sweep's shared cache, the mesh, a run's initial weights
from tl_research.run.setup import init_weights, mesh, model_meta
from tl_research.run.steps import StepCache

__all__ = ["RESULT_FILE", "RunResult", "StepCache", "TrainingFailed", "enable_compilation_cache", "init_weights",
           "mesh", "model_meta", "run"]

RESULT_FILE = "result.json"


@dataclasses.dataclass
class RunResult:
    status: str  # "done" | "failed"
    reason: str = ""
    metrics: dict[str, Any] = dataclasses.field(default_factory=dict)
    runtime: dict[str, Any] = dataclasses.field(default_factory=dict)  # platform, devices, processes, mesh


def enable_compilation_cache(directory=None) -> None:
    """JAX's persistent compilation cache: a process that compiles a step another process already
    compiled (a relaunched sweep, a resumed run) loads it from disk."""
    directory = directory or os.environ.get("TL_RESEARCH_CACHE") or pathlib.Path.home() / ".cache/tl_research"
    jax.config.update("jax_compilation_cache_dir", str(pathlib.Path(directory) / "jax"))
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.2)
    jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)


def run(config, run_dir, *, init_path: str | None = None, cache: StepCache | None = None,
        wandb_dir=None, group: str = "", name: str = "", run_id: str = "run", progress: bool = True,
        stop_at_step: int | None = None) -> RunResult:
    """Trains one run into `run_dir` (resuming from its checkpoint if there is one). The config is validated
    first, once per process (config.validate_once: a sweep's runs were validated before any started).

    `stop_at_step` ends the process's work after that step's checkpoint without finishing the run, as a
    kill would (used to test resuming)."""
    config_lib.validate_once(config)  # ConfigError naming the key, before any work
    run_dir = pathlib.Path(run_dir).absolute()
    done = run_dir / RESULT_FILE
    recorded = durable.read_json(done)  # torn by a crash: absent, the run finishes (again) from its checkpoint
    if isinstance(recorded, dict) and recorded.get("status") in ("done", "failed"):
        return RunResult(**recorded)
    t0 = time.time()
    timer = timing.RunTimer()
    cache = cache or StepCache()
    try:
        return _run(config, run_dir, init_path, cache, wandb_dir or run_dir.parent / "wandb", group or
                    config.name, name or run_id, run_id, progress, stop_at_step, t0, timer)
    except (TrainingFailed, weights_lib.CheckpointMismatch) as e:
        result = RunResult("failed", str(e).splitlines()[0], {"wall_time": round(time.time() - t0, 2)},
                           runtime=timer.runtime)
        return _record(run_dir, result, timer)


def _record(run_dir: pathlib.Path, result: RunResult, timer: timing.RunTimer) -> RunResult:
    """A finished run's timing.json, then its result.json (a finished run always has its timing)."""
    if distributed.is_writer():
        timer.write(run_dir)
        durable.write_json(run_dir / RESULT_FILE, dataclasses.asdict(result))
    return result


def _run(config, run_dir, init_path, cache, wandb_dir, group, name, run_id, progress, stop_at_step, t0, timer):
    t = Training(config, run_dir, init_path, cache, timer)  # setup
    with timer.phase("checkpoints"):
        t.restore()  # fresh state, or the last checkpoint
    with timer.phase("reporting"):
        t.open_tracker(wandb_dir, group, name, run_id)
    step = t.loop(progress, name, stop_at_step)  # training, evaluation and selection, phase switches
    with timer.phase("checkpoints"):
        t.manager.close()  # every checkpoint committed before anything marks the run's progress
    if stop_at_step is not None and stop_at_step <= step < t.s.total_steps and not t.host.stopped_early:
        t.tracker.finish({}, failed=False)
        if distributed.is_writer():
            timer.write(run_dir)
        return RunResult("interrupted", f"stopped at step {step}")
    return _record(run_dir, RunResult("done", "", t.finish(step, t0), runtime=t.runtime), timer)
