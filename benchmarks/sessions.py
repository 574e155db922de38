"""Run one search session of the benchmarks here in a subprocess and read what it wrote (for readme.py, levers.py)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]


def session(args: list[str], run_dir: Path) -> Path:
    """``pytest benchmarks ARGS`` into ``run_dir`` (no history record); the run directory."""
    cmd = [sys.executable, "-m", "pytest", "benchmarks", "-q", "-p", "no:cacheprovider", "--crossover-no-save",
           f"--crossover-run-dir={run_dir}", *args]
    subprocess.run(cmd, cwd=ROOT, check=False, capture_output=True, text=True)
    if not (run_dir / "leaderboard.md").is_file():
        raise SystemExit(f"{' '.join(args)}: the session wrote no leaderboard")
    return run_dir


def read(run_dir: Path, name: str) -> Any:
    return json.loads((run_dir / name).read_text())
