"""The states buffer: loading a ``.npy`` or ``.npz`` file safely, and the split into fine-tune and evaluation rows.

numpy only, no torch: the plugin's controller checks a states file before any worker imports torch.

A buffer is read into memory once, from one read of the file's bytes, and its sha256 is taken of exactly those
bytes: what a session records is what its children used, and a file overwritten during a session can neither crash
a process that memory-mapped it nor go unnoticed (a worker compares its sha256 with the controller's).

Buffers made of trajectories should carry episode ids (``.npz`` with ``episode``): consecutive states of one
episode are near-duplicates, so a held-out state whose neighbours were fine-tuned on measures interpolation, not
generalisation. With ids, whole episodes are held out.
"""

from __future__ import annotations

import hashlib
import io
import os
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from harness.core.errors import StatesError, existing_file, first_line
from harness.inputs.bounded import check_size, read_bounded

# Row chunks of about 4M values (16 MiB of float32) keep the finiteness scan and the cast cheap in memory.
_CHUNK_VALUES = 1 << 22
# dtype kinds that cast to float32 meaningfully: signed/unsigned integers, floats (booleans are flags, not states).
_CASTABLE_KINDS = "iuf"
# The fewest evaluation units (held-out episodes, or rows) a bootstrap interval means something with.
MIN_EVAL_UNITS = 10
_HEADER_BYTES = 1 << 20
ROWS_LISTED = 10_000  # held-out rows listed in the manifest at most  # more than any .npy header numpy writes
_NPY_MAGIC = b"\x93NUMPY"
_FIX = "save a 2-D float32 array with numpy.save(path, states), or numpy.savez(path, states=..., episode=...)"
NPZ_KEYS = ("states", "episode")


@dataclass(frozen=True)
class Buffer:
    """A checked states buffer: float32 ``states`` (N, d), optional integer ``episode`` ids (N,), and the sha256
    of the file bytes they were read from."""

    states: np.ndarray
    episodes: np.ndarray | None
    sha256: str
    path: str

    @property
    def n_episodes(self) -> int | None:
        return None if self.episodes is None else int(len(np.unique(self.episodes)))


def load_buffer(path: str | os.PathLike[str], *, input_dim: int | None = None, what: str = "states file") -> Buffer:
    """Load and check a states buffer.

    ``.npy``: a 2-D numeric array. ``.npz``: ``states`` (2-D) and optionally ``episode`` (1-D integer ids, one per
    row); any other array in it is an error (it would be ignored). Numeric dtypes (float64, ints, bool) are cast
    to float32. Raises :class:`StatesError` (one line naming the file) for a missing or non-regular file, a file
    that is not .npy/.npz, pickled/object data, a malformed or truncated file, a shape that is not 2-D with at
    least one row and column, a width other than ``input_dim``, a non-finite value or one beyond float32's range
    (naming its row), or episode ids of the wrong length or kind.
    """
    p = existing_file(path, StatesError, what, _FIX)
    suffix = p.suffix.lower()
    if suffix not in (".npy", ".npz"):
        raise StatesError(f"{what} {str(p)!r} is not a .npy or .npz file; {_FIX}")
    try:  # its header first: a file that cannot be right is refused before it is read whole
        if suffix == ".npy":
            with p.open("rb") as fh:
                _npy_precheck(fh.read(_HEADER_BYTES), os.fstat(fh.fileno()).st_size, p, what, input_dim)
        else:
            _npz_precheck(p, what, input_dim)
    except OSError as exc:
        raise StatesError(f"{what} {str(p)!r} cannot be read ({exc.strerror}); check its permissions") from None
    data = read_bounded(p, what, StatesError)
    digest = hashlib.sha256(data).hexdigest()
    if suffix == ".npy":
        raw, episodes = _npy(data, p, what), None
    else:
        raw, episodes = _npz(data, p, what)
    states = _checked(raw, p, what, input_dim)
    if episodes is not None:
        episodes = _checked_episodes(episodes, len(states), p, what)
    return Buffer(states, episodes, digest, str(p))


def load_states(path: str | os.PathLike[str], *, input_dim: int | None = None) -> np.ndarray:
    """The float32 (N, input_dim) states of a buffer file (see :func:`load_buffer`)."""
    return load_buffer(path, input_dim=input_dim).states


def _npy_precheck(head: bytes, size: int, p: Path, what: str, input_dim: int | None) -> None:
    """What a .npy file's header and size alone refuse: its kind, shape and width, a truncated file."""
    shape, dtype, offset = _npy_header(head, p, what)
    _check_shape(shape, dtype, p, what, input_dim)
    need = offset + int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    if size < need:
        raise StatesError(f"{what} {str(p)!r} is truncated ({size - offset} bytes of data for shape {shape} of "
                          f"{dtype}); re-save it with numpy.save")
    check_size(p, size, what, StatesError)


def header_rows(path: str | os.PathLike[str]) -> int:
    """The rows a states file declares, from its header alone (an estimate's input: nothing is read whole)."""
    p = Path(path)
    if p.suffix.lower() == ".npz":
        with zipfile.ZipFile(p) as archive, archive.open("states.npy") as member:
            head = member.read(_HEADER_BYTES)
    else:
        with p.open("rb") as fh:
            head = fh.read(_HEADER_BYTES)
    return _npy_header(head, p, "states file")[0][0]


def _npz_precheck(p: Path, what: str, input_dim: int | None) -> None:
    """What a .npz file's directory and its states' header alone refuse: members that would decompress beyond the
    bound (a zip bomb), and the states' kind, shape and width."""
    try:
        with zipfile.ZipFile(p) as archive:
            infos = archive.infolist()
            check_size(p, sum(i.file_size for i in infos), what, StatesError)
            if "states.npy" in archive.namelist():
                with archive.open("states.npy") as member:
                    head = member.read(_HEADER_BYTES)
                _npy_precheck(head, archive.getinfo("states.npy").file_size, p, f"{what} member 'states' of",
                              input_dim)
    except (zipfile.BadZipFile, zipfile.LargeZipFile, EOFError, RuntimeError, NotImplementedError) as exc:
        raise StatesError(f"{what} {str(p)!r} is not a valid .npz file ({first_line(exc)}); {_FIX}") from None


def _npy_header(data: bytes, p: Path, what: str) -> tuple[tuple[int, ...], np.dtype[Any], int]:
    """(shape, dtype, data offset) from the start of a .npy file, checked as _npy checks them."""
    shape, _, dtype, offset = _header(data, p, what)
    return shape, dtype, offset


def _header(data: bytes, p: Path, what: str) -> tuple[tuple[int, ...], bool, np.dtype[Any], int]:
    """(shape, Fortran order, dtype, data offset) of a .npy file's header, without trusting it."""
    bad = f"{what} {str(p)!r} is not a valid .npy file"
    if not data.startswith(_NPY_MAGIC):
        raise StatesError(f"{bad} (no NumPy header); {_FIX}")
    fh = io.BytesIO(data)
    try:
        version = np.lib.format.read_magic(fh)
        reader = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
        shape, fortran, dtype = reader(fh)
    # A crafted header can make numpy's parser raise almost anything (a tokenizer error, an overflow).
    except Exception as exc:
        raise StatesError(f"{bad} ({type(exc).__name__}: {first_line(exc)}); {_FIX}") from None
    shape = tuple(int(n) for n in shape)
    _check_kind(np.dtype(dtype), shape, p, what)
    return shape, bool(fortran), np.dtype(dtype), fh.tell()


def _npy(data: bytes, p: Path, what: str) -> np.ndarray:
    """A .npy file's array from its bytes, without pickle and without trusting the header."""
    shape, fortran, dtype, offset = _header(data, p, what)
    count = int(np.prod(shape, dtype=np.int64)) if shape else 1
    if len(data) - offset < count * dtype.itemsize:
        raise StatesError(f"{what} {str(p)!r} is truncated ({len(data) - offset} bytes of data for shape {shape} "
                          f"of {dtype}); re-save it with numpy.save")
    flat = np.frombuffer(data, dtype=dtype, count=count, offset=offset)
    return flat.reshape(shape[::-1]).T if fortran else flat.reshape(shape)


def _npz(data: bytes, p: Path, what: str) -> tuple[np.ndarray, np.ndarray | None]:
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as archive:
            names = [n[:-4] if n.endswith(".npy") else n for n in archive.namelist()]
            extra = sorted(set(names) - set(NPZ_KEYS))
            if "states" not in names or extra:
                found = ", ".join(repr(n) for n in names) or "nothing"
                raise StatesError(f"{what} {str(p)!r} holds {found}; a .npz states buffer holds 'states' and "
                                  "optionally 'episode' (one integer id per row), nothing else")
            arrays = {n: _npy(archive.read(f"{n}.npy"), p, f"{what} member {n!r} of") for n in names}
    except (zipfile.BadZipFile, KeyError, OSError, EOFError) as exc:
        raise StatesError(f"{what} {str(p)!r} is not a valid .npz file ({first_line(exc)}); {_FIX}") from None
    return arrays["states"], arrays.get("episode")


def _check_kind(dtype: np.dtype[Any], shape: tuple[int, ...], p: Path, what: str) -> None:
    if dtype.hasobject:
        raise StatesError(f"{what} {str(p)!r} holds Python objects (pickled data), which are never loaded; "
                          "save a numeric array with numpy.save(path, states.astype('float32'))")
    if any(n < 0 for n in shape):
        raise StatesError(f"{what} {str(p)!r} has a negative dimension in its header {shape}; re-save it")


def _checked(raw: np.ndarray, p: Path, what: str, input_dim: int | None) -> np.ndarray:
    _check_shape(tuple(raw.shape), raw.dtype, p, what, input_dim)
    states = _as_float32(raw)
    _check_finite(p, what, states)
    if len(states) > 1 and not (states != states[0]).any():
        raise StatesError(f"{what} {str(p)!r} holds one state repeated in all {len(states)} rows: every metric would "
                          "be measured on one input; pass states recorded from the task")
    return states


def _check_shape(shape: tuple[int, ...], dtype: np.dtype[Any], p: Path, what: str, input_dim: int | None) -> None:
    if dtype.kind not in _CASTABLE_KINDS:
        raise StatesError(f"{what} {str(p)!r} has dtype {dtype}, which is not numeric; save float32 states")
    if len(shape) != 2:
        raise StatesError(f"{what} {str(p)!r} has shape {shape}, expected 2-D (N, input_dim); reshape it to one row "
                          "per state")
    if shape[0] == 0 or shape[1] == 0:
        raise StatesError(f"{what} {str(p)!r} is empty (shape {shape}); save at least one row of at least one column")
    if input_dim is not None and shape[1] != input_dim:
        raise StatesError(f"{what} {str(p)!r} has {shape[1]} columns but the parents take input_dim={input_dim}; "
                          "pass states recorded for these networks")


def _checked_episodes(episodes: np.ndarray, n: int, p: Path, what: str) -> np.ndarray:
    if episodes.dtype.kind not in "iu" or episodes.ndim != 1:
        raise StatesError(f"{what} {str(p)!r} has episode ids of dtype {episodes.dtype} and shape "
                          f"{tuple(episodes.shape)}; save one integer id per row, e.g. episode=ids.astype('int64')")
    if len(episodes) != n:
        raise StatesError(f"{what} {str(p)!r} has {len(episodes)} episode ids for {n} states; save one id per row")
    return np.ascontiguousarray(episodes, dtype=np.int64)


def _rows_per_chunk(width: int) -> int:
    return max(1, _CHUNK_VALUES // max(1, width))


def _as_float32(raw: np.ndarray) -> np.ndarray:
    if raw.dtype == np.float32 and raw.flags.c_contiguous:
        return raw
    # Cast chunk by chunk so a big float64 buffer never needs a second full-size temporary.
    out = np.empty(raw.shape, dtype=np.float32)
    step = _rows_per_chunk(raw.shape[1])
    with np.errstate(over="ignore"):  # a float64 beyond float32's range becomes inf: reported below by row
        for start in range(0, raw.shape[0], step):
            out[start : start + step] = raw[start : start + step]
    return out


def _check_finite(p: Path, what: str, states: np.ndarray) -> None:
    step = _rows_per_chunk(states.shape[1])
    for start in range(0, states.shape[0], step):
        finite = np.isfinite(states[start : start + step])
        if not finite.all():
            row = start + int(np.flatnonzero(~finite.all(axis=1))[0])
            raise StatesError(f"{what} {str(p)!r} has a NaN or inf value in row {row}; drop or fix the non-finite "
                              "rows before searching (a float64 beyond float32's largest value is inf in float32)")


@dataclass(frozen=True)
class Split:
    """Which rows fine-tune and which evaluate.

    ``method``: ``episodes`` (whole episodes held out), ``rows`` (single rows held out: no episode ids),
    ``all`` (holdout 0: every row fine-tunes and evaluates, AgentFarm's behaviour) or ``eval-file`` (a
    separate evaluation buffer; every row of the states buffer fine-tunes). ``eval_idx`` indexes the evaluation
    buffer; ``eval_groups`` gives each evaluation row its resampling unit for the bootstrap (its episode, or the
    row itself).
    """

    method: str
    seed: int
    holdout: float
    train_idx: np.ndarray
    eval_idx: np.ndarray
    eval_groups: np.ndarray
    held_out_episodes: tuple[int, ...] | None

    def describe(self) -> dict[str, Any]:
        """JSON-safe: how the split was made and what was held out (recorded in the manifest)."""
        out: dict[str, Any] = {"method": self.method, "seed": self.seed, "holdout": self.holdout,
                               "n_finetune": int(len(self.train_idx)), "n_eval": int(len(self.eval_idx)),
                               "eval_units": int(len(np.unique(self.eval_groups))), "digest": self.digest}
        if self.held_out_episodes is not None:
            out["held_out_episodes"] = list(self.held_out_episodes)
        elif self.method == "rows" and len(self.eval_idx) <= ROWS_LISTED:
            out["held_out_rows"] = [int(i) for i in self.eval_idx]
        # More rows are not listed (the manifest is rewritten every second): holdout_split(n, holdout, seed) gives
        # them, and the digest identifies them.
        # The bootstrap's resampling units per evaluation row, run-length coded (None: every row its own unit).
        by_rows = len(np.unique(self.eval_groups)) == len(self.eval_groups)
        out["eval_groups"] = None if by_rows else _rle(self.eval_groups)
        return out

    @property
    def digest(self) -> str:
        """Identifies the split, so processes can check they split alike."""
        h = hashlib.sha256(self.method.encode())
        for arr in (self.train_idx, self.eval_idx):
            h.update(np.ascontiguousarray(arr, dtype=np.int64).tobytes())
        return h.hexdigest()[:16]


def _rle(groups: np.ndarray) -> list[list[int]]:
    starts = np.flatnonzero(np.r_[True, groups[1:] != groups[:-1]])
    counts = np.diff(np.r_[starts, len(groups)])
    return [[int(groups[s]), int(c)] for s, c in zip(starts, counts)]


def split_buffer(buffer: Buffer, holdout: float, seed: int, eval_buffer: Buffer | None = None) -> Split:
    """Split ``buffer`` (seeded, local generator): whole episodes when it has ids, else rows; or evaluate on a
    separate ``eval_buffer`` (then every row of ``buffer`` fine-tunes and ``holdout`` must be 0). Fewer than
    :data:`MIN_EVAL_UNITS` evaluation units is an error: their intervals would be zero-width, their leads
    "significant"."""
    split = _split(buffer, holdout, seed, eval_buffer)
    units = len(np.unique(split.eval_groups))
    if units < MIN_EVAL_UNITS:
        kind = "episodes" if split.method == "episodes" or (split.method != "rows" and _has_ids(buffer, eval_buffer)) \
            else "states"
        source = eval_buffer if eval_buffer is not None else buffer
        field = "holdout" if split.method in ("rows", "episodes") else ("eval_states" if eval_buffer else "states")
        raise StatesError(f"evaluation on {units} {kind} of {source.path!r} (need at least {MIN_EVAL_UNITS} for an "
                          "interval); use a larger holdout or more "
                          f"{kind}", field=field)
    return split


def _has_ids(buffer: Buffer, eval_buffer: Buffer | None) -> bool:
    return (eval_buffer if eval_buffer is not None else buffer).episodes is not None


def _split(buffer: Buffer, holdout: float, seed: int, eval_buffer: Buffer | None) -> Split:
    n = len(buffer.states)
    every = np.arange(n)
    if eval_buffer is not None:
        if holdout != 0.0:
            raise StatesError(f"holdout {holdout} is ignored with a separate evaluation buffer; leave it out",
                              field="holdout")
        m = len(eval_buffer.states)
        groups = eval_buffer.episodes if eval_buffer.episodes is not None else np.arange(m)
        return Split("eval-file", seed, 0.0, every, np.arange(m), groups, None)
    if holdout == 0.0:
        groups = buffer.episodes if buffer.episodes is not None else every
        return Split("all", seed, 0.0, every, every, groups, None)
    if buffer.episodes is None:
        train, held = holdout_split(n, holdout, seed)
        return Split("rows", seed, holdout, train, held, held, None)
    ids = np.unique(buffer.episodes)
    if len(ids) < 2:
        raise StatesError(f"states file {buffer.path!r} holds one episode only ({int(ids[0])}); holding out whole "
                          "episodes needs at least two: record more episodes, or set the holdout to 0",
                          field="states")
    n_held = min(len(ids) - 1, max(1, int(round(len(ids) * holdout))))
    held_ids = np.sort(np.random.default_rng(seed).permutation(ids)[:n_held])
    held_rows = np.isin(buffer.episodes, held_ids)
    held, train = np.flatnonzero(held_rows), np.flatnonzero(~held_rows)
    if len(train) < 2:
        raise StatesError(f"holding out {n_held} of {len(ids)} episodes leaves {len(train)} fine-tune states; use a "
                          "smaller holdout", field="holdout")
    return Split("episodes", seed, holdout, train, held, buffer.episodes[held], tuple(int(i) for i in held_ids))


def holdout_split(n: int, holdout: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(fine-tune indices, evaluation indices) of single rows, each sorted; holdout 0 uses every state for both."""
    if holdout == 0.0:
        every = np.arange(n)
        return every, every
    n_eval = int(round(n * holdout))
    if n_eval < 1 or n - n_eval < 2:
        raise StatesError(
            f"holdout {holdout} of {n} states leaves {n - n_eval} fine-tune and {n_eval} evaluation states; "
            "use more states or a holdout fraction that leaves at least 2 and 1", field="holdout")
    perm = np.random.default_rng(seed).permutation(n)
    return np.sort(perm[n_eval:]), np.sort(perm[:n_eval])
