"""Controller-side xdist hooks, registered only when xdist is active: scheduling, collection, worker output."""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import pytest

from pytest_crossover.session import PARENTS_KEY, CrossoverSession, child_id_of

if TYPE_CHECKING:
    from harness.space import ChildSpec


class XdistHooks:
    def __init__(self, session: CrossoverSession) -> None:
        self.session = session

    @pytest.hookimpl(optionalhook=True)
    def pytest_xdist_make_scheduler(self, config: pytest.Config, log: Any) -> Any:
        """Under plain ``-n N`` (``--dist load``), send the children of one regime to one worker.

        Children of a regime train together as one population (harness.population), so splitting a regime
        across workers would train it twice. xdist's own ``loadgroup`` cannot do this under pytest 9 (its
        ``@group`` suffix is written to ``item._nodeid``, which pytest 9 no longer reads), so this is
        ``loadscope`` with the regime as the scope; every other test is its own scope, spread as under ``load``.
        Other ``--dist`` modes are left to xdist (results are the same; only the speed differs).
        """
        if config.getvalue("dist") != "load":
            return None
        specs = self.session.specs
        return _regime_scheduling(config, log, {s.child_id: s.regime.name for s in specs}, regime_costs(specs))

    @pytest.hookimpl(optionalhook=True)
    def pytest_configure_node(self, node: Any) -> None:
        if self.session.options.explicit:  # a search is configured: ask git once here, not in every worker
            node.workerinput["crossover_git"] = self.session.git()

    @pytest.hookimpl(optionalhook=True)
    def pytest_testnodedown(self, node: Any, error: Any) -> None:
        share = getattr(node, "workeroutput", {}).get(PARENTS_KEY)
        if share:
            self.session.add_worker_parents(share)

    @pytest.hookimpl(optionalhook=True)
    def pytest_xdist_node_collection_finished(self, node: Any, ids: list[str]) -> None:
        # The controller collects nothing itself: learn the selected children (after -k/-m) from a worker.
        cs = self.session
        children = [c for c in (child_id_of(i) for i in ids) if c is not None and c in cs.ids]
        if children:
            cs.expected = children
            if cs._lock_fh is None:
                cs.acquire_run_dir()


def regime_costs(specs: Sequence[ChildSpec]) -> dict[str, float]:
    """Relative cost of each regime's children on one worker: Adam steps (epochs over batch size) times a
    population's per-step cost, which grows slowly with its size (0.38 + 0.054 K ms at hidden 64, profiled); a
    QAT regime counts 1.6x for its int8 conversion, evaluation and files per child (measured in a timeline)."""
    sizes = Counter(s.regime.name for s in specs)
    regimes = {s.regime.name: s.regime for s in specs}
    return {name: r.epochs / r.batch_size * (1.6 if r.qat else 1.0) * (1 + sizes[name] / 10)
            for name, r in regimes.items()}


def _regime_scheduling(config: pytest.Config, log: Any, regimes: dict[str, str], costs: dict[str, float]) -> Any:
    from xdist.scheduler import LoadScopeScheduling

    prefix = "crossover-regime:"

    class RegimeScheduling(LoadScopeScheduling):  # type: ignore[misc]
        def _split_scope(self, nodeid: str) -> str:
            regime = regimes.get(child_id_of(nodeid) or "")
            return f"{prefix}{regime}" if regime else nodeid

        def _assign_work_unit(self, node: Any) -> None:
            # Longest regime first (LPT): the most expensive population goes to the first free worker, so the
            # cheap ones fill in around it and the workers finish together.
            ordered = sorted(self.workqueue.items(), key=lambda unit: -costs.get(unit[0][len(prefix):], 0.0))
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

    return RegimeScheduling(config, log)
