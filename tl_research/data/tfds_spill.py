"""Preparing a large dataset without TensorFlow: TFDS's writer keeps a split's serialized examples in memory up
to 1,000 MB (`shuffle.MAX_MEM_BUFFER_SIZE`), then spills them into 1,000 temporary bucket files that it opens
through `tf.io.gfile`, which imports TensorFlow. A folder of about 33,000 500x375 JPEGs crossed it.

`without_tensorflow()` lets those buckets be ordinary local files (Python's `open`): the same bytes in the same
order (TFDS's own struct format and hashing are untouched), so a split prepared with or without TensorFlow holds
the same records. Where TensorFlow imports, it does nothing."""
from __future__ import annotations

import contextlib
import importlib.util
import os
import resource

from tensorflow_datasets.core import shuffle


class _Exhausted(OSError):
    message = ""


class _GFile:  # tf.io.gfile's functions the shuffler's buckets call, over local paths
    GFile = staticmethod(lambda path, mode="r": open(os.fspath(path), mode))
    exists = staticmethod(lambda path: os.path.exists(os.fspath(path)))
    remove = staticmethod(lambda path: os.remove(os.fspath(path)))


class _IO:
    gfile = _GFile


class _Errors:
    ResourceExhaustedError = _Exhausted


class _LocalTF:
    io = _IO
    errors = _Errors


@contextlib.contextmanager
def without_tensorflow():
    """Within it, TFDS's shuffler spills to local files without TensorFlow (and may hold its 1,000 buckets
    open: the open-files limit is raised to the hard limit, as TFDS does on 'Too many open files')."""
    if importlib.util.find_spec("tensorflow") is not None:
        yield
        return
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = hard if hard != resource.RLIM_INFINITY else max(soft, 8192)
    if soft != resource.RLIM_INFINITY and soft < wanted:
        resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, hard))
    before = shuffle.tf
    shuffle.tf = _LocalTF
    try:
        yield
    finally:
        shuffle.tf = before
