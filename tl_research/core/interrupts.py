"""Deterministic interruptions, to test what a launcher does when a job is preempted or killed mid-run.

    TL_RESEARCH_SIGNAL_AT=RUN_ID@STEP:SIGNAL[,RUN_ID@STEP:SIGNAL...]    e.g. frozen_depth-0@2:KILL

makes the process training run RUN_ID send itself SIGNAL (KILL, USR2, TERM, ...) right after that run's
step-STEP checkpoint, once per run and signal (DIR/RUN_ID/.signalled-SIGNAL records that it fired, so the
resumed run goes on). KILL is `kill -9` of the worker; USR2 is what SLURM sends before a time limit or a
preemption, and what submitit's handler turns into checkpoint() and a requeue. A real preemption arrives at
any instruction; this one arrives at a known step, so a test can compare the resumed run with an
uninterrupted one without a race.
"""
from __future__ import annotations

import os
import pathlib
import signal

SIGNAL_ENV = "TL_RESEARCH_SIGNAL_AT"


def _specs():
    for spec in filter(None, os.environ.get(SIGNAL_ENV, "").split(",")):
        run, _, rest = spec.partition("@")
        step, _, name = rest.partition(":")
        yield run, int(step), (name or "KILL").upper()


def _marker(run_dir: pathlib.Path, name: str) -> pathlib.Path:
    return run_dir / f".signalled-{name}"


def stop_step(run_dir) -> int | None:
    """The step after which the run in `run_dir` is to be interrupted, or None (the common case)."""
    run_dir = pathlib.Path(run_dir)
    for run, step, name in _specs():
        if run == run_dir.name and not _marker(run_dir, name).exists():
            return step
    return None


def fire(run_dir) -> None:
    """Sends this process the signal asked for the run in `run_dir` (recording first that it fired)."""
    run_dir = pathlib.Path(run_dir)
    for run, _, name in _specs():
        if run == run_dir.name and not _marker(run_dir, name).exists():
            fd = os.open(_marker(run_dir, name), os.O_WRONLY | os.O_CREAT, 0o644)
            os.fsync(fd)
            os.close(fd)
            os.kill(os.getpid(), getattr(signal, f"SIG{name}"))
            return
