"""Names, shapes and dtypes of a torch checkpoint's tensors, read without importing torch.

The plugin's controller checks the parents before any xdist worker starts training. ``import torch`` costs
about 1.3 s of CPU, and on a small machine a controller paying it competes with the workers that need it,
so the controller reads only the checkpoint's pickled index (``<archive>/data.pkl`` in torch's zip format)
through an unpickler that knows a handful of torch's rebuild functions and refuses every other global.
Nothing in the file is executed and no tensor data is read, except to check that every tensor's bytes are
present and pass the zip's CRC.

Anything this reader does not recognise (the legacy non-zip format, a full pickle of a module, sparse or
nested tensor types, a damaged archive) gives ``None``: the caller then falls back to ``torch.load``, which
is the authority and produces the error message.
"""

from __future__ import annotations

import io
import pickle
import zipfile
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

# torch storage class name -> (dtype name, bytes per element, floating point, quantized)
_STORAGES: dict[str, tuple[str, int, bool, bool]] = {
    "FloatStorage": ("torch.float32", 4, True, False),
    "DoubleStorage": ("torch.float64", 8, True, False),
    "HalfStorage": ("torch.float16", 2, True, False),
    "BFloat16Storage": ("torch.bfloat16", 2, True, False),
    "LongStorage": ("torch.int64", 8, False, False),
    "IntStorage": ("torch.int32", 4, False, False),
    "ShortStorage": ("torch.int16", 2, False, False),
    "CharStorage": ("torch.int8", 1, False, False),
    "ByteStorage": ("torch.uint8", 1, False, False),
    "BoolStorage": ("torch.bool", 1, False, False),
    "QInt8Storage": ("torch.qint8", 1, False, True),
    "QUInt8Storage": ("torch.quint8", 1, False, True),
    "QInt32Storage": ("torch.qint32", 4, False, True),
}


class Unrecognised(Exception):
    """The checkpoint holds something this reader does not model; torch.load must decide."""


@dataclass(frozen=True)
class StorageMeta:
    key: str
    dtype: str
    itemsize: int
    floating: bool
    quantized: bool
    numel: int


@dataclass(frozen=True)
class TensorMeta:
    """Stands in for a tensor in shape checks (harness.networks.architecture): ``shape``, ``dtype``, float-ness; and its
    values as a numpy array for float32/float64/float16 tensors (``values``: for the finiteness checks)."""

    shape: tuple[int, ...]
    dtype: str
    floating: bool
    is_quantized: bool
    storage: str = field(default="", compare=False)
    offset: int = field(default=0, compare=False)
    stride: tuple[int, ...] = field(default=(), compare=False)
    values: np.ndarray | None = field(default=None, compare=False, repr=False)

    def is_floating_point(self) -> bool:
        return self.floating


@dataclass(frozen=True)
class _StorageType:
    name: str


def _rebuild_tensor(storage: Any, offset: Any, size: Any, stride: Any, *_: Any) -> TensorMeta:
    if not isinstance(storage, StorageMeta) or not isinstance(size, tuple) or not isinstance(stride, tuple):
        raise Unrecognised("tensor arguments")
    shape = tuple(int(n) for n in size)
    # The last element addressed must lie inside the storage, as torch's own rebuild would check.
    if shape and all(shape):
        last = int(offset) + sum((n - 1) * int(s) for n, s in zip(shape, stride))
        if last >= storage.numel:
            raise Unrecognised("tensor outside its storage")
    return TensorMeta(shape, storage.dtype, storage.floating, storage.quantized, storage.key, int(offset),
                      tuple(int(st) for st in stride))


def _rebuild_parameter(data: Any, *_: Any) -> Any:
    if not isinstance(data, TensorMeta):
        raise Unrecognised("parameter data")
    return data


_QSCHEMES = ("per_tensor_affine", "per_channel_affine", "per_tensor_symmetric", "per_channel_symmetric")
_GLOBALS: dict[tuple[str, str], Any] = {
    ("collections", "OrderedDict"): OrderedDict,
    ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor,
    ("torch._utils", "_rebuild_qtensor"): _rebuild_tensor,
    ("torch._utils", "_rebuild_parameter"): _rebuild_parameter,
    ("torch._utils", "_rebuild_parameter_with_state"): _rebuild_parameter,
    **{("torch", name): _StorageType(name) for name in _STORAGES},
    **{("torch", name): name for name in _QSCHEMES},
}


class _IndexUnpickler(pickle.Unpickler):
    def __init__(self, data: bytes) -> None:
        super().__init__(io.BytesIO(data))
        self.storages: list[StorageMeta] = []

    def find_class(self, module: str, name: str) -> Any:
        try:
            return _GLOBALS[(module, name)]
        except KeyError:
            raise Unrecognised(f"global {module}.{name}") from None

    def persistent_load(self, pid: Any) -> StorageMeta:
        if not (isinstance(pid, tuple) and len(pid) == 5 and pid[0] == "storage" and isinstance(pid[1], _StorageType)):
            raise Unrecognised("persistent id")
        dtype, itemsize, floating, quantized = _STORAGES[pid[1].name]
        meta = StorageMeta(str(pid[2]), dtype, itemsize, floating, quantized, int(pid[4]))
        self.storages.append(meta)
        return meta


_NUMPY_DTYPES = {"torch.float32": "<f4", "torch.float64": "<f8", "torch.float16": "<f2"}


def _attach_values(obj: Any, archive: zipfile.ZipFile, prefix: str) -> None:
    """Give every float tensor of a state dict its values (a copy), read from the archive's storage records."""
    if not isinstance(obj, dict):
        return
    blobs: dict[str, bytes] = {}
    for meta in obj.values():
        if isinstance(meta, dict):
            _attach_values(meta, archive, prefix)
        if not isinstance(meta, TensorMeta) or meta.dtype not in _NUMPY_DTYPES or meta.is_quantized:
            continue
        blob = blobs.setdefault(meta.storage, archive.read(f"{prefix}data/{meta.storage}"))
        flat = np.frombuffer(blob, dtype=_NUMPY_DTYPES[meta.dtype])
        item = flat.itemsize
        view = np.lib.stride_tricks.as_strided(flat[meta.offset:], shape=meta.shape,
                                               strides=tuple(st * item for st in meta.stride))
        object.__setattr__(meta, "values", np.array(view, dtype=np.float64))


def read_meta(path: str | Path | bytes) -> Any:
    """The checkpoint's unpickled object with every tensor replaced by a :class:`TensorMeta`, or ``None``.

    ``None`` means "not recognised": not a zip checkpoint, a global outside torch's weights-only set of
    tensor rebuilders, a missing or short tensor record, or a CRC mismatch. The caller then uses ``torch.load``.
    """
    try:
        with zipfile.ZipFile(io.BytesIO(path) if isinstance(path, bytes) else path) as archive:
            names = archive.namelist()
            index = [n for n in names if n.endswith("/data.pkl") and n.count("/") == 1]
            if len(index) != 1:
                return None
            prefix = index[0][: -len("data.pkl")]
            unpickler = _IndexUnpickler(archive.read(index[0]))
            obj = unpickler.load()
            sizes = {info.filename: info.file_size for info in archive.infolist()}
            for s in unpickler.storages:
                if sizes.get(f"{prefix}data/{s.key}", -1) < s.numel * s.itemsize:
                    return None
            if archive.testzip() is not None:  # reads every record once and checks its CRC-32
                return None
            _attach_values(obj, archive, prefix)
    except (Unrecognised, zipfile.BadZipFile, pickle.UnpicklingError, EOFError, OSError, ValueError, TypeError,
            KeyError, IndexError, AttributeError, RuntimeError):
        return None
    return obj
