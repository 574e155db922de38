"""report.html of real sessions: written at the end, shown in the summary, looked at in headless Chromium; a picture
that fails is reported and costs nothing else; ``--crossover-report off`` (or the ini key) skips it."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from harness.pictures.files import PICTURE_PREFIX
from tests.plugin.conftest import CLIENT, base_args, read_json, run_search

PICTURES = ["report_agreement.png", "report_barrier.png", "report_finetune.png", "report_heatmap.png",
            "report_tradeoffs.png"]
LEADERBOARD_IDS = ("Array.from(document.querySelectorAll('#leaderboard-table tbody tr td:nth-child(2)'))"
                   ".map(td => td.textContent)")


@pytest.fixture(scope="module")
def smoke_run(tmp_path_factory: pytest.TempPathFactory, search_files: dict[str, Path]) -> dict[str, Any]:
    """One real session of the smoke space (3 children), run as a user runs it; shared by the tests below."""
    root = tmp_path_factory.mktemp("report_session")
    (root / "test_search.py").write_text(CLIENT)
    run_dir = root / "runs"
    out = subprocess.run([sys.executable, "-m", "pytest", "test_search.py", *base_args(search_files, run_dir),
                          "--crossover-space=smoke", "--crossover-no-save", "--crossover-report=on"],
                         cwd=root, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stdout + out.stderr
    return {"run_dir": run_dir, "stdout": out.stdout, "manifest": read_json(run_dir / "manifest.json")}


def test_the_session_writes_the_report_and_names_it_in_the_summary(smoke_run):
    run_dir = smoke_run["run_dir"]
    assert sorted(p.name for p in run_dir.glob(f"{PICTURE_PREFIX}*.png")) == PICTURES
    html = (run_dir / "report.html").read_text()
    for cid in (c["child_id"] for c in smoke_run["manifest"]["children"]):
        assert f"<td>{cid}</td>" in html
    assert "Complete: 3 children." in html
    assert f"written: {run_dir / 'report.html'} (open it in a browser; 5 pictures as PNG beside it)" in \
        smoke_run["stdout"]
    assert "report_heatmap.png" not in smoke_run["stdout"]  # the pictures are named once, not one line each
    assert "report: picture" not in smoke_run["stdout"]


def test_the_report_as_a_browser_shows_it(smoke_run, chromium, tmp_path):
    page, tab = chromium.load(smoke_run["run_dir"] / "report.html")
    assert page.errors == []
    assert len(page.images) == 5
    for img in page.images:
        assert img["ok"] and img["width"] == 1100 and img["height"] > 200, img
    expected = [c["child_id"] for c in smoke_run["manifest"]["children"]]
    shown = chromium.evaluate(tab, LEADERBOARD_IDS)
    assert sorted(shown) == sorted([*expected, "parent_a", "parent_b"])
    assert chromium.evaluate(tab, "document.title") == "Crossover report: space smoke"
    # Laid out for a 1200 px window: nothing wider than the window, the table not wider than its column.
    assert chromium.evaluate(tab, "document.documentElement.scrollWidth") <= 1200
    assert chromium.evaluate(tab, "document.querySelector('#leaderboard-table').offsetWidth") <= \
        chromium.evaluate(tab, "document.querySelector('#leaderboard-table').parentElement.clientWidth")
    assert page.screenshot[:8] == b"\x89PNG\r\n\x1a\n" and len(page.screenshot) > 50_000
    (tmp_path / "report.png").write_bytes(page.screenshot)
    # The decision opens the page, above the leaderboard and inside the first screen, with the terminal's words.
    from harness.answer.recommend import decision_lines

    block = decision_lines(read_json(smoke_run["run_dir"] / "recommendation.json"))
    shown = chromium.evaluate(tab, "Array.from(document.querySelectorAll('#decision p, #decision li'))"
                                   ".map(e => e.textContent)")
    assert shown == block
    top = chromium.evaluate(tab, "[document.querySelector('#decision').getBoundingClientRect().bottom, "
                                 "document.querySelector('#leaderboard-table').getBoundingClientRect().top]")
    assert top[0] < top[1] and top[0] < 900
    assert block[-1] in smoke_run["stdout"] and block[0] in smoke_run["stdout"]  # the terminal says the same
    chosen = chromium.evaluate(tab, "Array.from(document.querySelectorAll("
                                    "'#leaderboard-table tr.chosen td:nth-child(2)')).map(td => td.textContent)")
    assert len(chosen) == 1 and chosen[0] in block[0]
    assert chromium.capture(tab, 900)[:8] == b"\x89PNG\r\n\x1a\n"


def _without_report(files: dict[str, Path]) -> list[str]:
    """The test sessions' arguments without their ``--crossover-report=off``: the ini file decides."""
    return [a for a in base_args(files) if not a.startswith("--crossover-report")]


FAILING_PICTURE = """
import harness.pictures.plots

def _broken(rows):
    raise ZeroDivisionError("division by zero")

harness.pictures.plots.heatmaps = _broken

import harness.pictures.drawer

# drawn in this process, where the heatmap is broken (a drawer would draw it)
harness.pictures.drawer.start = lambda: []
"""


def test_a_failing_picture_costs_only_itself_and_off_removes_the_report(pytester, search_files):
    pytester.makeconftest(FAILING_PICTURE)
    result = run_search(pytester, search_files, "--crossover-space=smoke", "--crossover-max-runs=1",
                        "--crossover-report=on")
    result.assert_outcomes(passed=1)
    assert result.ret == 0
    result.stdout.fnmatch_lines(["*report: picture heatmap: ZeroDivisionError: division by zero*"])
    run_dir = pytester.path / "runs"
    for name in ("manifest.json", "leaderboard.json", "leaderboard.csv", "leaderboard.md", "recommendation.txt"):
        assert (run_dir / name).is_file(), name
    assert "Picture <b>heatmap</b> failed to draw: ZeroDivisionError" in (run_dir / "report.html").read_text()
    assert sorted(p.name for p in run_dir.glob("report_*.png")) == [p for p in PICTURES if "heatmap" not in p]

    # The ini key turns it off; the earlier session's report is removed, not left beside this session's files. In this
    # process (nothing is drawn), so without the conftest that breaks the library's heatmap for its process.
    (pytester.path / "conftest.py").unlink()
    pytester.makeini("[pytest]\ncrossover_report = off\n")
    off = pytester.runpytest_inprocess(*_without_report(search_files), "--crossover-space=smoke",
                                       "--crossover-max-runs=1")
    off.assert_outcomes(passed=1)
    assert not (run_dir / "report.html").exists() and not list(run_dir.glob("report_*.png"))
    assert "report.html" not in off.stdout.str() and "report: picture" not in off.stdout.str()
    assert read_json(run_dir / "manifest.json")["options"]["report"] == "off"


def test_a_bad_ini_value_names_the_ini_key(pytester, search_files):
    pytester.makeini("[pytest]\ncrossover_report = yes\n")
    pytester.makepyfile(test_search=CLIENT)
    result = pytester.runpytest_inprocess(*_without_report(search_files))
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["ERROR: crossover_report (ini): 'yes' is neither on nor off; *"])
