"""Where a run's time goes: seconds per phase, recorded in the run folder and summed over a sweep.

Phases: data (loading and decoding the splits, waiting for training batches), compilation (JAX's tracing,
lowering and XLA compilation or persistent-cache loads), training (train steps, to the point their results are
ready), evaluation (validation, test and config.evals), checkpoints (orbax state checkpoints, best and final
weights, restoring them) and reporting (metrics.jsonl, W&B, result files); `other` is the rest of the run's
wall time (model set-up, the loop's own bookkeeping).

Compilation is measured from jax.monitoring's compile events (jaxpr tracing, MLIR lowering and the backend
compile, which includes a persistent-cache load), in whichever phase's code it happens: that phase is charged
its time minus the compilation inside it. Each run writes RUN/timing.json (durably) when it finishes or stops;
a sweep sums the timing.json files its runs wrote in this launch (each records the launch it belongs to, so runs
trained by a launch's local workers count and runs finished by earlier launches do not) into DIR/timing.json
and prints one line per phase.
"""
from __future__ import annotations

import contextlib
import os
import pathlib
import threading
import time
import uuid

from tl_research.core import durable

PHASES = ("data", "compilation", "training", "evaluation", "checkpoints", "reporting")
OTHER = "other"
FILE = "timing.json"
LAUNCH_ENV = "TL_RESEARCH_LAUNCH_ID"  # the launch a worker process's runs belong to (set by the launcher)
COMPILE_EVENTS = ("/jax/core/compile/jaxpr_trace_duration", "/jax/core/compile/jaxpr_to_mlir_module_duration",
                  "/jax/core/compile/backend_compile_duration")

_compile_seconds = 0.0
_listening = False
_lock = threading.Lock()


def _on_event(event: str, duration: float, **_) -> None:
    global _compile_seconds
    if event in COMPILE_EVENTS:
        with _lock:
            _compile_seconds += duration


def compile_seconds() -> float:
    """Seconds this process has spent compiling so far (from the first `listen`)."""
    return _compile_seconds


def listen() -> None:
    """Starts counting compile time (once per process)."""
    global _listening
    with _lock:
        if _listening:
            return
        _listening = True
    import jax
    jax.monitoring.register_event_duration_secs_listener(_on_event)


def new_launch() -> str:
    """Starts a new launch: the runs trained from here on (and by the worker processes started from here,
    which inherit the id) count towards this launch's DIR/timing.json."""
    os.environ[LAUNCH_ENV] = uuid.uuid4().hex[:16]
    return os.environ[LAUNCH_ENV]


def launch_id() -> str:
    """This launch's id: the one a launcher gave its worker processes, else a new one for this process."""
    return os.environ.get(LAUNCH_ENV) or new_launch()


class RunTimer:
    """Seconds per phase of one run. `phase(name)` times a block; blocks nest (an outer block is charged
    its time minus the inner ones'), and the compilation inside a block is charged to compilation, as is
    every compilation of the run outside the blocks."""

    def __init__(self):
        listen()
        self.t0, self.compiled0 = time.perf_counter(), compile_seconds()
        self.seconds = {p: 0.0 for p in PHASES}
        self._stack: list[list[float]] = []  # per open block: [time, compilation] of the blocks inside it
        self.runtime: dict = {}  # what the run ran on (tl_research.core.runtime.describe), recorded with its times

    @contextlib.contextmanager
    def phase(self, name: str):
        if name not in self.seconds:
            raise ValueError(f"unknown phase {name!r}; one of {', '.join(PHASES)}")
        start, compiled = time.perf_counter(), compile_seconds()
        self._stack.append([0.0, 0.0])  # time and compilation of the blocks inside this one
        try:
            yield
        finally:
            inner, inner_comp = self._stack.pop()
            elapsed, comp = time.perf_counter() - start, compile_seconds() - compiled
            own_comp = max(comp - inner_comp, 0.0)
            self.seconds[name] += max(elapsed - inner - own_comp, 0.0)
            if self._stack:
                self._stack[-1][0] += elapsed
                self._stack[-1][1] += comp

    def record(self) -> dict:
        wall = time.perf_counter() - self.t0
        # every compilation since the run started, inside a timed block or not (eager ops compile too)
        self.seconds["compilation"] = compile_seconds() - self.compiled0
        phases = {k: round(v, 3) for k, v in self.seconds.items()}
        return {"launch": launch_id(), "finished": time.time(), "wall_s": round(wall, 3), "phases": phases,
                OTHER: round(max(wall - sum(self.seconds.values()), 0.0), 3), "runtime": self.runtime}

    def write(self, run_dir) -> dict:
        rec = self.record()
        durable.write_json(pathlib.Path(run_dir) / FILE, rec)
        return rec


def sweep_total(run_dirs, launch: str | None = None) -> dict:
    """The phases summed over the runs in `run_dirs` whose timing.json belongs to `launch` (this launch's
    id by default): {"runs", "wall_s" (their wall times summed), "phases", "other"}."""
    launch = launch or launch_id()
    total = {p: 0.0 for p in PHASES}
    runs, wall, other = 0, 0.0, 0.0
    for d in run_dirs:
        rec = durable.read_json(pathlib.Path(d) / FILE)
        if not isinstance(rec, dict) or rec.get("launch") != launch:
            continue
        runs += 1
        wall += float(rec.get("wall_s", 0.0))
        other += float(rec.get(OTHER, 0.0))
        for p in PHASES:
            total[p] += float(rec.get("phases", {}).get(p, 0.0))
    return {"launch": launch, "runs": runs, "wall_s": round(wall, 3), "phases": {k: round(v, 3) for k, v in
                                                                                total.items()},
            OTHER: round(other, 3)}


def lines(total: dict) -> list[str]:
    """One line per phase (and the rest): seconds and percent of the runs' summed wall time."""
    wall = total["wall_s"] or 1.0
    rows = [*total["phases"].items(), (OTHER, total[OTHER])]
    return [f"  {name:<12} {sec:8.1f} s {100 * sec / wall:5.1f}%" for name, sec in rows]


def write_sweep(workdir, run_dirs, echo=print) -> dict | None:
    """DIR/timing.json from the runs of this launch, and the breakdown printed; None when no run of this
    launch recorded its timing (every run was finished already)."""
    total = sweep_total(run_dirs)
    if not total["runs"]:
        return None
    durable.write_json(pathlib.Path(workdir) / FILE, total)
    echo(f"time of the {total['runs']} run(s) trained in this launch, {total['wall_s']:.1f} s in all "
         f"({pathlib.Path(workdir) / FILE}):")
    for line in lines(total):
        echo(line)
    return total
