"""Plain ``nn.Sequential`` checkpoints, renamed on load to the keys of the built-in family that computes the same
function.

A state dict of ``nn.Sequential(Linear, ReLU, Linear, ReLU, Linear)`` has keys ``0.weight, 0.bias, 2.weight, ...``
under whatever prefix the model held it (``net.``, ``model.``, ``q_net.``, none). Its keys and shapes say where
each Linear and each LayerNorm sits; the parameter-free layers between them (an activation, a dropout) leave only
a gap in the numbering. Blocks of Linear, ReLU and an optional Dropout become the ``mlp`` family; with a LayerNorm
directly after each hidden Linear, the ``qnetwork`` family. The values are not touched, only the keys.

A state dict does not record which activation a parameter-free layer was: one layer between two blocks is taken
as ReLU, two as ReLU and Dropout (an ``nn.Tanh`` network would convert to a different function: register a family
for it instead). Shapes and metadata only, so the torch-free controller check converts the same way.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from harness.networks.architecture import is_tensor

_KEY = re.compile(r"^((?:.*\.)?)(\d+)\.([A-Za-z_]+)$")


def convert(state_dict: Any) -> Any:
    """``state_dict`` with its keys renamed to the built-in family that computes its function, or unchanged
    when it is not a convertible Sequential (or not a mapping at all: the caller's checks say what it is); a
    state dict already in a built-in layout is its own conversion."""
    if not isinstance(state_dict, Mapping):
        return state_dict
    renamed = _rename(state_dict)
    if isinstance(renamed, str):
        return state_dict
    return {renamed[k]: v for k, v in state_dict.items()}


def convertible(state_dict: Mapping[str, Any]) -> str:
    """Why ``state_dict`` is not a convertible ``nn.Sequential`` (``""`` when it is)."""
    renamed = _rename(state_dict)
    return renamed if isinstance(renamed, str) else ""


def _layers(state_dict: Mapping[str, Any]) -> tuple[str, dict[int, dict[str, Any]]] | str:
    """(prefix, {layer index: {parameter name: tensor}}), or why the keys are not one Sequential's."""
    prefixes: set[str] = set()
    layers: dict[int, dict[str, Any]] = {}
    for key, value in state_dict.items():
        m = _KEY.match(str(key))
        if not is_tensor(value):
            return f"{key!r} is not a tensor"
        if m is None:
            return f"{key!r} is not a parameter of a numbered layer (<prefix><index>.weight)"
        prefixes.add(m.group(1))
        layers.setdefault(int(m.group(2)), {})[m.group(3)] = value
    if len(prefixes) != 1:
        return f"its keys lie under {len(prefixes)} prefixes ({', '.join(sorted(map(repr, prefixes)))})"
    return prefixes.pop(), layers


def _kind(name: str, params: Mapping[str, Any]) -> str:
    """``linear``, ``norm``, or why the layer ``name`` is neither."""
    if "running_mean" in params:
        return f"{name} is a BatchNorm layer, which the harness does not take (use LayerNorm or none)"
    if set(params) != {"weight", "bias"}:
        return f"{name} holds {', '.join(sorted(params))}; a Linear or LayerNorm holds weight and bias"
    w, b = tuple(params["weight"].shape), tuple(params["bias"].shape)
    if len(w) == 2 and b == (w[0],):
        return "linear"
    if len(w) == 1 and b == w:
        return "norm"
    if len(w) > 2:
        return f"{name}.weight has shape {w}: a convolution or other layer that is not a Linear"
    return f"{name} has weight {w} and bias {b}, which fit neither a Linear nor a LayerNorm"


def _rename(state_dict: Mapping[str, Any]) -> dict[str, str] | str:
    """{old key: new key}, or why the state dict is not a convertible Sequential."""
    parsed = _layers(state_dict)
    if isinstance(parsed, str):
        return parsed
    prefix, layers = parsed
    blocks: list[tuple[int, int | None]] = []  # (Linear index, LayerNorm index or None)
    last = -1
    width: int | None = None
    for idx in sorted(layers):
        name = f"{prefix}{idx}"
        kind = _kind(name, layers[idx])
        shape = tuple(layers[idx]["weight"].shape) if kind in ("linear", "norm") else ()
        if kind == "norm":
            if not blocks or blocks[-1][1] is not None or idx != last + 1 or shape[0] != width:
                return f"{name} is a LayerNorm that does not directly follow a Linear of its width"
            blocks[-1], last = (blocks[-1][0], idx), idx
            continue
        if kind != "linear":
            return kind
        if blocks:
            gap = idx - last - 1
            if gap not in (1, 2):
                between = "nothing" if gap == 0 else f"{gap} parameter-free layers"
                return (f"{between} between {prefix}{last} and {name}; a hidden block ends in one activation "
                        "(ReLU) and at most one Dropout")
            if shape[1] != width:
                return f"{name}.weight takes {shape[1]} inputs but the layer before it gives {width}"
        blocks.append((idx, None))
        last, width = idx, shape[0]
    return _renaming(prefix, blocks)


def _renaming(prefix: str, blocks: list[tuple[int, int | None]]) -> dict[str, str] | str:
    if len(blocks) < 2:
        return "a single Linear has no hidden layer to cross"
    if blocks[-1][1] is not None:
        return f"{prefix}{blocks[-1][1]} normalises the output layer; the last Linear gives the Q-values"
    norms = {norm is not None for _, norm in blocks[:-1]}
    if len(norms) != 1:
        return "some hidden Linears are followed by a LayerNorm and some are not; use one or the other throughout"
    stride = 4 if norms.pop() else 3
    out: dict[str, str] = {}
    for k, (linear, norm) in enumerate(blocks):
        for param in ("weight", "bias"):
            out[f"{prefix}{linear}.{param}"] = f"network.{stride * k}.{param}"
            if norm is not None:
                out[f"{prefix}{norm}.{param}"] = f"network.{stride * k + 1}.{param}"
    return out
