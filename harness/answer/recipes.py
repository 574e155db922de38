"""The answer at the level of recipes: what replicates share (a recipe on every axis but the repetition), ranked by
the mean over replicates with intervals over replicates and held-out episodes together
(:mod:`harness.evaluate.statistics`); the lever verdicts (:mod:`harness.answer.verdicts`); and, when the session ran
controls, what crossing adds over the best control at each fine-tune budget (regime).

With one replicate a recipe is one child, and its numbers are that child's.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from harness.answer.verdicts import MARGIN, lever_verdicts, verdict
from harness.core.memo import content_memo
from harness.evaluate.intervals import groups_from_rle
from harness.evaluate.metrics import RANKABLE, dig
from harness.search.axes import AXES

TOP = 10  # recipes listed in the text and the terminal


def unit_of(record: Mapping[str, Any]) -> str:
    """A record's recipe unit: its ``unit`` (the id without run index and repetition suffixes), or, for records
    written before units existed, its child id without the run index."""
    return str(record.get("unit") or str(record["child_id"]).split("_", 1)[-1])


def _measured(records: Sequence[Mapping[str, Any]]) -> dict[str, list[Mapping[str, Any]]]:
    units: dict[str, list[Mapping[str, Any]]] = {}
    for r in records:
        if r.get("status") in (*RANKABLE, "return-drop") and r.get("rows"):
            units.setdefault(unit_of(r), []).append(r)
    return units


def recipe_answer(manifest: Mapping[str, Any], margin: float = MARGIN) -> dict[str, Any] | None:
    """``{"recipes": [...ranked...], "levers": [...], "controls": [...], "replicates": K, "units": episodes}``, or
    None when nothing can be resampled (no split, no finished child)."""
    return _answer(manifest.get("children") or [], manifest.get("split") or {},
                   dig(manifest, "parents", "rows", "agree_ab"), margin)


@content_memo()
def _answer(records: Sequence[Mapping[str, Any]], split: Mapping[str, Any], agree_ab: Any,
            margin: float) -> dict[str, Any] | None:
    """:func:`recipe_answer` of what it reads (a session's end asks for it of one manifest from several places)."""
    from harness.evaluate.statistics import recipe_statistics

    units = _measured(records)
    if not units or not split:
        return None
    n = int(next(iter(units.values()))[0]["rows"]["n"])
    groups = groups_from_rle(split.get("eval_groups"), n)
    if len(groups) != n:
        return None
    stats = recipe_statistics({u: [r["rows"] for r in reps] for u, reps in units.items()}, groups, parents=agree_ab)
    summary = stats.summary()
    rows = sorted((_row(u, reps, summary[u]) for u, reps in units.items()), key=lambda r: -r["primary"])
    for rank, row in enumerate(rows, 1):
        row["rank"] = rank
    return {"recipes": rows, "levers": lever_verdicts(stats, levers(units), margin=margin),
            "controls": control_gaps(stats, units, margin), "overall": overall_gap(stats, rows, margin),
            "margin": margin, "replicates": max(len(v) for v in units.values()), "units": stats.units}


def overall_gap(stats: Any, rows: Sequence[Mapping[str, Any]], margin: float) -> dict[str, Any] | None:
    """The best crossover recipe minus the best control, over every budget (None without controls)."""
    best = {kind: next((r["recipe"] for r in rows if r["control"] == (kind == "control")), None)
            for kind in ("crossover", "control")}
    if best["crossover"] is None or best["control"] is None:
        return None
    gap = stats.gap(best["crossover"], best["control"])
    return {"crossover": best["crossover"], "control": best["control"], "gap": gap.point, "lo": gap.lo,
            "hi": gap.hi, "verdict": verdict(gap.lo, gap.hi, margin)}


def _row(unit: str, reps: Sequence[Mapping[str, Any]], s: Mapping[str, Any]) -> dict[str, Any]:
    first = reps[0]
    return {"recipe": unit, "mode": (first.get("crossover") or {}).get("mode"),
            "control": first.get("status") == "control",
            **{a.name: a.read(first) for a in AXES.values() if a.lever_axis},
            "children": [r["child_id"] for r in reps], "replicates": len(reps), "primary": s["mean"],
            "primary_lo": s["primary"][0], "primary_hi": s["primary"][1], "sd": s["sd"], "p_best": s["p_best"],
            "tied_with_best": s["tied_with_best"], "vs_parents": s.get("vs_parents")}


def levers(units: Mapping[str, Sequence[Mapping[str, Any]]]) -> dict[str, dict[str, list[str]]]:
    """Every lever the session varied: {lever: {value: [recipe units]}}: the crossover mode, each declared axis,
    each operator parameter, and crossing against the controls."""
    out: dict[str, dict[str, list[str]]] = {}

    def add(lever: str, value: Any, unit: str) -> None:
        out.setdefault(lever, {}).setdefault(str(value), []).append(unit)

    for unit, reps in units.items():
        first, control = reps[0], reps[0].get("status") == "control"
        cross = first.get("crossover") or {}
        add("crossover vs control", "control" if control else "crossover", unit)
        if control:
            continue  # a control has no crossover mode, parameter or alignment to weigh
        add("crossover mode", cross.get("mode"), unit)
        for name, value in cross.items():
            if name not in ("mode", "align"):
                add(f"{cross.get('mode')} {name}", value, unit)
        for axis in AXES.values():
            if axis.lever_axis:
                add(axis.lever, axis.read(first), unit)
    return {lever: values for lever, values in out.items() if len(values) > 1}


def control_gaps(stats: Any, units: Mapping[str, Sequence[Mapping[str, Any]]], margin: float) -> list[dict[str, Any]]:
    """Per fine-tune regime (budget): the best crossover recipe minus the best control, with its interval and
    verdict (a positive gap: crossing adds that much)."""
    regime = AXES.get("regime")
    by_regime: dict[str, dict[str, list[str]]] = {}
    for unit, reps in units.items():
        kind = "control" if reps[0].get("status") == "control" else "crossover"
        by_regime.setdefault(str(regime.read(reps[0])), {}).setdefault(kind, []).append(unit)
    out = []
    for name, kinds in by_regime.items():
        if len(kinds) < 2:
            continue
        best = {k: max(us, key=lambda u: float(stats.point["primary"][stats.column(u)])) for k, us in kinds.items()}
        gap = stats.gap(best["crossover"], best["control"])
        out.append({"regime": name, "crossover": best["crossover"], "control": best["control"], "gap": gap.point,
                    "lo": gap.lo, "hi": gap.hi, "verdict": verdict(gap.lo, gap.hi, margin)})
    return out


def lever_line(row: Mapping[str, Any], units: int | None = None) -> str:
    """One verdict as a sentence (``units``: the episodes the intervals rest on; more is what ``need`` may ask)."""
    said = {"matters": "it matters", "no difference": "no difference (within the equivalence margin)",
            "undecided": "undecided"}[row["verdict"]]
    need = row.get("need") or {}
    episodes = f" or {need['episodes']} held-out episodes" if need and need["episodes"] > (units or 0) else ""
    more = f"; {need['replicates']} replicates{episodes} would decide it" if need else ""
    return (f"{row['lever']}: {row['value']} ({row['recipe']}) vs {row['versus']}: {row['gap']:+.4f} "
            f"[{row['lo']:+.3f}, {row['hi']:+.3f}]: {said}{more}")


def control_line(row: Mapping[str, Any]) -> str:
    lead = {"matters": "crossing leads" if row["gap"] > 0 else "the control leads",
            "no difference": "no difference", "undecided": "undecided"}[row["verdict"]]
    return (f"budget {row['regime']}: best crossover {row['crossover']} minus best control {row['control']} = "
            f"{row['gap']:+.4f} [{row['lo']:+.3f}, {row['hi']:+.3f}]: {lead}")
