"""What a regime sets per step besides its batches: the learning rate (its schedule), the gradient clipping, and
the dropout rate its masks are drawn with. Schedules are registered entries (:data:`LR_SCHEDULES`).

The schedule is per step: ``t`` is the number of optimiser steps taken before this one (0 for the first) and
``T = epochs × steps per epoch`` is the regime's whole budget (a child stopped early by ``patience`` never reaches
it). ``cosine``: ``lr_t = lr · ½ · (1 + cos(π t / T))``, from ``lr`` at the first step toward 0 at the last.

Each child of a population keeps its own regime's learning rate and clipping norm (rows of
:class:`harness.networks.adam.StackedAdam`), so children of different schedules or clipping train together with
exactly the numbers each has alone. The dropout rate changes the masks, which a population shares: it is part of
:attr:`harness.train.regimes.Regime.batches`. Nothing here imports torch at load (the plugin imports the regimes).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Protocol

from harness.core.registry import Registry

if TYPE_CHECKING:
    import torch

    from harness.networks.adam import StackedAdam


class Regime(Protocol):
    """What a schedule reads of a fine-tune regime (:class:`harness.train.regimes.Regime`, which registers the
    schedules it names from here)."""

    @property
    def lr(self) -> float: ...
    @property
    def epochs(self) -> int: ...
    @property
    def lr_schedule(self) -> str: ...
    @property
    def grad_clip(self) -> float: ...
    @property
    def dropout(self) -> float | None: ...

Schedule = Callable[[float, int, int], float]  # (lr, t, T) -> the learning rate of step t
LR_SCHEDULES: Registry[Schedule] = Registry("learning-rate schedule")


def constant(lr: float, t: int, total: int) -> float:
    return lr


def cosine(lr: float, t: int, total: int) -> float:
    return lr * 0.5 * (1.0 + math.cos(math.pi * t / total))


LR_SCHEDULES.register("constant", constant)
LR_SCHEDULES.register("cosine", cosine)


def steps_per_epoch(n_train: int, batch_size: int) -> int:
    """Optimiser steps in one epoch over ``n_train`` rows (the last batch may be short)."""
    return -(-n_train // batch_size)


class Steps:
    """The per-row learning rates and clipping norms of a population's rows (``regimes`` in row order)."""

    def __init__(self, regimes: Sequence[Regime], per_epoch: int) -> None:
        self.fns = [LR_SCHEDULES.get(r.lr_schedule) for r in regimes]
        self.base = [r.lr for r in regimes]
        self.totals = [max(1, r.epochs * per_epoch) for r in regimes]
        self.constant = all(fn is constant for fn in self.fns)
        self.clips = [r.grad_clip for r in regimes]

    def lrs(self, t: int) -> list[float]:
        """Each row's learning rate at step ``t`` (0-based)."""
        return [fn(lr, t, total) for fn, lr, total in zip(self.fns, self.base, self.totals)]

    def clip_norms(self, device: torch.device) -> float | torch.Tensor | None:
        """What :meth:`StackedAdam.clip` takes: one norm for all rows, a (K, 1) column (inf: that row unclipped), or
        None when no row clips."""
        if not any(self.clips):
            return None
        if len(set(self.clips)) == 1:
            return float(self.clips[0])
        import torch

        return torch.tensor([[c if c else math.inf] for c in self.clips], dtype=torch.float32, device=device)

    def before_step(self, adam: StackedAdam, clip: float | torch.Tensor | None) -> None:
        """Clip the rows' gradients and set their learning rates for the step ``adam`` takes next."""
        if clip is not None:
            adam.clip(clip)
        if not self.constant:
            adam.set_lrs(self.lrs(adam.steps))


def dropout_rates(regime: Regime, network: Sequence[float]) -> list[float]:
    """The dropout rate at each of the network's dropout sites: the regime's, else the network's own."""
    return list(network) if regime.dropout is None else [float(regime.dropout)] * len(network)
