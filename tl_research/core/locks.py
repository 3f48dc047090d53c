"""Locks that let several processes share one workdir: each run, each source model and each results.csv
update is held by one process at a time.

    DIR/.locks/run-<run id>.lock        the run being trained (its checkpoints, metrics.jsonl, result.json)
    DIR/.locks/source-<hash>.lock       a source model being trained (workers that start together wait)
    DIR/.locks/results.lock             a read-modify-write of results.csv

They are OS file locks (flock, through the `filelock` package): the kernel releases them when the holder
exits, however it dies, so a crash never leaves a workdir locked. The holder writes its pid and host into
the lock file when it acquires it, so a process that finds it held can say who holds it.

A launch takes the runs nobody holds first and comes back to the held ones afterwards (waiting for them);
a run whose result is recorded by then is skipped, so no run is trained twice.

A multi-host run is one launch on several processes that must take every step together. The locks that
every process passes through (`collective=True`: a run's, a source model's) are held by process 0 alone, every
process waits at a barrier until it has them, and `try_acquire` never succeeds (so all processes take the
same, blocking, path through a sweep). The others (results.csv) are taken by process 0 only, which writes.
"""
from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import pathlib
import socket
import time
from typing import Iterator

from filelock import FileLock, Timeout

from tl_research.core import distributed

log = logging.getLogger(__name__)
LOCK_DIR = ".locks"


def lock_path(workdir, kind: str, name: str = "") -> pathlib.Path:
    d = pathlib.Path(workdir) / LOCK_DIR
    d.mkdir(parents=True, exist_ok=True)
    return d / (f"{kind}-{name}.lock" if name else f"{kind}.lock")


def _write_holder(fd: int) -> None:
    os.ftruncate(fd, 0)
    os.write(fd, json.dumps({"pid": os.getpid(), "host": socket.gethostname(), "since": time.time()}).encode())


def holder(path) -> str:
    """Who holds the lock at `path`, as 'pid P on host H' (what its holder wrote), or 'another process'."""
    try:
        info = json.loads(pathlib.Path(path).read_text())
        return f"pid {info['pid']} on host {info['host']}"
    except (OSError, ValueError, KeyError, TypeError):
        return "another process"


class Lock:
    """One of the locks above; `try_acquire()` does not wait, `acquire()` waits (saying for whom, once)."""

    def __init__(self, path, collective: bool = False):
        self.path, self.collective = pathlib.Path(path), collective
        self._lock = FileLock(self.path, on_acquired=_write_holder, thread_local=False)

    def _try(self) -> bool:
        try:
            self._lock.acquire(timeout=0)
        except Timeout:
            return False
        return True

    def try_acquire(self) -> bool:
        return not (self.collective and distributed.multi_process()) and self._try()

    def acquire(self, echo=None, what: str = "") -> None:
        if (distributed.is_writer() or not self.collective) and not self._try():
            message = f"{what or self.path.name} is held by {holder(self.path)}; waiting for it"
            (echo or log.warning)(message)
            self._lock.acquire()
        if self.collective:
            distributed.barrier(f"acquired {self.path.name}")

    def release(self) -> None:
        if distributed.is_writer() or not self.collective:
            self._lock.release()

    @property
    def held(self) -> bool:
        return self._lock.is_locked


@contextlib.contextmanager
def held(path, echo=None, what: str = "", collective: bool = False) -> Iterator[Lock]:
    """Holds the lock at `path` for the block, waiting for it if another process has it."""
    lock = Lock(path, collective)
    lock.acquire(echo, what)
    try:
        yield lock
    finally:
        lock.release()


def is_held(path) -> bool:
    """Whether some process holds the lock at `path` right now. A probe for progress displays: it takes a
    free lock for an instant (a worker trying it then comes back to it later) and writes nothing."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except FileNotFoundError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    else:
        fcntl.flock(fd, fcntl.LOCK_UN)
        return False
    finally:
        os.close(fd)
