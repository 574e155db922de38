"""The states buffer: loading a ``.npy`` file safely (memory-mapped, checked in chunks) and the holdout split.

numpy only, no torch: the plugin's controller checks a states file before any worker imports torch.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

from harness.errors import StatesError, existing_file, first_line

# Row chunks of about 4M values (16 MiB of float32) keep the finiteness scan and the cast cheap in memory.
_CHUNK_VALUES = 1 << 22
# dtype kinds that cast to float32 meaningfully: bool, signed/unsigned integers, floats.
_CASTABLE_KINDS = "biuf"
_NPY_MAGIC = b"\x93NUMPY"


def load_states(path: str | os.PathLike[str], *, input_dim: int | None = None) -> np.ndarray:
    """Load the states buffer: a 2-D ``.npy`` array of shape ``(N, input_dim)``, returned as float32.

    A native float32 C-order file comes back as a read-only memmap (nothing is read up front beyond the
    finiteness scan, which walks it in chunks); other numeric dtypes (float64, ints, bool) are cast to a new
    C-contiguous float32 array chunk by chunk. Raises :class:`StatesError` for a missing file, a non-``.npy``
    file, pickled/object data, a non-numeric dtype, a shape that is not 2-D with at least one row and column,
    a width other than ``input_dim``, or any NaN/inf value (naming its row).
    """
    p = existing_file(path, StatesError, "states file", "pass the path of a 2-D float32 .npy array")
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
            f"states file {str(p)!r} is truncated or unreadable ({first_line(exc)}); re-save it with numpy.save"
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
            f"states file {str(p)!r} is not a valid .npy file ({first_line(exc)}); "
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


def holdout_split(n: int, holdout: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(fine-tune indices, evaluation indices), each sorted; holdout 0 uses every state for both (established)."""
    if holdout == 0.0:
        every = np.arange(n)
        return every, every
    n_eval = int(round(n * holdout))
    if n_eval < 1 or n - n_eval < 2:
        raise StatesError(
            f"holdout {holdout} of {n} states leaves {n - n_eval} fine-tune and {n_eval} evaluation states; "
            "use more states or a holdout fraction that leaves at least 2 and 1"
        )
    perm = np.random.default_rng(seed).permutation(n)
    return np.sort(perm[n_eval:]), np.sort(perm[:n_eval])
