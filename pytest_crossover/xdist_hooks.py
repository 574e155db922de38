"""Controller-side xdist hooks, registered only when xdist is active: scheduling, collection, crashes, and the
workers' shares of the parent baselines."""

from __future__ import annotations

from typing import Any

import pytest

from pytest_crossover.collect import child_id_of
from pytest_crossover.session import PARENTS_KEY, CrossoverSession


class XdistHooks:
    def __init__(self, session: CrossoverSession) -> None:
        self.session = session

    @pytest.hookimpl(optionalhook=True)
    def pytest_xdist_make_scheduler(self, config: pytest.Config, log: Any) -> Any:
        """Under plain ``-n N`` (``--dist load``), send each work unit to one worker: a regime's children, or a
        part of them when there are more workers than regimes (``work_units``).

        A unit's children train together as one population (harness.populations), so the worker that gets a unit
        must get all of it. xdist's own ``loadgroup`` cannot do this under pytest 9 (its ``@group`` suffix is
        written to ``item._nodeid``, which pytest 9 no longer reads). Other ``--dist`` modes are left to xdist
        (results are the same; only the speed differs), and so is a session with no crossover setting, so the plugin
        changes nothing in a suite that does not use it.
        """
        if config.getvalue("dist") != "load" or not self.session.options.explicit:
            return None
        from xdist.workermanage import parse_tx_spec_config

        from pytest_crossover.scheduling import UnitScheduling

        return UnitScheduling(len(parse_tx_spec_config(config)), log, self.session.ids)

    @pytest.hookimpl(optionalhook=True)
    def pytest_configure_node(self, node: Any) -> None:
        if self.session.options.explicit:  # a search is configured: ask git once here, not in every worker
            node.workerinput["crossover_git"] = self.session.runtime.git()

    @pytest.hookimpl(optionalhook=True)
    def pytest_handlecrashitem(self, crashitem: str, report: pytest.TestReport, sched: Any) -> None:
        # xdist calls this for the test a dying worker was running, just before it reports it failed.
        child = child_id_of(crashitem)
        if child is not None:
            self.session.lost.add(child)

    @pytest.hookimpl(optionalhook=True)
    def pytest_testnodedown(self, node: Any, error: Any) -> None:
        share = getattr(node, "workeroutput", {}).get(PARENTS_KEY)
        if share:
            self.session.worker_parents.append(share)

    @pytest.hookimpl(optionalhook=True)
    def pytest_xdist_node_collection_finished(self, node: Any, ids: list[str]) -> None:
        # The controller collects nothing itself: learn the selected children (after -k/-m) from a worker.
        cs = self.session
        children = [c for c in (child_id_of(i) for i in ids) if c is not None and c in cs.ids]
        if children:
            cs.expected = children
            cs.acquire_run_dir()
