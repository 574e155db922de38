"""``slerp``: spherical interpolation per tensor, ``alpha`` the weight of A (as in the weighted operator).

Each tensor is treated as one vector; the coefficients follow the angle between A's and B's directions, so a
midpoint keeps the norm that a linear blend of two unlike tensors shrinks. Near-parallel (or zero) tensors, where
the angle is ill-defined, fall back to the linear blend. (The usual model-merging SLERP, as in mergekit.)
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from harness.crossing.operators.base import ALPHA, StateDict, child_value, float32, register_operator
from harness.networks.architecture import is_floatlike

PARALLEL = 0.9995  # |cos| above this: lerp (the angle's sine is too small to divide by)
_TINY = 1e-12


def slerp_tensor(a: Any, b: Any, alpha: float) -> Any:
    """``alpha`` of the way from B to A along the great circle through their directions (A at 1, B at 0)."""
    import torch

    va, vb = float32(a).reshape(-1).double(), float32(b).reshape(-1).double()
    na, nb = float(torch.linalg.vector_norm(va)), float(torch.linalg.vector_norm(vb))
    if na < _TINY or nb < _TINY:
        return alpha * float32(a) + (1 - alpha) * float32(b)
    cos = float(va @ vb) / (na * nb)
    if abs(cos) > PARALLEL:
        return alpha * float32(a) + (1 - alpha) * float32(b)
    omega = math.acos(max(-1.0, min(1.0, cos)))
    s = math.sin(omega)
    mixed = (math.sin(alpha * omega) / s) * va + (math.sin((1 - alpha) * omega) / s) * vb
    return mixed.reshape(a.shape).to(torch.float32)


@register_operator("slerp", params=(ALPHA,), description="spherical interpolation per tensor, alpha the weight of A")
def slerp(sd_a: Mapping[str, Any], sd_b: Mapping[str, Any], *, alpha: float) -> StateDict:
    """Per float tensor; integer and non-tensor entries come from A (as in the weighted operator)."""
    import torch

    return {key: slerp_tensor(a, sd_b[key], alpha) if isinstance(a, torch.Tensor) and is_floatlike(a)
            else child_value(a) for key, a in sd_a.items()}
