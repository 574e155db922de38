"""``mutate``: the weighted blend ``alpha * A + (1 - alpha) * B`` plus Gaussian noise, a mutation step.

Each float tensor gets noise of standard deviation ``scale`` times the blended tensor's root mean square (so one
scale means the same relative perturbation for every layer; a zero tensor stays zero), drawn from a
``torch.Generator`` seeded with ``seed`` over the sorted keys: the same parents, alpha, scale and seed give the
same child bit for bit. Across generations (python -m harness.evolve) it is one more recipe of the space, searched
and ranked like any other, rather than a step applied to every child.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from harness.crossing.operators.base import ALPHA, SEED, Param, StateDict, child_value, float32, register_operator
from harness.networks.architecture import is_floatlike

SCALE = Param("scale", float, 0.05, low=0.0, high=1.0, key="n", fmt="g", grid=(0.01, 0.05),
              help="noise standard deviation, as a fraction of each blended tensor's root mean square")


@register_operator("mutate", params=(SEED, ALPHA, SCALE),
                   description="weighted blend plus Gaussian noise of std scale x each tensor's RMS (seeded)")
def mutate(sd_a: Mapping[str, Any], sd_b: Mapping[str, Any], *, alpha: float, seed: int | None,
           scale: float) -> StateDict:
    """Per float tensor, in float32; integer and non-tensor entries come from A. ``seed=None`` draws OS entropy."""
    import torch

    gen = torch.Generator()
    if seed is None:
        gen.seed()
    else:
        gen.manual_seed(int(seed))
    child = {}
    for key in sorted(sd_a):
        a = sd_a[key]
        if isinstance(a, torch.Tensor) and is_floatlike(a):
            blend = alpha * float32(a) + (1 - alpha) * float32(sd_b[key])
            rms = float(blend.double().pow(2).mean().sqrt()) if blend.numel() else 0.0
            noise = torch.randn(blend.shape, generator=gen, dtype=torch.float32)
            child[key] = blend + (scale * rms) * noise
        else:
            child[key] = child_value(a)
    return {key: child[key] for key in sd_a}
