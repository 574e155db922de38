"""pytest-crossover: hook implementations only; each delegates to the session, the handle or the library."""

from __future__ import annotations

import signal
import sys
from collections.abc import Generator
from typing import Any

import pytest

from pytest_crossover.child import CrossoverChild
from pytest_crossover.collect import FIXTURE, child_id_of
from pytest_crossover.option_table import add_options
from pytest_crossover.options import CrossoverOptions, resolve
from pytest_crossover.session import (
    BARRIER_KEY,
    FILES_KEY,
    GATEWAY_KEY,
    OPTIONS_KEY,
    PARENTS_KEY,
    RESULT_KEY,
    CrossoverSession,
)

SESSION_KEY = pytest.StashKey[CrossoverSession]()


class _Alias:
    """Holds this plugin's other name in pytest's registry, so that loading it twice (the ``crossover`` entry point
    and ``-p pytest_crossover.plugin``, ``PYTEST_PLUGINS`` or a conftest's ``pytest_plugins``) loads it once,
    instead of pluggy's "already registered under a different name" traceback."""


def pytest_plugin_registered(plugin: object, plugin_name: str, manager: pytest.PytestPluginManager) -> None:
    if plugin is not sys.modules[__name__]:
        return
    for alias in ("crossover", __name__):
        if alias != plugin_name and manager.get_plugin(alias) is None and not manager.is_blocked(alias):
            manager.register(_Alias(), alias)


def pytest_addoption(parser: pytest.Parser) -> None:
    add_options(parser)
    from pytest_crossover.history import add_history_options

    add_history_options(parser)
    from pytest_crossover.scheduling import add_workers_option

    add_workers_option(parser)


@pytest.hookimpl(tryfirst=True)
def pytest_load_initial_conftests(early_config: pytest.Config, parser: pytest.Parser, args: list[str]) -> None:
    """Pin the CPU arithmetic before any conftest can import torch and run an operation (each library reads its
    variable once), in a session that names a crossover setting; xdist workers run this too."""
    from pytest_crossover.early import early_arithmetic

    mode = early_arithmetic(early_config)
    if mode == "portable":
        from harness.core.arithmetic import pin

        pin()


@pytest.hookimpl(trylast=True)
def pytest_configure(config: pytest.Config) -> None:
    session = CrossoverSession(config, _options(config))
    config.stash[SESSION_KEY] = session
    if session.is_worker:
        from pytest_crossover.workers import exit_with_controller

        exit_with_controller()
    else:
        _terminate_like_interrupt(config)
    config.pluginmanager.register(_ReportHooks(session), "crossover-reports")
    if config.pluginmanager.hasplugin("xdist"):
        from pytest_crossover.xdist_hooks import XdistHooks

        config.pluginmanager.register(XdistHooks(session), "crossover-xdist")
    from pytest_crossover.history import register_history

    register_history(config, session)
    config.addinivalue_line("markers", "crossover: a child of the crossover search (added by pytest-crossover)")
    if session.options.explicit and not session.is_worker and not config.option.help:
        _refuse_benchmark_only(config)
    # Explicit settings are checked on the controller before any child runs: here in a serial session; under
    # xdist in pytest_sessionstart, once the workers are booting, so their torch import overlaps the check's.
    # A worker's inputs are checked before xdist starts it (pytest_configure_node), see pytest_crossover.transfer.
    if session.options.explicit and not config.option.help:
        from harness.core.memory import release_big_blocks

        release_big_blocks()  # each process of a session (controller, workers): freed chunks leave its RSS
    if session.options.explicit and not session.is_worker and not config.option.help:
        session.start_drawers()  # they warm up while the inputs are checked and torch is imported
    if session.options.explicit and not session.is_worker and not session.distributed and not config.option.help:
        session.check_inputs()


def pytest_cmdline_main(config: pytest.Config) -> None:
    # Not tryfirst: this runs after xdist's own (tryfirst) hook has turned -n N into N gateways, and before the
    # session starts them: the plugin fits N to the cores and to the search's size (pytest_crossover.scheduling).
    from pytest_crossover.scheduling import WORKERS_KEY, fit_workers, workers_mode

    if workers_mode(config) == "asked" or not isinstance(getattr(config.option, "numprocesses", None), int) \
            or hasattr(config, "workerinput"):
        return
    from harness.core.errors import HarnessError

    try:
        options = resolve(config)
    except (pytest.UsageError, HarnessError):
        return  # pytest_configure reports it, naming the option
    line = fit_workers(config, options) if options.explicit else None
    if line is not None:
        config.stash[WORKERS_KEY] = line


def _options(config: pytest.Config) -> CrossoverOptions:
    """A worker uses the controller's options (a remote worker may have no copy of the ini file), with its own
    threads and device from its gateway spec; the controller reads and checks them."""
    workerinput = getattr(config, "workerinput", None) or {}
    if OPTIONS_KEY in workerinput:
        return CrossoverOptions.from_wire(workerinput[OPTIONS_KEY], workerinput.get(GATEWAY_KEY))
    from pytest_crossover.early import check_ini_keys

    check_ini_keys(config)  # a misspelt key first: it may be what the user meant to set
    return resolve(config)


_SIGTERM_KEY = pytest.StashKey[Any]()


def _terminate_like_interrupt(config: pytest.Config) -> None:
    """SIGTERM (a CI job's timeout) ends the session as Ctrl-C does: the finished children's files are written,
    marked incomplete, and the summary says so (pytest_crossover.interrupts)."""
    from pytest_crossover.interrupts import terminate_like_interrupt

    previous = terminate_like_interrupt()
    if previous is not None:
        config.stash[_SIGTERM_KEY] = previous


def pytest_unconfigure(config: pytest.Config) -> None:
    cs = _session(config)
    if cs is not None:
        cs.close_drawers()  # started with the session, unused when it stopped before its report
    if cs is not None and cs.study is not None and cs.study.pending:  # stopped before the session began (exit 4)
        cs.study.finish("the session stopped before this trial ran")
    previous = config.stash.get(_SIGTERM_KEY, None)
    if previous is not None:
        signal.signal(signal.SIGTERM, previous)
    workerinput = getattr(config, "workerinput", None)
    if workerinput is not None:
        from pytest_crossover.transfer import remove_cache

        remove_cache(workerinput)  # a remote worker leaves nothing behind on its host


def _refuse_benchmark_only(config: pytest.Config) -> None:
    if config.getoption("benchmark_only", False):
        raise pytest.UsageError("--benchmark-only: it would skip every crossover child (children are tests, not "
                                "benchmarks), so the search and its gates would not run; drop it, or run the "
                                "benchmarks in a session of their own")


@pytest.hookimpl(trylast=True)
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    # A session with no crossover setting learns only now that it collected children.
    if any(FIXTURE in getattr(item, "fixturenames", ()) for item in items):
        _refuse_benchmark_only(config)


def _session(config: pytest.Config) -> CrossoverSession | None:
    return config.stash.get(SESSION_KEY, None)


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if FIXTURE in metafunc.fixturenames:
        ids = [s.child_id for s in metafunc.config.stash[SESSION_KEY].specs]
        metafunc.parametrize(FIXTURE, ids, ids=ids, indirect=True)


@pytest.fixture
def crossover_child(request: pytest.FixtureRequest) -> CrossoverChild:
    """One child of the crossover search (parametrized over the space); call ``.run()`` for its record."""
    session = request.config.stash[SESSION_KEY]
    bench = None
    if session.uses_benchmark():
        bench = request.getfixturevalue("benchmark")
    return CrossoverChild(session, request.param, request.node, bench)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_call(item: pytest.Item) -> Generator[None, Any, Any]:
    result = yield
    handle = getattr(item, "funcargs", {}).get(FIXTURE)
    if isinstance(handle, CrossoverChild):
        handle.check()
    return result


@pytest.hookimpl(wrapper=True)
def pytest_sessionstart(session: pytest.Session) -> Generator[None, None, None]:
    # A wrapper, so this runs after xdist's own sessionstart has started the workers (they receive no test before
    # it returns): each worker's start-up (pytest_configure_node) has checked the inputs and its versions by then,
    # and a session refused there leaves the run directory as it was.
    cs = _session(session.config)
    try:
        yield
    except Exception as exc:
        if cs is None or cs.is_worker or not cs.options.explicit or not cs.distributed or \
                isinstance(exc, pytest.UsageError):
            raise
        from pytest_crossover.xdist_hooks import start_failure

        raise start_failure(session.config, exc) from None
    if cs is not None:
        cs.pytest_session = session
    if cs is not None and not cs.is_worker and cs.options.explicit:
        if cs.distributed:
            cs.check_inputs()
        if not session.config.option.collectonly:
            cs.acquire_run_dir()


def pytest_collection_finish(session: pytest.Session) -> None:
    cs = _session(session.config)
    if cs is None:
        return
    ids = [child_id_of(item.nodeid) for item in session.items if FIXTURE in getattr(item, "fixturenames", ())]
    if ids and not session.config.option.collectonly:  # --collect-only runs no child: the disk stays as it is
        cs.expected = [i for i in ids if i]
        if cs.options.arithmetic == "portable":
            from harness.core.arithmetic import pin

            pin()  # a session without crossover settings: before the first child
            if "torch" in sys.modules and not cs.distributed:
                cs.runtime.arithmetic()  # torch may have chosen already: refused now, not once per child
        cs.acquire_run_dir()


class _ReportHooks:
    """Hooks whose arguments carry no config: bound to this session's state."""

    def __init__(self, session: CrossoverSession) -> None:
        self.session = session

    @pytest.hookimpl(tryfirst=True)  # before junitxml & co.: the files' bytes are ours, taken off the report
    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        if self.session.is_worker:
            return  # a worker's report travels to the controller whole
        files = next((v for k, v in report.user_properties if k == FILES_KEY), None)
        if files is not None:
            report.user_properties[:] = [p for p in report.user_properties if p[0] != FILES_KEY]
        _record(self.session, report, files)


    @pytest.hookimpl(wrapper=True, tryfirst=True)  # outermost: around xdist's wait for its workers
    def pytest_sessionfinish(self, session: pytest.Session) -> Generator[None, None, None]:
        """A Ctrl-C while the session ends (xdist stopping its workers, the report drawn) stops it with one line:
        the finished children's files are written first (pytest_crossover.interrupts), every worker exits with its
        controller, so there is nothing left to wait for and no traceback to show."""
        try:
            yield
        except KeyboardInterrupt:
            if self.session.is_worker or not self.session.options.explicit and not self.session.records:
                raise
            session.exitstatus = pytest.ExitCode.INTERRUPTED
            sys.stderr.write("\ncrossover: interrupted while the session ended; the finished children's files are "
                             "written\n")

    @pytest.hookimpl(wrapper=True, trylast=True)  # innermost: after the leaderboard and the history summaries
    def pytest_terminal_summary(self, terminalreporter: Any) -> Generator[None, None, None]:
        yield
        from pytest_crossover.summary import decision_summary

        decision_summary(terminalreporter)


def _record(cs: CrossoverSession, report: pytest.TestReport, files: Any) -> None:
    if not cs.run_dir.owned:
        return
    child_id = child_id_of(report.nodeid)
    if child_id is None or child_id not in cs.ids:
        return
    record = next((v for k, v in report.user_properties if k == RESULT_KEY), None)
    if isinstance(record, dict) and report.when == "call":
        from harness.search.result import ChildResult

        cs.add(ChildResult.from_dict(record), files)
        if cs.write_error is not None and cs.pytest_session is not None:
            cs.pytest_session.shouldstop = cs.write_error  # stop after this child, cleanly
    elif report.failed and child_id not in cs.records:
        crash = getattr(report.longrepr, "reprcrash", None)
        text = str(report.longrepr).strip() if report.longrepr else ""
        line = getattr(crash, "message", None) or (text.splitlines()[-1] if text else "failed")
        status = "lost" if child_id in cs.lost else "error"
        cs.add_failure(child_id, status, f"{report.when}: {line.splitlines()[0] if line else ''}"[:500])


def pytest_report_teststatus(report: pytest.TestReport, config: pytest.Config) -> Any:
    from pytest_crossover.summary import teststatus

    return teststatus(report)


def pytest_report_header(config: pytest.Config) -> list[str] | None:
    cs = _session(config)
    if cs is None or not cs.options.explicit:
        return None
    from pytest_crossover.summary import header

    return header(cs)


@pytest.hookimpl(tryfirst=True)
def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    cs = _session(session.config)
    if cs is not None and cs.is_worker and cs.expected and exitstatus != pytest.ExitCode.INTERRUPTED:
        # A worker's share of the parents' rows; xdist's own (wrapper) hook sends workeroutput after this.
        share = _worker_share(cs)
        if share:
            session.config.workeroutput[PARENTS_KEY] = share  # type: ignore[attr-defined]
            if "agree_ab" in share:  # the worker that computes the parents' agreement also computes the barrier
                session.config.workeroutput[BARRIER_KEY] = cs.compute_barrier()  # type: ignore[attr-defined]
    if cs is not None and cs.study is not None:
        cs.study.finish(f"the session ended (exit status {int(exitstatus)}) before this trial finished")
    # The controller: tryfirst, so before xdist's own hook waits for the workers' interpreters to exit (~0.1 s
    # each), the files are written meanwhile; every worker has reported by then.
    if cs is None or cs.is_worker or not cs.run_dir.owned:
        return
    try:
        cs.complete = exitstatus not in (pytest.ExitCode.INTERRUPTED, pytest.ExitCode.INTERNAL_ERROR)
        # No record yet (interrupted before the first child, or nothing selected): the previous session's files
        # stay as they were; they are replaced only once this session has a result to replace them with.
        if cs.records:
            try:
                cs.finalize_parents()
            finally:
                if cs.write_error is None:
                    from pytest_crossover.interrupts import deferred

                    with deferred("writing the finished children's summary files", reraise=False) as held:
                        cs.write_outputs()
                    cs.abandon_report = bool(held)  # interrupted again: the user wants out, not a report
        if cs.write_error is not None and session.exitstatus in (pytest.ExitCode.OK, pytest.ExitCode.INTERRUPTED):
            session.exitstatus = pytest.ExitCode.TESTS_FAILED  # the session did not deliver its files
    finally:
        if cs.records and cs.write_error is None:
            cs.write_report()  # last, and on its own: a report that fails costs no other output
        cs.release_run_dir()


def _worker_share(cs: CrossoverSession) -> dict[str, Any] | None:
    from harness.search.parents import parent_baselines, share_of

    info = cs.config.workerinput  # type: ignore[attr-defined]
    index = int("".join(c for c in str(info.get("workerid", "gw0")) if c.isdigit()) or 0)
    share = share_of(index, int(info.get("workercount", 1)))
    if share is None:
        return None
    names, agreement = share
    return parent_baselines(cs.runtime.context(), names, agreement=agreement)


def pytest_terminal_summary(terminalreporter: Any, exitstatus: int, config: pytest.Config) -> None:
    cs = _session(config)
    # The leaderboard is the session's product: shown under -q too (as pytest-benchmark's table), hidden by -qq.
    if cs is not None and cs.write_error is not None:
        terminalreporter.write_line(f"crossover: {cs.write_error}; its records are in the leaderboard below",
                                    red=True, bold=True)
    if cs is None or cs.is_worker or not cs.records or config.get_verbosity() < -1:
        return
    from pytest_crossover.summary import terminal_summary

    terminal_summary(cs, terminalreporter)
