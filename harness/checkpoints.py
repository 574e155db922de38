"""Loading parents (state dicts) and the states buffer, safely and with one-line errors naming the file.

Parents load with ``torch.load(weights_only=True)``: a full pickle (a saved ``nn.Module``) can run
arbitrary code when unpickled, so it is refused unless the caller opts in. States load as a read-only
memmap where possible, so a million-row buffer costs no memory until it is read.
"""

from __future__ import annotations

import hashlib
import os
import pickle
import re
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from harness.crossover import check_parents
from harness.errors import CheckpointError, HarnessError, StatesError

__all__ = ["check_parents", "file_sha256", "load_parent", "load_states"]

# Keys under which training scripts commonly nest the model's state dict next to optimizer state etc.
_NESTED_KEYS = ("state_dict", "model_state_dict")
_UNSAFE_FLAG = "allow_unsafe_unpickle=True (plugin: --crossover-allow-unsafe-unpickle)"
# Row chunks of about 4M values (16 MiB of float32) keep the finiteness scan and the cast cheap in memory.
_CHUNK_VALUES = 1 << 22
# dtype kinds that cast to float32 meaningfully: bool, signed/unsigned integers, floats.
_CASTABLE_KINDS = "biuf"
_NPY_MAGIC = b"\x93NUMPY"


def _existing_file(path: str | os.PathLike[str], error: type[HarnessError], what: str, fix: str) -> Path:
    p = Path(path)
    if not p.exists():
        raise error(f"{what} {str(p)!r} does not exist; {fix}")
    if p.is_dir():
        raise error(f"{what} {str(p)!r} is a directory, not a file; {fix}")
    return p


def file_sha256(path: str | os.PathLike[str]) -> str:
    """Hex SHA-256 of a file's bytes, read in 1 MiB chunks (recorded so a leaderboard names its exact parents)."""
    p = _existing_file(path, HarnessError, "file", "pass the path of an existing file")
    digest = hashlib.sha256()
    with p.open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def load_parent(path: str | os.PathLike[str], *, allow_unsafe_unpickle: bool = False) -> dict[str, torch.Tensor]:
    """Load a parent checkpoint as a plain ``{name: tensor}`` dict on the CPU.

    Accepts a ``.pt``/``.pth`` state dict (``torch.save(model.state_dict())``, or the established tool's plain
    dict of tensors), optionally nested under ``"state_dict"`` or ``"model_state_dict"``, and ``.safetensors``
    when the ``safetensors`` package is installed. A full pickled ``nn.Module`` is refused unless
    ``allow_unsafe_unpickle=True``, because unpickling runs arbitrary code from the file; with the opt-in its
    ``state_dict()`` is returned. Any other problem raises :class:`CheckpointError` naming the path and the fix.
    """
    p = _existing_file(path, CheckpointError, "parent checkpoint", "pass the path of a .pt state dict")
    payload = _read_safetensors(p) if p.suffix.lower() == ".safetensors" else _torch_load(p, allow_unsafe_unpickle)
    if isinstance(payload, nn.Module):
        payload = payload.state_dict()
    if isinstance(payload, Mapping):
        for key in _NESTED_KEYS:
            if isinstance(payload.get(key), Mapping):
                payload = payload[key]
                break
    if not isinstance(payload, Mapping):
        raise CheckpointError(
            f"parent checkpoint {str(p)!r} holds a {type(payload).__name__}, not a state dict; "
            "save it with torch.save(model.state_dict(), path)"
        )
    if not payload:
        raise CheckpointError(
            f"parent checkpoint {str(p)!r} is an empty state dict; save a trained model's state_dict()"
        )
    bad = [repr(k) for k, v in payload.items() if not isinstance(k, str) or not isinstance(v, torch.Tensor)]
    if bad:
        shown = ", ".join(bad[:5]) + (f" and {len(bad) - 5} more" if len(bad) > 5 else "")
        raise CheckpointError(
            f"parent checkpoint {str(p)!r} has non-tensor entries ({shown}); save only "
            "model.state_dict(), not optimizer state or metadata"
        )
    return dict(payload)


def _torch_load(p: Path, allow_unsafe_unpickle: bool) -> Any:
    try:
        return _quiet_load(p, weights_only=True)
    except pickle.UnpicklingError as exc:
        if "Weights only load failed" not in str(exc):
            raise _corrupt(p, exc) from exc
        if not allow_unsafe_unpickle:
            raise _refused(p, str(exc)) from None
    except Exception as exc:  # torch raises RuntimeError, EOFError, KeyError, ... for damaged files
        raise _corrupt(p, exc) from exc
    try:
        return _quiet_load(p, weights_only=False)
    except (ImportError, AttributeError) as exc:  # the pickle names a class that cannot be imported
        raise CheckpointError(
            f"parent checkpoint {str(p)!r} could not be unpickled even with "
            f"allow_unsafe_unpickle ({type(exc).__name__}: {_first_line(exc)}); make the "
            "classes it references importable, or re-save it as a state_dict()"
        ) from exc
    except Exception as exc:
        raise _corrupt(p, exc) from exc


def _quiet_load(p: Path, *, weights_only: bool) -> Any:
    # torch warns about its own internals while loading (TypedStorage for quantized tensors, pickle protocol 4);
    # the user can do nothing about them, and a real problem surfaces as an exception anyway.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        return torch.load(p, map_location="cpu", weights_only=weights_only)


def _refused(p: Path, reason: str) -> CheckpointError:
    """The weights-only unpickler's refusal, as one line that names the opt-in and why it is dangerous."""
    found = re.search(r"GLOBAL ([\w.]+)", reason)
    if found:
        what = f"is a full pickle, not a weights-only state dict (it references {found.group(1)})"
    else:
        # "Unsupported operand N": a pickle protocol the safe loader lacks (e.g. a module saved with
        # pickle_protocol=4), or a damaged file; only the unsafe loader can tell which.
        op = re.search(r"Unsupported [^\n.]*", reason)
        detail = op.group(0).strip() if op else "weights-only load failed"
        what = f"cannot be loaded weights-only ({detail}): it is damaged or a full pickle"
    return CheckpointError(
        f"parent checkpoint {str(p)!r} {what}; unpickling it runs arbitrary code from the file, so it is refused: "
        f"re-save it with torch.save(model.state_dict(), path), or, only if you trust the file, pass {_UNSAFE_FLAG}"
    )


def _read_safetensors(p: Path) -> Any:
    try:
        from safetensors.torch import load_file  # type: ignore[import-not-found,unused-ignore]  # optional
    except ImportError:
        raise CheckpointError(
            f"parent checkpoint {str(p)!r} is .safetensors but the safetensors package is not "
            "installed; pip install safetensors, or pass a .pt state dict"
        ) from None
    try:
        return load_file(str(p), device="cpu")
    except Exception as exc:
        raise _corrupt(p, exc) from exc


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0][:160] if text else "no message"


def _corrupt(p: Path, exc: BaseException) -> CheckpointError:
    return CheckpointError(
        f"parent checkpoint {str(p)!r} is truncated or not a torch checkpoint "
        f"({type(exc).__name__}: {_first_line(exc)}); re-save it with "
        "torch.save(model.state_dict(), path)"
    )


def load_states(path: str | os.PathLike[str], *, input_dim: int | None = None) -> np.ndarray:
    """Load the states buffer: a 2-D ``.npy`` array of shape ``(N, input_dim)``, returned as float32.

    A native float32 C-order file comes back as a read-only memmap (nothing is read up front beyond the
    finiteness scan, which walks it in chunks); other numeric dtypes (float64, ints, bool) are cast to a new
    C-contiguous float32 array chunk by chunk. Raises :class:`StatesError` for a missing file, a non-``.npy``
    file, pickled/object data, a non-numeric dtype, a shape that is not 2-D with at least one row and column,
    a width other than ``input_dim``, or any NaN/inf value (naming its row).
    """
    p = _existing_file(path, StatesError, "states file", "pass the path of a 2-D float32 .npy array")
    dtype, shape = _npy_header(p)
    if dtype.hasobject:
        raise StatesError(
            f"states file {str(p)!r} holds Python objects (pickled data), which are never loaded; "
            "save a numeric array with numpy.save(path, states.astype('float32'))"
        )
    if dtype.kind not in _CASTABLE_KINDS:
        raise StatesError(f"states file {str(p)!r} has dtype {dtype}, which is not numeric; save float32 states")
    if len(shape) != 2:
        raise StatesError(
            f"states file {str(p)!r} has shape {shape}, expected 2-D (N, input_dim); reshape it to one row per state"
        )
    if shape[0] == 0 or shape[1] == 0:
        raise StatesError(
            f"states file {str(p)!r} is empty (shape {shape}); save at least one row of at least one column"
        )
    if input_dim is not None and shape[1] != input_dim:
        raise StatesError(
            f"states file {str(p)!r} has {shape[1]} columns but the parents take input_dim="
            f"{input_dim}; pass states recorded for these networks"
        )
    try:
        raw = np.load(p, mmap_mode="r", allow_pickle=False)
    except (ValueError, OSError, EOFError) as exc:
        raise StatesError(
            f"states file {str(p)!r} is truncated or unreadable ({_first_line(exc)}); re-save it with numpy.save"
        ) from exc
    states = _as_float32(raw)
    _check_finite(p, states)
    return states


def _npy_header(p: Path) -> tuple[np.dtype[Any], tuple[int, ...]]:
    if p.suffix.lower() != ".npy":
        raise StatesError(f"states file {str(p)!r} is not a .npy file; save the states with numpy.save(path, states)")
    try:
        with p.open("rb") as fh:
            if fh.read(len(_NPY_MAGIC)) != _NPY_MAGIC:
                raise ValueError("no NumPy header")
            fh.seek(0)
            version = np.lib.format.read_magic(fh)
            if version == (1, 0):
                shape, _, dtype = np.lib.format.read_array_header_1_0(fh)
            else:
                shape, _, dtype = np.lib.format.read_array_header_2_0(fh)
    except (ValueError, OSError, EOFError) as exc:
        raise StatesError(
            f"states file {str(p)!r} is not a valid .npy file ({_first_line(exc)}); "
            "save the states with numpy.save(path, states)"
        ) from exc
    return dtype, tuple(int(n) for n in shape)


def _rows_per_chunk(width: int) -> int:
    return max(1, _CHUNK_VALUES // max(1, width))


def _as_float32(raw: np.ndarray) -> np.ndarray:
    if raw.dtype == np.float32 and raw.flags.c_contiguous:
        return raw
    # Cast chunk by chunk so a big float64 memmap never needs a second full-size temporary.
    out = np.empty(raw.shape, dtype=np.float32)
    step = _rows_per_chunk(raw.shape[1])
    for start in range(0, raw.shape[0], step):
        out[start : start + step] = raw[start : start + step]
    return out


def _check_finite(p: Path, states: np.ndarray) -> None:
    step = _rows_per_chunk(states.shape[1])
    for start in range(0, states.shape[0], step):
        finite = np.isfinite(states[start : start + step])
        if not finite.all():
            row = start + int(np.flatnonzero(~finite.all(axis=1))[0])
            raise StatesError(
                f"states file {str(p)!r} has a NaN or inf value in row {row}; drop or fix the "
                "non-finite rows before searching"
            )
