"""pytest-crossover: hook implementations only; each delegates to the session, the handle or the library."""

from __future__ import annotations

from collections.abc import Generator
from typing import Any

import pytest

from pytest_crossover.child import CrossoverChild
from pytest_crossover.options import add_options, resolve
from pytest_crossover.session import PARENTS_KEY, RESULT_KEY, CrossoverSession, child_id_of

SESSION_KEY = pytest.StashKey[CrossoverSession]()
FIXTURE = "crossover_child"


def pytest_addoption(parser: pytest.Parser) -> None:
    add_options(parser)
    from pytest_crossover.history import add_history_options

    add_history_options(parser)


@pytest.hookimpl(trylast=True)
def pytest_configure(config: pytest.Config) -> None:
    options = resolve(config)
    session = CrossoverSession(config, options)
    config.stash[SESSION_KEY] = session
    config.pluginmanager.register(_ReportHooks(session), "crossover-reports")
    if config.pluginmanager.hasplugin("xdist"):
        from pytest_crossover.xdist_hooks import XdistHooks

        config.pluginmanager.register(XdistHooks(session), "crossover-xdist")
    from pytest_crossover.history import register_history

    register_history(config, session)
    config.addinivalue_line("markers", "crossover: a child of the crossover search (added by pytest-crossover)")
    # Explicit settings are checked on the controller before any child runs: here in a serial session; under
    # xdist in pytest_sessionstart, once the workers are booting, so their torch import overlaps the check's.
    if options.explicit and not session.is_worker and not session.distributed and not config.option.help:
        _check_inputs(session)


def _check_inputs(session: CrossoverSession) -> None:
    from harness.errors import HarnessError
    from harness.states import holdout_split

    try:
        _check_device(session.options.device)
        provenance = session.check_inputs()
        holdout_split(provenance["states_file"]["shape"][0], session.options.holdout, 0)
    except HarnessError as exc:
        raise pytest.UsageError(str(exc)) from None


def _check_device(device: str) -> None:
    if device == "cuda":
        import torch

        if not torch.cuda.is_available():
            raise pytest.UsageError(
                f"--crossover-device: 'cuda' was asked for but torch.cuda.is_available() is False (torch "
                f"{torch.__version__}); use --crossover-device cpu or install a CUDA build of torch")


def _session(config: pytest.Config) -> CrossoverSession | None:
    return config.stash.get(SESSION_KEY, None)


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if FIXTURE in metafunc.fixturenames:
        session = metafunc.config.stash[SESSION_KEY]
        ids = [s.child_id for s in session.specs]
        metafunc.parametrize(FIXTURE, ids, ids=ids, indirect=True)


@pytest.fixture
def crossover_child(request: pytest.FixtureRequest) -> CrossoverChild:
    """One child of the crossover search (parametrized over the space); call ``.run()`` for its record."""
    session = request.config.stash[SESSION_KEY]
    bench = None
    if not session.distributed and request.config.pluginmanager.hasplugin("benchmark"):
        bench = request.getfixturevalue("benchmark")
    return CrossoverChild(session, request.param, request.node, bench)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_call(item: pytest.Item) -> Generator[None, Any, Any]:
    result = yield
    handle = getattr(item, "funcargs", {}).get(FIXTURE)
    if isinstance(handle, CrossoverChild):
        handle.check()
    return result


@pytest.hookimpl(trylast=True)
def pytest_sessionstart(session: pytest.Session) -> None:
    # trylast: after xdist's own sessionstart has started the workers (they receive no test before this returns).
    cs = _session(session.config)
    if cs is not None and not cs.is_worker and cs.options.explicit:
        if cs.distributed:
            _check_inputs(cs)
        cs.acquire_run_dir()


def pytest_collection_finish(session: pytest.Session) -> None:
    cs = _session(session.config)
    if cs is None:
        return
    ids = [child_id_of(item.nodeid) for item in session.items if FIXTURE in getattr(item, "fixturenames", ())]
    if ids:
        cs.expected = [i for i in ids if i]
        if cs._lock_fh is None and not cs.is_worker:
            cs.acquire_run_dir()




class _ReportHooks:
    """Hooks whose arguments carry no config: bound to this session's state."""

    def __init__(self, session: CrossoverSession) -> None:
        self.session = session

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        _record(self.session, report)


def _record(cs: CrossoverSession, report: pytest.TestReport) -> None:
    if cs.is_worker or cs._lock_fh is None:
        return
    props: dict[str, Any] = dict(p for p in report.user_properties if isinstance(p, tuple) and len(p) == 2)
    child_id = child_id_of(report.nodeid)
    if child_id is None or child_id not in cs.ids:
        return
    if RESULT_KEY in props and report.when == "call":
        cs.add(props[RESULT_KEY])
    elif report.failed and child_id not in cs.records:
        text = str(report.longrepr).strip() if report.longrepr else ""
        # xdist reports a worker that died mid-test (SIGKILL, OOM, segfault) with exactly this longrepr.
        lost = text.startswith("worker ") and "crashed while running" in text
        crash = getattr(report.longrepr, "reprcrash", None)
        line = getattr(crash, "message", None) or (text.splitlines()[-1] if text else "failed")
        cs.add_failure(child_id, "lost" if lost else "error", f"{report.when}: {line.splitlines()[0] if line else ''}"[:500])


def pytest_report_teststatus(report: pytest.TestReport, config: pytest.Config) -> Any:
    if report.when != "call":
        return None
    props: dict[str, Any] = dict(p for p in report.user_properties if isinstance(p, tuple) and len(p) == 2)
    rec = props.get(RESULT_KEY)
    if rec is None or rec.get("primary") is None:
        return None
    word = f"{report.outcome.upper()} primary={rec['primary']:.4f}"
    if rec.get("return"):
        word += f" return={rec['return']['mean']:.1f}"
    letter = "." if report.passed else "F"
    return report.outcome, letter, (word, {"green": report.passed, "red": report.failed})


def pytest_report_header(config: pytest.Config) -> list[str] | None:
    cs = _session(config)
    if cs is None or not cs.options.explicit:
        return None
    o = cs.options
    recipes = {(s.recipe.mode, s.recipe.alpha, s.recipe.seed) for s in cs.specs}
    regimes = {s.regime.name for s in cs.specs}
    src = "files" if o.parent_a else "embedded LunarLander-v3 parents"
    return [f"crossover: space={o.space} ({len(cs.specs)} children: {len(recipes)} recipes x {len(regimes)} regimes), "
            f"parents={src}, holdout={o.holdout}, teacher={o.teacher}, run-dir={o.run_dir}"]


@pytest.hookimpl(tryfirst=True)
def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    cs = _session(session.config)
    if cs is not None and cs.is_worker and cs.expected and exitstatus != pytest.ExitCode.INTERRUPTED:
        # A worker's share of the parents' rows; xdist's own (wrapper) hook sends workeroutput after this.
        share = cs.worker_share()
        if share:
            session.config.workeroutput[PARENTS_KEY] = share  # type: ignore[attr-defined]
    # The controller: tryfirst, so before xdist's own hook waits for the workers' interpreters to exit (~0.1 s
    # each), the files are written meanwhile; every worker has reported by then.
    if cs is None or cs.is_worker or cs._lock_fh is None:
        return
    try:
        cs.complete = exitstatus not in (pytest.ExitCode.INTERRUPTED, pytest.ExitCode.INTERNAL_ERROR)
        _finish(cs)
    finally:
        cs.release_run_dir()


def _finish(cs: CrossoverSession) -> None:
    # No record yet (interrupted before the first child, or nothing selected): the previous session's files
    # stay as they were; they are replaced only once this session has a result to replace them with.
    if not cs.records:
        return
    try:
        cs.finalize()
    finally:
        cs.write_outputs()


def pytest_terminal_summary(terminalreporter: Any, exitstatus: int, config: pytest.Config) -> None:
    cs = _session(config)
    # The leaderboard is the session's product: shown under -q too (as pytest-benchmark's table), hidden by -qq.
    if cs is None or cs.is_worker or not cs.records or config.get_verbosity() < -1:
        return
    cs.summary(terminalreporter)
