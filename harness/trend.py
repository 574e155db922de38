"""The trend of blend quality across stored sessions: a table and a picture (``python -m harness.history``)."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from harness.metrics import METRICS, RANKABLE
from harness.store import Stored, num


# -- trend ------------------------------------------------------------------------------------------------------------
def trend_rows(records: Sequence[Stored]) -> list[dict[str, Any]]:
    """Per record: commit, best child (rank 1 among finished children), its primary and return, degenerates."""
    rows = []
    for r in records:
        kids = [c for c in r.data.get("children") or [] if isinstance(c, dict)]
        ranked = sorted((c for c in kids if c.get("status") in RANKABLE and num(c.get("primary")) is not None),
                        key=lambda c: c.get("rank") or 0)
        best = ranked[0] if ranked else {}
        git = r.data.get("commit_info") or {}
        rows.append({"record": r.name, "commit": git.get("short"), "branch": git.get("branch"),
                     "dirty": bool(git.get("dirty")), "datetime": r.data.get("datetime"), "space": r.data.get("space"),
                     "children": len(kids), "best": best.get("child_id"), "primary": num(best.get("primary")),
                     "return": num(best.get("return")),
                     "degenerate": sum(c.get("status") == "degenerate" for c in kids)})
    return rows


def trend_table(rows: Sequence[Mapping[str, Any]]) -> str:
    primary, ret = METRICS.get("primary"), METRICS.get("return")
    body = [[r["record"], r["commit"], r["branch"] or "—", "yes" if r["dirty"] else "", r["space"], r["children"],
             r["best"] or "—", primary.format(r["primary"]), ret.format(r["return"]), r["degenerate"]] for r in rows]
    heads = ["record", "commit", "branch", "dirty", "space", "children", "best child", "primary", "return",
             "degenerate"]
    from tabulate import tabulate

    return str(tabulate(body, headers=heads, tablefmt="github", disable_numparse=True))


def plot_trend(records: Sequence[Stored], path: str | Path) -> Path:
    """Primary (and return, when any record has one) per child across records, as a PNG."""
    import matplotlib

    matplotlib.use("Agg")  # no display in CI
    import matplotlib.pyplot as plt

    metrics = ["primary"] + (["return"] if any(num(c.get("return")) is not None
                                                for r in records for c in r.children().values()) else [])
    fig, axes = plt.subplots(len(metrics), 1, figsize=(9, 3.5 * len(metrics)), squeeze=False)
    labels = [f"{r.number:04d}\n{(r.data.get('commit_info') or {}).get('short', '?')}" for r in records]
    ids = sorted({cid for r in records for cid in r.children()})
    for ax, metric in zip(axes[:, 0], metrics):
        for cid in ids:
            ys = [num(r.children().get(cid, {}).get(metric)) for r in records]
            ax.plot(range(len(records)), [math.nan if y is None else y for y in ys], marker="o", label=cid)
        ax.set_ylabel(metric)
        ax.set_xticks(range(len(records)), labels, fontsize=7)
    axes[0, 0].set_title("crossover children across commits")
    axes[0, 0].legend(fontsize=6, loc="best")
    fig.tight_layout()
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=90)
    plt.close(fig)
    return out
