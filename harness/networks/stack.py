"""The stack a population trains as: the fast stacked kernels when the children's family has them, else autograd."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from harness.networks.autograd import AutogradStack
from harness.networks.stacked import Stack, StackedMLP, family_of_module


def stack_children(children: Sequence[nn.Module], *, qat: bool, temperature: float, device: torch.device,
                   fast: bool | None = None) -> Stack:
    """The population's stack: the fast :class:`StackedMLP` when the children's family has it, else the autograd
    stack (``fast=False`` forces the autograd one, for checking the fast one against it)."""
    if fast is None:
        fast = family_of_module(children[0]).fast
    if fast:
        return StackedMLP(children, qat=qat, temperature=temperature, device=device)
    return AutogradStack(children, qat=qat, temperature=temperature, device=device)
