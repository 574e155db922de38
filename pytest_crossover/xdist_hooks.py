"""Controller-side xdist hooks, registered only when xdist is active: scheduling, collection, crashes, and the
workers' shares of the parent baselines."""

from __future__ import annotations

from typing import Any

import pytest

from pytest_crossover.collect import child_id_of
from pytest_crossover.options import Sources, naming
from pytest_crossover.session import BARRIER_KEY, GATEWAY_KEY, OPTIONS_KEY, PARENTS_KEY, CrossoverSession


class XdistHooks:
    def __init__(self, session: CrossoverSession) -> None:
        self.session = session

    @pytest.hookimpl(optionalhook=True)
    def pytest_xdist_make_scheduler(self, config: pytest.Config, log: Any) -> Any:
        """Under plain ``-n N`` (``--dist load``), send each work unit to one worker: a regime's children, or a
        part of them when there are more workers than regimes (``work_units``).

        A unit's children train together as one population (harness.search.populations), so the worker that gets a unit
        must get all of it. xdist's own ``loadgroup`` cannot do this under pytest 9 (its ``@group`` suffix is
        written to ``item._nodeid``, which pytest 9 no longer reads). Other ``--dist`` modes are left to xdist
        (results are the same; only the speed differs), and so is a session with no crossover setting, so the plugin
        changes nothing in a suite that does not use it.
        """
        if config.getvalue("dist") != "load" or not self.session.options.explicit:
            return None
        from xdist.workermanage import parse_tx_spec_config

        from pytest_crossover.scheduling import UnitScheduling

        return UnitScheduling(len(parse_tx_spec_config(config)), log, self.session.ids, config)

    @pytest.hookimpl(optionalhook=True)
    def pytest_configure_node(self, node: Any) -> None:
        """What a worker needs before it starts, local or remote: git info (asked once, here), the options, its
        gateway's own settings, and the inputs (versions checked, files sent to a remote worker: transfer)."""
        cs = self.session
        if not cs.options.explicit:
            return  # no search configured: the plugin changes nothing
        from pytest_crossover.transfer import KEY

        transfer = cs.input_transfer()  # first: it may collect the evaluation buffer, which the options then name
        node.workerinput["crossover_git"] = cs.runtime.git()
        node.workerinput[OPTIONS_KEY] = cs.options.to_wire()
        node.workerinput[GATEWAY_KEY] = gateway_settings(node.gateway.spec)
        node.workerinput[KEY] = transfer.configure(node)

    @pytest.hookimpl(optionalhook=True)
    def pytest_handlecrashitem(self, crashitem: str, report: pytest.TestReport, sched: Any) -> None:
        # xdist calls this for the test a dying worker was running, just before it reports it failed.
        child = child_id_of(crashitem)
        if child is not None:
            self.session.lost.add(child)

    @pytest.hookimpl(optionalhook=True)
    def pytest_testnodedown(self, node: Any, error: Any) -> None:
        output = getattr(node, "workeroutput", {})
        if output.get(PARENTS_KEY):
            self.session.worker_parents.append(output[PARENTS_KEY])
        if output.get(BARRIER_KEY):
            self.session.barrier = output[BARRIER_KEY]

    @pytest.hookimpl(optionalhook=True)
    def pytest_xdist_node_collection_finished(self, node: Any, ids: list[str]) -> None:
        # The controller collects nothing itself: learn the selected children (after -k/-m) from a worker.
        cs = self.session
        children = [c for c in (child_id_of(i) for i in ids) if c is not None and c in cs.ids]
        if children:
            cs.expected = children
            cs.acquire_run_dir()


def gateway_settings(spec: Any) -> dict[str, tuple[Any, str]]:
    """One worker's threads and device from its gateway spec, ``--tx socket=gpu1:8888//crossover_device=cuda
    //crossover_threads=8``: ``{name: (value, origin)}``, checked as the options are (the device's availability
    only on the worker, which imports torch)."""
    from harness.search.settings import Settings, parse
    from pytest_crossover.transfer import gateway_text

    where = f"--tx {gateway_text(spec)}"
    out: dict[str, tuple[Any, str]] = {}
    for name, kind in (("threads", int), ("device", str)):
        text = getattr(spec, f"crossover_{name}")
        if text is None:
            continue
        with naming(Sources({name: where})):
            value = parse(name, str(text), kind)
            Settings(**{name: value})
        out[name] = (value, where)
    return out
