"""Controls: what a crossover child must beat to be worth making. Registered as operators (``control=True``), so a
control child is crossed, fine-tuned by the same regime and teacher, evaluated and bootstrapped like any child.

- ``control_a`` / ``control_b``: a parent itself, fine-tuned toward the teacher (no crossover at all);
- ``control_distill``: a freshly initialised network of the parents' architecture (PyTorch's default
  initialisation, drawn from a local generator seeded by ``seed``), distilled toward the teacher: plain
  distillation, no parent weights.

A control's id shows its name (and the fresh network's seed), not the crossover id slots.
"""

from __future__ import annotations

import math
from typing import Any

from harness.crossing.operators.base import Param, StateDict, child_value, register_operator

CONTROLS = ("control_a", "control_b", "control_distill")


@register_operator("control_a", description="control: parent A fine-tuned by the same regime and teacher",
                   control=True)
def control_a(sd_a: StateDict, sd_b: StateDict) -> StateDict:
    return {k: child_value(v) for k, v in sd_a.items()}


@register_operator("control_b", description="control: parent B fine-tuned by the same regime and teacher",
                   control=True)
def control_b(sd_a: StateDict, sd_b: StateDict) -> StateDict:
    return {k: child_value(v) for k, v in sd_b.items()}


@register_operator("control_distill", control=True,
                   description="control: a fresh network of the parents' architecture distilled toward the teacher",
                   params=(Param("seed", int, 0, low=0, key="s", fmt="d", help="seed of the fresh network's weights"),))
def control_distill(sd_a: StateDict, sd_b: StateDict, *, seed: int) -> StateDict:
    """nn.Linear's default initialisation (U(-1/sqrt(fan_in), 1/sqrt(fan_in)) for weights and biases), LayerNorm
    ones and zeros; every other tensor copied from A (integer buffers)."""
    import torch

    gen = torch.Generator().manual_seed(seed)
    out: dict[str, Any] = {}
    for key, value in sd_a.items():
        v = child_value(value)
        owner = key.rsplit(".", 1)[0]
        weight = sd_a.get(f"{owner}.weight")
        if isinstance(v, torch.Tensor) and v.is_floating_point() and weight is not None and weight.dim() == 2:
            bound = 1.0 / math.sqrt(weight.shape[1])  # a Linear's weight or bias
            out[key] = torch.empty(v.shape).uniform_(-bound, bound, generator=gen)
        elif isinstance(v, torch.Tensor) and v.is_floating_point() and key.endswith(("weight", "bias")):
            out[key] = torch.ones_like(v) if key.endswith("weight") else torch.zeros_like(v)  # a LayerNorm
        else:
            out[key] = v
    return out
