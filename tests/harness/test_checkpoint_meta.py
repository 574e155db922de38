"""harness.inputs.checkpoint_meta / peek_parent / check_inputs: the torch-free checks agree with the torch ones."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch

from harness.core.errors import CheckpointError, CrossoverError, HarnessError
from harness.inputs.checkpoint_meta import TensorMeta, read_meta
from harness.inputs.checkpoints import load_parent, peek_parent
from harness.inputs.load import check_inputs, load_inputs
from harness.networks.qnetwork import QNetwork


def _save(tmp_path: Path, obj: object, name: str = "p.pt", **kwargs: object) -> Path:
    path = tmp_path / name
    torch.save(obj, path, **kwargs)
    return path


def test_meta_of_a_state_dict_matches_the_tensors(tmp_path: Path) -> None:
    sd = QNetwork(8, 4, 32).state_dict()
    meta = read_meta(_save(tmp_path, sd))
    assert list(meta) == list(sd)
    for key, tensor in sd.items():
        assert meta[key] == TensorMeta(tuple(tensor.shape), str(tensor.dtype), True, False)


@pytest.mark.filterwarnings("ignore:torch.quantize_per_tensor:UserWarning")  # torch deprecates qint8 tensors
def test_meta_covers_dtypes_views_parameters_and_quantized_tensors(tmp_path: Path) -> None:
    base = torch.arange(12, dtype=torch.float64).reshape(3, 4)
    obj = {
        "half": torch.zeros(2, 3, dtype=torch.float16), "bf16": torch.zeros(5, dtype=torch.bfloat16),
        "long": torch.zeros(4, dtype=torch.int64), "bool": torch.zeros(1, dtype=torch.bool),
        "view": base[1:, 2:], "transposed": base.t(), "scalar": torch.tensor(3.0),
        "param": torch.nn.Parameter(torch.ones(2, 2)),
        "q": torch.quantize_per_tensor(torch.randn(3, 3), 0.1, 0, torch.qint8),
    }
    meta = read_meta(_save(tmp_path, obj))
    for key, tensor in obj.items():
        assert meta[key].shape == tuple(tensor.shape), key
        assert meta[key].dtype == str(tensor.dtype), key
        assert meta[key].is_floating_point() == tensor.is_floating_point(), key
        assert meta[key].is_quantized == tensor.is_quantized, key


@pytest.mark.parametrize("case", ["module", "legacy", "truncated", "short-record", "crc", "not-zip"])
def test_anything_unrecognised_is_left_to_torch(tmp_path: Path, case: str) -> None:
    sd = QNetwork(8, 4, 16).state_dict()
    if case == "module":  # a full pickle references a class: never resolved here
        path = _save(tmp_path, QNetwork(8, 4, 16))
    elif case == "legacy":
        path = _save(tmp_path, sd, _use_new_zipfile_serialization=False)
    elif case == "truncated":
        path = _save(tmp_path, sd)
        path.write_bytes(path.read_bytes()[:-100])
    elif case in ("short-record", "crc"):
        good = _save(tmp_path, sd, "good.pt")
        path = tmp_path / "p.pt"
        with zipfile.ZipFile(good) as src, zipfile.ZipFile(path, "w") as dst:
            for info in src.infolist():
                data = src.read(info)
                if info.filename.endswith("/data/0"):
                    data = data[:-4] if case == "short-record" else bytes([data[0] ^ 1]) + data[1:]
                dst.writestr(info, data)
        if case == "crc":  # same length, flipped bit, CRC recorded for the original bytes
            raw = bytearray(good.read_bytes())
            with zipfile.ZipFile(good) as z:
                info = next(i for i in z.infolist() if i.filename.endswith("/data/0"))
            name_len, extra_len = (int.from_bytes(raw[info.header_offset + i:info.header_offset + i + 2], "little")
                                   for i in (26, 28))  # the local header's lengths (torch pads its extra field)
            raw[info.header_offset + 30 + name_len + extra_len] ^= 1
            path.write_bytes(bytes(raw))
    else:
        path = tmp_path / "p.pt"
        path.write_bytes(b"not a checkpoint at all")
    assert read_meta(path) is None
    assert peek_parent(path) is None


def test_a_malicious_pickle_is_not_executed(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"

    class Evil:
        def __reduce__(self):
            return (open, (str(marker), "w"))

    path = _save(tmp_path, {"w": torch.zeros(1), "evil": Evil()})
    assert read_meta(path) is None
    assert not marker.exists()


def test_peek_parent_raises_what_load_parent_raises(tmp_path: Path) -> None:
    cases = {
        "empty.pt": {},
        "list.pt": [torch.zeros(1)],
        "mixed.pt": {"w": torch.zeros(2), "step": 3, "name": "x"},
    }
    for name, obj in cases.items():
        path = _save(tmp_path, obj, name)
        with pytest.raises(CheckpointError) as torch_err:
            load_parent(path)
        with pytest.raises(CheckpointError) as meta_err:
            peek_parent(path)
        assert str(meta_err.value) == str(torch_err.value), name
    nested = _save(tmp_path, {"model_state_dict": QNetwork(8, 4, 16).state_dict(), "epoch": 7}, "nested.pt")
    assert list(peek_parent(nested)) == list(load_parent(nested))
    with pytest.raises(CheckpointError, match="does not exist"):
        peek_parent(tmp_path / "missing.pt")


def _files(tmp_path: Path, sd_b: dict[str, torch.Tensor] | None = None, width: int = 8) -> dict[str, Path]:
    sd_a = QNetwork(8, 4, 16).state_dict()
    np.save(tmp_path / "s.npy", np.random.default_rng(0).standard_normal((50, width)).astype(np.float32))
    return {"parent_a": _save(tmp_path, sd_a, "a.pt"), "parent_b": _save(tmp_path, sd_b or sd_a, "b.pt"),
            "states": tmp_path / "s.npy"}


def test_check_inputs_records_the_provenance_load_inputs_records(tmp_path: Path) -> None:
    f = _files(tmp_path)
    checked = check_inputs(f["parent_a"], f["parent_b"], f["states"])
    loaded = load_inputs(f["parent_a"], f["parent_b"], f["states"])
    assert checked is not None and checked.provenance == loaded.provenance
    embedded = check_inputs(check_environment=False)
    assert embedded is not None and embedded.provenance == load_inputs(check_environment=False).provenance
    assert embedded.provenance["source"] == "embedded"


@pytest.mark.parametrize("problem", ["shape", "width"])
def test_check_inputs_raises_load_inputs_errors(tmp_path: Path, problem: str) -> None:
    if problem == "shape":
        f, error = _files(tmp_path, QNetwork(8, 4, 32).state_dict()), CrossoverError
    else:
        f, error = _files(tmp_path, width=5), HarnessError
    with pytest.raises(error) as torch_err:
        load_inputs(f["parent_a"], f["parent_b"], f["states"])
    with pytest.raises(error) as meta_err:
        check_inputs(f["parent_a"], f["parent_b"], f["states"])
    assert str(meta_err.value) == str(torch_err.value)


def test_check_inputs_imports_no_torch(tmp_path: Path) -> None:
    f = _files(tmp_path)
    code = ("import sys; from harness.inputs.load import check_inputs; "
            f"p = check_inputs({str(f['parent_a'])!r}, {str(f['parent_b'])!r}, {str(f['states'])!r}); "
            "print(p.provenance['states_file']['shape'], 'torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["[50,", "8]", "False"]
