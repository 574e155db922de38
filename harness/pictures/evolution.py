"""An evolution's picture (``evolution.png``): each generation's best recipe with its 95 % interval against the
founders' bound, and the lineage tree (which children of which generation became the next parents).

Both panels read lineage.json's state only (harness.evolve.driver): every score there is against one reference.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from harness.core.atomic import write_bytes
from harness.pictures.figure import DPI, WIDTH_IN, colour, png, style

PICTURE = "evolution.png"


def _label(path: str) -> str:
    """A node as the tree names it: a child by its mode, regime and replicate (``layer long r0``; the generation is
    the x axis), a founder by its file name."""
    p = Path(path)
    if not p.parent.name.startswith("gen_"):
        return p.name
    parts = p.name.split("_")[1:]
    return " ".join(x for x in parts if not (x[:1] in "as" and x[1:2].isdigit() or x == "sNone"))


def _scores(ax: Any, gens: list[Mapping[str, Any]]) -> None:
    xs = [g["generation"] for g in gens]
    best = [g["best"] for g in gens]
    ys = [b["primary"] for b in best]
    err = [[y - b["lo"] for y, b in zip(ys, best)], [b["hi"] - y for y, b in zip(ys, best)]]
    ax.errorbar(xs, ys, yerr=err, fmt="o-", color=colour(0), capsize=4, label="best recipe (95 % interval)")
    bound = gens[0].get("bound")
    if bound is not None:
        ax.axhline(bound, color=colour(3), linestyle="--", label=f"founders' bound {bound:.3f}")
    agree = gens[0].get("agree_ab")
    if agree is not None:
        ax.axhline(agree, color=colour(7), linestyle=":", label=f"founders' agreement {agree:.3f}")
    ax.set_xticks(xs)
    ax.set_xlabel("generation")
    ax.set_ylabel("primary, against the founders")
    ax.set_title("Best recipe per generation")
    ax.legend(loc="best")  # the points move with the numbers: the least covered corner


def _tree(ax: Any, gens: list[Mapping[str, Any]]) -> None:
    """Generation g's parents at x = g - 1 (founders at 0), its carried children at x = g, joined by lines."""
    placed: dict[str, tuple[float, float]] = {}

    def place(path: str, x: float, y: float) -> tuple[float, float]:
        if path not in placed:
            placed[path] = (x, y)
            ax.plot([x], [y], "o", color=colour(0 if x == 0 else 2))
            ax.annotate(_label(path), (x, y), textcoords="offset points", xytext=(0, 9 if y else -14),
                        fontsize=8, ha="center")
        return placed[path]

    for gen in gens:
        g = gen["generation"]
        parents = [gen["parents"][s]["path"] for s in ("a", "b")]
        starts = [place(p, g - 1, i) for i, p in enumerate(parents)]
        for i, s in enumerate(("a", "b")):
            child = gen["next_parents"][s]
            if child in parents:
                continue  # a founder carried over (best+founder)
            end = place(child, g, i)
            for start in starts:
                ax.plot([start[0], end[0]], [start[1], end[1]], color=colour(7), linewidth=0.8)
    ax.set_xticks(range(len(gens) + 1))
    ax.set_xlabel("generation (0: founders)")
    ax.set_yticks([])
    ax.set_ylim(-0.4, 1.4)
    ax.set_xlim(-0.5, len(gens) + 0.5)
    ax.set_title("Lineage: each generation's parents and the children carried forward")


def draw_evolution(state: Mapping[str, Any], out: str | Path) -> Path:
    """Write ``<out>/evolution.png``; its path."""
    from matplotlib.figure import Figure

    gens = list(state["generations"])
    with style():
        fig = Figure(figsize=(WIDTH_IN, 4.2), dpi=DPI)
        left, right = fig.subplots(1, 2)
        if gens:
            _scores(left, gens)
            _tree(right, gens)
        fig.tight_layout()
        data = png(fig)
    return write_bytes(Path(out) / PICTURE, data)
