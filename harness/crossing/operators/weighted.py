"""``weighted``: linear interpolation ``alpha * A + (1 - alpha) * B``, bit-identical to AgentFarm's."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from harness.crossing.operators.base import ALPHA, StateDict, child_value, float32, register_operator
from harness.networks.architecture import is_floatlike


@register_operator("weighted", params=(ALPHA,), description="linear blend alpha * A + (1 - alpha) * B per tensor")
def weighted(sd_a: Mapping[str, Any], sd_b: Mapping[str, Any], *, alpha: float) -> StateDict:
    """Per float tensor, in float32; integer and non-tensor entries come from A."""
    import torch

    child = {}
    for key, a in sd_a.items():
        if isinstance(a, torch.Tensor) and is_floatlike(a):
            # Exactly AgentFarm's expression (python-float alpha on float32 tensors), so results are
            # bit-identical; it allocates a new tensor, so the child never aliases a parent.
            child[key] = alpha * float32(a) + (1 - alpha) * float32(sd_b[key])
        else:
            child[key] = child_value(a)
    return child
