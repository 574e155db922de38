"""harness.states: loading a states buffer (memory-mapped, chunked checks) and the holdout split."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest

from harness import states as states_module
from harness.errors import StatesError
from harness.states import holdout_split, load_states


def _one_line(exc: pytest.ExceptionInfo[BaseException], path: Path) -> str:
    message = str(exc.value)
    assert "\n" not in message
    assert repr(str(path)) in message
    return message


# ---- load_states ---------------------------------------------------------------------------------------------


def _save(tmp_path: Path, array: np.ndarray, name: str = "s.npy") -> Path:
    path = tmp_path / name
    np.save(path, array)
    return path


def test_float32_loads_as_read_only_memmap(tmp_path: Path) -> None:
    data = np.arange(24, dtype=np.float32).reshape(6, 4)
    states = load_states(_save(tmp_path, data), input_dim=4)
    assert isinstance(states, np.memmap) and states.dtype == np.float32 and states.flags.c_contiguous
    assert not states.flags.writeable
    np.testing.assert_array_equal(states, data)


def test_float64_and_int_cast_to_float32(tmp_path: Path) -> None:
    data = np.array([[0.1, 2.5], [1e-3, -7.0]], dtype=np.float64)
    states = load_states(_save(tmp_path, data))
    assert states.dtype == np.float32 and states.flags.c_contiguous
    np.testing.assert_array_equal(states, data.astype(np.float32))
    ints = load_states(_save(tmp_path, np.array([[1, 2], [3, 4]], dtype=np.int64), "i.npy"))
    assert ints.dtype == np.float32 and ints.tolist() == [[1.0, 2.0], [3.0, 4.0]]
    fortran = load_states(_save(tmp_path, np.asfortranarray(data.astype(np.float32)), "f.npy"))
    assert fortran.flags.c_contiguous
    np.testing.assert_array_equal(fortran, data.astype(np.float32))


def test_cast_and_finite_scan_work_in_chunks(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(states_module, "_CHUNK_VALUES", 6)  # 2 rows of width 3 per chunk
    data = np.arange(21, dtype=np.float64).reshape(7, 3)
    np.testing.assert_array_equal(load_states(_save(tmp_path, data)), data.astype(np.float32))
    data[5, 1] = np.nan
    with pytest.raises(StatesError, match="NaN or inf value in row 5;"):
        load_states(_save(tmp_path, data))


@pytest.mark.parametrize(
    ("array", "fragment"),
    [
        (np.zeros(5, np.float32), "has shape (5,), expected 2-D (N, input_dim)"),
        (np.zeros((2, 3, 4), np.float32), "has shape (2, 3, 4), expected 2-D (N, input_dim)"),
        (np.zeros((0, 8), np.float32), "is empty (shape (0, 8))"),
        (np.zeros((4, 0), np.float32), "is empty (shape (4, 0))"),
        (np.zeros((4, 5), np.float32), "has 5 columns but the parents take input_dim=8"),
        (np.array([[1.0, np.nan]] * 3 + [[0.0, 0.0]], np.float32).reshape(4, 2)[[3, 0, 1, 2]], "row 1;"),
        (np.array([[0.0, 1.0], [np.inf, 0.0]], np.float32), "NaN or inf value in row 1;"),
        (np.array([[0.0, -np.inf]]), "NaN or inf value in row 0;"),
        (np.ones((2, 2), np.complex64), "has dtype complex64, which is not numeric"),
        (np.array([["a", "b"]]), "has dtype <U1, which is not numeric"),
    ],
)
def test_states_errors(tmp_path: Path, array: np.ndarray, fragment: str) -> None:
    path = _save(tmp_path, array)
    with pytest.raises(StatesError) as info:
        load_states(path, input_dim=8 if "input_dim" in fragment else None)
    assert fragment in _one_line(info, path)


def test_object_array_is_never_unpickled(tmp_path: Path) -> None:
    path = tmp_path / "obj.npy"
    np.save(path, np.array([[{"a": 1}, None]], dtype=object), allow_pickle=True)
    with pytest.raises(StatesError) as info:
        load_states(path)
    assert "holds Python objects (pickled data), which are never loaded" in _one_line(info, path)


def test_states_file_errors(tmp_path: Path) -> None:
    with pytest.raises(StatesError, match="does not exist"):
        load_states(tmp_path / "none.npy")
    with pytest.raises(StatesError, match="is a directory"):
        load_states(tmp_path)
    np.savetxt(tmp_path / "s.csv", np.ones((2, 2)))
    with pytest.raises(StatesError, match=re.escape("is not a .npy file; save the states with numpy.save")):
        load_states(tmp_path / "s.csv")
    np.savez(tmp_path / "s.npz", x=np.ones((2, 2)))
    with pytest.raises(StatesError, match="is not a .npy file"):
        load_states(tmp_path / "s.npz")
    (tmp_path / "junk.npy").write_bytes(b"garbage bytes")
    with pytest.raises(StatesError, match=r"is not a valid \.npy file \(no NumPy header\)"):
        load_states(tmp_path / "junk.npy")
    (tmp_path / "empty.npy").write_bytes(b"")
    with pytest.raises(StatesError, match=r"is not a valid \.npy file"):
        load_states(tmp_path / "empty.npy")
    good = _save(tmp_path, np.ones((100, 4), np.float32), "t.npy")
    good.write_bytes(good.read_bytes()[:-40])
    with pytest.raises(StatesError, match="is truncated or unreadable"):
        load_states(good)


def test_large_memmap_stays_lazy(tmp_path: Path) -> None:
    # 200k x 8 float32 = 6.4 MB: returned as a memmap, not copied into memory.
    path = tmp_path / "big.npy"
    big = np.lib.format.open_memmap(path, mode="w+", dtype=np.float32, shape=(200_000, 8))
    big[:] = 0.5
    big[-1, -1] = 2.0
    big.flush()
    del big
    states = load_states(path, input_dim=8)
    assert isinstance(states, np.memmap) and states.shape == (200_000, 8)
    assert float(states[-1, -1]) == 2.0


def test_holdout_split_is_seeded_sorted_and_disjoint() -> None:
    train, held = holdout_split(10, 0.2, 0)
    assert len(train) == 8 and len(held) == 2 and not set(train) & set(held)
    assert list(train) == sorted(train) and list(held) == sorted(held)
    again = holdout_split(10, 0.2, 0)
    assert list(again[0]) == list(train) and list(again[1]) == list(held)
    every = holdout_split(5, 0.0, 0)
    assert list(every[0]) == list(every[1]) == [0, 1, 2, 3, 4]  # holdout 0: the established behaviour
    with pytest.raises(StatesError, match="leaves 1 fine-tune and 2 evaluation states"):
        holdout_split(3, 0.6, 0)
