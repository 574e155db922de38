"""Blend quality across stored sessions: the comparable series, each recipe's values across commits, sustained
shifts (steps), and the table and picture of ``python -m harness.history``.

A *series* is the records that can be compared with each other (:func:`series_key`: the same fingerprint).
Within one, a *recipe* is a child id without its run index (``001_layer_a0p50_sNone_short`` and
``003_layer_a0p50_sNone_short`` are the same recipe, ``layer_a0p50_sNone_short``, in two spaces' numbering).
"""

from __future__ import annotations

import hashlib
import json
import math
import re
import statistics
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from harness.evaluate.metrics import METRICS, RANKABLE
from harness.records.store import Stored, num

if TYPE_CHECKING:
    from matplotlib.figure import Figure

    from harness.records.compare import FailCheck

_INDEX = re.compile(r"^\d+_")
STEP_WINDOW = 3


# -- series and recipes ---------------------------------------------------------------------------------------------
def series_key(record: Mapping[str, Any]) -> str:
    """What makes records comparable: their ``fingerprint`` (harness.records.store.comparable_on: the space and every
    setting and input that changes numbers); the space, teacher and inputs' sha256 ride along for the titles. The
    one place that decides it (every page, plot and step of the history site groups by it)."""
    return json.dumps({"space": record.get("space"), "teacher": (record.get("options") or {}).get("teacher"),
                       "fingerprints": record.get("fingerprints") or {}, "fingerprint": record.get("fingerprint")},
                      sort_keys=True)


@dataclass(frozen=True)
class Series:
    key: str
    records: tuple[Stored, ...]

    @property
    def info(self) -> dict[str, Any]:
        return dict(json.loads(self.key))

    @property
    def slug(self) -> str:
        """A file-name-safe name: ``minimal-a-1c0e52f3`` (space, teacher, a hash of the whole key)."""
        raw = f"{self.info.get('space')}-{self.info.get('teacher')}-{hashlib.sha1(self.key.encode()).hexdigest()[:8]}"
        return re.sub(r"[^A-Za-z0-9._-]", "_", raw)

    @property
    def title(self) -> str:
        fp = self.info.get("fingerprints") or {}
        inputs = "/".join(str(fp.get(k) or "?")[:8] for k in ("parent_a", "parent_b", "states"))
        return f"space {self.info.get('space')}, teacher {self.info.get('teacher')}, inputs {inputs}"


def group_series(records: Sequence[Stored]) -> list[Series]:
    """The records grouped by :func:`series_key`, each in store order, the series in order of first record."""
    groups: dict[str, list[Stored]] = {}
    for r in records:
        groups.setdefault(series_key(r.data), []).append(r)
    return [Series(k, tuple(v)) for k, v in groups.items()]


def recipe_key(child_id: str) -> str:
    return _INDEX.sub("", str(child_id), count=1)


def best_child(record: Stored) -> dict[str, Any]:
    """Rank 1 among the finished children of a record, or {}."""
    kids = [c for c in record.data.get("children") or [] if isinstance(c, dict)]
    ranked = sorted((c for c in kids if c.get("status") in RANKABLE and num(c.get("primary")) is not None),
                    key=lambda c: c.get("rank") or 0)
    return ranked[0] if ranked else {}


def recipes(series: Series) -> dict[str, dict[str, Any]]:
    """Recipe key -> ``{"regime": ..., "label": ...}`` for every recipe in the series, in order of appearance."""
    out: dict[str, dict[str, Any]] = {}
    for r in series.records:
        for c in sorted(r.children().values(), key=lambda c: str(c["child_id"])):  # space order (run index)
            key = recipe_key(c["child_id"])
            regime = c.get("finetune_regime")
            label = key[:-len(f"_{regime}")] if regime and key.endswith(f"_{regime}") else key
            out.setdefault(key, {"regime": regime, "label": label})
    return out


def value(child: Mapping[str, Any] | None, metric: str) -> float | None:
    return None if not child else num(child.get(metric))


def interval(child: Mapping[str, Any] | None, metric: str) -> tuple[float, float] | None:
    """A stored 95% interval of ``metric``: ``<name>_lo`` / ``_hi`` or, as leaderboard rows name them,
    ``<column>_lo`` / ``_hi``; None when the record has none."""
    if not child:
        return None
    for base in (metric, METRICS.get(metric).column):
        lo, hi = num(child.get(f"{base}_lo")), num(child.get(f"{base}_hi"))
        if lo is not None and hi is not None:
            return lo, hi
    return None


def recipe_children(series: Series, key: str) -> list[dict[str, Any] | None]:
    """The recipe's child in each record of the series (None where it did not run)."""
    return [next((c for c in r.children().values() if recipe_key(c["child_id"]) == key), None)
            for r in series.records]


def recipe_values(series: Series, key: str, metric: str) -> list[float | None]:
    """One value per record of the series, whatever the child's status (None where the recipe did not run or has
    no such metric: a diverged child has none), so a child that went wrong shows where it went, not a gap."""
    return [value(child, metric) for child in recipe_children(series, key)]


def not_ok(child: Mapping[str, Any] | None) -> bool:
    """A child that ran with a status other than ok (degenerate, return-drop, ...): marked in the trend."""
    return child is not None and child.get("status") not in (None, "ok")


# -- steps ----------------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Step:
    index: int  # the first record after the shift
    before: float
    after: float


def steps(values: Sequence[float | None], check: FailCheck, window: int = STEP_WINDOW) -> list[Step]:
    """Sustained shifts for the worse: record ``i`` starts one when the median of the (up to) ``window`` values
    before it is worse than each of the next ``window`` values by more than the check's threshold, so one bad
    record is not a step (it is a regression of its own) and a step is only called once ``window`` records
    confirm it. Of consecutive starts only the first is kept."""
    pts = [(i, v) for i, v in enumerate(values) if v is not None]
    out: list[Step] = []
    for k in range(1, len(pts) - window + 1):
        before = [v for _, v in pts[max(0, k - window):k]]
        after = [v for _, v in pts[k:k + window]]
        base = statistics.median(before)
        if all(check.breached(base, v) for v in after) and not (out and out[-1].index == pts[k - 1][0]):
            out.append(Step(pts[k][0], base, statistics.median(after)))
    return out


# -- table ----------------------------------------------------------------------------------------------------------
def trend_rows(records: Sequence[Stored]) -> list[dict[str, Any]]:
    """Per record: commit, best child (rank 1 among finished children), its primary and return, degenerates."""
    rows = []
    for r in records:
        kids = [c for c in r.data.get("children") or [] if isinstance(c, dict)]
        best = best_child(r)
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


# -- picture --------------------------------------------------------------------------------------------------------
def commit_label(record: Stored) -> str:
    git = record.data.get("commit_info") or {}
    return f"{str(git.get('short') or 'nogit')[:7]}{'*' if git.get('dirty') else ''}\n#{record.number}"


def trend_figure(series: Series) -> Figure:
    """One row of panels for the best child, then one per regime with a line per recipe (the same colour for a
    recipe in every regime), primary and (when measured) return side by side; 95% intervals as bands."""
    from harness.pictures import figure as fg

    metrics = ["primary"] + (["return"] if any(value(c, "return") is not None for r in series.records
                                               for c in r.children().values()) else [])
    by_recipe = recipes(series)
    regimes = list(dict.fromkeys(v["regime"] for v in by_recipe.values()))
    labels = list(dict.fromkeys(v["label"] for v in by_recipe.values()))
    n = len(series.records)
    fig = fg.new_figure(1.2 + 2.3 * (1 + len(regimes)), bottom_in=0.85, top_in=0.75, hspace=0.6, wspace=0.18)
    axes = fig.subplots(1 + len(regimes), len(metrics), squeeze=False, sharex=True)
    xs = list(range(n))
    for j, metric in enumerate(metrics):
        best = [best_child(r) for r in series.records]
        _line(axes[0][j], xs, [value(b, metric) for b in best], [interval(b, metric) for b in best], "black", "-", 2.2)
        axes[0][j].set_title(f"best child: {metric}")
        for i, regime in enumerate(regimes, 1):
            for key, info in by_recipe.items():
                if info["regime"] != regime:
                    continue
                k = labels.index(info["label"])
                kids = recipe_children(series, key)
                _line(axes[i][j], xs, recipe_values(series, key, metric), [interval(c, metric) for c in kids],
                      fg.colour(k % 20), fg.LINESTYLES[(k // 20) % len(fg.LINESTYLES)], 1.3,
                      marked=[not_ok(c) for c in kids])
            axes[i][j].set_title(f"regime {regime}: {metric} per recipe")
    step = max(1, math.ceil(n * len(metrics) / 16))  # ~45 px per label: at most 16 across the figure
    for ax in axes[-1]:
        ax.set_xticks(xs[::step], [commit_label(r) for r in series.records][::step], fontsize=8)
        ax.set_xlabel("record and commit, in store order (* = dirty tree)")
        ax.set_xlim(-0.3, max(n - 0.7, 0.3))
    commits = {r.commit() for r in series.records}
    fig.suptitle(f"{series.title}: {n} records of {len(commits)} commit{'s' * (len(commits) != 1)}", fontsize=11)
    fg.side_legend(fig, [fg.handle("best child", color="black", linestyle="-", linewidth=2.2),
                        *(fg.handle(lbl, color=fg.colour(k % 20),
                                        linestyle=fg.LINESTYLES[(k // 20) % len(fg.LINESTYLES)])
                          for k, lbl in enumerate(labels)),
                        fg.handle(NOT_OK_LABEL, color="black", marker=NOT_OK_MARKER, linestyle="none")])
    return fig


NOT_OK_MARKER = "X"
NOT_OK_LABEL = "child not ok (degenerate, return-drop, ...)"


def _line(ax: Any, xs: list[int], ys: Sequence[float | None], bands: Sequence[tuple[float, float] | None],
          colour: str, ls: str, lw: float, marked: Sequence[bool] = ()) -> None:
    ax.plot(xs, [math.nan if y is None else y for y in ys], color=colour, ls=ls, lw=lw, marker="o", ms=3.5)
    bad = [(x, y) for x, y, m in zip(xs, ys, marked) if m and y is not None]
    if bad:
        ax.plot([x for x, _ in bad], [y for _, y in bad], ls="none", marker=NOT_OK_MARKER, ms=8, color=colour,
                markeredgecolor="black", markeredgewidth=0.8, zorder=5)
    if any(b is not None for b in bands):
        lo = [math.nan if b is None else b[0] for b in bands]
        hi = [math.nan if b is None else b[1] for b in bands]
        ax.fill_between(xs, lo, hi, color=colour, alpha=0.15, lw=0)


def trend_png(series: Series) -> bytes:
    from harness.pictures import figure

    with figure.style():
        return figure.png(trend_figure(series))


def plot_trend(records: Sequence[Stored], path: str | Path) -> list[Path]:
    """One PNG per series: ``path`` itself when the store holds one series, else ``<stem>-<series slug><suffix>``
    beside it, one each (one chart never mixes spaces, teachers or inputs)."""
    from harness.core.atomic import write_bytes

    out = Path(path)
    groups = group_series(records)
    written = []
    for s in groups:
        target = out if len(groups) == 1 else out.with_name(f"{out.stem}-{s.slug}{out.suffix}")
        written.append(write_bytes(target, trend_png(s)))
    return written
