"""Waiting on a launch's jobs (tl_research.sweeps.launchers): the progress line, jobs that ended without recording
their runs resubmitted, and runs that no attempt recorded written as failed rows with the reason.

A job "ends" as submitit sees it (LocalJob: its process exited; SlurmJob: sacct's state). What it leaves
behind is read from the workdir, never from the job's return value: results.csv says which runs are
recorded, the run locks which are being trained right now.
"""
from __future__ import annotations

import dataclasses
import pathlib
import time
from typing import Any, Callable

from tl_research.core import locks

from tl_research.analysis import results

from tl_research.sweeps import sweep

from tl_research.run import trainer

RETRIES = 2  # resubmissions of a job that ended without recording its runs, before they count as failed


@dataclasses.dataclass
class Slot:
    """One job of a launch and the runs it covers; `submit(run_ids)` starts it again on the same devices."""
    name: str
    run_ids: list[str]
    job: Any
    submit: Callable[[list[str]], Any]
    attempts: int = 1
    settled: bool = False  # ended, and nothing of it left to resubmit



def counts(workdir: pathlib.Path, run_ids: list[str]) -> dict[str, int]:
    """Runs done / running (their lock held) / queued / failed, from results.csv and the run locks."""
    status = {r["run_id"]: r["status"] for r in results.read_rows(workdir / sweep.RESULTS)}
    out = {"done": 0, "running": 0, "queued": 0, "failed": 0}
    for rid in run_ids:
        if status.get(rid) in ("done", "failed"):
            out[status[rid]] += 1
        elif locks.is_held(workdir / locks.LOCK_DIR / f"run-{rid}.lock"):
            out["running"] += 1
        else:
            out["queued"] += 1
    return out


def _recorded(workdir: pathlib.Path) -> set[str]:
    return {r["run_id"] for r in results.read_rows(workdir / sweep.RESULTS) if r["status"] in ("done", "failed")}


def follow(workdir: pathlib.Path, run_ids: list[str], *, poll_s: float = 2.0, echo=print) -> None:
    """`launch.py ... --collect --wait`: shows the progress line of jobs another command submitted until
    every run of `run_ids` is recorded (done or failed). Ctrl-C stops the waiting, not the jobs."""
    last = None
    while True:
        c, last = _progress(workdir, run_ids, last, echo)
        if c["running"] == c["queued"] == 0:
            return
        time.sleep(poll_s)


def _progress(workdir: pathlib.Path, run_ids: list[str], last: str | None, echo) -> tuple[dict, str]:
    """(the counts, the progress line), the line echoed when it changed since `last`."""
    c = counts(workdir, run_ids)
    line = f"runs: {c['done']} done, {c['running']} running, {c['queued']} queued, {c['failed']} failed"
    if line != last:
        echo(line)
    return c, line


def step(slots: list[Slot], recorded: set[str], retries: int = RETRIES) -> tuple[list, list]:
    """One look at the jobs: (slots to resubmit with the runs left to them, (slot, runs) given up on).
    A job that ended leaves runs behind only where no live job also covers them (a local worker takes any
    free run, so a killed worker's run is resumed by the others while they live)."""
    live = [s for s in slots if not s.settled and not s.job.done()]
    covered = {rid for s in live for rid in s.run_ids}
    again, given_up = [], []
    for s in slots:
        if s.settled or s in live:
            continue
        left = [rid for rid in s.run_ids if rid not in recorded and rid not in covered]
        if not left:
            s.settled = s.settled or not [rid for rid in s.run_ids if rid not in recorded]
            continue
        if s.attempts <= retries:
            again.append((s, left))
            covered.update(left)
        else:
            given_up.append((s, left))
            s.settled = True
    return again, given_up


def _why(job) -> str:
    """One line on how a job ended without recording its runs: the last line of its error when it returned
    one, else its state and where its log is (a killed process leaves no result for submitit to read)."""
    if job.paths.result_pickle.exists():
        text = str(job.exception() or "").strip().splitlines()
        what = text[-1][:160] if text else "it returned"
    else:
        what = f"no result, state {job.state}; log {job.paths.stderr}"
    return f"job {job.job_id} ended without recording it ({what})"


def record_failed(workdir: pathlib.Path, runs: dict, rid: str, reason: str, keys: list[str]) -> bool:
    """A failed row for a run its jobs never recorded; skipped if a worker holds the run (it is training)."""
    lock = locks.Lock(locks.lock_path(workdir, "run", rid))
    if not lock.try_acquire():
        return False
    try:
        if rid in _recorded(workdir):
            return False
        _, point, cfg = runs[rid]
        results.upsert_row(workdir / sweep.RESULTS,
                           sweep.result_row(rid, point, cfg, keys, trainer.RunResult("failed", reason, {})))
        return True
    finally:
        lock.release()


def wait(slots: list[Slot], workdir: pathlib.Path, runs: list, keys: list[str], *, poll_s: float = 1.0,
         retries: int = RETRIES, echo=print) -> None:
    """Shows progress until every job has ended and its runs are recorded (resubmitting or failing them)."""
    by_id = {r[0]: r for r in runs}
    ids, last = list(by_id), None
    while True:
        _, last = _progress(workdir, ids, last, echo)
        again, given_up = step(slots, _recorded(workdir), retries)
        for s, left in again:
            reason = _why(s.job)
            s.job, s.run_ids, s.attempts = s.submit(left), left, s.attempts + 1
            echo(f"{s.name}: {reason}; resubmitted {len(left)} run(s) as job {s.job.job_id} "
                 f"(attempt {s.attempts} of {retries + 1})")
        for s, left in given_up:
            reason = f"{_why(s.job)}, {retries + 1} attempts"
            failed = [rid for rid in left if record_failed(workdir, by_id, rid, reason, keys)]
            echo(f"{s.name}: {len(failed)} run(s) recorded as failed: {reason}")
        if all(s.settled for s in slots):
            return
        time.sleep(poll_s)


