"""The recommendation: which child to use (or that a parent serves better), and why, from this session's numbers.

Built from the leaderboard rows (with their bootstrap intervals) and the manifest: one decision — a recommended
child, or "prefer a parent", never both — the children tied with it, the best child per mode and per regime, a
statement when the session ran a subset, and advice that follows from what was measured. ``recommendation.json``
holds it for machines; ``recommendation.txt`` is the same, for people.
"""

from __future__ import annotations

import statistics
from collections.abc import Mapping, Sequence
from typing import Any

from harness.evaluate.metrics import METRICS
from harness.search.axes import AXES

ELIGIBLE = ("ok",)  # degenerate, diverged, return-drop, error and lost children are never recommended
_PULL = 0.10  # every child closer to one parent than the other by more than this: the teacher pulls that way


def _num(row: Mapping[str, Any], column: str) -> dict[str, Any]:
    """A metric of a row as {value, lo, hi} (the interval when the bootstrap gave one)."""
    return {"value": row.get(column), "lo": row.get(f"{column}_lo"), "hi": row.get(f"{column}_hi")}


def _brief(row: Mapping[str, Any]) -> dict[str, Any]:
    return {"child_id": row["child_id"], "mode": row["crossover_mode"], "regime": row["finetune_regime"],
            "primary": _num(row, "primary_metric"), "agree_a": _num(row, "child_vs_parent_a_agreement"),
            "agree_b": _num(row, "child_vs_parent_b_agreement"), "bound_ratio": row.get("bound_ratio"),
            "return": {"value": row.get("return_mean"), "se": row.get("return_se")},
            "status": row["status"], "p_best": row.get("p_best")}


def recommend(rows: Sequence[Mapping[str, Any]], manifest: Mapping[str, Any]) -> dict[str, Any]:
    """The machine-readable recommendation (see the module docstring)."""
    parents = manifest.get("parents") or {}
    children = [r for r in rows if not r["is_parent_baseline"]]
    finished = [r for r in children if r["primary_metric"] is not None and r["status"] not in ("diverged",)]
    eligible = [r for r in finished if r["status"] in ELIGIBLE]
    ab = parents.get("agree_ab")
    out: dict[str, Any] = {
        "counts": {s: sum(r["status"] == s for r in children) for s in sorted({r["status"] for r in children})},
        "children": len(children), "recommended": None, "prefer_parent": None, "tied_with_recommended": [],
        "best_per_mode": _best_by(eligible, "crossover_mode"),
        **{f"best_per_{a.name}": _best_by(eligible, a.key) for a in AXES.values() if a.lever_axis},
        "subset": subset_statement(manifest), "parents": {"agree_ab": ab, "bound": parents.get("bound"),
                                                           "returns": _parent_returns(parents)},
        "advice": [],
        "unfinished": [{"child_id": r["child_id"], "status": r["status"]} for r in children
                       if r["status"] in ("diverged", "error", "lost")],
    }
    best = eligible[0] if eligible else None
    beats = best is not None and (ab is None or _margin(best, ab) > 0)
    if best is not None and beats:
        out["recommended"] = _brief(best)
        out["recommended"]["why"] = _why(best, ab)
        out["tied_with_recommended"] = [r["child_id"] for r in eligible[1:] if r.get("tied_with_best")]
    else:
        out["prefer_parent"] = _prefer_parent(parents, best, ab, bool(children))
    out["advice"] = advice(finished, manifest, out)
    return out


def _margin(row: Mapping[str, Any], ab: float) -> float:
    """How far a child's primary is above the parents' agreement, at the low end of its paired interval when the
    bootstrap gave one (the point estimate otherwise)."""
    lo = row.get("primary_vs_parents_lo")
    return float(lo) if lo is not None else float(row["primary_metric"]) - ab


def _best_by(rows: Sequence[Mapping[str, Any]], key: str) -> dict[str, Any]:
    best: dict[str, Any] = {}
    for r in rows:  # rows are ranked: the first of each group is its best
        best.setdefault(str(r[key]), _brief(r))
    return best


def _parent_returns(parents: Mapping[str, Any]) -> dict[str, Any]:
    return {p: (parents.get("returns") or {}).get(p, {}).get("mean") for p in ("parent_a", "parent_b")
            if (parents.get("returns") or {}).get(p)}


def _why(best: Mapping[str, Any], ab: float | None) -> str:
    if ab is None:
        return "the highest primary among the children that finished well"
    paired = best.get("primary_vs_parents_lo") is not None
    margin = "its primary is significantly above (paired 95 % interval)" if paired else "its primary is above"
    return (f"the highest primary among the children that finished well, and {margin} the parents' agreement "
            f"{ab:.4f}: it agrees with both parents more than either parent agrees with the other")


def _prefer_parent(parents: Mapping[str, Any], best: Mapping[str, Any] | None, ab: float | None,
                   any_child: bool) -> dict[str, Any]:
    returns = _parent_returns(parents)
    pick = max(returns, key=lambda p: returns[p]) if returns else "parent_a"
    if not any_child:
        why = "no child ran"
    elif best is None:
        why = "no child finished well (see the status column)"
    else:
        p = METRICS.get("primary")
        why = (f"no child agrees with both parents measurably more than the parents agree with each other: the best, "
               f"{best['child_id']}, has primary {p.format_row(best)} against the parents' {ab:.4f}")
    reason = f"it has the higher return, {returns[pick]:.1f}" if len(returns) == 2 else ""
    return {"parent": pick, "why": why, "which": reason}


def advice(finished: Sequence[Mapping[str, Any]], manifest: Mapping[str, Any],
           decision: Mapping[str, Any]) -> list[str]:
    """Advice that follows from this session's numbers, each line a measured observation and what it suggests."""
    lines: list[str] = []
    teacher = (manifest.get("options") or {}).get("teacher")
    a = [r["child_vs_parent_a_agreement"] for r in finished if r["child_vs_parent_a_agreement"] is not None]
    b = [r["child_vs_parent_b_agreement"] for r in finished if r["child_vs_parent_b_agreement"] is not None]
    if a and b and len(a) == len(b):
        gaps = [x - y for x, y in zip(a, b)]
        toward_a, toward_b = all(g > _PULL for g in gaps), all(g < -_PULL for g in gaps)
        for side, other, pulled in (("A", "B", toward_a), ("B", "A", toward_b)):
            if pulled:
                mean_near, mean_far = (statistics.fmean(a), statistics.fmean(b)) if side == "A" else \
                    (statistics.fmean(b), statistics.fmean(a))
                source = f"the teacher ({teacher})" if teacher else "the teacher"
                lines.append(f"every child sits near parent {side} (mean agreement {mean_near:.3f}) and far from "
                             f"parent {other} ({mean_far:.3f}): {source} pulls toward {side}; "
                             "--crossover-teacher both distils from both parents")
    lines += _regime_advice(finished)
    lines += levers(decision)
    if manifest.get("barrier"):
        from harness.search.barrier import summary

        lines += summary(manifest["barrier"])
    rec = decision.get("recommended")
    tied = decision.get("tied_with_recommended") or []
    if rec and tied:
        lines.append(f"{len(tied)} other child(ren) are statistically tied with {rec['child_id']} on primary; within "
                     "that set, choose by return, fine-tune cost or model size")
    return lines


def levers(decision: Mapping[str, Any]) -> list[str]:
    """For each lever the session searched with more than one value (the mode and every declared axis): which
    value's best child was best, and whether that lead is beyond the noise (its interval clear of every other
    value's best)."""
    out = []
    for axis, key in (*((a.lever, f"best_per_{a.name}") for a in AXES.values() if a.lever_axis),
                      ("crossover mode", "best_per_mode")):
        best = decision.get(key) or {}
        if len(best) < 2:
            continue
        ranked = sorted(best.items(), key=lambda kv: -(kv[1]["primary"]["value"] or 0.0))
        (top, first), others = ranked[0], ranked[1:]
        lo = first["primary"]["lo"]
        clear = lo is not None and all((o["primary"]["hi"] or o["primary"]["value"]) < lo for _, o in others)
        shown = ", ".join(f"{k} {_fmt(v['primary'], '.4f')}" for k, v in ranked)
        verdict = "it mattered: the lead is beyond the noise" if clear else "within the noise of the others"
        out.append(f"{axis}: the best child per value is {shown}; {top} leads, {verdict}")
    return out


def _regime_advice(finished: Sequence[Mapping[str, Any]]) -> list[str]:
    by_regime: dict[str, list[float]] = {}
    epochs: dict[str, int] = {}
    for r in finished:
        by_regime.setdefault(r["finetune_regime"], []).append(r["primary_metric"])
        epochs[r["finetune_regime"]] = r["finetune_epochs"] or 0
    if len(by_regime) < 2:
        return []
    means = {k: statistics.fmean(v) for k, v in by_regime.items()}
    best = max(means, key=means.__getitem__)
    longest = max(epochs, key=epochs.__getitem__)
    if best == longest and epochs[best] > min(epochs.values()):
        return [f"the longest regime ({best}, {epochs[best]} epochs) has the best mean primary ({means[best]:.4f}): "
                "longer fine-tuning may help further"]
    return []


def subset_statement(manifest: Mapping[str, Any]) -> str | None:
    """One line when the session ran only part of its space (``-k``, ``--lf``, ``--crossover-max-runs``, ...)."""
    sel = manifest.get("selection") or {}
    if not sel.get("subset"):
        return None
    how = ", ".join(sel.get("how") or []) or "a selection"
    return (f"this session ran a subset: {sel.get('selected')} of the {sel.get('space_children')} children of space "
            f"{manifest.get('space')!r} ({how}); the recommendation covers only those")


def recommendation_text(rec: Mapping[str, Any]) -> str:
    """``recommendation.txt``: the decision first, then the evidence."""
    rule = "=" * 72
    lines = [rule, "Crossover search: recommendation", rule]
    if rec.get("subset"):
        lines += [f"NOTE: {rec['subset']}.", ""]
    p = METRICS.get("primary")
    chosen = rec.get("recommended")
    if chosen:
        lines += [f"Use child {chosen['child_id']} ({chosen['mode']} crossover, regime {chosen['regime']}).",
                  f"  primary {_fmt(chosen['primary'], p.fmt)}, agree_a {_fmt(chosen['agree_a'], p.fmt)}, "
                  f"agree_b {_fmt(chosen['agree_b'], p.fmt)}" + _return_text(chosen),
                  f"  why: {chosen['why']}"]
        if rec.get("tied_with_recommended"):
            lines.append(f"  statistically tied with it: {', '.join(rec['tied_with_recommended'])}")
    else:
        pref = rec["prefer_parent"]
        which = f" ({pref['which']})" if pref["which"] else ""
        lines += [f"Prefer a parent over any child here: {pref['parent']}{which}.", f"  why: {pref['why']}"]
    ab = rec["parents"].get("agree_ab")
    if ab is not None:
        lines += ["", f"Parents: they agree on {ab:.4f} of the held-out states, so the best possible primary is "
                      f"{rec['parents']['bound']:.4f}"
                  + "".join(f"; {k} return {v:.1f}" for k, v in rec["parents"]["returns"].items())]
    for title, key in (("Best child per crossover mode", "best_per_mode"),
                       *((f"Best child per {a.lever}", f"best_per_{a.name}") for a in AXES.values() if a.lever_axis)):
        if rec.get(key) and (key in ("best_per_mode", "best_per_regime") or len(rec[key]) > 1):
            lines += ["", f"{title}:"]
            lines += [f"  {k:<12} {v['child_id']:<42} primary {_fmt(v['primary'], p.fmt)}" for k, v in rec[key].items()]
    if rec.get("advice"):
        lines += ["", "Advice:"] + [f"  - {a}" for a in rec["advice"]]
    if rec.get("unfinished"):
        listed = ", ".join(f"{u['child_id']} ({u['status']})" for u in rec["unfinished"])
        lines += ["", f"Children that did not finish (their tests failed): {listed}"]
    counts = ", ".join(f"{n} {s}" for s, n in rec["counts"].items())
    lines += ["", f"Children: {rec['children']} ({counts})", rule]
    return "\n".join(lines)


def _fmt(value: Mapping[str, Any], fmt: str) -> str:
    if value.get("value") is None:
        return "—"
    text = format(value["value"], fmt)
    if value.get("lo") is not None and value.get("hi") is not None:
        text += f" ±{(value['hi'] - value['lo']) / 2:.3f}"
    return text


def _return_text(brief: Mapping[str, Any]) -> str:
    ret = brief.get("return") or {}
    if ret.get("value") is None:
        return ""
    se = f" ±{ret['se']:.1f}" if ret.get("se") is not None else ""
    return f", return {ret['value']:.1f}{se}"
