"""Layers of a network's state dict: the blocks the layer operators work on (a Linear with the norm after it),
found from the module structure alone, so the same grouping holds for tensors and for their metadata."""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from typing import Any

_DIGITS = re.compile(r"[0-9]+")


def _module_of(key: str) -> str:
    return key.rpartition(".")[0]


def _natural_key(module: str) -> tuple[tuple[int, int, str], ...]:
    # Numeric segments compare as integers, so Sequential index 10 comes after index 2; at one position a
    # numeric segment sorts before a named one.
    return tuple((0, int(s), "") if _DIGITS.fullmatch(s) else (1, 0, s) for s in module.split("."))


def _starts_block_by_shape(module: str, keys: set[str], sd: Mapping[str, Any]) -> bool:
    weight_key = f"{module}.weight" if module else "weight"
    # By the shape, so tensor metadata (harness.inputs.checkpoint_meta) groups as its tensors do.
    return weight_key in keys and len(getattr(sd.get(weight_key), "shape", ())) >= 2


def _starts_block_by_name(module: str, previous: str | None) -> bool:
    # Without shapes, a module right after its Sequential sibling (index N+1) is taken to be the norm that
    # follows a Linear: parameter-free ReLU/Dropout leave gaps in the indices, a norm layer does not.
    if previous is None:
        return True
    parent, _, last = module.rpartition(".")
    prev_parent, _, prev_last = previous.rpartition(".")
    if parent == prev_parent and _DIGITS.fullmatch(last) and _DIGITS.fullmatch(prev_last):
        return int(last) != int(prev_last) + 1
    return True


def layer_blocks(keys: Mapping[str, Any] | Iterable[str]) -> list[list[str]]:
    """Group state-dict keys into the blocks that layer crossover alternates between A, B, A, ...

    Keys are grouped by module (everything before the last dot) and modules are ordered naturally
    (``network.10`` after ``network.2``). Given a state dict, a new block starts at each module whose
    ``weight`` is 2-D or more (Linear, Conv, Embedding); other modules (LayerNorm/BatchNorm with a 1-D weight,
    bias-only or buffer-only modules) join the block before them. Given bare keys, a Sequential index that
    directly follows the previous one (``network.1`` after ``network.0``) is taken for such a norm layer.
    For AgentFarm's Q-network this gives ``[network.0.*, network.1.*], [network.4.*, network.5.*],
    [network.8.*]``. Keys inside a block are sorted.
    """
    shaped = keys if isinstance(keys, Mapping) else None
    by_module: dict[str, list[str]] = {}
    for key in list(keys):
        by_module.setdefault(_module_of(key), []).append(key)
    blocks: list[list[str]] = []
    previous: str | None = None
    for module in sorted(by_module, key=_natural_key):
        if shaped is not None:
            new_block = not blocks or _starts_block_by_shape(module, set(by_module[module]), shaped)
        else:
            new_block = _starts_block_by_name(module, previous)
        if new_block:
            blocks.append([])
        blocks[-1].extend(sorted(by_module[module]))
        previous = module
    return blocks


def layer_names(sd: Mapping[str, Any]) -> list[str]:
    """The parents' layers, in order, by the module of each block's Linear (``network.0``, ``network.4``,
    ``network.8`` for the Q-network): the blocks of :func:`layer_blocks`, one per Linear with its LayerNorm.
    ``sd`` is a state dict or its tensor metadata."""
    return [_module_of(block[0]) for block in layer_blocks(sd)]


def layer_count(sd: Mapping[str, Any]) -> int:
    """How many layers a per-layer parameter takes for parents like ``sd`` (:func:`layer_names`)."""
    return len(layer_blocks(sd))
