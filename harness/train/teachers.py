"""Distillation teachers: which parents' soft targets a child is fine-tuned toward, registered like operators.

A teacher is a share ``weight_a`` of parent A's soft targets in the mix ``w * p_A + (1 - w) * p_B``. The
AgentFarm always distils from A (``a``), which pulls every child toward A while the primary metric
``min(agree_a, agree_b)`` also needs B; ``both`` weighs the parents equally; ``balanced`` adapts the weight per
child, epoch by epoch, toward the parent it agrees with less.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from harness.core.registry import Registry

if TYPE_CHECKING:
    import torch


ADAPTIVE_STEP = 0.1  # how far an adaptive teacher moves its weight after an epoch


@dataclass(frozen=True, slots=True)
class Teacher:
    name: str
    weight_a: float  # share of parent A's soft targets in the target mix (the start, for an adaptive teacher)
    description: str
    adaptive: bool = False  # reweighs per child after every epoch (:meth:`update`)

    def update(self, weight: float, agree_a: float, agree_b: float) -> float:
        """The balanced rule: after an epoch, move ``weight`` (A's share) by ADAPTIVE_STEP toward the parent the
        child agrees with less on the validation split, within [0, 1]; unchanged on a tie."""
        if agree_a == agree_b:
            return weight
        step = ADAPTIVE_STEP if agree_a < agree_b else -ADAPTIVE_STEP
        return min(1.0, max(0.0, round(weight + step, 10)))

    def mix(self, probs_a: torch.Tensor, probs_b: torch.Tensor) -> torch.Tensor:
        """The soft targets this teacher trains toward (rows still sum to 1)."""
        if self.weight_a == 1.0:
            return probs_a
        if self.weight_a == 0.0:
            return probs_b
        if self.weight_a == 0.5:
            return (probs_a + probs_b) / 2  # the historical expression of "both", kept bit for bit
        return probs_a * self.weight_a + probs_b * (1.0 - self.weight_a)


@dataclass(frozen=True)
class Targets:
    """Both parents' soft targets on the fine-tune states and the teacher that mixes them (what the trainer takes
    when a teacher is adaptive: each child then has its own mix)."""

    probs_a: torch.Tensor
    probs_b: torch.Tensor
    teacher: Teacher


TEACHERS: Registry[Teacher] = Registry("teacher", group="pytest_crossover.teachers")


def register_teacher(teacher: Teacher, *, replace: bool = False) -> Teacher:
    return TEACHERS.register(teacher.name, teacher, replace=replace)


for _teacher in (
    Teacher("a", 1.0, "parent A's soft targets (AgentFarm's teacher)"),
    Teacher("b", 0.0, "parent B's soft targets"),
    Teacher("both", 0.5, "the mean of both parents' soft targets"),
    Teacher("balanced", 0.5, "a per-child mix of the parents' soft targets that moves toward the parent the child "
            "agrees with less after every epoch (selected by validation min(agree_a, agree_b))", adaptive=True),
):
    register_teacher(_teacher)
