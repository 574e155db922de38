"""Distillation teachers: which parents' soft targets a child is fine-tuned toward, registered like operators.

A teacher is a share ``weight_a`` of parent A's soft targets in the mix ``w * p_A + (1 - w) * p_B``. The
established tool always distils from A (``a``), which pulls every child toward A while the primary metric
``min(agree_a, agree_b)`` also needs B; ``both`` weighs the parents equally.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from harness.registry import Registry

if TYPE_CHECKING:
    import torch


@dataclass(frozen=True, slots=True)
class Teacher:
    name: str
    weight_a: float  # share of parent A's soft targets in the target mix
    description: str

    def mix(self, probs_a: torch.Tensor, probs_b: torch.Tensor) -> torch.Tensor:
        """The soft targets this teacher trains toward (rows still sum to 1)."""
        if self.weight_a == 1.0:
            return probs_a
        if self.weight_a == 0.0:
            return probs_b
        if self.weight_a == 0.5:
            return (probs_a + probs_b) / 2  # the historical expression of "both", kept bit for bit
        return probs_a * self.weight_a + probs_b * (1.0 - self.weight_a)


TEACHERS: Registry[Teacher] = Registry("teacher", group="pytest_crossover.teachers")


def register_teacher(teacher: Teacher, *, replace: bool = False) -> Teacher:
    return TEACHERS.register(teacher.name, teacher, replace=replace)


for _teacher in (
    Teacher("a", 1.0, "parent A's soft targets (the established teacher)"),
    Teacher("b", 0.0, "parent B's soft targets"),
    Teacher("both", 0.5, "the mean of both parents' soft targets"),
):
    register_teacher(_teacher)
