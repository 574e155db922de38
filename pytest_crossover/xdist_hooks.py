"""Controller-side xdist hooks, registered only when xdist is active: scheduling, collection, worker output."""

from __future__ import annotations

from typing import Any

import pytest

from pytest_crossover.session import PARENTS_KEY, CrossoverSession, child_id_of


class XdistHooks:
    def __init__(self, session: CrossoverSession) -> None:
        self.session = session

    @pytest.hookimpl(optionalhook=True)
    def pytest_xdist_make_scheduler(self, config: pytest.Config, log: Any) -> Any:
        """Under plain ``-n N`` (``--dist load``), send each work unit to one worker: a regime's children, or a
        part of them when there are more workers than regimes (``work_units``).

        A unit's children train together as one population (harness.population), so the worker that gets a unit
        must get all of it. xdist's own ``loadgroup`` cannot do this under pytest 9 (its ``@group`` suffix is
        written to ``item._nodeid``, which pytest 9 no longer reads), so this is ``loadscope`` with the unit as the
        scope; every other test is its own scope, spread as under ``load``. Other ``--dist`` modes are left to
        xdist (results are the same; only the speed differs).
        """
        if config.getvalue("dist") != "load":
            return None
        from pytest_crossover.scheduling import unit_scheduling

        return unit_scheduling(config, log, self.session.ids)

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
