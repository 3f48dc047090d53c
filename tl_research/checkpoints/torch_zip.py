"""Reads a PyTorch `.pth` / `.pt` / `.bin` file of torch.save's zip format (every torch.save since PyTorch
1.6) into numpy arrays without PyTorch: the converter's runtime needs no multi-gigabyte torch install.

The format: a zip archive `<name>/data.pkl` (a pickle of the saved object whose tensors are persistent ids
naming `<name>/data/<key>` entries of raw storage bytes), `<name>/byteorder` ("little" where absent) and
`<name>/version`. The unpickler here admits what `torch.load(..., weights_only=True)` admits of a state dict:
tensors (`torch._utils._rebuild_tensor_v2`, `_rebuild_parameter`), typed storages, plain containers
(dict, OrderedDict, list, tuple, numbers, strings) and nothing else, so a checkpoint cannot run code; any
other global is refused with the name of the object. Tensors come out as numpy arrays of the same dtype
(bfloat16 widened to float32, as numpy has no bfloat16), copied out of their storage with the saved offset
and strides, so views (a slice saved with its base storage) read as torch.load reads them.

Files of the legacy pre-1.6 format (not a zip archive) are read by torch.load where PyTorch is installed
(`checkpoints.torch`).
"""
from __future__ import annotations

import collections
import pickle
import zipfile

import numpy as np

# torch storage class -> (numpy dtype of its raw bytes, how the values are read)
_STORAGES = {
    "DoubleStorage": np.float64, "FloatStorage": np.float32, "HalfStorage": np.float16,
    "BFloat16Storage": "bfloat16", "LongStorage": np.int64, "IntStorage": np.int32, "ShortStorage": np.int16,
    "CharStorage": np.int8, "ByteStorage": np.uint8, "BoolStorage": np.bool_,
}
_DTYPES = {"float64": "DoubleStorage", "float32": "FloatStorage", "float16": "HalfStorage",
           "bfloat16": "BFloat16Storage", "int64": "LongStorage", "int32": "IntStorage", "int16": "ShortStorage",
           "int8": "CharStorage", "uint8": "ByteStorage", "bool": "BoolStorage"}


class Refused(ValueError):
    """The file holds an object other than tensors and plain containers."""


class _StorageType:
    def __init__(self, name: str):
        self.name = name


class _Dtype:  # torch.float32 etc., as pickled by the untyped-storage path of newer torch versions
    def __init__(self, name: str):
        self.name = name


def _rebuild_tensor_v2(storage, offset, size, stride, requires_grad=False, hooks=None, metadata=None):
    del requires_grad, hooks, metadata
    size, stride = tuple(int(s) for s in size), tuple(int(s) for s in stride)
    if not size:
        return np.array(storage[offset:offset + 1]).reshape(())
    if any(s == 0 for s in size):
        return np.zeros(size, storage.dtype)
    span = offset + sum((n - 1) * s for n, s in zip(size, stride)) + 1
    if span > storage.size:
        raise ValueError(f"a tensor of size {size} reaches past its storage ({storage.size} values)")
    items = storage.itemsize
    view = np.lib.stride_tricks.as_strided(storage[offset:], size, [s * items for s in stride])
    return np.array(view)


def _rebuild_parameter(data, requires_grad=False, hooks=None):
    del requires_grad, hooks
    return data


_GLOBALS = {
    ("collections", "OrderedDict"): collections.OrderedDict,
    ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor_v2,
    ("torch._utils", "_rebuild_parameter"): _rebuild_parameter,
}


class _Unpickler(pickle.Unpickler):
    def __init__(self, file, archive: zipfile.ZipFile, prefix: str, byteorder: str):
        super().__init__(file)
        self._archive, self._prefix, self._byteorder = archive, prefix, byteorder
        self._storages: dict[str, np.ndarray] = {}

    def find_class(self, module, name):
        if (module, name) in _GLOBALS:
            return _GLOBALS[(module, name)]
        if module == "torch" and name in _STORAGES:
            return _StorageType(name)
        if module == "torch" and name in _DTYPES:
            return _Dtype(name)
        raise Refused(f"it holds a {module}.{name} object; only tensors and plain containers are read "
                      f"(as torch.load(weights_only=True) reads them)")

    def persistent_load(self, pid):
        if not (isinstance(pid, tuple) and len(pid) >= 5 and pid[0] == "storage"):
            raise Refused(f"it holds an unknown persistent object {str(pid)[:80]!r}")
        kind, key = pid[1], str(pid[2])
        name = kind.name if isinstance(kind, _StorageType) else _DTYPES.get(getattr(kind, "name", ""), "")
        if name not in _STORAGES:
            raise Refused(f"it holds a storage of unsupported type {getattr(kind, 'name', kind)!r}")
        if key not in self._storages:
            self._storages[key] = self._read_storage(key, _STORAGES[name])
        return self._storages[key]

    def _read_storage(self, key: str, dtype) -> np.ndarray:
        raw = self._archive.read(f"{self._prefix}data/{key}")
        order = "<" if self._byteorder == "little" else ">"
        if dtype == "bfloat16":  # the upper 16 bits of a float32
            bits = np.frombuffer(raw, f"{order}u2").astype(np.uint32) << 16
            return bits.view(np.float32)
        return np.frombuffer(raw, np.dtype(dtype).newbyteorder(order)).astype(np.dtype(dtype).newbyteorder("="))


def is_zip_checkpoint(path) -> bool:
    return zipfile.is_zipfile(path)


def load(path):
    """The object torch.save wrote to `path` (zip format), tensors as numpy arrays."""
    with zipfile.ZipFile(path) as archive:
        pickles = [n for n in archive.namelist() if n.endswith("data.pkl") and n.count("/") == 1]
        if len(pickles) != 1:
            raise ValueError("not a torch.save archive (no <name>/data.pkl entry)")
        prefix = pickles[0][: -len("data.pkl")]
        names = set(archive.namelist())
        byteorder = (archive.read(prefix + "byteorder").decode().strip() if prefix + "byteorder" in names
                     else "little")
        with archive.open(pickles[0]) as f:
            return _Unpickler(f, archive, prefix, byteorder).load()
