"""Controller-side xdist hooks, registered only when xdist is active: scheduling, collection, crashes, and the
workers' shares of the parent baselines."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Iterator
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
        """Under plain ``-n N`` (``--dist load``), send each work unit to one worker: an equal share of the
        children that can train together, mixing their regimes (``work_units``).

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
    def pytest_xdist_setupnodes(self, config: pytest.Config, specs: Any) -> None:
        """Before xdist sends the command line to remote workers: ``--crossover-states PATH`` becomes
        ``--crossover-states=PATH``. xdist rewrites each word that is an existing local path relative to an
        ``--rsyncdir`` folder (and stops when there is none); a worker never reads these paths anyway (it uses the
        controller's options, and its inputs are sent to it: pytest_crossover.transfer)."""
        if self.session.options.explicit:
            params = config.invocation_params
            config.invocation_params = dataclasses.replace(params, args=tuple(joined_values(params.args)))

    @pytest.hookimpl(optionalhook=True)
    def pytest_configure_node(self, node: Any) -> None:
        """What a worker needs before it starts, local or remote: git info (asked once, here), the options, its
        gateway's own settings, and the inputs (versions checked, files sent to a remote worker: transfer)."""
        cs = self.session
        if not cs.options.explicit:
            return  # no search configured: the plugin changes nothing
        from pytest_crossover.scheduling import UNITS_KEY
        from pytest_crossover.transfer import KEY

        transfer = cs.input_transfer()  # first: it may collect the evaluation buffer, which the options then name
        node.workerinput["crossover_git"] = cs.runtime.git()
        node.workerinput[OPTIONS_KEY] = cs.options.to_wire()
        node.workerinput[GATEWAY_KEY] = gateway_settings(node.gateway.spec)
        node.workerinput[KEY] = transfer.configure(node)
        # xdist sets a worker's own --dist to "no": it learns here whether it is sent work units (--dist load)
        node.workerinput[UNITS_KEY] = cs.config.getvalue("dist") == "load"
        if cs.study is not None:  # the asked children, never the study: workers neither ask nor tell
            from pytest_crossover.study import TRIALS_KEY

            node.workerinput[TRIALS_KEY] = cs.study.wire()

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


def _value_flags() -> set[str]:
    from pytest_crossover.history import HISTORY_KEYS
    from pytest_crossover.option_table import option_table

    flags = {f"--crossover-{o.name}" for o in option_table() if o.kind != "flag"}
    # --crossover-compare takes an optional value: a word after it may be a test path, so it is left as it is.
    return flags | {"--" + k.replace("_", "-") for k in HISTORY_KEYS} - {"--crossover-no-save", "--crossover-compare"}


def joined_values(args: Iterable[str]) -> Iterator[str]:
    """The command line with each crossover option's separate value joined to it (``--opt=VALUE``)."""
    flags = _value_flags()
    words = iter(args)
    for word in words:
        if word in flags:
            value = next(words, None)
            yield word if value is None else f"{word}={value}"
        else:
            yield word


def start_failure(config: pytest.Config, exc: BaseException) -> pytest.UsageError:
    """One line for a worker that xdist could not start (a bad ``--tx``, a refused connection, an unknown host, a
    local path a remote worker cannot have), instead of xdist's INTERNALERROR."""
    from pytest_crossover.transfer import gateway_text

    specs = [gateway_text(s) for s in _specs(config)]
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    why = f"{type(exc).__name__}: {text}" if text else type(exc).__name__
    if "not relative to an rsync root" in text:
        hint = ("a remote worker cannot read a local test path; run the installed children instead: "
                "--pyargs pytest_crossover.children (docs/machines.md)")
    elif isinstance(exc, ConnectionRefusedError):
        hint = ("nothing listens there: start a gateway server on that host, bound to a loopback or private address "
                "(python -m pytest_crossover.gateway_server HOST:PORT), or use --tx ssh=HOST")
    else:
        hint = "check each --tx spec: popen, ssh=HOST or socket=HOST:PORT, with //python=… for another interpreter"
    return pytest.UsageError(f"--tx {' --tx '.join(dict.fromkeys(specs)) or '?'}: a worker could not be started "
                             f"({why}); {hint}")


def _specs(config: pytest.Config) -> list[Any]:
    try:
        from xdist.workermanage import parse_tx_spec_config

        return [str(s) for s in parse_tx_spec_config(config)]
    except Exception:  # the spec itself is what failed to parse
        return [str(s) for s in (config.getoption("tx", None) or [])]
