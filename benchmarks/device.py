"""The GPU path, measured: the same searches on the CPU and on ``--device``, their children's metrics compared.

Usage::

    python benchmarks/device.py [--device cuda] [--quick] [--out FILE]

Each row runs ``minimal`` (holdout 0, no episodes) twice as real ``pytest`` sessions (``benchmarks/perf.py``'s
``run_session``, serial): on the CPU, and with ``--crossover-device=<device>``. Rows: hidden 1024 on 1,000
states and hidden 64 on 100,000 states (``--quick``: hidden 64 on 1,000 states, a self-check that runs anywhere).
It prints each row's wall times and speed-up and checks every child's metrics against the CPU run; it exits 1
when a child differs by more than the tolerance.

Tolerance: a device computes the same float32 arithmetic in another order (cuBLAS's reduction order, fused
kernels), so weights differ by rounding (~1e-6 relative a step) and, over thousands of Adam steps, by more. The
metrics count argmax decisions over the evaluation states, and only states near a tie between two actions can
flip: so every child's primary, agree_a and agree_b must be within ``TOLERANCE`` (2 percentage points) of the
CPU run's, and their mean absolute difference within ``MEAN_TOLERANCE`` (0.5 points); fine-tune steps must be
equal (the batches and stopping come from CPU generators). ``--device cpu`` compares the CPU with itself, where
every metric must be equal.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
TOLERANCE = 0.02
MEAN_TOLERANCE = 0.005
METRICS = ("primary", "agree_a", "agree_b")
ROWS = {"hidden 1024, 1,000 states": (1024, 1_000), "hidden 64, 100,000 states": (64, 100_000)}
QUICK = {"hidden 64, 1,000 states": (64, 1_000)}


def metrics(record: dict[str, Any]) -> dict[str, Any]:
    after = record.get("after_finetune") or {}
    return {"primary": record.get("primary"), "agree_a": (after.get("vs_parent_a") or {}).get("top1"),
            "agree_b": (after.get("vs_parent_b") or {}).get("top1"), "steps": record.get("finetune_steps")}


def compare(reference: dict[str, dict[str, Any]], other: dict[str, dict[str, Any]],
            tolerance: float = TOLERANCE) -> tuple[list[str], float]:
    """(one line per child outside the tolerance, mean absolute difference over every child's metrics)."""
    problems, diffs = [], []
    for child, ref in sorted(reference.items()):
        got = other.get(child)
        if got is None:
            problems.append(f"{child}: missing on the device")
            continue
        if ref["steps"] != got["steps"]:
            problems.append(f"{child}: {got['steps']} fine-tune steps, {ref['steps']} on the CPU")
        for key in METRICS:
            if ref[key] is None or got[key] is None:
                if ref[key] != got[key]:
                    problems.append(f"{child}: {key} {got[key]} vs {ref[key]} on the CPU")
                continue
            diffs.append(abs(got[key] - ref[key]))
            if diffs[-1] > tolerance:
                problems.append(f"{child}: {key} {got[key]:.4f} vs {ref[key]:.4f} on the CPU")
    return problems, statistics.fmean(diffs) if diffs else 0.0


def children(run_dir: Path) -> dict[str, dict[str, Any]]:
    manifest = json.loads((run_dir / "manifest.json").read_text())
    return {c["child_id"]: metrics(c) for c in manifest["children"]}


def main(argv: list[str] | None = None) -> int:
    sys.path[:0] = [str(HERE), str(HERE.parent)]  # perf.py beside this file, and this checkout's harness
    import perf

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--device", default="cuda", help="the device to compare with the CPU (default cuda)")
    ap.add_argument("--quick", action="store_true", help="one small row (a self-check)")
    ap.add_argument("--out", type=Path, default=None, help="also write the lines printed here to this file")
    args = ap.parse_args(argv)
    lines: list[str] = []
    failed = False

    def say(s: str) -> None:
        print(s, flush=True)
        lines.append(s)

    perf.compile_sources()
    say(f"| row | CPU wall s | {args.device} wall s | speed-up | CPU ms/step | {args.device} ms/step | children "
        f"| mean abs diff | outside tolerance |\n|---|---|---|---|---|---|---|---|---|")
    with tempfile.TemporaryDirectory(prefix="crossover-device-") as tmp:
        work = Path(tmp)
        for label, (hidden, states) in (QUICK if args.quick else ROWS).items():
            files = perf.make_inputs(work / "data", hidden=hidden, n_states=states)
            tag = f"h{hidden}_s{states}"
            cpu = perf.run_session(work, files, "minimal", 0, name=f"cpu_{tag}")
            dev = perf.run_session(work, files, "minimal", 0, extra=(f"--crossover-device={args.device}",),
                                   name=f"dev_{tag}")
            ref, got = children(work / f"rd_cpu_{tag}"), children(work / f"rd_dev_{tag}")
            exact = args.device == "cpu"  # the CPU against itself: bit-identical children
            problems, mean = compare(ref, got, 0.0 if exact else TOLERANCE)
            failed |= bool(problems) or mean > (0.0 if exact else MEAN_TOLERANCE) or dev.rc != 0 or cpu.rc != 0
            ms = [1e3 * r.phases.get("finetune", 0.0) / max(1, r.steps) for r in (cpu, dev)]
            say(f"| {label} | {cpu.wall_s:.2f} | {dev.wall_s:.2f} | {cpu.wall_s / dev.wall_s:.1f}x | {ms[0]:.3f} "
                f"| {ms[1]:.3f} | {len(got)}/{len(ref)} | {mean:.5f} | {len(problems)} |")
            for p in problems:
                say(f"  - {p}")
    tol, mean_tol = (0.0, 0.0) if args.device == "cpu" else (TOLERANCE, MEAN_TOLERANCE)
    say(f"\n{'FAILED' if failed else 'OK'}: every child within {tol} of the CPU run's primary, agree_a and "
        f"agree_b, their mean difference within {mean_tol}, the same fine-tune steps.")
    if args.out:
        args.out.write_text("\n".join(lines) + "\n")
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
