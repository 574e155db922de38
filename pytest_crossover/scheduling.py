"""Work units under xdist: which children go to one worker and train there as one population, and the scheduler
that sends them, the most expensive unit first.

The scheduler implements xdist's public ``Scheduling`` protocol (``xdist.scheduler.protocol``) on its own; it uses
only the worker controller's public calls (``send_runtest_some``, ``shutdown``, ``shutting_down``). It relies on
one xdist behaviour that the protocol leaves implicit, as xdist's own schedulers do: a worker keeps its last
pending test until it is sent more work or told to shut down (tested in tests/plugin/test_scheduling.py; the
xdist version range is pinned in pyproject.toml).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from pytest_crossover.collect import child_id_of

if TYPE_CHECKING:
    from harness.search.space import ChildSpec


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


Unit = dict[str, bool]  # node id -> done


class UnitScheduling:
    """xdist scheduling by work unit: a unit's tests all go to one worker; the most expensive unit goes first.

    Tests that are not children of the search are units of their own, sent after the children's units. A worker
    that dies while running a child reports that child once (lost); the rest of its unit is sent to another worker.
    """

    def __init__(self, numnodes: int, log: Any, specs: Mapping[str, ChildSpec], config: Any = None) -> None:
        self.numnodes, self.log, self.specs, self.config = numnodes, log, specs, config
        self.collection: list[str] | None = None
        self.registered: dict[Any, list[str]] = {}
        self.assigned: dict[Any, dict[str, Unit]] = {}
        self.queue: list[tuple[str, Unit]] = []  # units not yet sent, most expensive first
        self.unit_of: dict[str, str] = {}

    # -- the Scheduling protocol ----------------------------------------------------------------------------
    @property
    def nodes(self) -> list[Any]:
        return list(self.assigned)

    @property
    def collection_is_completed(self) -> bool:
        return len(self.registered) >= self.numnodes

    @property
    def tests_finished(self) -> bool:
        if not self.collection_is_completed or self.queue:
            return False
        return all(_pending(work) < 2 for work in self.assigned.values())

    @property
    def has_pending(self) -> bool:
        return bool(self.queue) or any(_pending(work) for work in self.assigned.values())

    def add_node(self, node: Any) -> None:
        self.assigned[node] = {}

    def add_node_collection(self, node: Any, collection: Sequence[str]) -> None:
        if self.collection_is_completed and self.collection is not None and \
                self._differs(next(iter(self.registered)), self.collection, node, collection):
            return
        self.registered[node] = list(collection)

    def mark_test_complete(self, node: Any, item_index: int, duration: float = 0) -> None:
        nodeid = self.registered[node][item_index]
        self.assigned[node][self.unit_of[nodeid]][nodeid] = True
        self._reschedule(node)

    def mark_test_pending(self, item: str) -> None:
        """Send ``item`` again (a ``pytest_handlecrashitem`` that asks for a rerun), as a unit of its own, first."""
        self.unit_of[item] = f"rerun:{item}"
        self.queue.insert(0, (self.unit_of[item], {item: False}))
        for node in self.nodes:
            self._reschedule(node)

    def remove_pending_tests_from_node(self, node: Any, indices: Sequence[int]) -> None:
        raise NotImplementedError("work units are never taken back from a live worker")

    def remove_node(self, node: Any) -> str | None:
        """Forget a worker; when it died with work pending, return the test it was running (reported lost once,
        not run again: a child that always kills its worker would otherwise run until xdist's restart limit) and
        send the rest of its units to the others."""
        workload = self.assigned.pop(node)
        pending = [(unit, work) for unit, work in workload.items() if not all(work.values())]
        if not pending:
            return None
        crashitem = next(nid for _, work in pending for nid, done in work.items() if not done)
        for _, work in pending:
            if crashitem in work:
                work[crashitem] = True
        self.queue[:0] = [(unit, work) for unit, work in pending if not all(work.values())]
        for other in self.nodes:
            self._reschedule(other)
        return crashitem

    def _differs(self, first: Any, first_collection: Sequence[str], node: Any, collection: Sequence[str]) -> bool:
        """Whether ``node`` collected other tests than ``first``; as xdist's own schedulers, a difference is logged
        and reported as a failed collection (an error the session shows and exits on), never a session that
        silently runs nothing."""
        from xdist.report import report_collection_diff

        message = report_collection_diff(list(first_collection), list(collection), first.gateway.id, node.gateway.id)
        if message is None:
            return False
        self.log(message)
        if self.config is not None:
            import pytest

            report = pytest.CollectReport(nodeid=node.gateway.id, outcome="failed", longrepr=message, result=[])
            self.config.hook.pytest_collectreport(report=report)
        return True

    def schedule(self) -> None:
        if self.collection is not None:
            for node in self.nodes:
                self._reschedule(node)
            return
        (first, collection), *rest = self.registered.items()
        if any([self._differs(first, collection, node, other) for node, other in rest]):  # report every one
            self.log("**Different tests collected, aborting run**")
            return
        self.collection = list(collection)
        if not self.collection:
            return
        self.queue = self._units(self.collection)
        for _ in range(len(self.nodes) - len(self.queue)):  # more workers than units: shut the spare ones down
            spare, _work = self.assigned.popitem()
            spare.shutdown()
        for node in self.nodes:
            self._assign(node)
        # A worker runs a test only once it holds the next one (or is told to shut down): give every worker a
        # second unit where there is one, and shut them all down when the first round sent everything.
        for node in self.nodes:
            self._reschedule(node)
        if not self.queue:
            for node in self.nodes:
                if not node.shutting_down:
                    node.shutdown()

    # -- internals ------------------------------------------------------------------------------------------
    def _units(self, collection: Sequence[str]) -> list[tuple[str, Unit]]:
        children = [(nid, child_id_of(nid)) for nid in collection]
        specs = [self.specs[c] for _, c in children if c is not None and c in self.specs]
        units = work_units(specs, self.numnodes)
        grouped: dict[str, Unit] = {}
        cost: dict[str, float] = {}
        for nid, cid in children:
            unit, c = units.get(cid or "", (nid, -1.0))
            self.unit_of[nid] = unit
            grouped.setdefault(unit, {})[nid] = False
            cost[unit] = c
        # Most expensive first (LPT): it goes to the first free worker and the cheap ones fill in around it, so
        # the workers finish together. sorted() is stable: other tests keep their collection order, last.
        return sorted(grouped.items(), key=lambda item: -cost[item[0]])

    def _reschedule(self, node: Any) -> None:
        if node.shutting_down:
            return
        if not self.queue:
            node.shutdown()
            return
        if _pending(self.assigned[node]) > 2:
            return
        self._assign(node)

    def _assign(self, node: Any) -> None:
        unit, work = self.queue.pop(0)
        self.assigned[node][unit] = work
        collection = self.registered[node]
        node.send_runtest_some([collection.index(nid) for nid, done in work.items() if not done])


def _pending(workload: Mapping[str, Unit]) -> int:
    return sum(not done for work in workload.values() for done in work.values())
