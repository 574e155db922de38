"""harness.inputs.states: loading a states buffer (memory-mapped, chunked checks) and the holdout split."""

from __future__ import annotations

import hashlib
import io
import os
import re
from pathlib import Path

import numpy as np
import pytest

from harness.core.errors import StatesError
from harness.inputs import states as states_module
from harness.inputs.states import Buffer, holdout_split, load_buffer, load_states, split_buffer


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


def test_float32_loads_read_only_without_a_copy_of_the_bytes(tmp_path: Path) -> None:
    data = np.arange(24, dtype=np.float32).reshape(6, 4)
    states = load_states(_save(tmp_path, data), input_dim=4)
    assert states.dtype == np.float32 and states.flags.c_contiguous and not states.flags.writeable
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
    with pytest.raises(StatesError, match=re.escape("is not a .npy or .npz file; save a 2-D float32 array")):
        load_states(tmp_path / "s.csv")
    np.savez(tmp_path / "s.npz", x=np.ones((2, 2)))
    with pytest.raises(StatesError, match="holds 'x'; a .npz states buffer holds 'states' and optionally 'episode'"):
        load_states(tmp_path / "s.npz")
    (tmp_path / "junk.npy").write_bytes(b"garbage bytes")
    with pytest.raises(StatesError, match=r"is not a valid \.npy file \(no NumPy header\)"):
        load_states(tmp_path / "junk.npy")
    (tmp_path / "empty.npy").write_bytes(b"")
    with pytest.raises(StatesError, match=r"is not a valid \.npy file"):
        load_states(tmp_path / "empty.npy")
    good = _save(tmp_path, np.ones((100, 4), np.float32), "t.npy")
    good.write_bytes(good.read_bytes()[:-40])
    with pytest.raises(StatesError, match=r"is truncated \(1560 bytes of data for shape \(100, 4\) of float32\)"):
        load_states(good)


def test_a_buffer_is_read_once_and_its_sha256_is_of_the_bytes_used(tmp_path: Path) -> None:
    path = _save(tmp_path, np.arange(24, dtype=np.float32).reshape(6, 4))
    buffer = load_buffer(path)
    assert buffer.sha256 == hashlib.sha256(path.read_bytes()).hexdigest() and buffer.episodes is None
    path.write_bytes(b"overwritten while the session runs")  # not memory-mapped: the loaded array is unaffected
    assert float(buffer.states[5, 3]) == 23.0 and not isinstance(buffer.states, np.memmap)


def test_npz_with_episode_ids(tmp_path: Path) -> None:
    states = np.random.default_rng(0).standard_normal((10, 3)).astype(np.float32)
    np.savez(tmp_path / "e.npz", states=states, episode=np.repeat([7, 8, 9], [3, 3, 4]))
    buffer = load_buffer(tmp_path / "e.npz", input_dim=3)
    assert np.array_equal(buffer.states, states) and buffer.n_episodes == 3 and buffer.episodes.dtype == np.int64
    for name, arrays, fragment in (
        ("len.npz", {"states": states, "episode": np.arange(9)}, "has 9 episode ids for 10 states"),
        ("float.npz", {"states": states, "episode": np.arange(10) * 0.5}, "episode ids of dtype float64"),
        ("none.npz", {"episode": np.arange(10)}, "holds 'episode'; a .npz states buffer holds 'states'"),
    ):
        np.savez(tmp_path / name, **arrays)
        with pytest.raises(StatesError, match=re.escape(fragment)):
            load_buffer(tmp_path / name)


@pytest.mark.parametrize("header", [b"{'descr': '<f4', 'fortran_order': False, 'shape': (-3, 8), }",
                                    b"{'descr': '<f4', 'fortran_order': False, 'shape': (3, 8), 'x': ((( }"])
def test_a_crafted_header_is_one_line_not_a_crash(tmp_path: Path, header: bytes) -> None:
    body = header.ljust(118) + b"\n"
    path = tmp_path / "crafted.npy"
    path.write_bytes(b"\x93NUMPY\x01\x00" + len(body).to_bytes(2, "little") + body + b"\x00" * 96)
    with pytest.raises(StatesError) as info:
        load_states(path)
    assert "crafted.npy" in str(info.value) and "\n" not in str(info.value)


def test_a_fifo_is_refused_without_opening_it(tmp_path: Path) -> None:
    fifo = tmp_path / "states.npy"
    os.mkfifo(fifo)
    with pytest.raises(StatesError, match="is not a regular file"):
        load_states(fifo)  # would block forever if it were opened


def test_episodes_are_held_out_whole_and_the_split_is_recorded() -> None:
    episodes = np.repeat(np.arange(50), 10)
    buffer = Buffer(np.zeros((500, 2), np.float32), episodes, "", "b.npz")
    split = split_buffer(buffer, 0.2, 3)
    assert split.method == "episodes" and len(split.held_out_episodes) == 10
    assert set(episodes[split.eval_idx]) == set(split.held_out_episodes)
    assert not set(episodes[split.train_idx]) & set(split.held_out_episodes)  # no episode on both sides
    assert split_buffer(buffer, 0.2, 3).digest == split.digest  # seeded: the same split every time
    assert split_buffer(buffer, 0.2, 4).held_out_episodes != split.held_out_episodes
    described = split.describe()
    assert described["held_out_episodes"] == list(split.held_out_episodes) and described["eval_units"] == 10
    assert described["eval_groups"] == [[e, 10] for e in split.held_out_episodes]
    one = Buffer(np.zeros((5, 2), np.float32), np.zeros(5, np.int64), "", "one.npz")
    with pytest.raises(StatesError, match="holds one episode only"):
        split_buffer(one, 0.2, 0)
    with pytest.raises(StatesError, match=r"evaluation on 1 episodes of 'one.npz' \(need at least 10"):
        split_buffer(one, 0.0, 0)  # every row evaluates, but they are one episode: one resampling unit


def test_a_separate_evaluation_buffer_takes_no_holdout() -> None:
    train, evals = Buffer(np.zeros((8, 2), np.float32), None, "", "t"), Buffer(np.ones((12, 2), np.float32), None,
                                                                                  "", "e")
    split = split_buffer(train, 0.0, 0, evals)
    assert split.method == "eval-file" and list(split.train_idx) == list(range(8)) and list(split.eval_idx) == list(
        range(12))
    with pytest.raises(StatesError, match="is ignored with a separate evaluation buffer") as info:
        split_buffer(train, 0.2, 0, evals)
    assert info.value.field == "holdout"


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


def test_too_few_evaluation_units_are_refused_in_one_line() -> None:
    """Fewer than 10 held-out episodes or rows: zero-width intervals and "significant" leads; refused."""
    rows = Buffer(np.zeros((40, 2), np.float32), None, "", "r.npy")
    with pytest.raises(StatesError, match=r"^evaluation on 8 states of 'r.npy' \(need at least 10 for an interval\); "
                                          "use a larger holdout or more states$") as info:
        split_buffer(rows, 0.2, 0)
    assert info.value.field == "holdout"
    assert len(split_buffer(rows, 0.25, 0).eval_idx) == 10  # ten is enough
    episodes = Buffer(np.zeros((200, 2), np.float32), np.repeat(np.arange(20), 10), "", "e.npz")
    with pytest.raises(StatesError, match="evaluation on 4 episodes of 'e.npz'"):
        split_buffer(episodes, 0.2, 0)
    small_eval = Buffer(np.ones((9, 2), np.float32), None, "", "ev.npy")
    with pytest.raises(StatesError, match="evaluation on 9 states of 'ev.npy'") as info:
        split_buffer(rows, 0.0, 0, small_eval)
    assert info.value.field == "eval_states"


def test_degenerate_buffers_are_refused(tmp_path) -> None:
    same = tmp_path / "same.npy"
    np.save(same, np.tile(np.arange(4, dtype=np.float32), (50, 1)))
    with pytest.raises(StatesError, match=r"holds one state repeated in all 50 rows: every metric would be measured "
                                          "on one input"):
        load_buffer(same)
    flags = tmp_path / "flags.npy"
    np.save(flags, np.random.default_rng(0).random((50, 4)) > 0.5)
    with pytest.raises(StatesError, match="has dtype bool, which is not numeric"):
        load_buffer(flags)


def test_a_huge_states_file_is_judged_by_its_header_before_it_is_read(tmp_path, monkeypatch) -> None:
    """A 6 GiB file (sparse: nothing is on disk) whose header cannot be right is refused without reading it."""
    def header(shape: tuple[int, int]) -> bytes:
        buf = io.BytesIO()
        np.lib.format.write_array_header_1_0(buf, {"descr": "<f4", "fortran_order": False, "shape": shape})
        return buf.getvalue()

    read: list[Path] = []
    real = states_module.read_bounded
    monkeypatch.setattr(states_module, "read_bounded", lambda p, *a: read.append(p) or real(p, *a))
    for shape, message in (((200_000_000, 9), "has 9 columns but the parents take input_dim=8"),
                           ((2_000_000_000, 8), "is truncated")):
        path = tmp_path / f"{shape[0]}.npy"
        with path.open("wb") as fh:
            fh.write(header(shape))
            fh.truncate(6 << 30)
        with pytest.raises(StatesError, match=message):
            load_buffer(path, input_dim=8)
    assert read == []  # refused from the header and the size alone


def test_a_large_row_holdout_is_described_without_listing_every_row() -> None:
    small = split_buffer(Buffer(np.arange(200, dtype=np.float32).reshape(100, 2), None, "", "s.npy"), 0.2, 0)
    assert small.describe()["held_out_rows"] == [int(i) for i in small.eval_idx]
    big = Buffer(np.arange(2_000_000, dtype=np.float32).reshape(1_000_000, 2), None, "", "b.npy")
    described = split_buffer(big, 0.2, 0).describe()
    assert "held_out_rows" not in described and described["n_eval"] == 200_000
    train, held = holdout_split(1_000_000, 0.2, 0)  # how to get them back
    assert described["digest"] == split_buffer(big, 0.2, 0).digest and len(held) == 200_000


def test_every_input_read_is_bounded_before_a_byte_is_read(tmp_path, monkeypatch) -> None:
    """A .npz (whose members could decompress to any size), a .npy and a parent checkpoint larger than the bound
    are refused in one line from their sizes alone; the header of a .npz's states is judged before it is read."""
    from harness.core.errors import CheckpointError
    from harness.inputs import bounded, checkpoints

    read: list[Path] = []
    real = bounded.read_bounded

    def counted(p: Path, what: str, error: type, *fix: str) -> bytes:
        data = real(p, what, error, *fix)
        read.append(p)  # read whole: past the size check
        return data

    monkeypatch.setattr(states_module, "read_bounded", counted)
    monkeypatch.setattr(checkpoints, "read_bounded", counted)
    monkeypatch.setattr(bounded, "INPUT_MAX_BYTES", 50_000)
    # A compressed .npz of 400 KB of zeros: about 1 KB on disk, beyond the bound once decompressed.
    np.savez_compressed(tmp_path / "bomb.npz", states=np.zeros((10_000, 10), dtype=np.float32))
    assert (tmp_path / "bomb.npz").stat().st_size < 50_000
    with pytest.raises(StatesError, match=r"bomb.npz' holds 400,\d+ bytes, more than this machine's memory "
                                          r"\(50,000 bytes\) can hold; pass a smaller file"):
        load_buffer(tmp_path / "bomb.npz", input_dim=10)
    np.save(tmp_path / "big.npy", np.ones((10_000, 8), dtype=np.float32))
    with pytest.raises(StatesError, match="big.npy' holds 320,128 bytes, more than"):
        load_buffer(tmp_path / "big.npy", input_dim=8)
    (tmp_path / "parent.pt").write_bytes(b"\0" * 60_000)
    with pytest.raises(CheckpointError, match=r"parent checkpoint .*parent.pt' holds 60,000 bytes, more than .*; "
                                              r"save the network's state dict alone: torch.save\(model.state_dict"):
        checkpoints.load_parent(tmp_path / "parent.pt")
    np.savez(tmp_path / "wide.npz", states=np.ones((10, 9), dtype=np.float32))
    with pytest.raises(StatesError, match="member 'states' of .*wide.npz' has 9 columns"):
        load_buffer(tmp_path / "wide.npz", input_dim=8)
    assert read == []
    np.savez(tmp_path / "fine.npz", states=np.random.default_rng(0).standard_normal((20, 8)).astype(np.float32))
    assert load_buffer(tmp_path / "fine.npz", input_dim=8).states.shape == (20, 8) and len(read) == 1
    assert states_module.header_rows(tmp_path / "fine.npz") == 20 and states_module.header_rows(
        tmp_path / "big.npy") == 10_000
