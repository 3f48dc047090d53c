"""The log lines a command shows: this package's warnings, not the libraries' routine INFO lines
(`quiet_logging`, called first by every command and by the job a launcher submits)."""
from __future__ import annotations

import logging
import sys


class _Stderr(logging.StreamHandler):
    """Writes to whatever sys.stderr is when a line is logged, not to the stream that was current when logging
    was configured (a caller that swaps sys.stderr, e.g. a test runner capturing output, then closes it)."""

    def __init__(self):
        super().__init__(sys.stderr)

    @property
    def stream(self):
        return sys.stderr

    @stream.setter
    def stream(self, _value):
        pass


def quiet_logging() -> None:
    """Warnings of this package only: the libraries' routine INFO and WARNING lines (absl, XLA's platform probe,
    orbax, TFDS) would bury a command's own output."""
    root = logging.getLogger()
    for h in list(root.handlers):  # absl's first log line, before any of this, calls logging.basicConfig()
        if type(h) is logging.StreamHandler:
            root.removeHandler(h)
    if not any(isinstance(h, _Stderr) for h in root.handlers):
        handler = _Stderr()
        handler.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
        root.addHandler(handler)
    root.setLevel(logging.WARNING)
    for noisy in ("absl", "jax._src.xla_bridge", "orbax", "tensorflow_datasets"):
        logging.getLogger(noisy).setLevel(logging.ERROR)
