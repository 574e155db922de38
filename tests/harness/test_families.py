"""Network families: the built-in ones, plain nn.Sequential checkpoints converted on load (same outputs) or refused
in one line, and a family registered from a test module that fine-tunes end to end."""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from harness.core.errors import HarnessError
from harness.inputs.checkpoints import load_parent, peek_parent
from harness.inputs.load import check_inputs, load_inputs
from harness.networks.architecture import Architecture
from harness.networks.autograd import AutogradStack
from harness.networks.family import (
    FAMILIES,
    Block,
    Blocks,
    Family,
    build_network,
    family_of,
    infer_architecture,
    network_from_state_dict,
    register_family,
)
from harness.networks.qnetwork import PlainMLP, QNetwork
from harness.networks.stack import stack_children
from harness.search.child import Context, run_child, run_config
from harness.search.settings import Settings
from harness.search.space import build_space

torch.set_num_threads(1)


def _randomised(module: nn.Module, seed: int) -> nn.Module:
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.copy_(torch.randn(p.shape, generator=gen) * 0.5 + (1.0 if p.dim() == 1 and p.shape[0] == 12 else 0.0))
    return module.eval()


class Holder(nn.Module):
    """A user's agent that keeps its Q-network under an attribute: its keys get that prefix."""

    def __init__(self, attribute: str, net: nn.Sequential) -> None:
        super().__init__()
        setattr(self, attribute, net)
        self.attribute = attribute

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out: torch.Tensor = getattr(self, self.attribute)(x)
        return out


def _plain() -> nn.Sequential:
    return nn.Sequential(nn.Linear(8, 12), nn.ReLU(), nn.Linear(12, 12), nn.ReLU(), nn.Linear(12, 4))


SEQUENTIALS = {
    "plain": (_plain, "mlp"),
    "dropout": (lambda: nn.Sequential(nn.Linear(8, 12), nn.ReLU(), nn.Dropout(0.2), nn.Linear(12, 4)), "mlp"),
    "layernorm": (lambda: nn.Sequential(nn.Linear(8, 12), nn.LayerNorm(12), nn.ReLU(), nn.Linear(12, 12),
                                        nn.LayerNorm(12), nn.ReLU(), nn.Linear(12, 4)), "qnetwork"),
    "qnetwork-as-sequential": (lambda: nn.Sequential(nn.Linear(8, 12), nn.LayerNorm(12), nn.ReLU(), nn.Dropout(),
                                                     nn.Linear(12, 4)), "qnetwork"),
}


def test_the_built_in_families_and_their_modules() -> None:
    assert FAMILIES.names()[:2] == ("qnetwork", "mlp")
    assert FAMILIES.get("qnetwork").fast and not FAMILIES.get("mlp").fast
    q, m = QNetwork(8, 4, hidden=(16, 12)), PlainMLP(8, 4, (16, 12))
    assert list(q.state_dict()) == [f"network.{i}.{p}" for i in (0, 1, 4, 5, 8) for p in ("weight", "bias")]
    assert list(m.state_dict()) == [f"network.{i}.{p}" for i in (0, 3, 6) for p in ("weight", "bias")]
    assert infer_architecture(q.state_dict()) == Architecture(8, 4, (16, 12), "qnetwork")
    arch = infer_architecture(m.state_dict())
    assert arch == Architecture(8, 4, (16, 12), "mlp")
    # run_config.json: a Q-network's architecture reads as it always has; other families name theirs
    assert "family" not in Architecture(8, 4, (16, 12)).to_dict() and arch.to_dict()["family"] == "mlp"
    assert Architecture.from_dict(arch.to_dict()) == arch
    assert isinstance(build_network(arch), PlainMLP) and family_of(arch).shapes(arch)["network.6.weight"] == (4, 12)


@pytest.mark.parametrize("prefix", ["", "net", "model", "q_net"])
@pytest.mark.parametrize("kind", list(SEQUENTIALS))
def test_a_plain_sequential_converts_on_load_and_computes_the_same_function(tmp_path: Path, kind: str,
                                                                             prefix: str) -> None:
    make, family = SEQUENTIALS[kind]
    module = _randomised(make() if not prefix else Holder(prefix, make()), seed=1)
    path = tmp_path / "parent.pt"
    torch.save(module.state_dict(), path)
    sd = load_parent(path)
    assert all(re.fullmatch(r"network\.\d+\.(weight|bias)", k) for k in sd)
    assert infer_architecture(sd).family == family
    meta = peek_parent(path)  # the torch-free controller check converts the same way
    assert meta is not None and list(meta) == list(sd)
    net = network_from_state_dict(sd)
    x = torch.randn(256, 8, generator=torch.Generator().manual_seed(0)) * 3
    with torch.no_grad():
        assert torch.equal(net(x), module(x))


@pytest.mark.parametrize(("module", "fragment"), [
    (nn.Sequential(nn.Conv1d(8, 12, 1), nn.ReLU(), nn.Linear(12, 4)),
     "0.weight has shape (12, 8, 1): a convolution or other layer that is not a Linear"),
    (nn.Sequential(nn.Linear(8, 12), nn.ReLU(), nn.Linear(10, 4)), "2.weight takes 10 inputs but the layer before"),
    (Holder("fc1", nn.Linear(8, 4)), "'fc1.weight' is not a parameter of a numbered layer"),
    (nn.Sequential(nn.Linear(8, 12), nn.BatchNorm1d(12), nn.ReLU(), nn.Linear(12, 4)), "1 is a BatchNorm layer"),
    (nn.Sequential(nn.Linear(8, 12), nn.Linear(12, 4)), "nothing between 0 and 1"),
    (nn.Sequential(nn.Linear(8, 12), nn.ReLU(), nn.LayerNorm(12), nn.Linear(12, 4)),
     "2 is a LayerNorm that does not directly follow a Linear"),
    (nn.Sequential(nn.Linear(8, 4)), "a single Linear has no hidden layer"),
])
def test_an_unconvertible_network_is_refused_in_one_line_that_says_what_to_change(
        tmp_path: Path, module: nn.Module, fragment: str) -> None:
    a, b = tmp_path / "a.pt", tmp_path / "b.pt"
    for path in (a, b):
        torch.save(module.state_dict(), path)
    states = tmp_path / "states.npy"
    np.save(states, np.zeros((20, 8), dtype=np.float32))
    for check in (load_inputs, check_inputs):
        with pytest.raises(HarnessError) as info:
            check(a, b, states)
        message = str(info.value)
        assert info.value.field == "parent_a" and "\n" not in message and fragment in message, message
        assert "save an nn.Sequential of Linear layers with a ReLU after each hidden one" in message
        assert "register a network family" in message


def test_parent_b_is_named_when_only_b_is_unconvertible(tmp_path: Path) -> None:
    a, b, states = tmp_path / "a.pt", tmp_path / "b.pt", tmp_path / "states.npy"
    torch.save(_plain().state_dict(), a)
    torch.save(nn.Sequential(nn.Linear(8, 12), nn.Linear(12, 4)).state_dict(), b)
    np.save(states, np.zeros((20, 8), dtype=np.float32))
    with pytest.raises(HarnessError, match="nothing between 0 and 1") as info:
        load_inputs(a, b, states)
    assert info.value.field == "parent_b"


# -- a family registered by the user --------------------------------------------------------------------------
class FcNet(nn.Module):
    """A network as users often write one: named Linear attributes and F.relu in forward (not a Sequential)."""

    def __init__(self, input_dim: int, hidden: tuple[int, ...], output_dim: int) -> None:
        super().__init__()
        widths = (input_dim, *hidden, output_dim)
        for i in range(len(widths) - 1):
            setattr(self, f"fc{i + 1}", nn.Linear(widths[i], widths[i + 1]))
        self.depth = len(widths) - 1

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for i in range(1, self.depth):
            x = F.relu(getattr(self, f"fc{i}")(x))
        out: torch.Tensor = getattr(self, f"fc{self.depth}")(x)
        return out


class FcFamily(Family):
    name = "fc"
    description = "fc1, fc2, ... network"

    def recognise(self, state_dict: Mapping[str, Any]) -> Architecture | None:
        found = sorted(int(m.group(1)) for k in state_dict if (m := re.fullmatch(r"fc(\d+)\.weight", str(k))))
        if len(found) < 2 or found != list(range(1, len(found) + 1)):
            return None
        return self.fit(state_dict, [f"fc{i}" for i in found])

    def blocks(self, arch: Architecture) -> Blocks:
        n = len(arch.hidden)
        return Blocks(tuple(Block(f"fc{i + 1}") for i in range(n)), f"fc{n + 1}")

    def build(self, arch: Architecture, dropout_rate: float) -> nn.Module:
        return FcNet(arch.input_dim, arch.hidden, arch.output_dim)


@pytest.fixture
def fc_family() -> Iterator[Family]:
    family = register_family(FcFamily())
    yield family
    FAMILIES.unregister(family.name)


def test_a_registered_family_fine_tunes_end_to_end(tmp_path: Path, fc_family: Family) -> None:
    parents = [_randomised(FcNet(8, (12, 12), 4), seed) for seed in (1, 2)]
    paths = [tmp_path / "a.pt", tmp_path / "b.pt"]
    for net, path in zip(parents, paths):
        torch.save(net.state_dict(), path)
    states = np.random.default_rng(0).standard_normal((200, 8)).astype(np.float32)
    np.save(tmp_path / "states.npy", states)
    inputs = load_inputs(*paths, tmp_path / "states.npy")
    assert infer_architecture(inputs.sd_a) == Architecture(8, 4, (12, 12), "fc")
    ctx = Context.build(inputs.sd_a, inputs.sd_b, inputs.buffer, Settings(holdout=0.2, teacher="both"))
    with torch.no_grad():
        assert torch.equal(ctx.parent_a(torch.from_numpy(states)), parents[0](torch.from_numpy(states)))
    specs = build_space("minimal-qat", max_runs=6)
    stack = stack_children([ctx.new_child(inputs.sd_a)], qat=False, temperature=3.0, device=torch.device("cpu"))
    assert isinstance(stack, AutogradStack)  # the family declares no fast path
    for spec in (specs[0], specs[1]):  # a float regime and a QAT one
        outcome = run_child(spec, ctx)
        record = outcome.result.to_dict()
        assert record["status"] == "ok" and isinstance(outcome.model, FcNet), record["status"]
        assert record["finetune"]["steps"] > 0 and 0.0 <= record["primary"] <= 1.0
        assert record["finetune"]["best_val_loss"] <= record["finetune"]["initial_val_loss"]
        assert (outcome.int8_model is not None) == spec.regime.qat
        assert run_config(spec, ctx)["architecture"]["family"] == "fc"
        again = run_child(spec, ctx).result.to_dict()  # deterministic: the same numbers again
        assert again["primary"] == record["primary"] and again["finetune"] == record["finetune"]


def test_a_registered_family_is_aligned_through_its_blocks(fc_family: Family) -> None:
    from harness.crossing.align import align, permute

    a = _randomised(FcNet(8, (12, 10), 4), 1).state_dict()
    shuffled = permute(a, [np.random.default_rng(0).permutation(12), np.random.default_rng(1).permutation(10)])
    assert not torch.equal(shuffled["fc1.weight"], a["fc1.weight"])
    x = torch.randn(50, 8, generator=torch.Generator().manual_seed(0))
    net = network_from_state_dict(shuffled)
    with torch.no_grad():
        torch.testing.assert_close(net(x), network_from_state_dict(a)(x))  # a permutation keeps the function
    back = align(a, shuffled, "weights")
    assert all(torch.equal(back[k], a[k]) for k in a)


def test_a_pickled_sequential_with_another_activation_is_refused_not_converted(tmp_path: Path) -> None:
    """Its state dict alone would convert to a ReLU network, a different function: the pickled module shows the
    Tanh, so it is refused (with the opt-in that lets a full pickle load at all)."""
    path = tmp_path / "tanh.pt"
    torch.save(nn.Sequential(nn.Linear(8, 12), nn.Tanh(), nn.Linear(12, 4)), path)
    with pytest.raises(HarnessError, match=r"has Tanh layers, but a plain Sequential is converted as Linear, ReLU"):
        load_parent(path, allow_unsafe_unpickle=True)
    torch.save(Holder("net", _plain()), path)  # ReLU: converted as its state dict would be
    assert list(load_parent(path, allow_unsafe_unpickle=True))[0] == "network.0.weight"


def test_the_library_takes_a_plain_sequential_state_dict_as_it_is() -> None:
    modules = [_randomised(_plain(), seed) for seed in (1, 2)]
    states = np.random.default_rng(0).standard_normal((100, 8)).astype(np.float32)
    ctx = Context.build(modules[0].state_dict(), modules[1].state_dict(), states, Settings(holdout=0.2))
    assert ctx.arch.family == "mlp" and list(ctx.sd_a)[0] == "network.0.weight"
    with torch.no_grad():
        assert torch.equal(ctx.parent_b(torch.from_numpy(states)), modules[1](torch.from_numpy(states)))
    with pytest.raises(HarnessError, match="not yet renamed to its family's keys; load it with"):
        infer_architecture(modules[0].state_dict())
