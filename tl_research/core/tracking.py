"""Where a run's numbers go: `metrics.jsonl` in the run directory and a Weights & Biases run.

W&B runs offline by default (sync later with `wandb sync DIR/wandb/offline-run-*`); `wandb.mode=online`
streams, `disabled` turns it off (tests). A W&B failure is reported once and never stops training: the
local files are the record of truth. Every W&B call (start-up, logging, the summary, finishing) runs in one
background thread per process, in the order the runs make them, so training never waits for W&B; a sweep
waits for that thread once, at its end (`wait`), and so does the process at exit.
"""
from __future__ import annotations

import atexit
import json
import logging
import math
import os
import pathlib
import queue
import threading
from typing import Any

from tl_research.core import durable

log = logging.getLogger(__name__)


def _clean(value):
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    return value


def read_metrics(path) -> list[dict]:
    """The rows of a metrics.jsonl; a last line cut short by a crash is dropped."""
    return durable.read_jsonl(path)


class RunTracker:
    """metrics.jsonl + an optional W&B run for one training run.

    On resume the file is cut back to the `keep_lines` rows it held when the checkpoint being resumed was
    saved (`sync()` returns that count; the trainer keeps it in the checkpoint), so that after the resumed
    run it reads as if the run had never stopped: no repeated or missing rows. Without a count (a checkpoint
    of an older version) rows logged after `resume_step` are dropped."""

    def __init__(self, run_dir, *, wandb_cfg, group: str, name: str, run_id: str, config: dict,
                 wandb_dir, resume_step: int = 0, keep_lines: int | None = None):
        self.path = pathlib.Path(run_dir) / "metrics.jsonl"
        self._truncate(resume_step, keep_lines)
        self._file = self.path.open("a")
        self.wandb = None  # the W&B run once the background thread has started it
        self._enabled = wandb_cfg.mode != "disabled"
        self.init_seconds = 0.0  # W&B's start-up happens off the training thread
        if self._enabled:
            def start():
                self.wandb = _init_wandb(wandb_cfg, group, name, run_id, config, wandb_dir)
            _WORKER.submit(start, "init")

    def _truncate(self, step: int, keep_lines: int | None) -> None:
        rows = read_metrics(self.path)
        if keep_lines is not None:
            if len(rows) < keep_lines:
                log.warning("%s has %d rows, fewer than the %d its checkpoint recorded (lost on disk); "
                            "the resumed run appends to what is there", self.path, len(rows), keep_lines)
            rows = rows[:keep_lines] if step else []
        else:
            rows = [r for r in rows if r.get("step", 0) <= step] if step else []
        self.path.parent.mkdir(parents=True, exist_ok=True)
        durable.write_text(self.path, "".join(json.dumps(r) + "\n" for r in rows), point="metrics.jsonl")
        self.lines = len(rows)

    def sync(self) -> int:
        """Makes every row logged so far durable; their number (for the checkpoint about to be saved)."""
        self._file.flush()
        os.fsync(self._file.fileno())
        return self.lines

    def log(self, metrics: dict[str, Any]) -> None:
        row = {k: _clean(v) for k, v in metrics.items()}
        self._file.write(json.dumps(row) + "\n")
        self._file.flush()
        self.lines += 1
        if self._enabled:
            step = row.get("step")
            data = {k: v for k, v in metrics.items() if k != "step" and isinstance(v, (int, float))}
            _WORKER.submit(lambda: self.wandb is not None and self.wandb.log(data, step=step), "log")

    def finish(self, summary: dict[str, Any], failed: bool = False) -> None:
        self._file.close()
        if self._enabled:
            summary = {k: v for k, v in summary.items() if isinstance(v, (int, float, str))}

            def close():
                if self.wandb is None:  # its start failed (reported once)
                    return
                for k, v in summary.items():
                    self.wandb.summary[k] = v
                self.wandb.finish(exit_code=1 if failed else 0)
            _WORKER.submit(close, "finish")


class _Worker:
    """One thread that makes this process's W&B calls in the order they were submitted; a failing call is
    reported once per kind (_safe) and the next ones go on."""

    def __init__(self):
        self._queue: queue.Queue = queue.Queue()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()

    def submit(self, fn, what: str) -> None:
        with self._lock:
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._loop, name="wandb", daemon=True)
                self._thread.start()
        self._queue.put((fn, what))

    def _loop(self) -> None:
        while True:
            fn, what = self._queue.get()
            try:
                _safe(fn, what)
            finally:
                self._queue.task_done()

    def wait(self) -> None:
        """Returns once every call submitted so far has run."""
        if self._thread is not None:
            self._queue.join()


_WORKER = _Worker()
atexit.register(_WORKER.wait)


def wait() -> None:
    """Waits for this process's outstanding W&B calls (the end of a sweep, before its report)."""
    _WORKER.wait()


ONLINE_TIMEOUT_S = 15  # W&B's own default waits 90 s per run when there is no network
_offline_instead = False  # set once an online start failed: the rest of the process logs offline


def _init_wandb(cfg, group, name, run_id, config, wandb_dir):
    """wandb.init; online is tried once with a short timeout, and after a failure every later run of the
    process goes offline (one warning), so a machine without network does not wait at every run."""
    global _offline_instead
    import wandb
    pathlib.Path(wandb_dir).mkdir(parents=True, exist_ok=True)
    mode = "offline" if cfg.mode == "online" and _offline_instead else cfg.mode

    def start(mode):
        return wandb.init(
            project=cfg.project, entity=cfg.entity or None, group=group, name=name, id=_wandb_id(group, run_id),
            dir=str(wandb_dir), config=config, mode=mode, tags=list(cfg.tags) or None, resume="allow",
            reinit="finish_previous", settings=wandb.Settings(console="off", silent=True, disable_git=True,
                                                              x_disable_stats=True, init_timeout=ONLINE_TIMEOUT_S))
    if mode != "online":
        return start(mode)
    try:
        return start("online")
    except Exception as e:  # noqa: BLE001 - no network, no login: offline for the rest of the sweep
        _offline_instead = True
        wandb.teardown()  # the failed online attempt still holds the run id
        log.warning("W&B online failed (%s); logging offline for the rest of this sweep (wandb sync "
                    "DIR/wandb/offline-run-* uploads later)", str(e).splitlines()[0][:160] if str(e) else e)
        return start("offline")


def _wandb_id(group: str, run_id: str) -> str:
    import hashlib
    return hashlib.sha1(f"{group}/{run_id}".encode()).hexdigest()[:16]


_warned: set[str] = set()


def _safe(fn, what: str):
    try:
        return fn()
    except Exception as e:  # noqa: BLE001 - W&B must never stop training
        if what not in _warned:
            _warned.add(what)
            log.warning("W&B %s failed (training goes on; metrics.jsonl has everything): %s", what, e)
        return None


def log_sweep_table(wandb_cfg, group: str, wandb_dir, rows: list[dict], name: str = "results") -> None:
    """At the end of a sweep: the results table as a wandb.Table in a run of its own."""
    if wandb_cfg.mode == "disabled" or not rows:
        return

    def go():
        import wandb
        run = _init_wandb(wandb_cfg, group, f"{group} results", f"{group}-summary", {}, wandb_dir)
        columns = sorted({k for r in rows for k in r})
        table = wandb.Table(columns=columns, data=[[r.get(c) for c in columns] for r in rows])
        run.log({name: table})
        run.finish()

    _WORKER.submit(go, "table")
