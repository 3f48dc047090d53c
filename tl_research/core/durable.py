"""Files that survive a crash: atomic, fsynced writes, and reads that treat a torn marker as absent.

A file that marks progress or is read back on relaunch (a run's result.json and config.json, weights'
meta.json, results.csv, metrics.jsonl rewrites, cached JSON) is written here: to a temporary file in the same
directory, flushed, fsynced, renamed over the target (os.replace is atomic on POSIX) and the directory fsynced,
so after a crash the target holds either the old content or the new one, never a mix. What this cannot
promise: a disk or file system that drops data it acknowledged as fsynced.

Crash injection (tests/test_crash.py): TL_RESEARCH_CRASH_AT=POINT[:before|after] makes the process
os._exit(CRASH_EXIT) right before (default) or right after the rename of the write point named POINT (the
target's file name unless the caller names it, e.g. `result.json`, `results.csv`, `meta.json`).
"""
from __future__ import annotations

import contextlib
import json
import logging
import os
import pathlib
import socket
from typing import Any

log = logging.getLogger(__name__)
CRASH_ENV = "TL_RESEARCH_CRASH_AT"
CRASH_EXIT = 70
TMP_MARK = ".tmp-"  # temporaries are .<name>.tmp-<host>-<pid>: a relaunch can tell a dead writer's leftovers


def _maybe_crash(point: str, when: str) -> None:
    spec = os.environ.get(CRASH_ENV, "")
    if not spec:
        return
    name, _, at = spec.partition(":")
    if name == point and (at or "before") == when:
        os._exit(CRASH_EXIT)


def fsync_dir(directory) -> None:
    """Makes a rename (or a new file) in `directory` durable: the directory entry itself is fsynced."""
    fd = os.open(directory, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _temp_name(path: pathlib.Path) -> pathlib.Path:
    return path.with_name(f".{path.name}{TMP_MARK}{socket.gethostname()}-{os.getpid()}")


def write_bytes(path, data: bytes, *, point: str | None = None, mode: int = 0o644) -> None:
    """Atomically replaces `path` with `data` (see the module docstring); `point` names the write point for
    crash injection (default: the file name)."""
    def fill(tmp: pathlib.Path) -> None:
        with os.fdopen(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode), "wb") as f:
            f.write(data)
        os.chmod(tmp, mode)  # the umask narrows os.open's mode; these files are as readable as the rest
    write_with(path, fill, point=point)


def write_with(path, fill, *, point: str | None = None) -> None:
    """Atomically replaces `path` with the file `fill(temporary_path)` writes there (write_bytes' bytes, or e.g.
    a large array written in place through a memory map, never whole in memory): fsynced, renamed over
    `path`, the directory fsynced; `point` names the write point for crash injection (default: the file name)."""
    path = pathlib.Path(path)
    point = point or path.name
    tmp = _temp_name(path)
    try:
        fill(tmp)
        fd = os.open(tmp, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
        _maybe_crash(point, "before")
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise
    fsync_dir(path.parent)
    _maybe_crash(point, "after")


def write_text(path, text: str, *, point: str | None = None) -> None:
    write_bytes(path, text.encode(), point=point)


def write_json(path, obj: Any, *, point: str | None = None, indent: int | None = 1, default=None) -> None:
    write_text(path, json.dumps(obj, indent=indent, default=default), point=point)


def read_json(path) -> Any | None:
    """The JSON in `path`, or None when it is missing or torn (unparseable: written by something that died
    mid-write, or cut short by a disk that lost data): a relaunch then redoes the step it marks."""
    path = pathlib.Path(path)
    try:
        text = path.read_text()
    except FileNotFoundError:
        return None
    try:
        return json.loads(text)
    except ValueError:
        log.warning("%s is torn (not valid JSON); treating it as absent and redoing its step", path)
        return None


def read_jsonl(path) -> list[dict]:
    """The rows of a JSON-lines file; a last line cut short by a crash (no newline, or unparseable) is
    dropped. A torn line elsewhere cannot come from an append-only writer and is an error."""
    path = pathlib.Path(path)
    if not path.exists():
        return []
    lines = path.read_text().split("\n")
    rows = []
    for i, line in enumerate(lines):
        if not line.strip():
            continue
        last = not any(rest.strip() for rest in lines[i + 1:])
        try:
            rows.append(json.loads(line))
        except ValueError:
            if not last:
                raise
            log.warning("%s: dropping a last line cut short by a crash", path)
    return rows


def remove_stale_temporaries(directory, skip=("checkpoints", "wandb")) -> int:
    """Deletes the temporaries under `directory` left by writers on this host that are no longer alive
    (another live process's temporary is its write in progress); the number removed. Folders named in
    `skip` (orbax's and W&B's own files) are not searched."""
    host = socket.gethostname()
    removed = 0
    for root, dirs, files in os.walk(directory):
        dirs[:] = [d for d in dirs if d not in skip]
        for name in files:
            if not (name.startswith(".") and TMP_MARK in name):
                continue
            w_host, _, pid = name.rpartition(TMP_MARK)[2].rpartition("-")
            if w_host == host and pid.isdigit() and not _alive(int(pid)):
                with contextlib.suppress(OSError):
                    os.unlink(os.path.join(root, name))
                    removed += 1
    return removed


def _alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


# FUSE file systems over object stores: a rename is a copy and a delete (a reader can see half a file, a
# crash can leave both), and flock is per machine: neither the crash safety above nor the workdir locks hold.
NO_ATOMIC_RENAME = frozenset({"fuse.gcsfuse", "fuse.s3fs", "fuse.goofys", "fuse.rclone", "fuse.blobfuse",
                              "fuse.mountpoint-s3"})


def filesystem_type(path, mounts: str = "/proc/mounts") -> str:
    """The type of the file system that holds `path` (or would hold it: its nearest existing parent), from
    the mount table; '' where the table cannot be read."""
    try:
        lines = pathlib.Path(mounts).read_text().splitlines()
    except OSError:
        return ""
    target = os.path.realpath(path)
    best, kind = "", ""
    for line in lines:
        fields = line.split()
        if len(fields) < 3:
            continue
        point = fields[1].replace("\\040", " ")
        inside = target == point or target.startswith(point.rstrip("/") + "/")
        if inside and len(point) >= len(best):
            best, kind = point, fields[2]
    return kind
