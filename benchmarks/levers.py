"""Which lever matters: the embedded parents searched by the `decisive` space, and what its answer says.

    python benchmarks/levers.py        # about 4 minutes on 2 cores (-n 2); prints the README's block

The session trains weighted 0.5, SLERP 0.5 and layer (aligned by activations) at two budgets (short, xlong), with
teacher a and teacher both, three replicates each, against the controls (each parent fine-tuned, a fresh network
distilled), and scores every child on 300 fresh evaluation episodes. The block lists the best recipes (mean over
replicates, the 95 % interval over replicates and episodes together), the lever verdicts and what crossing adds over
the best control at each budget, as recommendation.json holds them.
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

from sessions import read, session

ARGS = ["--crossover-space=decisive", "-n", "2"]
TOP = 8


def table(tmp: Path) -> str:
    run_dir = session(ARGS, tmp / "decisive")
    rec = read(run_dir, "recommendation.json")
    bound = rec["parents"]["bound"]
    lines = [f"`pytest benchmarks --crossover-space decisive -n 2` ({rec['children']} children, "
             f"{rec['replicates']} replicates, scored on 300 fresh episodes; the bound is {bound:.4f}):", "",
             "| rank | recipe | primary (95 % interval) | / bound | sd over replicates | P(best) |",
             "|---|---|---|---|---|---|"]
    for r in rec["recipes"][:TOP]:
        kind = " (control)" if r["control"] else ""
        lines.append(f"| {r['rank']} | `{r['recipe']}`{kind} | {r['primary']:.4f} ({r['primary_lo']:.3f}–"
                     f"{r['primary_hi']:.3f}) | {r['primary'] / bound:.3f} | {r['sd']:.3f} | {r['p_best']:.2f} |")
    counts = {lv: sum(v["lever"] == lv for v in rec["levers"]) for lv in {v["lever"] for v in rec["levers"]}}
    lines += ["", "The lever verdicts (the best recipe of a value against the best of the others):", ""]
    for v in rec["levers"]:
        if counts[v["lever"]] > 2 or v["gap"] >= 0:
            need = v.get("need") or {}
            episodes = f" or {need['episodes']} episodes" if need and need["episodes"] > rec["eval_units"] else ""
            more = f"; {need['replicates']} replicates{episodes} would decide it" if need else ""
            lines.append(f"- **{v['lever']}**: {v['value']} vs `{v['versus']}`: {v['gap']:+.4f} "
                         f"[{v['lo']:+.3f}, {v['hi']:+.3f}]: **{v['verdict']}**{more}")
    lines += ["", "What crossing adds over the best control, per budget:", ""]
    lines += [f"- {c['regime']}: `{c['crossover']}` minus `{c['control']}` = {c['gap']:+.4f} [{c['lo']:+.3f}, "
              f"{c['hi']:+.3f}]: **{c['verdict']}**" for c in rec["controls"]]
    chosen = rec.get("recommended") or {}
    what = (f"control `{chosen['child_id']}`" if chosen.get("control") else f"child `{chosen.get('child_id')}`") \
        if chosen else f"{rec['prefer_parent']['parent']} (a parent)"
    lines += ["", f"The decision: use {what}; next: {rec['next_step']}."]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    with tempfile.TemporaryDirectory() as tmp:
        sys.stdout.write(table(Path(tmp)))
