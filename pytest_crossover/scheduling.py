"""Work units under xdist: which children go to one worker and train there as one population, and the scheduler
that sends them (xdist's loadscope, the unit as the scope, the most expensive unit first)."""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import pytest

from pytest_crossover.session import child_id_of

if TYPE_CHECKING:
    from harness.space import ChildSpec


def regime_costs(specs: Sequence[ChildSpec]) -> dict[str, float]:
    """Relative cost of each regime's children on one worker: Adam steps (epochs over batch size) times a
    population's per-step cost, which grows slowly with its size (0.38 + 0.054 K ms at hidden 64, profiled); a
    QAT regime counts 1.6x for its int8 conversion, evaluation and files per child (measured in a timeline)."""
    sizes = Counter(s.regime.name for s in specs)
    regimes = {s.regime.name: s.regime for s in specs}
    return {name: r.epochs / r.batch_size * (1.6 if r.qat else 1.0) * (1 + sizes[name] / 10)
            for name, r in regimes.items()}


def work_units(specs: Sequence[ChildSpec], workers: int) -> dict[str, tuple[str, float]]:
    """``{child_id: (unit, cost)}``: the children of one unit go to one worker and train there as one population.

    One unit per regime; while there are fewer units than workers, the most expensive unit of two or more children
    is halved, so every worker gets work (a child's result does not depend on its population: this changes speed
    only). The scheduler and every worker compute the same units from the same selected children.
    """
    costs = regime_costs(specs)
    units: dict[str, list[str]] = {}
    for s in specs:
        units.setdefault(s.regime.name, []).append(s.child_id)
    cost = {u: costs[u] for u in units}
    while len(units) < workers:
        splittable = [u for u in units if len(units[u]) > 1]
        if not splittable:
            break
        u = max(splittable, key=lambda v: cost[v])
        ids = units.pop(u)
        half = (len(ids) + 1) // 2
        for part, chunk in (("a", ids[:half]), ("b", ids[half:])):
            units[f"{u}/{part}"] = chunk
            cost[f"{u}/{part}"] = cost[u] * len(chunk) / len(ids)
    return {cid: (u, cost[u]) for u, ids in units.items() for cid in ids}


def unit_scheduling(config: pytest.Config, log: Any, specs: dict[str, ChildSpec]) -> Any:
    from xdist.scheduler import LoadScopeScheduling

    prefix = "crossover:"

    class UnitScheduling(LoadScopeScheduling):  # type: ignore[misc]
        units: dict[str, tuple[str, float]] = {}
        scope_cost: dict[str, float] = {}

        def schedule(self) -> None:
            if self.collection is None and self.collection_is_completed and self.registered_collections:
                ids = (child_id_of(n) for n in next(iter(self.registered_collections.values())))
                self.units = work_units([specs[c] for c in ids if c in specs], self.numnodes)
                self.scope_cost = {f"{prefix}{u}": c for u, c in self.units.values()}
            super().schedule()

        def _split_scope(self, nodeid: str) -> str:
            unit = self.units.get(child_id_of(nodeid) or "")
            return f"{prefix}{unit[0]}" if unit else nodeid

        def _assign_work_unit(self, node: Any) -> None:
            # Most expensive unit first (LPT): it goes to the first free worker, so the cheap ones fill in around it
            # and the workers finish together.
            ordered = sorted(self.workqueue.items(), key=lambda item: -self.scope_cost.get(item[0], 0.0))
            self.workqueue.clear()
            self.workqueue.update(ordered)
            super()._assign_work_unit(node)

        def remove_node(self, node: Any) -> str | None:
            """As LoadScopeScheduling's, except that the test that crashed the worker is marked done.

            Scope scheduling re-queues a dead worker's whole unit, crashed test included, so a child that always
            kills its worker (out of memory, a segfault) would run again until xdist's restart limit aborts the
            session. The crashed child is reported lost once; the rest of its regime is re-queued as usual.
            """
            workload = self.assigned_work.pop(node)
            if not self._pending_of(workload):
                return None
            crashitem = next(nid for unit in workload.values() for nid, done in unit.items() if not done)
            for unit in workload.values():
                if crashitem in unit:
                    unit[crashitem] = True
            self.workqueue.update({scope: unit for scope, unit in workload.items() if not all(unit.values())})
            for other in self.assigned_work:
                self._reschedule(other)
            return crashitem

    return UnitScheduling(config, log)
