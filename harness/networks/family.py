"""Network families: what the harness needs to know about one kind of network, registered like an operator.

A family recognises its state dicts from their keys and shapes alone (so the torch-free controller check runs it
on checkpoint metadata), names the parameters of each hidden block (:class:`Blocks`: alignment's permutable units,
the finiteness forward and the stacked trainer read them), builds the torch module, gives the module's int8 form,
and says whether the fast stacked trainer (:mod:`harness.networks.stacked`) covers its modules; the others train on the
autograd stack (:mod:`harness.networks.autograd`), the same step computed by ``torch.autograd``.

Built in, tried in this order:

- ``qnetwork``: ``.network = [Linear, LayerNorm, ReLU, Dropout]*, Linear`` (keys ``network.0/1/4/5/8`` for two
  hidden layers), :class:`harness.networks.qnetwork.QNetwork`; fast.
- ``mlp``: ``.network = [Linear, ReLU, Dropout]*, Linear`` (keys ``network.0/3/6``), no normalisation, so a
  different function from a Q-network of the same widths; :class:`harness.networks.qnetwork.PlainMLP`; autograd.

A plain ``nn.Sequential`` checkpoint (any key prefix) is renamed to one of them on load
(:mod:`harness.networks.sequential`).
A user brings another architecture by registering a :class:`Family` (entry-point group
``pytest_crossover.networks``, or :func:`register_family` from a conftest).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

from harness.core.errors import CheckpointError
from harness.core.registry import Registry
from harness.networks.architecture import DEFAULT_FAMILY, DROPOUT, Architecture, is_tensor

if TYPE_CHECKING:  # numpy and torch load when they are used, not with the registry (the plugin's load)
    import numpy as np
    from torch import nn


@dataclass(frozen=True, slots=True)
class Block:
    """One hidden layer: its Linear's key prefix, and its LayerNorm's (directly after the Linear) or None.
    Every block computes ``activation(norm(Linear(h)))`` (:class:`Blocks`), then its dropout when training."""

    linear: str
    norm: str | None = None


@dataclass(frozen=True, slots=True)
class Blocks:
    """A family's network as the harness reads it: the hidden blocks in order, then the output Linear, and the
    hidden blocks' activation as a numpy function (None: ReLU) for the checks that compute the network in numpy
    (finiteness, activation matching)."""

    hidden: tuple[Block, ...]
    output: str
    activation: Callable[[np.ndarray], np.ndarray] | None = None

    def activate(self, h: np.ndarray) -> np.ndarray:
        if self.activation is not None:
            return self.activation(h)
        import numpy as np

        out: np.ndarray = np.maximum(h, 0.0)
        return out

    def units(self) -> list[tuple[tuple[str, ...], tuple[str, ...]]]:
        """Per hidden layer, the keys whose rows carry its units (its Linear, its LayerNorm) and those whose
        columns do (the next Linear's weight): what alignment permutes, leaving the function unchanged."""
        out: list[tuple[tuple[str, ...], tuple[str, ...]]] = []
        for k, block in enumerate(self.hidden):
            rows = [f"{block.linear}.weight", f"{block.linear}.bias"]
            if block.norm is not None:
                rows += [f"{block.norm}.weight", f"{block.norm}.bias"]
            nxt = self.hidden[k + 1].linear if k + 1 < len(self.hidden) else self.output
            out.append((tuple(rows), (f"{nxt}.weight",)))
        return out


class Family:
    """One kind of network. Subclasses set ``name`` and ``description`` and implement :meth:`recognise`,
    :meth:`blocks` and :meth:`build`; the rest derives from the blocks. ``fast`` is True only when
    :class:`harness.networks.stacked.StackedMLP` trains the family's modules (the Q-network layout)."""

    name: ClassVar[str] = ""
    description: ClassVar[str] = ""
    fast: ClassVar[bool] = False

    def recognise(self, state_dict: Mapping[str, Any]) -> Architecture | None:
        """The architecture when the keys follow this family's layout (then every key and shape is checked:
        :meth:`fit`), else None."""
        raise NotImplementedError

    def blocks(self, arch: Architecture) -> Blocks:
        raise NotImplementedError

    def build(self, arch: Architecture, dropout_rate: float) -> nn.Module:
        """A new module of ``arch`` (its state-dict keys are :meth:`shapes`' keys); dropout as given."""
        raise NotImplementedError

    def int8(self, model: nn.Module) -> nn.Module:
        """The deployed int8 form of a float module (every Linear as a batch-invariant int8 Linear)."""
        from harness.networks.quantize import convert_int8

        return convert_int8(model)

    def shapes(self, arch: Architecture) -> dict[str, tuple[int, ...]]:
        """Every state-dict key of ``arch`` and its shape, in module order."""
        blocks = self.blocks(arch)
        out: dict[str, tuple[int, ...]] = {}
        widths = (arch.input_dim, *arch.hidden)
        for k, block in enumerate(blocks.hidden):
            width = arch.hidden[k]
            out[f"{block.linear}.weight"], out[f"{block.linear}.bias"] = (width, widths[k]), (width,)
            if block.norm is not None:
                out[f"{block.norm}.weight"], out[f"{block.norm}.bias"] = (width,), (width,)
        out[f"{blocks.output}.weight"] = (arch.output_dim, widths[-1])
        out[f"{blocks.output}.bias"] = (arch.output_dim,)
        return out

    def fit(self, state_dict: Mapping[str, Any], linears: Sequence[str]) -> Architecture:
        """The architecture read off the Linear weights ``linears`` (key prefixes, in order), with every key and
        shape of the state dict checked against it: a CheckpointError lists every missing key, every extra one
        and every shape that does not fit."""
        weights = [state_dict[f"{key}.weight"] for key in linears]
        arch = Architecture(int(weights[0].shape[1]), int(weights[-1].shape[0]),
                            tuple(int(w.shape[0]) for w in weights[:-1]), self.name)
        expected = self.shapes(arch)
        problems = [f"missing {k}" for k in expected if k not in state_dict]
        problems += [f"unexpected {k}" for k in state_dict if k not in expected]
        problems += [f"{k} has shape {tuple(state_dict[k].shape)}, expected {shape}" for k, shape in expected.items()
                     if k in state_dict and is_tensor(state_dict[k]) and tuple(state_dict[k].shape) != shape]
        if problems:
            shown = "; ".join(problems[:6]) + (f"; and {len(problems) - 6} more" if len(problems) > 6 else "")
            raise CheckpointError(f"state dict does not fit the {self.description} {arch.describe_layers()}: "
                                  f"{shown}; {self.fix()}")
        return arch

    def fix(self) -> str:
        return f"pass a checkpoint of the {self.description}"


class SequentialFamily(Family):
    """``.network = nn.Sequential`` of hidden blocks of ``stride`` modules each (Linear first, LayerNorm second
    when ``norm``, then ReLU and Dropout), then a Linear: the harness's own layouts."""

    norm: ClassVar[bool] = True
    layers: ClassVar[str] = ""

    @property
    def stride(self) -> int:
        return 4 if self.norm else 3

    def recognise(self, state_dict: Mapping[str, Any]) -> Architecture | None:
        found = (int(m.group(1)) for k in state_dict if (m := _NETWORK_LINEAR.match(str(k))))
        linears = sorted(i for i in found if i % self.stride == 0)
        n = len(linears)
        if n < 2 or linears != list(range(0, self.stride * n, self.stride)) or \
                any(len(tuple(state_dict[f"network.{i}.weight"].shape)) != 2 for i in linears):
            return None
        if not self.norm and any(f"network.{i + 1}.weight" in state_dict for i in linears[:-1]):
            return None  # a normalised block: another family's
        return self.fit(state_dict, [f"network.{i}" for i in linears])

    def blocks(self, arch: Architecture) -> Blocks:
        s = self.stride
        return Blocks(tuple(Block(f"network.{s * k}", f"network.{s * k + 1}" if self.norm else None)
                            for k in range(len(arch.hidden))), f"network.{s * len(arch.hidden)}")

    def fix(self) -> str:
        return (f"pass a checkpoint of the {self.description}: .network = {self.layers} (keys "
                f"{'network.0/1/4/5/8' if self.norm else 'network.0/3/6'}.{{weight,bias}} for two hidden layers)")


class QNetworkFamily(SequentialFamily):
    name = DEFAULT_FAMILY
    description = "Q-network layout"
    layers = "[Linear, LayerNorm, ReLU, Dropout]*, Linear"
    fast = True
    norm = True

    def build(self, arch: Architecture, dropout_rate: float) -> nn.Module:
        from harness.networks.qnetwork import QNetwork

        return QNetwork.of(arch, dropout_rate=dropout_rate)


class PlainMLPFamily(SequentialFamily):
    name = "mlp"
    description = "plain MLP layout"
    layers = "[Linear, ReLU, Dropout]*, Linear"
    norm = False

    def build(self, arch: Architecture, dropout_rate: float) -> nn.Module:
        from harness.networks.qnetwork import PlainMLP

        return PlainMLP(arch.input_dim, arch.output_dim, arch.hidden, dropout_rate)


_NETWORK_LINEAR = re.compile(r"^network\.(\d+)\.weight$")
FAMILIES: Registry[Family] = Registry("network family", group="pytest_crossover.networks")
UNKNOWN_FIX = ("save an nn.Sequential of Linear layers with a ReLU after each hidden one (a LayerNorm directly after "
               "a hidden Linear and a Dropout after its ReLU are optional) with torch.save(model.state_dict(), path), "
               "or register a network family for your architecture (README: Your own networks)")


def register_family(family: Family, *, replace: bool = False) -> Family:
    return FAMILIES.register(family.name, family, replace=replace)


def family_of(arch: Architecture) -> Family:
    return FAMILIES.get(arch.family)


def claimed(state_dict: Mapping[str, Any]) -> bool:
    """Whether some family takes ``state_dict`` for one of its own, even one with a wrong key or shape."""
    for family in FAMILIES.values():
        try:
            if family.recognise(state_dict) is not None:
                return True
        except CheckpointError:
            return True
    return False


def infer(state_dict: Mapping[str, Any]) -> Architecture:
    """The architecture of the first family that recognises ``state_dict``; else a one-line CheckpointError
    saying why no conversion applies and what to change."""
    for family in FAMILIES.values():
        arch = family.recognise(state_dict)
        if arch is not None:
            return arch
    from harness.networks.sequential import convertible

    reason = convertible(state_dict)
    if not reason:
        raise CheckpointError("state dict is a plain nn.Sequential's, not yet renamed to its family's keys; load it "
                              "with harness.inputs.checkpoints.load_parent, or pass "
                              "harness.networks.sequential.convert(state_dict)")
    known = ", ".join(FAMILIES.names())
    raise CheckpointError(f"state dict is not a network of a known family ({known}) nor a convertible "
                          f"nn.Sequential: {reason}; {UNKNOWN_FIX}")


for _family in (QNetworkFamily(), PlainMLPFamily()):
    register_family(_family)


def infer_architecture(state_dict: Mapping[str, Any]) -> Architecture:
    """The architecture of the first registered family (:data:`FAMILIES`) whose layout the keys follow, every key and
    shape checked; else a one-line :class:`CheckpointError` that says what to change."""
    return infer(state_dict)


def build_network(arch: Architecture, dropout_rate: float = DROPOUT) -> nn.Module:
    """A new module of ``arch``, built by its family (train mode, as torch builds modules)."""
    return family_of(arch).build(arch, dropout_rate)


def network_from_state_dict(state_dict: Mapping[str, Any], dropout_rate: float = DROPOUT) -> nn.Module:
    """A module of the inferred architecture's family with ``state_dict`` loaded strictly, in eval mode."""
    net = build_network(infer_architecture(state_dict), dropout_rate)
    net.load_state_dict({k: v.dequantize() if v.is_quantized else v for k, v in state_dict.items()}, strict=True)
    return net.eval()
