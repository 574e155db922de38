"""Crossover of two parent state dicts: ``random``, ``layer`` and ``weighted``.

The semantics match the established tool (Dooders/AgentFarm ``crossover_quantized_state_dict``) bit for
bit on its Q-network layout, and fix its weaknesses: children never alias a parent's storage, integer
buffers are copied rather than cast and blended, layer blocks are found from the module structure (so
``network.10`` comes after ``network.2``), and every key/shape problem is reported in one error.
"""

from __future__ import annotations

import copy
import math
import re
from collections.abc import Iterable, Mapping
from numbers import Real
from typing import Any

import numpy as np
import torch

from harness.architecture import check_parents, is_floatlike
from harness.errors import CrossoverError
from harness.space import CROSSOVER_MODES

__all__ = ["CROSSOVER_MODES", "check_parents", "crossover", "layer_blocks"]

# Modes whose result depends on alpha; layer mode ignores it (the established tool still range-checks it there,
# its weakness 8.10, which we do not repeat).
_ALPHA_MODES = ("random", "weighted")
_DIGITS = re.compile(r"[0-9]+")


def _check_mode_alpha(mode: Any, alpha: Any) -> float:
    if mode not in CROSSOVER_MODES:
        raise CrossoverError(f"unknown crossover mode {mode!r}; use one of: {', '.join(CROSSOVER_MODES)}")
    # bool is a Real subclass, but alpha=True is a bug in the caller, not a probability.
    if isinstance(alpha, bool) or not isinstance(alpha, Real):
        raise CrossoverError(f"alpha must be a number in [0, 1], got {alpha!r}; pass e.g. alpha=0.5")
    value = float(alpha)
    if mode in _ALPHA_MODES and (math.isnan(value) or not 0.0 <= value <= 1.0):
        raise CrossoverError(f"alpha must be in [0, 1] for {mode} crossover, got {alpha!r}; pass e.g. alpha=0.5")
    return value


def _child_value(value: Any) -> Any:
    """A fresh child entry: float32 for float/quantized tensors, same dtype for integer ones, deep copy otherwise."""
    if not isinstance(value, torch.Tensor):
        return copy.deepcopy(value)
    value = value.detach()
    if value.is_quantized:
        # dequantize() allocates a new float32 tensor, so no extra copy is needed.
        return value.dequantize().cpu()
    if value.is_floating_point():
        return value.to(device="cpu", dtype=torch.float32, copy=True)
    # Integer/bool buffers (e.g. BatchNorm's num_batches_tracked) keep their dtype: casting them to float and
    # blending them (the established tool's weakness 8.10) turns counters into meaningless fractions.
    return value.to(device="cpu", copy=True)


def _module_of(key: str) -> str:
    return key.rpartition(".")[0]


def _natural_key(module: str) -> tuple[tuple[int, int, str], ...]:
    # Numeric segments compare as integers, so Sequential index 10 comes after index 2; at one position a
    # numeric segment sorts before a named one.
    return tuple((0, int(s), "") if _DIGITS.fullmatch(s) else (1, 0, s) for s in module.split("."))


def _starts_block_by_shape(module: str, keys: set[str], sd: Mapping[str, Any]) -> bool:
    weight_key = f"{module}.weight" if module else "weight"
    weight = sd.get(weight_key)
    return weight_key in keys and isinstance(weight, torch.Tensor) and weight.dim() >= 2


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
    For the established Q-network this gives ``[network.0.*, network.1.*], [network.4.*, network.5.*],
    [network.8.*]``. Keys inside a block are sorted.
    """
    shaped = keys if isinstance(keys, Mapping) else None
    names = list(keys)
    by_module: dict[str, list[str]] = {}
    for key in names:
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


def crossover(
    sd_a: Mapping[str, Any],
    sd_b: Mapping[str, Any],
    mode: str,
    *,
    alpha: float = 0.5,
    seed: int | None = None,
    rng: np.random.Generator | None = None,
) -> dict[str, Any]:
    """Cross two parent state dicts into a new child state dict.

    - ``random``: one ``u = (rng or numpy.random.default_rng(seed)).random(n)`` draw over the
      lexicographically sorted keys (non-tensor keys included); key i comes from A when ``u[i] < alpha``.
      ``seed=None`` without ``rng`` draws OS entropy (not reproducible), as the established tool does.
    - ``layer``: blocks from :func:`layer_blocks` alternate A, B, A, ...; alpha and seed are unused.
    - ``weighted``: ``alpha * a + (1 - alpha) * b`` per float tensor, in float32.

    Returns a new dict in A's key order: float and quantized tensors become new float32 CPU tensors that never
    share storage with a parent; integer tensors are copied with their dtype (from the chosen parent, or from A
    in weighted mode); non-tensor values are deep-copied (from A in random and weighted mode, from the block's
    parent in layer mode). Raises :class:`CrossoverError` before any work for an unknown mode, an alpha outside
    [0, 1] in random/weighted mode, or parents whose keys, shapes or kinds differ.
    """
    alpha_f = _check_mode_alpha(mode, alpha)
    check_parents(sd_a, sd_b)
    if mode == "random":
        return _random(sd_a, sd_b, alpha_f, seed, rng)
    if mode == "layer":
        return _layer(sd_a, sd_b)
    return _weighted(sd_a, sd_b, alpha_f)


def _random(
    sd_a: Mapping[str, Any], sd_b: Mapping[str, Any], alpha: float, seed: int | None, rng: np.random.Generator | None
) -> dict[str, Any]:
    if rng is not None and not isinstance(rng, np.random.Generator):
        raise CrossoverError(
            f"rng must be a numpy.random.Generator, got {type(rng).__name__}; "
            "pass rng=numpy.random.default_rng(seed) or use seed="
        )
    if rng is None:
        try:
            rng = np.random.default_rng(seed)
        except (TypeError, ValueError) as exc:
            raise CrossoverError(f"seed must be a non-negative int or None, got {seed!r}; pass e.g. seed=0") from exc
    keys = sorted(sd_a)
    # One draw over all sorted keys, non-tensors included, so the coin of every key matches the established tool.
    u = rng.random(len(keys))
    from_a = {key: bool(u[i] < alpha) for i, key in enumerate(keys)}
    child = {}
    for key in sd_a:
        a = sd_a[key]
        if not isinstance(a, torch.Tensor):
            child[key] = copy.deepcopy(a)
        else:
            child[key] = _child_value(a if from_a[key] else sd_b[key])
    return child


def _layer(sd_a: Mapping[str, Any], sd_b: Mapping[str, Any]) -> dict[str, Any]:
    source: dict[str, Mapping[str, Any]] = {}
    for index, block in enumerate(layer_blocks(sd_a)):
        for key in block:
            source[key] = sd_a if index % 2 == 0 else sd_b
    return {key: _child_value(source[key][key]) for key in sd_a}


def _weighted(sd_a: Mapping[str, Any], sd_b: Mapping[str, Any], alpha: float) -> dict[str, Any]:
    child = {}
    for key in sd_a:
        a, b = sd_a[key], sd_b[key]
        if isinstance(a, torch.Tensor) and is_floatlike(a):
            a32, b32 = _float32(a), _float32(b)
            # Exactly the established expression (python-float alpha on float32 tensors), so results are
            # bit-identical; it allocates a new tensor, so the child never aliases a parent.
            child[key] = alpha * a32 + (1 - alpha) * b32
        else:
            child[key] = _child_value(a)
    return child


def _float32(value: torch.Tensor) -> torch.Tensor:
    value = value.detach()
    if value.is_quantized:
        value = value.dequantize()
    return value.cpu().float()
