"""``random``: a per-tensor coin flip between the parents, bit-identical to AgentFarm's."""

from __future__ import annotations

import copy
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from harness.core.errors import CrossoverError
from harness.crossing.operators.base import ALPHA, SEED, StateDict, child_value, register_operator

if TYPE_CHECKING:
    import numpy as np  # imported when a child is crossed, not when the plugin loads the registry


@register_operator("random", params=(SEED, ALPHA),
                   description="per-tensor coin flip: each tensor from A with probability alpha")
def random(sd_a: Mapping[str, Any], sd_b: Mapping[str, Any], *, alpha: float, seed: int | None,
           rng: np.random.Generator | None = None) -> StateDict:
    """One ``u = (rng or default_rng(seed)).random(n)`` draw over the lexicographically sorted keys (non-tensor
    keys included); key i comes from A when ``u[i] < alpha``. ``seed=None`` without ``rng`` draws OS entropy."""
    import numpy as np

    if rng is not None and not isinstance(rng, np.random.Generator):
        raise CrossoverError(f"rng must be a numpy.random.Generator, got {type(rng).__name__}; "
                             "pass rng=numpy.random.default_rng(seed) or use seed=")
    gen = rng if rng is not None else np.random.default_rng(seed)
    keys = sorted(sd_a)
    # One draw over all sorted keys, non-tensors included, so the coin of every key matches AgentFarm.
    u = gen.random(len(keys))
    from_a = {key: bool(u[i] < alpha) for i, key in enumerate(keys)}
    import torch

    return {key: copy.deepcopy(a) if not isinstance(a, torch.Tensor) else child_value(a if from_a[key] else sd_b[key])
            for key, a in sd_a.items()}
