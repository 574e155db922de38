"""benchmarks/perf.py: a partial run (--only) rewrites its own sections of the report and keeps the others."""

from __future__ import annotations

from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def test_a_partial_run_replaces_only_the_sections_it_measured(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.syspath_prepend(str(ROOT / "benchmarks"))
    import perf

    report = ("# Performance\n\nintro\n\n## Machine\n\n- load 4.7\n\n## The README's command\n\nold table\n\n"
              "## Scaling\n\nold rows\n")
    produced = "# Performance\n\n## Machine\n\n- load 0.9\n\n## The README's command\n\nnew table\n\n## New\n\nx\n"
    assert perf.merge_sections(report, produced) == (
        "# Performance\n\nintro\n\n## Machine\n\n- load 4.7\n\n## The README's command\n\nnew table\n\n"
        "## Scaling\n\nold rows\n\n## New\n\nx\n")
    assert perf.merge_sections(report, "## Machine\n\n- load 0.1\n") == report
