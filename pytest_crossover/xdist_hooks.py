"""Controller-side xdist hooks, registered only when xdist is active: scheduling and collection."""

from __future__ import annotations

from typing import Any

import pytest

from pytest_crossover.session import CrossoverSession, child_id_of


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
        return _regime_scheduling(config, log, {s.child_id: s.regime.name for s in self.session.specs})

    @pytest.hookimpl(optionalhook=True)
    def pytest_configure_node(self, node: Any) -> None:
        if self.session.options.explicit:  # a search is configured: ask git once here, not in every worker
            node.workerinput["crossover_git"] = self.session.git()

    @pytest.hookimpl(optionalhook=True)
    def pytest_xdist_node_collection_finished(self, node: Any, ids: list[str]) -> None:
        # The controller collects nothing itself: learn the selected children (after -k/-m) from a worker.
        cs = self.session
        children = [c for c in (child_id_of(i) for i in ids) if c is not None and c in cs.ids]
        if children:
            cs.expected = children
            if cs._lock_fh is None:
                cs.acquire_run_dir()


def _regime_scheduling(config: pytest.Config, log: Any, regimes: dict[str, str]) -> Any:
    from xdist.scheduler import LoadScopeScheduling

    class RegimeScheduling(LoadScopeScheduling):  # type: ignore[misc]
        def _split_scope(self, nodeid: str) -> str:
            regime = regimes.get(child_id_of(nodeid) or "")
            return f"crossover-regime:{regime}" if regime else nodeid

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
