"""Which children fine-tune together (a plan: a pure function of the selected children), and training them.

Children whose regimes share their batches (:attr:`harness.train.regimes.Regime.batches`: split, batch order, dropout
masks) can train as one population (:func:`harness.train.finetune.finetune_population`); a child's result does not
depend on its population, so the plan changes speed only, never a number.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

from harness.search.space import ChildSpec, Recipe
from harness.train.finetune import FinetuneResult, finetune_population

if TYPE_CHECKING:
    import torch

    from harness.train.teachers import Targets


class TrainingContext(Protocol):
    """What training needs of the per-process context (harness.search.child.Context), which imports this module."""

    @property
    def train_states_dev(self) -> torch.Tensor: ...

    def targets(self, teacher: str) -> torch.Tensor | Targets: ...
    def cross(self, recipe: Recipe, align: str = "none") -> dict[str, torch.Tensor]: ...
    def new_child(self, state_dict: Any) -> torch.nn.Module: ...

MERGE_LIMIT_FLOATS = 1 << 20  # parameters of a population that trains regimes together (4 MiB of float32)

Plan = tuple[tuple[ChildSpec, ...], ...]


def plan_populations(specs: Sequence[ChildSpec], *, n_params: int,
                     unit_of: Callable[[ChildSpec], Hashable] | None = None) -> Plan:
    """Partition ``specs`` into populations, each in run order.

    The children of regimes that share their batches (and, with ``unit_of``, an xdist worker's work unit: it is
    sent one at a time) form one population while the stack stays small (that saves per-op overhead on small nets;
    a big net's steps are compute-bound, and a larger stack only spills the caches: hidden 1024 was 23% slower
    merged), else one population per regime.
    """
    groups: dict[Hashable, list[ChildSpec]] = {}
    for s in specs:
        # Children of one population share their targets (one teacher) and their batches.
        key = (s.teacher, s.regime.batches, unit_of(s)) if unit_of is not None else (s.teacher, s.regime.batches)
        groups.setdefault(key, []).append(s)
    plan: list[tuple[ChildSpec, ...]] = []
    for members in groups.values():
        if len(members) * n_params <= MERGE_LIMIT_FLOATS:
            plan.append(tuple(members))
            continue
        by_regime: dict[str, list[ChildSpec]] = {}
        for s in members:
            by_regime.setdefault(s.regime.name, []).append(s)
        plan.extend(tuple(v) for v in by_regime.values())
    return tuple(plan)


@dataclass
class Trained:
    """A child crossed and fine-tuned: its crossed weights (crossed once, here) and its fine-tune result."""

    crossed: dict[str, Any]
    result: FinetuneResult
    cross_seconds: float = 0.0


class Finetuner:
    """Fine-tunes each population of a plan once, on the first request for one of its children.

    ``result(spec)`` hands each child its result exactly once; a child outside the plan trains alone.
    """

    def __init__(self, ctx: TrainingContext, plan: Plan) -> None:
        self.ctx = ctx
        self._population = {s.child_id: members for members in plan for s in members}
        self._results: dict[str, Trained] = {}

    def result(self, spec: ChildSpec) -> Trained:
        if spec.child_id not in self._results:
            members = self._population.pop(spec.child_id, (spec,))
            for s in members:
                self._population.pop(s.child_id, None)
            self._results.update(train(self.ctx, members))
        return self._results.pop(spec.child_id)


def train(ctx: TrainingContext, members: Sequence[ChildSpec]) -> dict[str, Trained]:
    """Cross and fine-tune ``members`` as one population; each result carries its share of the time."""
    teachers = {s.teacher for s in members}
    assert len(teachers) == 1, "a population distils from one teacher"
    teacher = teachers.pop()
    assert teacher is not None
    start = time.perf_counter()
    crossed = [ctx.cross(s.crossed_recipe, s.align) for s in members]
    models = [ctx.new_child(sd) for sd in crossed]
    cross_seconds = (time.perf_counter() - start) / len(members)
    start = time.perf_counter()
    results = finetune_population(models, ctx.train_states_dev, ctx.targets(teacher), [s.regime for s in members])
    elapsed, epochs = time.perf_counter() - start, sum(s.regime.epochs for s in members)
    for s, r in zip(members, results):  # a child's share of the population's time, by its (equal-sized) epochs
        r.seconds = round(elapsed * s.regime.epochs / epochs, 6)
    return {s.child_id: Trained(sd, r, round(cross_seconds, 6)) for s, sd, r in zip(members, crossed, results)}
