"""harness.inputs.checkpoints: safe parent loading, every error case with its one-line message."""

from __future__ import annotations

import hashlib
import sys
import warnings
from pathlib import Path

import pytest
import torch
from torch import nn

from harness.core.errors import CheckpointError, CrossoverError, HarnessError
from harness.crossing.crossover import check_parents as crossover_check_parents
from harness.inputs.checkpoints import check_parents, file_sha256, load_parent
from harness.networks.qnetwork import QNetwork


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
    assert ("is a full pickle, not a weights-only state dict (it references harness.networks.qnetwork.QNetwork)"
            in message)
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
