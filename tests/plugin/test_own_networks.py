"""Your own networks as parents: plain nn.Sequential checkpoints run a session (converted on load, in the
torch-free controller and in the workers alike), an unconvertible one stops it in one line, and a family declared
in a conftest runs one."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from harness.networks.family import FAMILIES
from tests.plugin.conftest import CLIENT, base_args, read_json

SMOKE_IDS = ["000_random_a0p50_s0_short", "001_layer_a0p50_sNone_short", "002_weighted_a0p50_sNone_short"]


class Agent(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.q_net = nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 16), nn.ReLU(), nn.Linear(16, 4))


def _save(path: Path, module: nn.Module, seed: int) -> Path:
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.copy_(torch.randn(p.shape, generator=gen) * 0.5)
    torch.save(module.state_dict(), path)
    return path


def _files(d: Path, make: type[nn.Module] | None = None) -> dict[str, Path]:
    make = make or Agent
    a, b = _save(d / "a.pt", make(), 1), _save(d / "b.pt", make(), 2)
    np.save(d / "states.npy", np.random.default_rng(0).standard_normal((300, 8)).astype(np.float32))
    return {"parent_a": a, "parent_b": b, "states": d / "states.npy"}


def test_two_plain_sequential_parents_run_a_session_on_two_workers(pytester: pytest.Pytester) -> None:
    files = _files(pytester.path)
    pytester.makepyfile(test_search=CLIENT)
    result = pytester.runpytest_subprocess(*base_args(files), "--crossover-space=smoke", "-n", "2")
    result.assert_outcomes(passed=3)
    run_dir = pytester.path / "runs"
    manifest = read_json(run_dir / "manifest.json")
    assert [c["child_id"] for c in manifest["children"]] == SMOKE_IDS
    assert all(c["status"] == "ok" and c["finetune"]["steps"] > 0 for c in manifest["children"])
    config = read_json(run_dir / SMOKE_IDS[0] / "run_config.json")
    assert config["architecture"] == {"input_dim": 8, "output_dim": 4, "hidden_size": 16, "hidden": [16, 16],
                                      "family": "mlp"}
    child = torch.load(run_dir / SMOKE_IDS[0] / "child.pt", weights_only=True)
    assert sorted(child) == sorted(f"network.{i}.{p}" for i in (0, 3, 6) for p in ("weight", "bias"))


def test_an_unconvertible_parent_stops_the_session_in_one_line(pytester: pytest.Pytester) -> None:
    class Convolutional(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.net = nn.Sequential(nn.Conv1d(8, 16, 1), nn.ReLU(), nn.Linear(16, 4))

    files = _files(pytester.path, Convolutional)
    pytester.makepyfile(test_search=CLIENT)
    result = pytester.runpytest_inprocess(*base_args(files), "--crossover-space=smoke")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    lines = [ln for ln in result.stderr.str().splitlines() if ln.startswith("ERROR:")]
    assert len(lines) == 1 and lines[0].startswith("ERROR: --crossover-parent-a: state dict is not a network of a "
                                                   "known family (qnetwork, mlp) nor a convertible nn.Sequential: "
                                                   "net.0.weight has shape (16, 8, 1): a convolution"), lines
    assert "save an nn.Sequential of Linear layers" in lines[0] and not (pytester.path / "runs").exists()


CONFTEST = '''
import numpy as np
from torch import nn

from harness.networks.family import FAMILIES, Block, Blocks, Family, register_family


class Tanh(nn.Module):
    def __init__(self, input_dim, hidden, output_dim):
        super().__init__()
        self.fc1, self.fc2 = nn.Linear(input_dim, hidden[0]), nn.Linear(hidden[0], output_dim)

    def forward(self, x):
        return self.fc2(self.fc1(x).tanh())


class TanhFamily(Family):
    name = "tanh2"
    description = "fc1-tanh-fc2 network"

    def recognise(self, state_dict):
        return self.fit(state_dict, ["fc1", "fc2"]) if "fc1.weight" in state_dict else None

    def blocks(self, arch):
        return Blocks((Block("fc1"),), "fc2", activation=np.tanh)

    def build(self, arch, dropout_rate):
        return Tanh(arch.input_dim, arch.hidden, arch.output_dim)


if "tanh2" not in FAMILIES:
    register_family(TanhFamily())
'''


def test_a_family_declared_in_a_conftest_runs_a_session(pytester: pytest.Pytester) -> None:
    class Tanh(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.fc1, self.fc2 = nn.Linear(8, 16), nn.Linear(16, 4)

    files = _files(pytester.path, Tanh)
    pytester.makeconftest(CONFTEST)
    pytester.makepyfile(test_search=CLIENT)
    # In this process: the family is registered in its registry by the conftest, and removed after the session.
    assert "tanh2" not in FAMILIES
    try:
        result = pytester.runpytest_inprocess(*base_args(files), "--crossover-space=smoke", "--crossover-max-runs=1")
    finally:
        FAMILIES.unregister("tanh2")
    result.assert_outcomes(passed=1)
    config = read_json(pytester.path / "runs" / SMOKE_IDS[0] / "run_config.json")
    assert config["architecture"]["family"] == "tanh2" and config["architecture"]["hidden"] == [16]
