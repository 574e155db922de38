"""Output files and folders carry the user's umask (0644/0755 under 022, 0600/0700 under 077), as a plain ``open``
and ``mkdir`` would give them, although every file is written atomically (a temporary file, then a rename)."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from tests.plugin.conftest import CLIENT, base_args


def _session(root: Path, files: dict[str, Path], mask: int) -> None:
    """A real session (report on, history saved) and the history site, in processes started with ``mask``."""
    (root / "test_search.py").write_text(CLIENT)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(Path.cwd()), os.environ.get("PYTHONPATH")]))}
    run = [sys.executable, "-m", "pytest", "test_search.py", *base_args(files, root / "runs"),
           "--crossover-space=smoke", "--crossover-max-runs=1", "--crossover-report=on",
           f"--crossover-storage={root / 'history'}"]
    site = [sys.executable, "-m", "harness.history", f"--storage={root / 'history'}", f"--site={root / 'site'}"]
    for cmd in (run, site):
        out = subprocess.run(cmd, cwd=root, env=env, capture_output=True, text=True, timeout=300,
                             preexec_fn=lambda: os.umask(mask))
        assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]


@pytest.mark.parametrize(("mask", "file_mode", "dir_mode"), [(0o022, 0o644, 0o755), (0o077, 0o600, 0o700)])
def test_outputs_follow_the_umask(tmp_path, search_files, mask, file_mode, dir_mode):
    _session(tmp_path, search_files, mask)
    seen = {"files": 0, "dirs": 0}
    for top in ("runs", "history", "site"):
        for path in [tmp_path / top, *(tmp_path / top).rglob("*")]:
            if path.name.startswith(".") and path.suffix in (".lock", ".tmp"):
                continue  # a lock is no output
            kind, want = ("dirs", dir_mode) if path.is_dir() else ("files", file_mode)
            assert stat.S_IMODE(path.stat().st_mode) == want, (path, oct(path.stat().st_mode))
            seen[kind] += 1
    names = {p.name for p in tmp_path.rglob("*")}
    assert {"report.html", "leaderboard.json", "recommendation.txt", "child.pt", "index.html"} <= names
    assert seen["files"] > 20 and seen["dirs"] >= 4
    assert not list(tmp_path.rglob("*.tmp"))  # still atomic: no temporary file left behind
