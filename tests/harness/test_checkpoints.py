"""harness.checkpoints: safe parent loading and states loading, every error case with its one-line message."""

from __future__ import annotations

import hashlib
import re
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from harness import checkpoints
from harness.checkpoints import check_parents, file_sha256, load_parent, load_states
from harness.crossover import check_parents as crossover_check_parents
from harness.errors import CheckpointError, CrossoverError, HarnessError, StatesError
from harness.networks import QNetwork


@pytest.fixture
def state_dict() -> dict[str, torch.Tensor]:
    return QNetwork(8, 4, hidden_size=16).state_dict()


def _one_line(exc: pytest.ExceptionInfo[BaseException], path: Path) -> str:
    message = str(exc.value)
    assert "\n" not in message
    assert repr(str(path)) in message
    return message


# ---- load_parent ---------------------------------------------------------------------------------------------


def test_load_state_dict_roundtrip(tmp_path: Path, state_dict) -> None:
    path = tmp_path / "a.pt"
    torch.save(state_dict, path)
    loaded = load_parent(path)
    assert type(loaded) is dict and list(loaded) == list(state_dict)
    assert all(torch.equal(loaded[k], v) for k, v in state_dict.items())
    assert load_parent(str(path)).keys() == loaded.keys()


def test_load_established_plain_dict_and_nested(tmp_path: Path, state_dict) -> None:
    plain = {k: v.clone() for k, v in state_dict.items()}
    torch.save(plain, tmp_path / "child.pt")
    assert load_parent(tmp_path / "child.pt").keys() == plain.keys()
    for key in ("state_dict", "model_state_dict"):
        torch.save({key: plain, "epoch": 3, "optimizer": {"lr": 1e-3}}, tmp_path / f"{key}.pt")
        loaded = load_parent(tmp_path / f"{key}.pt")
        assert list(loaded) == list(plain)


def test_load_legacy_serialization(tmp_path: Path, state_dict) -> None:
    torch.save(state_dict, tmp_path / "old.pth", _use_new_zipfile_serialization=False)
    assert list(load_parent(tmp_path / "old.pth")) == list(state_dict)


def test_missing_and_directory(tmp_path: Path) -> None:
    missing = tmp_path / "nope.pt"
    with pytest.raises(CheckpointError) as info:
        load_parent(missing)
    assert _one_line(info, missing).endswith("does not exist; pass the path of a .pt state dict")
    with pytest.raises(CheckpointError) as info:
        load_parent(tmp_path)
    assert "is a directory, not a file" in _one_line(info, tmp_path)


@pytest.mark.parametrize("content", ["truncated", "empty", "garbage"])
def test_truncated_or_corrupt(tmp_path: Path, state_dict, content: str) -> None:
    path = tmp_path / "bad.pt"
    torch.save(state_dict, path)
    data = path.read_bytes()
    path.write_bytes(
        {"truncated": data[: len(data) // 2], "empty": b"", "garbage": b"not a checkpoint at all"}[content]
    )
    for unsafe in (False, True):
        with pytest.raises(CheckpointError) as info:
            load_parent(path, allow_unsafe_unpickle=unsafe)
        message = _one_line(info, path)
        if content == "garbage" and not unsafe:
            # Bytes that parse as pickle opcodes: the safe loader cannot tell damage from an unsafe pickle.
            assert "cannot be loaded weights-only (Unsupported operand 110): it is damaged or a full pickle" in message
            assert "allow_unsafe_unpickle=True" in message
        else:
            assert "is truncated or not a torch checkpoint" in message
            assert message.endswith("re-save it with torch.save(model.state_dict(), path)")


def test_protocol4_module_pickle_refused_then_loaded(tmp_path: Path) -> None:
    net = nn.Linear(3, 2)
    path = tmp_path / "p4.pt"
    torch.save(net, path, pickle_protocol=4)
    with pytest.raises(CheckpointError, match=r"cannot be loaded weights-only \(Unsupported operand \d+\)"):
        load_parent(path)
    assert torch.equal(load_parent(path, allow_unsafe_unpickle=True)["weight"], net.weight.detach())


def test_full_pickled_module_refused_then_accepted_with_opt_in(tmp_path: Path) -> None:
    net = QNetwork(8, 4, hidden_size=16)
    path = tmp_path / "full.pt"
    torch.save(net, path)
    with pytest.raises(CheckpointError) as info:
        load_parent(path)
    message = _one_line(info, path)
    assert "is a full pickle, not a weights-only state dict (it references harness.networks.QNetwork)" in message
    assert "runs arbitrary code" in message
    assert "allow_unsafe_unpickle=True" in message and "--crossover-allow-unsafe-unpickle" in message
    loaded = load_parent(path, allow_unsafe_unpickle=True)
    assert list(loaded) == list(net.state_dict())
    assert all(torch.equal(loaded[k], v) for k, v in net.state_dict().items())


def test_opt_in_cannot_unpickle_missing_class(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # Pickle an object of a class from a throwaway module, then make that module unimportable.
    (tmp_path / "gone_mod_xyz.py").write_text("class Thing:\n    pass\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    import gone_mod_xyz  # type: ignore[import-not-found]

    path = tmp_path / "foreign.pt"
    torch.save({"w": torch.zeros(1), "x": gone_mod_xyz.Thing()}, path)
    monkeypatch.delitem(sys.modules, "gone_mod_xyz")
    (tmp_path / "gone_mod_xyz.py").unlink()
    with pytest.raises(CheckpointError, match=r"is a full pickle, not a weights-only state dict \(it references gone"):
        load_parent(path)
    with pytest.raises(CheckpointError) as info:
        load_parent(path, allow_unsafe_unpickle=True)
    message = _one_line(info, path)
    assert "could not be unpickled even with allow_unsafe_unpickle (ModuleNotFoundError" in message


def test_opt_in_non_tensor_pickle_still_rejected(tmp_path: Path) -> None:
    path = tmp_path / "obj.pt"
    torch.save({"w": torch.zeros(1), "cfg": nn.ReLU()}, path)
    with pytest.raises(CheckpointError, match="is a full pickle"):
        load_parent(path)
    with pytest.raises(CheckpointError, match=r"has non-tensor entries \('cfg'\)"):
        load_parent(path, allow_unsafe_unpickle=True)


@pytest.mark.parametrize(
    ("payload", "fragment"),
    [
        ([torch.zeros(2)], "holds a list, not a state dict"),
        (torch.zeros(2), "holds a Tensor, not a state dict"),
        ({}, "is an empty state dict"),
        ({"w": torch.zeros(2), "step": 3}, "has non-tensor entries ('step')"),
        ({1: torch.zeros(2)}, "has non-tensor entries (1)"),
    ],
)
def test_bad_payloads(tmp_path: Path, payload: object, fragment: str) -> None:
    path = tmp_path / "p.pt"
    torch.save(payload, path)
    with pytest.raises(CheckpointError) as info:
        load_parent(path)
    assert fragment in _one_line(info, path)


def test_safetensors_missing_or_present(tmp_path: Path, state_dict) -> None:
    path = tmp_path / "a.safetensors"
    try:
        from safetensors.torch import save_file
    except ImportError:
        path.write_bytes(b"x")
        with pytest.raises(CheckpointError, match="safetensors package is not installed"):
            load_parent(path)
        return
    save_file(state_dict, str(path))
    assert list(load_parent(path)) == sorted(state_dict)


def test_quantized_tensors_load(tmp_path: Path) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch deprecates quantize_per_tensor; the checkpoints still exist
        q = torch.quantize_per_tensor(torch.ones(2, 2), 0.5, 0, torch.qint8)
    torch.save({"w": q}, tmp_path / "q.pt")
    assert load_parent(tmp_path / "q.pt")["w"].is_quantized


def test_check_parents_is_reexported() -> None:
    assert check_parents is crossover_check_parents
    with pytest.raises(CrossoverError, match=r"'w': A=\(2,\), B=\(3,\)"):
        check_parents({"w": torch.zeros(2)}, {"w": torch.zeros(3)})


def test_file_sha256(tmp_path: Path) -> None:
    path = tmp_path / "f.bin"
    data = bytes(range(256)) * 9000  # > 1 MiB chunk
    path.write_bytes(data)
    assert file_sha256(path) == hashlib.sha256(data).hexdigest()
    with pytest.raises(HarnessError, match="does not exist"):
        file_sha256(tmp_path / "missing")


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
    monkeypatch.setattr(checkpoints, "_CHUNK_VALUES", 6)  # 2 rows of width 3 per chunk
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
