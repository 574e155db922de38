"""Crossover of two parent state dicts by a registered operator (:mod:`harness.crossing.operators`).

The modes ``random``, ``layer`` and ``weighted`` match AgentFarm's crossover (Dooders/AgentFarm
``crossover_quantized_state_dict``) bit for bit on its Q-network layout, and fix its weaknesses: children never
alias a parent's storage, integer buffers are copied rather than cast and blended, layer blocks are found from the
module structure (so ``network.10`` comes after ``network.2``), and every key/shape problem is reported in one error.
"""

from __future__ import annotations

from collections.abc import Mapping
from numbers import Integral, Real
from typing import Any

import numpy as np

from harness.core.errors import CrossoverError, SpaceError
from harness.crossing.operators import OPERATORS, layer_blocks
from harness.networks.architecture import check_parents

__all__ = ["check_parents", "crossover", "layer_blocks"]


def crossover(
    sd_a: Mapping[str, Any],
    sd_b: Mapping[str, Any],
    mode: str,
    *,
    alpha: float = 0.5,
    seed: int | None = None,
    rng: np.random.Generator | None = None,
    **params: Any,
) -> dict[str, Any]:
    """Cross two parent state dicts into a new child state dict with the operator registered as ``mode``.

    - ``random``: one ``u = (rng or numpy.random.default_rng(seed)).random(n)`` draw over the
      lexicographically sorted keys (non-tensor keys included); key i comes from A when ``u[i] < alpha``.
      ``seed=None`` without ``rng`` draws OS entropy (not reproducible), as AgentFarm does.
    - ``layer``: blocks from :func:`layer_blocks` alternate A, B, A, ...; alpha and seed are unused.
    - ``weighted``: ``alpha * a + (1 - alpha) * b`` per float tensor, in float32.
    - any other registered operator, with its declared ``params``.

    ``alpha`` and ``seed`` go to operators that declare them; an operator that does not ignores them (as the
    AgentFarm's layer mode does), but they must still be a number and an integer or None. Returns a new dict
    in A's key order whose tensors never share storage with a parent. Raises :class:`CrossoverError` before any
    work for an unknown mode, a parameter out of its declared range, or parents whose keys, shapes or kinds differ.
    """
    try:
        op = OPERATORS.get(mode)
    except SpaceError as exc:
        raise CrossoverError(str(exc)) from None
    given = dict(params)
    for name, value, kind in (("alpha", alpha, Real), ("seed", seed, Integral)):
        if op.param(name) is not None:
            given[name] = value
        elif value is not None and (isinstance(value, bool) or not isinstance(value, kind)):
            raise CrossoverError(f"{name} must be {'a number' if kind is Real else 'an integer or None'}, got "
                                 f"{value!r}; the {mode} operator ignores it, so leave it out")
    resolved = op.resolve(given)
    check_parents(sd_a, sd_b)
    if rng is None:
        return op.fn(sd_a, sd_b, **resolved)
    if op.param("seed") is None:
        raise CrossoverError(f"rng only applies to operators with a seed; the {mode} operator draws nothing")
    return op.fn(sd_a, sd_b, **resolved, rng=rng)
