"""Remote workers by the standard recipe: no ``--rsyncdir``, path options written either way, any socket server;
and a ``--tx`` that cannot start a worker is one line, never xdist's INTERNALERROR."""

from __future__ import annotations

import sys

import pytest

from tests.plugin import test_remote
from tests.plugin.conftest import base_args
from tests.plugin.test_remote import EXECNET_SERVER, SESSION_S, _assert_same_child, _can_hide, _children, servers

reference_run = test_remote.serial_run  # the fixture: minimal in one process


@pytest.mark.parametrize(("spec", "why"), [
    ("bogus", "ValueError: no gateway type found for 'execmodel=main_thread_only//bogus'); check each --tx spec"),
    ("socket=127.0.0.1:1", "ConnectionRefusedError: [Errno 111] Connection refused); nothing listens there: start a "
                           "gateway server on that host, bound to a loopback or private address (python -m "
                           "pytest_crossover.gateway_server HOST:PORT), or use --tx ssh=HOST"),
    ("popen//python=/nonexistent/python", "FileNotFoundError: [Errno 2] No such file or directory: "
                                          "'/nonexistent/python'); check each --tx spec"),
])
def test_a_tx_that_cannot_start_a_worker_is_one_line(pytester, search_files, spec, why):
    result = pytester.runpytest_subprocess("--pyargs", "pytest_crossover.children", "-d", "--tx", spec,
                                           *base_args(search_files), "--crossover-space=smoke")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    text = result.stdout.str() + result.stderr.str()
    assert "INTERNALERROR" not in text and "Traceback" not in text, text
    errors = [line for line in result.stderr.lines if line.startswith("ERROR:")]
    assert len(errors) == 1 and errors[0].startswith(f"ERROR: --tx {spec}: a worker could not be started (")
    assert why in errors[0]
    assert not (pytester.path / "runs").exists()


def _spaced(args: list[str]) -> list[str]:
    """``--crossover-states=PATH`` -> ``--crossover-states PATH``, as users type it."""
    out: list[str] = []
    for a in args:
        name, eq, value = a.partition("=")
        out += [name, value] if eq and name in ("--crossover-parent-a", "--crossover-parent-b", "--crossover-states",
                                                 "--crossover-run-dir") else [a]
    return out


@pytest.mark.slow
@pytest.mark.skipif(sys.platform != "linux" or not _can_hide(), reason="needs unshare -m and mount (root on Linux)")
def test_execnet_socket_servers_the_installed_children_and_spaced_paths_equal_a_serial_run(
        pytester, search_files, reference_run, tmp_path_factory):
    """execnet's own socket server (one per worker), in a folder of its own; no --rsyncdir; path options with a
    space; the inputs hidden from the workers: the children are the serial run's, bit for bit."""
    serial_run = reference_run
    pytester.makepyfile(test_search="def test_child(crossover_child):\n    crossover_child.run()\n")
    hidden = [search_files["dir"], pytester.path]
    with servers(tmp_path_factory.mktemp("recipe"), hidden, module=EXECNET_SERVER) as (one, two):
        # A local test folder cannot reach a remote worker without xdist's rsync: one line saying what to run.
        local = pytester.runpytest_subprocess(str(pytester.path), "-d", "--tx", f"socket=127.0.0.1:{one.port}",
                                              *base_args(search_files), "--crossover-space=smoke",
                                              timeout=SESSION_S)
        assert local.ret == pytest.ExitCode.USAGE_ERROR
        assert "INTERNALERROR" not in local.stdout.str() + local.stderr.str()
        assert "not relative to an rsync root); a remote worker cannot read a local test path; run the installed " \
               "children instead: --pyargs pytest_crossover.children" in local.stderr.str()
        result = pytester.runpytest_subprocess(
            "--pyargs", "pytest_crossover.children", "-d", "--tx", f"socket=127.0.0.1:{one.port}",
            "--tx", f"socket=127.0.0.1:{two.port}", *_spaced(base_args(search_files, "remote")),
            "--crossover-space=minimal", timeout=SESSION_S)
        assert result.ret == 0, result.stdout.str() + result.stderr.str()
        result.assert_outcomes(passed=9)
        for server in (one, two):
            assert "passed" in server.log
    remote = pytester.path / "remote"
    assert sorted(_children(remote)) == sorted(_children(serial_run))
    for child in _children(serial_run):
        _assert_same_child(remote, serial_run, child)
