"""The report's pictures drawn by drawer processes are the very bytes the session's own process draws; a drawer
that cannot draw costs nothing but its pictures being drawn in-process."""

from __future__ import annotations

import pytest

from harness.pictures import drawer, report
from tests.harness.test_report import manifest


@pytest.fixture(scope="module")
def in_process() -> dict:
    files, failures = report.report_outputs(manifest())
    assert failures == []
    return files


def test_two_drawers_draw_the_same_bytes_as_the_session(in_process) -> None:
    drawers = [drawer.Drawer(), drawer.Drawer()]
    files, failures = report.report_outputs(manifest(), None, drawers)
    assert failures == []
    assert sorted(files) == sorted(in_process)
    for name, content in in_process.items():
        assert files[name] == content, name  # every PNG and the page, byte for byte
    assert all(d.proc is None for d in drawers)  # each drew once and exited


def test_a_drawer_that_died_leaves_its_pictures_to_the_session(in_process) -> None:
    dead, alive = drawer.Drawer(), drawer.Drawer()
    assert dead.proc is not None
    dead.proc.kill()
    dead.proc.wait()
    files, failures = report.report_outputs(manifest(), None, [dead, alive])
    assert failures == [] and files == in_process


def test_an_unused_drawer_is_stopped() -> None:
    d = drawer.Drawer()
    proc = d.proc
    assert proc is not None
    d.close()
    assert proc.returncode is not None and d.proc is None


def test_a_drawer_that_hangs_is_stopped_at_its_deadline(monkeypatch) -> None:
    """A drawer that never answers (stuck on a lock) is killed at TIMEOUT_S: the read ends, the session draws."""
    import subprocess
    import sys
    import time

    monkeypatch.setattr(drawer, "TIMEOUT_S", 0.3)
    d = drawer.Drawer.__new__(drawer.Drawer)  # its process: one that never answers
    d.proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"], stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE)
    d.names = ["a.png"]
    started = time.monotonic()
    assert d.receive() is None
    assert time.monotonic() - started < 30  # the deadline, not the drawer's minute
