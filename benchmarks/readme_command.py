"""The README's own command timed as a user runs it: the default session against report and barrier off, and
``-n 2`` / ``-n 4`` against serial (part of ``benchmarks/perf.py``'s report, ``--only readme``)."""

from __future__ import annotations

import statistics
import sys
from pathlib import Path
from typing import Any

from sessions import ROOT, spawn


def sessions(work: Path, repeats: int) -> dict[str, list[tuple[float, float]]]:
    """The README's own search (``pytest benchmarks --crossover-space minimal``: embedded parents and states, 10
    episodes a child, report and barrier on) as a user runs it, serially, with report and barrier off, and under
    ``-n 2`` and ``-n 4``, the runs interleaved (every configuration once a round, the order reversed every other
    round) so drifting load on a shared machine hits all alike: {label: (median wall, median CPU seconds of the
    session's process tree) of every round}."""
    import resource

    configs = {"-n 0 (default: report and barrier on)": [],
               "-n 0 --crossover-report off --crossover-barrier off": ["--crossover-report=off",
                                                                      "--crossover-barrier=off"],
               "-n 2": ["-n", "2"], "-n 4": ["-n", "4"]}
    walls: dict[str, list[float]] = {k: [] for k in configs}
    cpus: dict[str, list[float]] = {k: [] for k in configs}
    for i in range(repeats):
        for label, extra in (list(configs.items()) if i % 2 == 0 else list(configs.items())[::-1]):
            cmd = [sys.executable, "-m", "pytest", str(ROOT / "benchmarks"), "-q", "-p", "no:cacheprovider",
                   "--crossover-space=minimal", f"--crossover-run-dir={work / 'rd_readme'}",
                   f"--crossover-storage={work / 'history'}", *extra]
            before = resource.getrusage(resource.RUSAGE_CHILDREN)
            walls[label].append(spawn(cmd, work)[0])
            after = resource.getrusage(resource.RUSAGE_CHILDREN)
            cpus[label].append(after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime)
    return {k: list(zip(walls[k], cpus[k])) for k in configs}


def section(work: Path, reps: int, say: Any) -> None:
    say(f"\n## The README's command: per-session overhead and workers (medians of {reps}, interleaved)\n")
    say("Embedded parents and states (10,000 x 8), 10 episodes a child, `minimal`, as `pytest benchmarks "
        "--crossover-space minimal` runs it. CPU is user + system time of the session's whole process tree.\n")
    say("| run | wall s | vs `-n 0` | CPU s |\n|---|---|---|---|")
    runs = sessions(work, reps)
    med = {k: (statistics.median(w for w, _ in v), statistics.median(c for _, c in v)) for k, v in runs.items()}
    base_key, light_key = "-n 0 (default: report and barrier on)", "-n 0 --crossover-report off --crossover-barrier off"
    for label, (wall, cpu) in med.items():
        say(f"| `{label}` | {wall:.2f} | {wall / med[base_key][0]:.2f}x | {cpu:.2f} |")

    def paired(a: str, b: str, i: int) -> float:  # the median over rounds of a's time over b's in that round
        return statistics.median(x[i] / y[i] for x, y in zip(runs[a], runs[b]))

    say(f"\nDefault session vs report and barrier off (target <= 1.15x): {paired(base_key, light_key, 0):.2f}x wall, "
        f"{paired(base_key, light_key, 1):.2f}x CPU; `-n 4` vs `-n 0` (target <= 1.1x): "
        f"{paired('-n 4', base_key, 0):.2f}x wall, {paired('-n 4', base_key, 1):.2f}x CPU (medians of the rounds' "
        "ratios: each round runs every configuration back to back).")
