"""The pictures of one session (used by :mod:`harness.pictures.report`; their look is :mod:`harness.pictures.figure`'s).

Each picture is a :class:`Picture`: a name (its PNG is ``report_<name>.png``), a title, a caption and a ``draw``
callable that returns a matplotlib ``Figure``, or None when the session has nothing to draw in it.

Optional fields are drawn when present and never required: 95% intervals (``<column>_lo`` / ``<column>_hi`` on
a leaderboard row) as error bars, ``tied_with_best`` as a ring, ``teacher`` / ``align`` as extra heatmaps.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from harness.answer.leaderboard import axis_columns
from harness.pictures.figure import LINESTYLES, MARKERS, colour, handle, new_figure, side_legend

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

PARENT_STYLE = {"marker": "*", "s": 260, "color": "black", "zorder": 5}


@dataclass(frozen=True)
class Picture:
    name: str
    title: str
    caption: str
    draw: Callable[[], Figure | None]  # None: nothing to draw in this session (the report says so)
    cost: float = 1.0  # its drawing time relative to the others (measured), to share pictures out evenly


def _values(rows: Sequence[Mapping[str, Any]], key: str) -> list[Any]:
    return list(dict.fromkeys(r.get(key) for r in rows))


def _err(rows: Sequence[Mapping[str, Any]], column: str) -> list[list[float]] | None:
    """matplotlib's ``[[below...], [above...]]`` from ``<column>_lo`` / ``_hi``; None when no row has them."""
    if not any(r.get(f"{column}_lo") is not None for r in rows):
        return None
    below, above = [], []
    for r in rows:
        v, lo, hi = r.get(column), r.get(f"{column}_lo"), r.get(f"{column}_hi")
        below.append(max(0.0, v - lo) if v is not None and lo is not None else 0.0)
        above.append(max(0.0, hi - v) if v is not None and hi is not None else 0.0)
    return [below, above]


class _Keys:
    """Colour by crossover mode, marker by regime, the same in every picture of a session."""

    def __init__(self, rows: Sequence[Mapping[str, Any]]) -> None:
        in_space_order = sorted(rows, key=lambda r: r.get("index") or 0)
        self.modes = _values(in_space_order, "crossover_mode")
        self.regimes = _values(in_space_order, "finetune_regime")

    def colour(self, row: Mapping[str, Any]) -> str:
        return colour(self.modes.index(row.get("crossover_mode")))

    def marker(self, row: Mapping[str, Any]) -> str:
        return MARKERS[self.regimes.index(row.get("finetune_regime")) % len(MARKERS)]

    def handles(self) -> list[Any]:
        return ([handle(f"mode {m}", marker="o", color=colour(i)) for i, m in enumerate(self.modes)]
                + [handle(f"regime {g}", marker=MARKERS[i % len(MARKERS)], color="grey")
                   for i, g in enumerate(self.regimes)])


def _scatter(ax: Axes, rows: Sequence[Mapping[str, Any]], keys: _Keys, x: str, y: str) -> None:
    """One point per child (colour = mode, marker = regime), error bars where intervals exist, a ring around
    rank 1 and every child statistically tied with it."""
    # In the rows' order, not a set's: a set of strings iterates in an order that changes from process to process
    # (hash randomisation), and overlapping points would be drawn in another order in the drawer
    # (harness.pictures.drawer).
    for group in dict.fromkeys((keys.colour(r), keys.marker(r)) for r in rows):
        pts = [r for r in rows if (keys.colour(r), keys.marker(r)) == group]
        xs, ys = [r[x] for r in pts], [r[y] for r in pts]
        xerr, yerr = _err(pts, x), _err(pts, y)
        if xerr or yerr:
            ax.errorbar(xs, ys, xerr=xerr, yerr=yerr, fmt="none", ecolor=group[0], alpha=0.45, lw=1, zorder=2)
        ax.scatter(xs, ys, c=group[0], marker=group[1], edgecolors="white", linewidths=0.6, zorder=3)
    best = [r for r in rows if r.get("rank") == 1 or r.get("tied_with_best")]
    ax.scatter([r[x] for r in best], [r[y] for r in best], s=190, facecolors="none", edgecolors="black",
               linewidths=1.3, zorder=4)


def _best_label(rows: Sequence[Mapping[str, Any]]) -> str:
    return "tied with #1 (95% interval)" if any(r.get("tied_with_best") is not None for r in rows) else "#1"


def measured(rows: Sequence[Mapping[str, Any]]) -> list[Mapping[str, Any]]:
    """The children with both agreements (a child that did not finish has none)."""
    return [r for r in rows if not r.get("is_parent_baseline") and r.get("child_vs_parent_a_agreement") is not None
            and r.get("child_vs_parent_b_agreement") is not None]


# -- agreement ------------------------------------------------------------------------------------------------------
def agreement(rows: Sequence[Mapping[str, Any]], agree_ab: float | None) -> Figure:
    """agree_a vs agree_b: the whole square with the parents and the blend bound, and a zoom on the children."""
    kids = measured(rows)
    keys = _Keys(kids)
    fig = new_figure(5.4)
    whole, zoom = fig.subplots(1, 2)
    xa, yb = "child_vs_parent_a_agreement", "child_vs_parent_b_agreement"
    for ax in (whole, zoom):
        _scatter(ax, kids, keys, xa, yb)
        ax.axline((0, 0), slope=1, color="grey", lw=1, ls=":", zorder=1)
        if agree_ab is not None:
            # No policy beats agree_a + agree_b = 1 + agree_ab: the parents agree on agree_ab of the states, and on
            # every other state an action can match at most one of them.
            ax.axline((agree_ab, 1.0), (1.0, agree_ab), color="black", lw=1, ls="--", zorder=1)
        ax.set_xlabel("agree_a: acts as parent A (share of states)")
    whole.set_ylabel("agree_b: acts as parent B (share of states)")
    if agree_ab is not None:
        whole.scatter([1.0, agree_ab], [agree_ab, 1.0], **PARENT_STYLE)
        for (px, py), name in (((1.0, agree_ab), "A"), ((agree_ab, 1.0), "B")):
            whole.annotate(f"parent {name}", (px, py), xytext=(-12, -18) if name == "A" else (10, -4),
                           textcoords="offset points", ha="right" if name == "A" else "left")
    lows = [min(r[xa], r[yb]) for r in kids] + ([agree_ab] if agree_ab is not None else [])
    low = max(0.0, min(lows, default=0.0) - 0.05)
    whole.set_xlim(low, 1.03)
    whole.set_ylim(low, 1.03)
    whole.set_aspect("equal", adjustable="box")
    whole.set_title("all children, both parents")
    if kids:
        pad = 0.01
        zoom.set_xlim(min(r[xa] for r in kids) - pad, max(r[xa] for r in kids) + pad)
        zoom.set_ylim(min(r[yb] for r in kids) - pad, max(r[yb] for r in kids) + pad)
    for r in sorted(kids, key=lambda r: r.get("rank") or math.inf)[:3]:
        zoom.annotate(f"#{r['rank']}", (r[xa], r[yb]), xytext=(7, -12), textcoords="offset points", fontsize=9)
    zoom.set_title("zoom on the children")
    handles = [*keys.handles(), handle("parent", marker="*", color="black", markersize=12),
               handle("bound a + b = 1 + agree_ab", color="black", linestyle="--"),
               handle("diagonal a = b", color="grey", linestyle=":"),
               handle(_best_label(kids), marker="o", markerfacecolor="none", markeredgecolor="black",
                       markersize=12)]
    side_legend(fig, handles)
    return fig


# -- trade-offs -----------------------------------------------------------------------------------------------------
def front(points: Sequence[tuple[float, float]], x_higher_is_better: bool) -> list[tuple[float, float]]:
    """The (x, y) points no other point beats on both (y higher is better), in x order."""
    sign = 1 if x_higher_is_better else -1
    out = [p for p in points if not any(sign * q[0] >= sign * p[0] and q[1] >= p[1] and q != p for q in points)]
    return sorted(set(out))


def tradeoffs(rows: Sequence[Mapping[str, Any]], parents: Mapping[str, Any] | None) -> Figure | None:
    """Primary against each cost or benefit a child has (return, latency, model size), with the Pareto front of
    each pair; the parents as stars (their primary is the A-vs-B agreement)."""
    kids = [r for r in measured(rows) if r.get("primary_metric") is not None]
    panels = [(c, label, better) for c, label, better in (
        ("return_mean", "mean return ↑", True), ("latency_ms", "latency, ms (batch 1) ↓", False),
        ("model_kb", "ranked model on disk, kB ↓", False)) if kids and all(r.get(c) is not None for r in kids)]
    # A size every child shares says nothing: only a space with int8 or other-sized children gets that panel.
    panels = [p for p in panels if p[0] != "model_kb" or len({r["model_kb"] for r in kids}) > 1]
    if not panels:
        return None
    keys = _Keys(kids)
    fig = new_figure(4.6)
    axes = fig.subplots(1, len(panels), sharey=True, squeeze=False)[0]
    base = [r for r in rows if r.get("is_parent_baseline")]
    for ax, (col, label, better) in zip(axes, panels):
        _scatter(ax, kids, keys, col, "primary_metric")
        pts = front([(r[col], r["primary_metric"]) for r in kids], better)
        ax.plot([p[0] for p in pts], [p[1] for p in pts], color="black", lw=1, ls="-", alpha=0.6,
                # The best primary to be had at a given x: the front steps down toward better x.
                drawstyle="steps-pre" if better else "steps-post", zorder=1)
        shown = [r for r in base if r.get(col) is not None and r.get("primary_metric") is not None]
        ax.scatter([r[col] for r in shown], [r["primary_metric"] for r in shown], **PARENT_STYLE)
        for r in shown:
            ax.annotate(str(r["child_id"])[-1].upper(), (r[col], r["primary_metric"]), xytext=(7, -4),
                        textcoords="offset points", fontsize=9)
        ax.set_xlabel(label)
    axes[0].set_ylabel("primary = min(agree_a, agree_b) ↑")
    handles = [*keys.handles(), handle("parent A / B", marker="*", color="black", markersize=12),
               handle("Pareto front of the pair", color="black", linestyle="-"),
               handle(_best_label(kids), marker="o", markerfacecolor="none", markeredgecolor="black",
                       markersize=12)]
    side_legend(fig, handles)
    return fig


# -- heatmaps -------------------------------------------------------------------------------------------------------
def facets(rows: Sequence[Mapping[str, Any]]) -> list[str]:
    """The columns crossed with the mode: the regime, and every other axis where the space has several values."""
    kids = measured(rows)
    return ["finetune_regime", *(c for c in axis_columns() if len({r.get(c) for r in kids} - {None}) > 1)]


def heatmaps(rows: Sequence[Mapping[str, Any]]) -> Figure | None:
    """Mean primary per mode x regime (and x teacher, x align where they vary), each cell annotated."""
    kids = [r for r in measured(rows) if r.get("primary_metric") is not None]
    if not kids:
        return None
    kids.sort(key=lambda r: r.get("index") or 0)  # space order, as the space lists its modes and regimes
    cols = facets(rows)
    modes = _values(kids, "crossover_mode")
    fig = new_figure(0.9 + 0.5 * max(3, len(modes)), right=0.98, left=0.1)
    axes = fig.subplots(1, len(cols), squeeze=False)[0]
    vmin, vmax = min(r["primary_metric"] for r in kids), max(r["primary_metric"] for r in kids)
    for ax, col in zip(axes, cols):
        across = _values(kids, col)
        grid = [[math.nan] * len(across) for _ in modes]
        for i, m in enumerate(modes):
            for j, v in enumerate(across):
                cell = [r["primary_metric"] for r in kids if r["crossover_mode"] == m and r.get(col) == v]
                if cell:
                    grid[i][j] = sum(cell) / len(cell)
                    ax.text(j, i, f"{grid[i][j]:.4f}\n(n={len(cell)})", ha="center", va="center", fontsize=9,
                            color="white" if grid[i][j] < (vmin + vmax) / 2 else "black")
        ax.imshow(grid, cmap="viridis", vmin=vmin, vmax=vmax if vmax > vmin else vmin + 1e-9, aspect="auto")
        ax.set_xticks(range(len(across)), [str(v) for v in across])
        ax.set_yticks(range(len(modes)), [str(m) for m in modes])
        ax.set_xlabel(col.replace("finetune_", "fine-tune "))
        ax.set_ylabel("crossover mode")
        ax.grid(False)
    return fig


# -- fine-tune curves ----------------------------------------------------------------------------------------------


def finetune(records: Sequence[Mapping[str, Any]]) -> Figure | None:
    """Validation loss and agreement per epoch (epoch 0 = crossed, before fine-tuning), one line per child:
    colour = regime (regimes differ in length, so each group reads as one bundle), line style = mode; the dot
    marks the epoch whose weights were kept."""
    runs = [r for r in records if (r.get("finetune") or {}).get("val_losses")]
    if not runs:
        return None
    regimes = list(dict.fromkeys((r.get("finetune_regime") or {}).get("name") for r in runs))
    modes = list(dict.fromkeys((r.get("crossover") or {}).get("mode") for r in runs))
    fig = new_figure(4.6, wspace=0.25)
    loss_ax, agree_ax = fig.subplots(1, 2)
    for rec in runs:
        ft = rec["finetune"]
        c = colour(regimes.index((rec.get("finetune_regime") or {}).get("name")))
        ls = LINESTYLES[modes.index((rec.get("crossover") or {}).get("mode")) % len(LINESTYLES)]
        for ax, first, series in ((loss_ax, "initial_val_loss", "val_losses"),
                                  (agree_ax, "initial_val_agreement", "val_agreements")):
            ys = [ft.get(first), *(ft.get(series) or [])]
            xs = [i for i, y in enumerate(ys) if y is not None]
            ax.plot(xs, [ys[i] for i in xs], color=c, ls=ls, alpha=0.8, lw=1.2)
            kept = ft.get("best_epoch")
            if isinstance(kept, int) and kept + 1 < len(ys) and ys[kept + 1] is not None:
                ax.plot([kept + 1], [ys[kept + 1]], "o", color=c, markersize=4.5)
    loss_ax.set_yscale("log")
    loss_ax.set_ylabel("validation loss (log scale)")
    agree_ax.set_ylabel("validation agreement with the teacher")
    for ax in (loss_ax, agree_ax):
        ax.set_xlabel("epoch (0 = crossed, before fine-tuning)")
    handles = [*(handle(f"regime {g}", color=colour(i), linestyle="-") for i, g in enumerate(regimes)),
               *(handle(f"mode {m}", color="grey", linestyle=LINESTYLES[i % len(LINESTYLES)])
                 for i, m in enumerate(modes)), handle("kept epoch", marker="o", color="grey")]
    side_legend(fig, handles)
    return fig


# -- budget curves -------------------------------------------------------------------------------------------------


def budget_points(history: Mapping[str, Any]) -> tuple[list[int], list[float]]:
    """(fine-tune steps, validation primary) of one trained model's history (:mod:`harness.train.finetune`): step 0 is
    the model before fine-tuning, then one point per validated epoch; empty when the history has no curve."""
    ys = [history.get("initial_val_primary"), *(history.get("val_primary") or [])]
    xs = [0, *(history.get("epoch_steps") or [])][:len(ys)]
    return [x for x, y in zip(xs, ys) if y is not None], [y for x, y in zip(xs, ys) if y is not None]


def budget_curves(groups: Mapping[str, Sequence[Mapping[str, Any]]]) -> Figure | None:
    """Validation primary against fine-tune steps, one line per group (a label -> its replicates' fine-tune
    histories, e.g. the best recipe of each operator and each control): the line is the mean over the replicates
    that reached that step, the band spans them (lowest to highest); the legend says how many replicates."""
    curves = {label: [budget_points(h) for h in hs] for label, hs in groups.items()}
    curves = {label: [c for c in cs if c[0]] for label, cs in curves.items()}
    curves = {label: cs for label, cs in curves.items() if cs}
    if not curves:
        return None
    fig = new_figure(4.6)
    ax = fig.subplots()
    handles = []
    for i, (label, reps) in enumerate(curves.items()):
        steps = sorted({x for xs, _ in reps for x in xs})
        at = [[dict(zip(xs, ys))[x] for xs, ys in reps if x in xs] for x in steps]
        c = colour(i)
        ax.plot(steps, [sum(v) / len(v) for v in at], color=c, marker=MARKERS[i % len(MARKERS)], ms=3.5)
        if len(reps) > 1:
            ax.fill_between(steps, [min(v) for v in at], [max(v) for v in at], color=c, alpha=0.18, lw=0)
        handles.append(handle(f"{label} ({len(reps)} replicate{'s' if len(reps) != 1 else ''})", color=c,
                              linestyle="-", marker=MARKERS[i % len(MARKERS)]))
    ax.set_xlabel("fine-tune steps (0 = before fine-tuning)")
    ax.set_ylabel("validation primary min(agree_a, agree_b)")
    handles.append(handle("band: lowest to highest replicate", color="grey", linestyle="-", alpha=0.4, lw=6))
    side_legend(fig, handles)
    return fig


# -- barrier -------------------------------------------------------------------------------------------------------
def barrier(data: Mapping[str, Any]) -> Figure | None:
    """The interpolation curve per alignment method: primary (solid), agree_a / agree_b (thin), and the return
    when measured; the legend holds each method's barrier."""
    alphas, curves = data.get("alphas") or [], data.get("curves") or {}
    if not alphas or not curves:
        return None
    with_return = any(any(v is not None for v in (c.get("return") or [])) for c in curves.values())
    fig = new_figure(4.6)
    axes = fig.subplots(1, 2 if with_return else 1, squeeze=False)[0]
    handles = []
    for i, (method, curve) in enumerate(curves.items()):
        c = colour(i)
        b = (data.get("barrier") or {}).get(method) or {}
        label = f"{method} (barrier {b['primary']:.4f})" if b.get("primary") is not None else str(method)
        for key, ls, lw in (("primary", "-", 2.0), ("agree_a", "--", 1.0), ("agree_b", ":", 1.0)):
            ys = curve.get(key) or []
            axes[0].plot(alphas[:len(ys)], [math.nan if y is None else y for y in ys], color=c, ls=ls, lw=lw)
        handles.append(handle(label, color=c, linestyle="-"))
        if with_return:
            ys = curve.get("return") or []
            axes[1].plot(alphas[:len(ys)], [math.nan if y is None else y for y in ys], color=c, marker="o", ms=4)
    axes[0].set_xlabel("alpha, the weight of A (0 = parent B, 1 = parent A)")
    axes[0].set_ylabel("agreement")
    if with_return:
        axes[1].set_xlabel("alpha, the weight of A (0 = parent B, 1 = parent A)")
        axes[1].set_ylabel("mean return")
    handles += [handle("primary", color="grey", linestyle="-"), handle("agree_a", color="grey", linestyle="--"),
                handle("agree_b", color="grey", linestyle=":")]
    side_legend(fig, handles)
    return fig


def budget_groups(records: Sequence[Mapping[str, Any]]) -> dict[str, list[Mapping[str, Any]]]:
    """The replicates' fine-tune histories of the best recipe (by mean primary) of each crossover mode and of each
    control, labelled by recipe; only recipes whose histories carry a validation primary."""
    units: dict[str, list[Mapping[str, Any]]] = {}
    for r in records:
        if r.get("primary") is not None and (r.get("finetune") or {}).get("val_primary"):
            units.setdefault(str(r.get("unit") or r["child_id"]), []).append(r)
    best: dict[str, str] = {}
    for unit, reps in units.items():
        kind = str((reps[0].get("crossover") or {}).get("mode"))
        mean = sum(float(x["primary"]) for x in reps) / len(reps)
        if kind not in best or mean > sum(float(x["primary"]) for x in units[best[kind]]) / len(units[best[kind]]):
            best[kind] = unit
    return {unit: [x["finetune"] for x in units[unit]] for unit in best.values()}


def session_pictures(rows: Sequence[Mapping[str, Any]], records: Sequence[Mapping[str, Any]],
                     parents: Mapping[str, Any] | None, barrier_data: Mapping[str, Any] | None) -> list[Picture]:
    """The pictures of a session, in the report's order (the barrier only when the session computed one)."""
    ab = (parents or {}).get("agree_ab")
    pictures = [
        Picture("agreement", "Blend: agreement with parent A vs parent B",
                "One point per child (colour: crossover mode, marker: fine-tune regime); stars: the parents. A child "
                "on the dashed line blends as well as the parents' disagreement allows; a child near a star copies "
                "that parent. Ringed: the best child and those statistically tied with it.",
                lambda: agreement(rows, ab), cost=3.0),
        Picture("tradeoffs", "What agreement costs",
                "Primary against return, latency and (where it varies) model size; the line joins the children no "
                "other child beats on both axes of its panel.", lambda: tradeoffs(rows, parents), cost=2.0),
        Picture("heatmap", "Which recipes work",
                "Mean primary of the finished children per crossover mode and fine-tune regime (and teacher / "
                "alignment where the space varies them); n = children in the cell.", lambda: heatmaps(rows)),
        Picture("finetune", "How fine-tuning converged",
                "Validation loss and agreement with the teacher per epoch, one line per child (colour: regime, line "
                "style: mode); the dot marks the epoch whose weights were kept.", lambda: finetune(records), cost=2.0),
    ]
    groups = budget_groups(records)
    if len(groups) > 1 and any(r.get("status") == "control" for r in records):
        pictures.append(Picture("budget", "Crossing against the controls, by fine-tune budget",
                                "Validation primary against fine-tune steps: the best recipe of each crossover mode "
                                "and each control, a line at the mean over its replicates and a band from the lowest "
                                "to the highest replicate.", lambda: budget_curves(groups), cost=2.0))
    if barrier_data:
        pictures.append(Picture("barrier", "Interpolation barrier",
                                "Agreement (and return) along the straight line between the parents' weights, per "
                                "alignment method.", lambda: barrier(barrier_data)))
    return pictures
