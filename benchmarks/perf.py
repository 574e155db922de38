"""End-to-end performance benchmark of pytest-crossover: wall time, per-phase time and peak RSS of real sessions.

Usage::

    python benchmarks/perf.py [--quick] [--repeats N] [--out docs/performance.md] [--only targets|scaling]

Everything runs on synthetic, seeded inputs created in a temporary directory: two parents of the established
QNetwork layout (``network.0/1/4/5/8``, 8 inputs, 4 actions, hidden 64 unless a scaling row says otherwise) and a
float32 states buffer. Each configuration runs ``python -m pytest <tmp>/test_search.py -p no:cacheprovider
--crossover-... -n N`` as a subprocess, ``--repeats`` times, and reports medians:

* ``wall``: from just before the subprocess is spawned to its exit (interpreter start-up included);
* ``first child``: from spawn to the moment the first child's crossover starts (``started_unix`` in its record,
  i.e. after imports, collection and the per-process context are done);
* per-phase sums over all children from ``timings_s`` in ``<run-dir>/manifest.json`` (crossover, fine-tune,
  evaluate, latency, write) — summed over workers, so under ``-n 2`` they exceed wall time;
* ``peak RSS``: the largest resident set of any single process of the session (controller or xdist worker), from
  ``os.wait4``'s ``ru_maxrss``, which Linux reports as the maximum over the child and the descendants it reaped.

The Markdown report (``--out``) describes the machine and holds the targets table, the scaling table and notes.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
CLIENT = '"""Search client (what another repository writes)."""\n\n\ndef test_child(crossover_child):\n    crossover_child.run()\n'
TRIVIAL = "def test_trivial():\n    assert 1 + 1 == 2\n"
PHASES = ("crossover", "finetune", "evaluate", "latency", "write")


def make_inputs(d: Path, *, hidden: int = 64, n_states: int = 1000, inputs: int = 8, outputs: int = 4) -> dict[str, Path]:
    """Seeded parents of the established layout and a states buffer in ``d`` (local generators only)."""
    import numpy as np
    import torch

    from harness.networks import QNetwork

    d.mkdir(parents=True, exist_ok=True)
    pa, pb, st = d / f"parent_a_h{hidden}.pt", d / f"parent_b_h{hidden}.pt", d / f"states_{n_states}.npy"
    if not pa.exists():
        g = torch.Generator().manual_seed(1)
        template = QNetwork(inputs, outputs, hidden).state_dict()
        scale = 0.5 * (64 / hidden) ** 0.5  # keep pre-activations of comparable size whatever the width
        sd_a = {k: (torch.randn(v.shape, generator=g) * scale if k.endswith("weight") and v.dim() == 2 else v.clone())
                for k, v in template.items()}
        g = torch.Generator().manual_seed(2)
        # B = A + noise: the parents agree on part of the states, as two parents of one task do.
        sd_b = {k: v + 0.8 * scale * torch.randn(v.shape, generator=g) * (v.dim() == 2) for k, v in sd_a.items()}
        torch.save(sd_a, pa)
        torch.save(sd_b, pb)
    if not st.exists():
        np.save(st, np.random.default_rng(0).standard_normal((n_states, inputs)).astype(np.float32))
    return {"parent_a": pa, "parent_b": pb, "states": st}


@dataclass
class Run:
    wall_s: float
    rss_mb: float
    first_child_s: float | None
    phases: dict[str, float] = field(default_factory=dict)
    children: int = 0
    steps: int = 0
    rc: int = 0


def _spawn(cmd: list[str], cwd: Path) -> tuple[float, float, int, float]:
    """(wall seconds, peak RSS MB of any process of the tree, exit code, spawn time as unix time)."""
    env = dict(os.environ, PYTHONDONTWRITEBYTECODE="1")
    env.pop("PYTEST_ADDOPTS", None)
    t_unix, t0 = time.time(), time.perf_counter()
    proc = subprocess.Popen(cmd, cwd=cwd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - t0
    proc.returncode = os.waitstatus_to_exitcode(status)
    err = proc.stderr.read().decode(errors="replace") if proc.stderr else ""
    if proc.stderr:
        proc.stderr.close()
    if proc.returncode not in (0, 1):
        raise RuntimeError(f"{' '.join(cmd)} exited {proc.returncode}: {err[-2000:]}")
    return wall, usage.ru_maxrss / 1024.0, proc.returncode, t_unix


def run_session(work: Path, files: dict[str, Path], space: str, workers: int, *, extra: tuple[str, ...] = (),
                name: str = "run") -> Run:
    """One crossover session as a subprocess; per-phase sums and first-child time from its manifest."""
    run_dir = work / f"rd_{name}"
    test_file = work / "test_search.py"
    if not test_file.exists():
        test_file.write_text(CLIENT)
    cmd = [sys.executable, "-m", "pytest", str(test_file), "-q", "-p", "no:cacheprovider", "-p", "no:randomly",
           f"--crossover-space={space}", f"--crossover-parent-a={files['parent_a']}",
           f"--crossover-parent-b={files['parent_b']}", f"--crossover-states={files['states']}",
           f"--crossover-run-dir={run_dir}", "--crossover-episodes=0", "--crossover-holdout=0",
           "-n", str(workers), *extra]
    wall, rss, rc, t_unix = _spawn(cmd, work)
    manifest = json.loads((run_dir / "manifest.json").read_text())
    phases = {p: 0.0 for p in PHASES}
    starts, steps = [], 0
    for child in manifest["children"]:
        for k, v in (child.get("timings_s") or {}).items():
            phases[k] = phases.get(k, 0.0) + float(v)
        if child.get("started_unix"):
            starts.append(float(child["started_unix"]))
        steps += int(child.get("finetune_steps") or 0)
    first = (min(starts) - t_unix) if starts else None
    return Run(wall, rss, first, phases, len(manifest["children"]), steps, rc)


def median_run(runs: list[Run]) -> Run:
    med = statistics.median
    firsts = [r.first_child_s for r in runs if r.first_child_s is not None]
    keys = set().union(*(r.phases for r in runs))
    return Run(med([r.wall_s for r in runs]), max(r.rss_mb for r in runs), med(firsts) if firsts else None,
               {k: med([r.phases.get(k, 0.0) for r in runs]) for k in sorted(keys)}, runs[0].children,
               runs[0].steps, max(r.rc for r in runs))


def repeat(n: int, fn: Any) -> Run:
    return median_run([fn(i) for i in range(n)])


def plugin_overhead(work: Path, repeats: int) -> tuple[float, float]:
    """Median wall of a trivial unrelated pytest run with the plugin loaded and with ``-p no:crossover``."""
    d = work / "unrelated"
    d.mkdir(exist_ok=True)
    (d / "test_unrelated.py").write_text(TRIVIAL)
    base = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-p", "no:randomly", "-n", "0",
            "test_unrelated.py"]
    with_p, without = [], []
    for _ in range(repeats):  # interleaved so drifting background load hits both alike
        with_p.append(_spawn(base, d)[0])
        without.append(_spawn(base + ["-p", "no:crossover"], d)[0])
    return statistics.median(with_p), statistics.median(without)


def machine() -> dict[str, str]:
    import torch

    model = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {"nproc": str(os.cpu_count()), "cpu": model, "python": platform.python_version(),
            "torch": torch.__version__, "platform": platform.platform(),
            "load": " ".join(f"{x:.2f}" for x in os.getloadavg())}


def fmt(x: float | None, nd: int = 2) -> str:
    return "–" if x is None else f"{x:.{nd}f}"


def phase_cells(r: Run) -> list[str]:
    return [fmt(r.phases.get(p, 0.0)) for p in PHASES]


def row(label: str, r: Run) -> str:
    ms_step = 1000.0 * r.phases.get("finetune", 0.0) / r.steps if r.steps else None
    return "| " + " | ".join([label, str(r.children), fmt(r.wall_s), fmt(r.first_child_s), *phase_cells(r),
                              fmt(ms_step, 3), f"{r.rss_mb:.0f}"]) + " |"


HEADER = ("| run | children | wall s | first child s | crossover s | fine-tune s | evaluate s | latency s | write s "
          "| ms/step | peak RSS MB |\n|---|---|---|---|---|---|---|---|---|---|---|")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="targets only, 1 repeat of the scaling rows, no 100k/1024")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--only", choices=("targets", "scaling", "all"), default="all")
    ap.add_argument("--out", type=Path, default=None, help="write the Markdown report here")
    args = ap.parse_args(argv)
    reps = args.repeats
    lines: list[str] = []

    def say(s: str = "") -> None:
        print(s, flush=True)
        lines.append(s)

    with tempfile.TemporaryDirectory(prefix="crossover-perf-") as tmp:
        work = Path(tmp)
        data = work / "data"
        base = make_inputs(data)
        m = machine()
        say("## Machine\n")
        say(f"- nproc: {m['nproc']}; CPU: {m['cpu']}; Python {m['python']}; torch {m['torch']}; {m['platform']}")
        say(f"- load average when the benchmark started: {m['load']} (the machine may be shared)\n")
        if args.only in ("targets", "all"):
            say("## Targets (1000 x 8 states, 8-64-64-4 parents, holdout 0, no episodes; medians of "
                f"{reps})\n")
            say(HEADER)
            results: dict[str, Run] = {}
            for space, n in (("minimal", 0), ("default-qat", 0), ("default-qat", 2), ("extended", 0), ("extended", 2)):
                if args.quick and space == "extended":
                    continue
                key = f"{space} -n {n}"
                results[key] = repeat(reps, lambda i, s=space, n=n: run_session(work, base, s, n, name=f"{s}{n}_{i}"))
                say(row(f"`{key}`", results[key]))
            with_p, without = plugin_overhead(work, max(5, 2 * reps))
            say(f"\nPlugin overhead on an unrelated trivial pytest run: {1000 * (with_p - without):.0f} ms "
                f"(with plugin {with_p:.3f} s, `-p no:crossover` {without:.3f} s; medians of {max(5, 2 * reps)}).")
        if args.only in ("scaling", "all"):
            sreps = 1 if args.quick else reps
            say(f"\n## Scaling (medians of {sreps}; -n 0 unless stated)\n")
            say(HEADER)
            grid100 = ("--crossover-modes=random,layer,weighted,uniform", "--crossover-alphas=0.1,0.3,0.5,0.7,0.9",
                       "--crossover-seeds=0,1,2,3,4", "--crossover-regimes=short,lr_high")
            rows: list[tuple[str, dict[str, Path], str, int, tuple[str, ...]]] = [
                ("children 9 (minimal)", base, "minimal", 0, ()),
                ("children 28 (extended)", base, "extended", 0, ()),
                ("children 100 (custom)", base, "custom", 0, (*grid100, "--crossover-max-runs=100")),
                ("states 10k (minimal)", make_inputs(data, n_states=10_000), "minimal", 0, ()),
                ("hidden 256 (minimal)", make_inputs(data, hidden=256), "minimal", 0, ()),
                ("workers 1 (extended -n 1)", base, "extended", 1, ()),
                ("workers 2 (extended -n 2)", base, "extended", 2, ()),
            ]
            if not args.quick:
                rows[4:4] = [("states 100k (minimal)", make_inputs(data, n_states=100_000), "minimal", 0, ())]
                rows[6:6] = [("hidden 1024 (minimal)", make_inputs(data, hidden=1024), "minimal", 0, ())]
            for label, files, space, n, extra in rows:
                r = repeat(sreps, lambda i, f=files, s=space, n=n, e=extra, lab=label: run_session(
                    work, f, s, n, extra=e, name=f"{lab.split()[0]}{lab.split()[1]}{n}_{i}"))
                say(row(label, r))
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text("\n".join(lines) + "\n")
    return 0


if __name__ == "__main__":
    sys.path.insert(0, str(ROOT))
    raise SystemExit(main())
