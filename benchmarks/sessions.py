"""Run one search session of the benchmarks here in a subprocess and read what it wrote (for readme.py, levers.py)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
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


def spawn(cmd: list[str], cwd: Path) -> tuple[float, float, int, float, str]:
    """(wall seconds, peak RSS MB of any process of the tree, exit code, spawn time as unix time, stdout)."""
    env = dict(os.environ)
    env.pop("PYTEST_ADDOPTS", None)
    env.pop("PYTHONDONTWRITEBYTECODE", None)  # sessions read the bytecode compile_sources() wrote, as after an install
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), *filter(None, [env.get("PYTHONPATH")])])  # this checkout's code
    # Linux lets a forked child inherit its parent's RSS high-water mark, and this script holds torch and big
    # arrays; so the session is started by /usr/bin/time (a small process) when there is one, which reports the
    # peak of the session's process tree (%M: max over the child and the descendants it reaped, xdist workers too).
    timer = Path("/usr/bin/time")
    rss_file, out_file = cwd / ".maxrss", cwd / ".stdout"
    full = [str(timer), "-f", "%M", "-o", str(rss_file), *cmd] if timer.exists() else cmd
    with out_file.open("wb") as out:
        t_unix, t0 = time.time(), time.perf_counter()
        proc = subprocess.Popen(full, cwd=cwd, env=env, stdout=out, stderr=subprocess.PIPE)
        _, status, usage = os.wait4(proc.pid, 0)
        wall = time.perf_counter() - t0
    proc.returncode = os.waitstatus_to_exitcode(status)
    err = proc.stderr.read().decode(errors="replace") if proc.stderr else ""
    if proc.stderr:
        proc.stderr.close()
    if proc.returncode not in (0, 1):
        raise RuntimeError(f"{' '.join(cmd)} exited {proc.returncode}: {err[-2000:]}")
    rss_kb = float(rss_file.read_text().split()[-1]) if timer.exists() else float(usage.ru_maxrss)
    return wall, rss_kb / 1024.0, proc.returncode, t_unix, out_file.read_text(errors="replace")
