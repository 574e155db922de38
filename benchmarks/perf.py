"""End-to-end performance benchmark of pytest-crossover: wall time, per-phase time and peak RSS of real sessions.

Usage::

    python benchmarks/perf.py [--quick] [--repeats N] [--out docs/performance.md] [--only targets|scaling]

Everything runs on synthetic, seeded inputs created in a temporary directory: two parents of the Q-network
QNetwork layout (``network.0/1/4/5/8``, 8 inputs, 4 actions, hidden 64 unless a scaling row says otherwise) and a
float32 states buffer. Each configuration runs ``python -m pytest <tmp>/test_search.py -p no:cacheprovider
--crossover-... -n N`` as a subprocess, ``--repeats`` times, and reports medians:

* ``wall``: from just before the subprocess is spawned to its exit (interpreter start-up included);
* ``first child``: from spawn to the moment the first child's crossover starts (``started_unix`` in its record,
  i.e. after imports, collection and the per-process context are done);
* per-phase sums over all children from ``timings_s`` in ``<run-dir>/manifest.json`` (crossover, fine-tune,
  evaluate, latency, write) — summed over workers, so under ``-n 2`` they exceed wall time;
* ``peak RSS``: the largest resident set of any single process of the session (controller or xdist worker), from
  ``/usr/bin/time -f %M`` (``os.wait4``'s ``ru_maxrss`` without it): the maximum over the session's process and the
  descendants it reaped.

The Markdown report (``--out``) describes the machine and holds the targets table, the scaling table and notes.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import platform
import re
import statistics
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import established
from sessions import ROOT, spawn

CLIENT = ('"""Search client (what another repository writes)."""\n\n\ndef test_child(crossover_child):\n'
          '    crossover_child.run()\n')
TRIVIAL = "def test_trivial():\n    assert 1 + 1 == 2\n"
TORCH_TESTS = "def test_a():\n    import torch\n\n\ndef test_b():\n    import torch\n"
PHASES = ("crossover", "finetune", "evaluate", "latency", "write")

TITLE = """# Performance

Produced by `python benchmarks/perf.py --out docs/performance.md` (see the script's docstring for what each column
measures; `--quick` skips the heavy rows). Every run is a real `python -m pytest` session in a subprocess on
synthetic seeded 8-input, 4-action parents of AgentFarm's layout; `-n 0` unless stated. Phase columns are sums
over all children (under `-n 2`, over both workers, so they can exceed the wall time); `ms/step` is fine-tune time
per child per Adam step; `first child` is the time from spawning pytest to the first child's crossover.
"""

NOTES = Path(__file__).resolve().parent / "performance_notes.md"  # read when the report ends (edits meanwhile count)


def make_inputs(d: Path, *, hidden: int = 64, n_states: int = 1000, inputs: int = 8,
                outputs: int = 4) -> dict[str, Path]:
    """Seeded parents of AgentFarm's layout and a states buffer in ``d`` (local generators only)."""
    import numpy as np
    import torch

    from harness.networks.qnetwork import QNetwork

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
    workers: int = 0  # xdist workers the session started (0: serial)


def workers_started(stdout: str) -> int:
    """The xdist workers a session started, from its output (``created: 2/2 workers``, or ``2 workers [9 items]``
    under -q); 0 for a serial session."""
    import re

    found = re.search(r"created: (\d+)/\d+ workers", stdout) or re.search(r"^(\d+) workers \[", stdout, re.M)
    return int(found.group(1)) if found else 0


def compile_sources() -> None:
    """Byte-compile harness and pytest_crossover, as ``pip install`` does (an editable install caches on first
    import): otherwise, where PYTHONDONTWRITEBYTECODE is set, every session recompiles them (~45 ms a process)."""
    import compileall

    for pkg in ("harness", "pytest_crossover"):
        compileall.compile_dir(ROOT / pkg, quiet=1)


def run_session(work: Path, files: dict[str, Path], space: str, workers: int, *, extra: tuple[str, ...] = (),
                name: str = "run") -> Run:
    """One crossover session as a subprocess; per-phase sums and first-child time from its manifest."""
    run_dir = work / f"rd_{name}"
    test_file = work / "test_search.py"
    if not test_file.exists():
        test_file.write_text(CLIENT)
    cmd = [sys.executable, "-m", "pytest", str(test_file), "-p", "no:cacheprovider", "-p", "no:randomly",
           f"--crossover-space={space}", f"--crossover-parent-a={files['parent_a']}",
           f"--crossover-parent-b={files['parent_b']}", f"--crossover-states={files['states']}",
           f"--crossover-run-dir={run_dir}", "--crossover-episodes=0", "--crossover-holdout=0",
           "-n", str(workers), *extra]
    wall, rss, rc, t_unix, stdout = spawn(cmd, work)
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
    return Run(wall, rss, first, phases, len(manifest["children"]), steps, rc, workers_started(stdout))


def median_run(runs: list[Run]) -> Run:
    med = statistics.median
    firsts = [r.first_child_s for r in runs if r.first_child_s is not None]
    keys = set().union(*(r.phases for r in runs))
    return Run(med([r.wall_s for r in runs]), max(r.rss_mb for r in runs), med(firsts) if firsts else None,
               {k: med([r.phases.get(k, 0.0) for r in runs]) for k in sorted(keys)}, runs[0].children,
               runs[0].steps, max(r.rc for r in runs))


def repeat(n: int, fn: Any) -> Run:
    return median_run([fn(i) for i in range(n)])


def paired_medians(d: Path, test: str, base: list[str], a: list[str], b: list[str], repeats: int) -> tuple[float,
                                                                                                           float]:
    """Median walls of ``base + a`` and ``base + b`` run on the test module ``test`` in the folder ``d``, the two
    interleaved so drifting background load hits both alike."""
    d.mkdir(exist_ok=True)
    (d / "test_module.py").write_text(test)
    cmd = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-p", "no:randomly", *base, "test_module.py"]
    walls_a, walls_b = [], []
    for _ in range(repeats):
        walls_a.append(spawn(cmd + a, d)[0])
        walls_b.append(spawn(cmd + b, d)[0])
    return statistics.median(walls_a), statistics.median(walls_b)


def plugin_overhead(work: Path, repeats: int) -> tuple[float, float]:
    """Median wall of a trivial unrelated pytest run with the plugin loaded and with ``-p no:crossover``."""
    return paired_medians(work / "unrelated", TRIVIAL, ["-n", "0"], [], ["-p", "no:crossover"], repeats)


def xdist_cost(work: Path, repeats: int) -> tuple[float, float]:
    """Median wall of a plugin-free pytest run whose two tests import torch, under ``-n 0`` and ``-n 2``: what
    xdist itself costs on this machine, whatever the tests do."""
    return paired_medians(work / "xdist_cost", TORCH_TESTS, ["-p", "no:crossover"], ["-n", "0"], ["-n", "2"], repeats)


EVAL_MEMORY = """
import resource, sys, time
import numpy as np, torch
torch.set_num_threads(1)
from harness.inputs.checkpoints import load_parent, load_states
from harness.evaluate.vs_parents import evaluate_model, parent_baseline, predict
from harness.networks.family import network_from_state_dict
rss = lambda: resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
a, b = network_from_state_dict(load_parent(sys.argv[1])), network_from_state_dict(load_parent(sys.argv[2]))
child = network_from_state_dict(load_parent(sys.argv[1]))
child(torch.zeros(4, a.network[0].in_features))  # warm the kernels before the baseline reading
before = rss()
t = time.perf_counter()
states = load_states(sys.argv[3], input_dim=a.network[0].in_features)
la, lb = predict(a, states), predict(b, states)
m = evaluate_model(child, states, la, lb, parent_baseline(la, lb)["top1"])
print(before, rss(), time.perf_counter() - t, len(states))
"""


def eval_memory(work: Path, files: dict[str, Path]) -> tuple[float, float, float, int]:
    """(RSS MB before, peak RSS MB after, seconds, rows) of loading a states file memory-mapped and evaluating a
    child against both parents on it (parents' logits + streamed evaluation), in a fresh process."""
    out = subprocess.run([sys.executable, "-c", EVAL_MEMORY, str(files["parent_a"]), str(files["parent_b"]),
                          str(files["states"])], cwd=ROOT, capture_output=True, text=True, check=True)
    before, after, secs, rows = out.stdout.split()
    return float(before), float(after), float(secs), int(rows)


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


def grid_section(work: Path, data: Path, say: Any, tool: Any = None) -> None:
    import scaling

    m = scaling.measure_machine()
    say("\n## Scaling: states x hidden (`minimal`, holdout 0, no episodes; 1 run each)\n")
    say("\n".join(scaling.machine_lines(m)))
    say(f"- rows over ~{scaling.BUDGET_S:.0f} s of estimated serial work are sampled (see `benchmarks/scaling.py`); "
        f"rows predicted to need over {scaling.MEM_CAP_MB:,.0f} MB are not run on this shared machine\n")
    say(scaling.HEADER)

    runs = itertools.count()

    def run(states: int, hidden: int, workers: int, extra: tuple[str, ...]) -> Run:
        files = make_inputs(data, hidden=hidden, n_states=states)
        return run_session(work, files, "minimal", workers, extra=extra, name=f"g{next(runs)}_{states}_{hidden}")

    def established(states: int, hidden: int) -> Any:
        files = make_inputs(data, hidden=hidden, n_states=states)
        return tool.run(files, states, hidden, work / f"af_g{states}_{hidden}")

    cells = {(c["states"], c["hidden"]): c for c in scaling.grid_rows(m, run, say, established if tool else None)}
    if tool is not None and tool.reused:
        say(f"\nAgentFarm's times on {tool.reused} of these rows come from an earlier run of this benchmark on the "
            "same files (`--established-cache`: its code did not change; ours did).")
    say("\n| target | holds in this run | measured |\n|---|---|---|")
    big, huge, wide = cells[(100_000, 64)], cells[(1_000_000, 64)], cells[(1_000, 1024)]
    speedup, own_speedup = big.get("wall0", 0) / big.get("wall2", 1e9), big.get("own0", 0) / big.get("own2", 1e9)
    checks = [("100k states, -n 0: wall <= 15 s (AgentFarm's work: 9 children)", big.get("own0", 1e9) <= 15,
               f"{big.get('own0', 0):.1f} s (the default's 18 children: {big.get('wall0', 0):.1f} s)"),
              ("100k states: -n 2 >= 1.6x faster than -n 0 (the default)", speedup >= 1.6,
               f"{speedup:.2f}x ({big.get('workers') or 'serial'}; AgentFarm's work: {own_speedup:.2f}x, "
               f"{big.get('own_workers') or 'serial'})"),
              ("1M states: peak RSS <= 600 MB per process", huge.get("rss", 1e9) <= 600,
               f"{huge.get('rss', 0):.0f} MB"),
              ("hidden 1024, 1k states: within 2x of the limit", wide.get("ratio", 1e9) <= 2,
               f"{wide.get('ratio', 0):.2f}x")]
    for name, ok, val in checks:
        say(f"| {name} | {'yes' if ok else '**no**'} | {val} |")


def targets_section(work: Path, data: Path, base: dict[str, Path], reps: int, quick: bool, say: Any) -> None:
    """The targets: every configuration of the targets table, interleaved over rounds, and the checks."""
    say("## Targets (1000 x 8 states, 8-64-64-4 parents, holdout 0, no episodes; medians of "
        f"{reps})\n")
    say(HEADER)
    configs = [(s, n) for s, n in (("minimal", 0), ("default-qat", 0), ("default-qat", 2), ("extended", 0),
                                   ("extended", 2)) if not (quick and s == "extended")]
    # Interleaved (one run of every configuration per round), so drifting background load on a shared
    # machine hits the -n 0 and -n 2 runs of a pair alike.
    runs: dict[str, list[Run]] = {f"{s} -n {n}": [] for s, n in configs}
    for i in range(reps):
        for s, n in configs:
            runs[f"{s} -n {n}"].append(run_session(work, base, s, n, name=f"{s}{n}_{i}"))
    results = {key: median_run(r) for key, r in runs.items()}
    for key, r in results.items():
        say(row(f"`{key}`" + (f" ({r.workers} workers)" if r.workers else " (serial)" * (" -n 0" not in key)),
                r))
    with_p, without = plugin_overhead(work, max(5, 2 * reps))
    say(f"\nPlugin overhead on an unrelated trivial pytest run: {1000 * (with_p - without):.0f} ms "
        f"(with plugin {with_p:.3f} s, `-p no:crossover` {without:.3f} s; medians of {max(5, 2 * reps)}).")
    serial, parallel = xdist_cost(work, max(5, reps))
    say(f"\nxdist's own cost: a pytest run of two tests that only import torch takes {serial:.2f} s under "
        f"`-n 0` and {parallel:.2f} s under `-n 2` (medians of {max(5, reps)}).")
    big = make_inputs(data, n_states=1_000_000)
    before, after, secs, rows = eval_memory(work, big)
    say(f"\nEvaluating a {rows:,}-state buffer (memory-mapped .npy; both parents' logits + one child's "
        f"streamed evaluation, fresh process): +{after - before:.0f} MB peak RSS "
        f"({before:.0f} -> {after:.0f} MB), {secs:.2f} s.")
    checks = [
        ("minimal -n 0 wall <= 2.5 s", results["minimal -n 0"].wall_s <= 2.5,
         f"{results['minimal -n 0'].wall_s:.2f} s"),
        ("default-qat -n 0 wall <= 4 s", results["default-qat -n 0"].wall_s <= 4.0,
         f"{results['default-qat -n 0'].wall_s:.2f} s"),
        ("default-qat -n 2 no slower than -n 0 (+10%)",
         results["default-qat -n 2"].wall_s <= 1.1 * results["default-qat -n 0"].wall_s,
         f"{results['default-qat -n 2'].wall_s:.2f} vs {results['default-qat -n 0'].wall_s:.2f} s"),
        ("fine-tune <= 0.25 ms per child per step", all(1000 * r.phases.get("finetune", 0) / r.steps <= 0.25
                                                        for r in results.values() if r.steps), "see ms/step"),
        ("plugin overhead <= 50 ms", with_p - without <= 0.05, f"{1000 * (with_p - without):.0f} ms"),
        ("first child <= 1.5 s (-n 0)", (results["minimal -n 0"].first_child_s or 99) <= 1.5,
         f"{results['minimal -n 0'].first_child_s:.2f} s"),
        ("peak RSS <= 400 MB per process (default-qat)", results["default-qat -n 0"].rss_mb <= 400
         and results["default-qat -n 2"].rss_mb <= 400, f"{results['default-qat -n 0'].rss_mb:.0f} MB"),
        ("1,000,000-state evaluation adds <= 200 MB", after - before <= 200, f"+{after - before:.0f} MB"),
    ]
    if "extended -n 2" in results:
        checks.insert(3, ("extended -n 2 no slower than -n 0 (+10%)",
                          results["extended -n 2"].wall_s <= 1.1 * results["extended -n 0"].wall_s,
                          f"{results['extended -n 2'].wall_s:.2f} vs {results['extended -n 0'].wall_s:.2f} s"))
    say("\n| target | holds in this run | measured |\n|---|---|---|")
    for name, ok, val in checks:
        say(f"| {name} | {'yes' if ok else '**no**'} | {val} |")


def scaling_section(work: Path, data: Path, base: dict[str, Path], reps: int, quick: bool, say: Any) -> None:
    """The scaling rows: children, states, hidden width and workers."""
    sreps = 1 if quick else reps
    say(f"\n## Scaling (medians of {sreps}; -n 0 unless stated)\n")
    say(HEADER)
    # random x 10 seeds x 5 alphas, layer, weighted x 5 alphas = 56 recipes x (short, lr_high); first 100.
    grid100 = ("--crossover-modes=random,layer,weighted", "--crossover-alphas=0.1,0.3,0.5,0.7,0.9",
               "--crossover-seeds=0,1,2,3,4,5,6,7,8,9", "--crossover-regimes=short,lr_high")
    s10k, s3k = make_inputs(data, n_states=10_000), make_inputs(data, n_states=3_000)
    # (label, inputs, space, workers, extra args, heavy: measured once even without --quick)
    rows: list[tuple[str, dict[str, Path], str, int, tuple[str, ...], bool]] = [
        ("children 9 (minimal)", base, "minimal", 0, (), False),
        ("children 28 (extended)", base, "extended", 0, (), False),
        ("children 100 (custom)", base, "custom", 0, (*grid100, "--crossover-max-runs=100"), False),
        ("states 1k (minimal)", base, "minimal", 0, (), False),
        ("states 10k (minimal)", s10k, "minimal", 0, (), False),
        ("states 100k (minimal)", make_inputs(data, n_states=100_000), "minimal", 0, (), True),
        ("hidden 64 (minimal)", base, "minimal", 0, (), False),
        ("hidden 256 (minimal)", make_inputs(data, hidden=256), "minimal", 0, (), False),
        ("hidden 1024 (minimal)", make_inputs(data, hidden=1024), "minimal", 0, (), True),
        ("workers 0 (extended -n 0)", base, "extended", 0, (), False),
        ("workers 1 (extended -n 1)", base, "extended", 1, (), False),
        ("workers 2 (extended -n 2)", base, "extended", 2, (), False),
        ("workers 0 (default-qat, 3k states, -n 0)", s3k, "default-qat", 0, (), False),
        ("workers 2 (default-qat, 3k states, -n 2)", s3k, "default-qat", 2, (), False),
        ("workers 0 (extended, 10k states, -n 0)", s10k, "extended", 0, (), True),
        ("workers 2 (extended, 10k states, -n 2)", s10k, "extended", 2, (), True),
    ]
    if quick:
        rows = [r for r in rows if not r[5]]
    for label, files, space, n, extra, heavy in rows:
        tag = "".join(c for c in label if c.isalnum())
        r = repeat(1 if heavy else sreps, lambda i, f=files, s=space, n=n, e=extra, t=tag: run_session(
            work, f, s, n, extra=e, name=f"{t}_{i}"))
        say(row(label + (" (1 run)" if heavy and sreps > 1 else ""), r))


def _sections(text: str) -> tuple[str, dict[str, str]]:
    """(the text before the first ``## `` heading, {heading: its section, heading line included}) in order."""
    parts = re.split(r"(?m)^(?=## )", text)
    head = parts[0] if parts and not parts[0].startswith("## ") else ""
    return head, {p.splitlines()[0]: p for p in parts if p.startswith("## ")}


def merge_sections(existing: str, produced: str) -> str:
    """``existing`` with each section ``produced`` measured (other than the machine's) put in its place; a section
    the existing report lacks goes at the end."""
    head, old = _sections(existing)
    _, new = _sections(produced)
    merged = {k: new.get(k, v) if k != "## Machine" else v for k, v in old.items()}
    merged.update({k: v for k, v in new.items() if k not in old and k != "## Machine"})
    return (head + "".join(v.rstrip("\n") + "\n\n" for v in merged.values())).rstrip("\n") + "\n"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="targets only, 1 repeat of the scaling rows, no 100k/1024")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--only", choices=("targets", "scaling", "readme", "grid", "established", "all"), default="all")
    ap.add_argument("--established", type=Path, default=None,
                    help="an AgentFarm checkout (outside this tree): its times on the grid's rows and beside the "
                         "README's search")
    ap.add_argument("--established-path", default=None, help="prepended to AgentFarm's PYTHONPATH (its dependencies)")
    ap.add_argument("--established-cache", type=Path, default=None,
                    help="a JSON file keeping AgentFarm's time per grid row and input files: a rerun reuses them")
    ap.add_argument("--out", type=Path, default=None, help="write the Markdown report here")
    args = ap.parse_args(argv)
    reps = args.repeats
    # This process measures the machine (the grid's limits) with the kernels the sessions compute with.
    from harness.core.arithmetic import pin

    pin()
    lines: list[str] = []
    # A partial run (--only) replaces its own sections of an existing report and keeps the others.
    kept = args.out.read_text() if args.out and args.only != "all" and args.out.is_file() else None

    def say(s: str = "") -> None:
        print(s, flush=True)
        lines.append(s)
        if args.out:  # incrementally, so a long run interrupted still leaves what it measured
            args.out.parent.mkdir(parents=True, exist_ok=True)
            text = "\n".join(lines) + "\n"
            args.out.write_text(text if kept is None else merge_sections(kept, text))

    compile_sources()
    with tempfile.TemporaryDirectory(prefix="crossover-perf-") as tmp:
        work = Path(tmp)
        data = work / "data"
        base = make_inputs(data)
        m = machine()
        say(TITLE)
        say("## Machine\n")
        say(f"- nproc: {m['nproc']}; CPU: {m['cpu']}; Python {m['python']}; torch {m['torch']}; {m['platform']}")
        say(f"- load average when the benchmark started: {m['load']} (the machine may be shared)\n")
        if args.only in ("targets", "all"):
            targets_section(work, data, base, reps, args.quick, say)
        if args.only in ("scaling", "all"):
            scaling_section(work, data, base, reps, args.quick, say)
        if args.only in ("readme", "all"):
            import readme_command

            readme_command.section(work, max(3, reps), say)
        if args.only in ("established", "all") and args.established:
            established.section(work, established.Established(args.established, args.established_path), say)
        if args.only in ("grid", "all"):
            tool = established.Established(args.established, args.established_path, args.established_cache) \
                if args.established else None
            grid_section(work, data, say, tool)
    if args.only == "all":
        say("\n" + NOTES.read_text())
    return 0


if __name__ == "__main__":
    sys.path.insert(0, str(ROOT))
    raise SystemExit(main())
