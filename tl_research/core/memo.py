"""Per-process memos of what is read from files: a value is reused while the files it was read from stay as
they were, so a config's checks and the run after them (and a sweep's later runs) read a checkpoint or a
dataset's metadata once. A file stays as it was while its inode, size, modification and change times do (a
rewrite, an atomic replace or a touch changes one of them); a value whose files cannot be read is not kept."""
from __future__ import annotations

import collections
import pathlib
import threading
from typing import Any, Callable, Hashable, Iterable


def file_state(paths: Iterable) -> tuple | None:
    """(path, inode, size, mtime_ns, ctime_ns) of every file at or under each of `paths`, or None when one of
    them is missing or cannot be read."""
    out = []
    for root in map(pathlib.Path, paths):
        try:
            files = sorted(p for p in root.rglob("*") if p.is_file()) if root.is_dir() else [root]
            for f in files:
                st = f.stat()
                out.append((str(f), st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns))
        except OSError:
            return None
    return tuple(out)


class FileMemo:
    """Values read from files, by key: the `entries` used last, each with the state of its files."""

    def __init__(self, entries: int):
        self.entries = entries
        self._items: collections.OrderedDict = collections.OrderedDict()  # key -> (value, file state)
        self._lock = threading.Lock()
        self.computed = 0  # values read (misses)

    def get(self, key: Hashable, compute: Callable[[], Any], files: Callable[[Any], Iterable]) -> Any:
        """compute()'s value for `key`: the one kept, while the files `files(value)` names are unchanged,
        else computed now (and kept). An exception of compute() is raised and nothing is kept."""
        with self._lock:
            hit = self._items.get(key)
        if hit is not None and file_state(files(hit[0])) == hit[1]:
            with self._lock:
                if key in self._items:
                    self._items.move_to_end(key)
            return hit[0]
        value = compute()
        state = file_state(files(value))
        with self._lock:
            self.computed += 1
            self._items.pop(key, None)
            if state is not None:
                self._items[key] = (value, state)
                while len(self._items) > self.entries:
                    self._items.popitem(last=False)
        return value

    def clear(self) -> None:
        with self._lock:
            self._items.clear()
