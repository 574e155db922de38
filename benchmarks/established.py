"""The established tool's time on a row of the states x hidden grid: AgentFarm's own search, on the same files.

AgentFarm is not a dependency of this project: check it out outside this tree (``git clone
https://github.com/Dooders/AgentFarm``) with its dependencies installed where its interpreter finds them, and pass
``--established DIR`` (its checkout) and, where its dependencies live apart, ``--established-path P`` (prepended to
its ``PYTHONPATH``) to ``benchmarks/perf.py``. A row runs ``scripts/run_crossover_search.py --search-space minimal``
on the row's parents and states (``.npy``), with this interpreter, and is timed from spawn to exit; a run past
:data:`LIMIT_S` is stopped and reported as not finished. Rows are run in increasing states per width, and a row whose
time, scaled linearly in the states from the previous row of its width, would pass the limit is not started.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from harness.core.arithmetic import PIN

LIMIT_S = 600.0  # "where it finishes in under 10 minutes"


class Established:
    """AgentFarm's search, run on a row's files; with ``cache`` (a JSON file), each row's outcome is kept there under
    the row and the sha256 of its files, and a row found there is not run again (AgentFarm's code does not change
    between runs of this benchmark; ours does)."""

    def __init__(self, checkout: Path, extra_path: str | None = None, cache: Path | None = None) -> None:
        self.checkout = checkout.resolve()
        self.extra_path = extra_path
        self.script = self.checkout / "scripts" / "run_crossover_search.py"
        if not self.script.is_file():
            raise SystemExit(f"--established: {self.script} not found; pass the root of an AgentFarm checkout")
        self.last: dict[int, tuple[int, float]] = {}  # hidden -> (states, seconds) of the last row that finished
        self.cache = cache
        self.kept: dict[str, list[Any]] = json.loads(cache.read_text()) if cache and cache.is_file() else {}
        self.reused = 0

    def _key(self, files: dict[str, Path], states: int, hidden: int) -> str:
        digests = [hashlib.sha256(files[k].read_bytes()).hexdigest()[:16] for k in ("parent_a", "parent_b", "states")]
        return f"{states}x{hidden}:{':'.join(digests)}"

    def run(self, files: dict[str, Path], states: int, hidden: int, run_dir: Path) -> tuple[str, float | None]:
        """("finished" | "stopped" | "not started", seconds or the prediction)."""
        key = self._key(files, states, hidden) if self.cache else ""
        if key in self.kept:
            how, took = self.kept[key]
            self.reused += 1
        else:
            how, took = self._run(files, states, hidden, run_dir)
            if self.cache and how != "not started":
                self.kept[key] = [how, took]
                self.cache.write_text(json.dumps(self.kept, indent=1) + "\n")
        if how == "finished" and took is not None:
            self.last[hidden] = (states, took)
        return how, took

    def predicted_s(self, states: int, hidden: int) -> float | None:
        prev = self.last.get(hidden)
        return None if prev is None else prev[1] * states / prev[0]

    def _run(self, files: dict[str, Path], states: int, hidden: int, run_dir: Path) -> tuple[str, float | None]:
        guess = self.predicted_s(states, hidden)
        if guess is not None and guess > LIMIT_S:
            return "not started", guess
        env = {k: v for k, v in os.environ.items() if k not in PIN}  # AgentFarm computes as its users run it
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(self.checkout), self.extra_path]))
        cmd = [sys.executable, str(self.script), "--search-space", "minimal", "--parent-a-ckpt",
               str(files["parent_a"]), "--parent-b-ckpt", str(files["parent_b"]), "--states-file",
               str(files["states"]), "--hidden-size", str(hidden), "--run-dir", str(run_dir)]
        start = time.perf_counter()
        try:
            proc = subprocess.run(cmd, cwd=self.checkout, env=env, capture_output=True, timeout=LIMIT_S)
        except subprocess.TimeoutExpired:
            return "stopped", LIMIT_S
        took = time.perf_counter() - start
        if proc.returncode != 0:
            tail = proc.stderr.decode(errors="replace").strip().splitlines()[-1:]
            raise RuntimeError(f"AgentFarm's search exited {proc.returncode} on {states} x {hidden}: {tail}")
        return "finished", took


def cell(outcome: tuple[str, float | None] | None) -> str:
    if outcome is None:
        return "–"
    how, seconds = outcome
    if how == "finished":
        return f"{seconds:.1f}"
    if how == "stopped":
        return f"> {LIMIT_S:.0f} (stopped)"
    return f"not run: ~{seconds:,.0f} predicted"


def _ours(work: Path, states: Path, name: str, extra: list[str]) -> float:
    from sessions import ROOT, spawn

    from harness.inputs.embedded import parent_paths

    pa, pb = parent_paths()
    cmd = [sys.executable, "-m", "pytest", str(ROOT / "benchmarks"), "-q", "-p", "no:cacheprovider",
           "--crossover-space=minimal", f"--crossover-parent-a={pa}", f"--crossover-parent-b={pb}",
           f"--crossover-states={states}", f"--crossover-run-dir={work / ('rd_' + name)}", "--crossover-no-save",
           *extra]
    return spawn(cmd, work)[0]


OURS = {"default: controls, barrier, report (files that name no environment: no returns)": [],
        "default with returns (`--crossover-env LunarLander-v3`: 10 greedy episodes a child)":
            ["--crossover-env=LunarLander-v3"],
        "`--crossover-controls off --crossover-episodes 0` (AgentFarm's work: agreement only)":
            ["--crossover-controls=off", "--crossover-episodes=0"]}


def section(work: Path, tool: Established, say: Any, pairs: int = 3) -> dict[int, dict[str, float]]:
    """This project's ``minimal`` session (default, and doing AgentFarm's work only) against AgentFarm's, on the
    embedded parents and the first 1,000 and all 10,000 embedded states, serial, each round running all three
    back to back (the order reversed every other round); ratios are the medians of the rounds' ratios."""
    import statistics

    import numpy as np

    from harness.inputs.embedded import parent_paths, states_path

    say("\n## Against AgentFarm's search (the same parents and states, in one run)\n")
    say("AgentFarm's `scripts/run_crossover_search.py --search-space minimal` (checked out outside this tree with its "
        "own dependencies, `benchmarks/established.py`) against this project's session, on the embedded parents "
        f"and embedded states (`.npy`), serial, every round running the four back to back; medians of {pairs} rounds "
        "(a ratio is the median of the rounds' ratios).\n")
    say("| states | run | children | wall s | vs AgentFarm (wall) |\n|---|---|---|---|---|")
    all_states = np.load(states_path())["states"]
    pa, pb = parent_paths()
    out: dict[int, dict[str, float]] = {}
    for n in (1_000, 10_000):
        npy = work / f"embedded_{n}.npy"
        np.save(npy, all_states[:n])
        files = {"parent_a": pa, "parent_b": pb, "states": npy}
        walls: dict[str, list[float]] = {"AgentFarm": [], **{k: [] for k in OURS}}
        for r in range(pairs):
            order = ["AgentFarm", *OURS] if r % 2 == 0 else [*OURS, "AgentFarm"][::-1]
            for label in order:
                if label == "AgentFarm":
                    how, took = tool.run(files, n, 64, work / f"af_{n}_{r}")
                    if how != "finished" or took is None:
                        raise RuntimeError(f"AgentFarm did not finish {n} states in {LIMIT_S:.0f} s")
                    walls[label].append(took)
                else:
                    walls[label].append(_ours(work, npy, f"{n}_{r}", OURS[label]))
        af = walls["AgentFarm"]
        say(f"| {n:,} | AgentFarm | 9 | {statistics.median(af):.2f} | 1.00x |")
        out[n] = {}
        for label in OURS:
            ratio = statistics.median(o / a for o, a in zip(walls[label], af))
            out[n][label] = ratio
            kids = 9 if "--crossover-controls=off" in OURS[label] else 18
            say(f"| {n:,} | {label} | {kids} | {statistics.median(walls[label]):.2f} | {ratio:.2f}x |")
    default, _, own = list(OURS)
    say("\n| target | holds in this run | measured (AgentFarm's work only) |\n|---|---|---|")
    for n, target in ((1_000, 0.25), (10_000, 0.08)):
        ok = "yes" if out[n][default] <= target else "**no**"
        say(f"| default session, {n:,} states: <= {target}x AgentFarm | {ok} | {out[n][default]:.2f}x "
            f"({out[n][own]:.2f}x) |")
    return out
