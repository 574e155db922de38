"""Which lever matters: the same embedded parents searched with one lever after another, best child of each.

    python benchmarks/levers.py        # about 3 minutes on 2 cores; prints the README's table

Each row is a real session (its options in the row) on the embedded LunarLander parents and their held-out
episodes; a row's number is its best child's primary as a share of the blend bound (1 + agree_ab) / 2, the best
primary any policy can reach, with the 95 % interval of the paired bootstrap. The alignment rows are the weighted
0.5 child before any fine-tuning (the midpoint of the session's interpolation curves, barrier.json).
"""

from __future__ import annotations

import sys
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from sessions import read, session

ROWS: list[tuple[str, list[str]]] = [
    ("the established search: teacher A, `default-qat`", ["--crossover-space=default-qat"]),
    ("teacher `both`", ["--crossover-space=default-qat", "--crossover-teacher=both"]),
    ("teacher `both`, 50-epoch regime `xlong`",
     ["--crossover-space=custom", "--crossover-modes=random,layer,weighted", "--crossover-alphas=0.5",
      "--crossover-seeds=0", "--crossover-regimes=xlong", "--crossover-teacher=both"]),
    ("activation alignment, teachers `both`/`balanced`, `xlong`",
     ["--crossover-space=custom", "--crossover-modes=weighted,slerp", "--crossover-alphas=0.5",
      "--crossover-align=activations", "--crossover-regimes=xlong", "--crossover-teachers=both,balanced"]),
    ("every lever: the `frontier` space (64 children)", ["--crossover-space=frontier", "-n", "2"]),
]
ALIGN_ARGS = ["--crossover-space=custom", "--crossover-modes=weighted", "--crossover-alphas=0.5",
              "--crossover-regimes=short", "--crossover-align=none,weights,activations", "--crossover-teacher=both"]


def _share(value: float | None, bound: float) -> str:
    return "—" if value is None else f"{value / bound:.3f}"


def best_row(run_dir: Path) -> tuple[Mapping[str, Any], Mapping[str, Any]]:
    rows = [r for r in read(run_dir, "leaderboard.json") if not r["is_parent_baseline"] and r["status"] == "ok"]
    return max(rows, key=lambda r: r["primary_metric"]), read(run_dir, "manifest.json")["parents"]


def table(tmp: Path) -> str:
    """The README block: one line per lever, then the frontier recommendation's verdict per lever."""
    lines = ["| lever | best child | primary / bound (95 % interval) | return (weaker parent) |",
             "|---|---|---|---|"]
    frontier_dir = None
    for i, (label, args) in enumerate(ROWS):
        run_dir = session(args, tmp / f"lever{i}")
        best, parents = best_row(run_dir)
        bound = parents["bound"]
        interval = f"{_share(best['primary_metric_lo'], bound)}–{_share(best['primary_metric_hi'], bound)}"
        weaker = min(parents["returns"][p]["mean"] for p in ("parent_a", "parent_b")) if parents.get("returns") \
            else None
        ret = "—" if best["return_mean"] is None else f"{best['return_mean']:.1f}"
        lines.append(f"| {label} | `{best['child_id']}` | **{_share(best['primary_metric'], bound)}** ({interval}) | "
                     f"{ret} ({'—' if weaker is None else f'{weaker:.1f}'}) |")
        frontier_dir = run_dir
    align_dir = session(ALIGN_ARGS, tmp / "align")
    barrier, bound = read(align_dir, "barrier.json"), read(align_dir, "manifest.json")["parents"]["bound"]
    mid = barrier["alphas"].index(0.5)
    shares = ", ".join(f"{a} **{_share(c['primary'][mid], bound)}**" for a, c in barrier["curves"].items())
    lines += ["", f"Before any fine-tuning, the weighted 0.5 child reaches {shares} of the bound by alignment; "
              "the interpolation barrier on primary is " + ", ".join(
                  f"{a} {b['primary']:.3f}" for a, b in barrier["barrier"].items()) + "."]
    assert frontier_dir is not None
    verdicts = [ln.strip()[2:] for ln in (frontier_dir / "recommendation.txt").read_text().splitlines()
                if ln.strip().startswith("- ") and ": the best child per value is" in ln]
    lines += ["", "What the `frontier` session's recommendation says about each lever:", "",
              *(f"- {v}" for v in verdicts)]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    with tempfile.TemporaryDirectory() as tmp:
        sys.stdout.write(table(Path(tmp)))
