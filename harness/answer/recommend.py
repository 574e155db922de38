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

from harness.answer.advice import advice, return_text, spread_text
from harness.answer.next_steps import next_step
from harness.answer.recipes import TOP, control_line, lever_line, recipe_answer
from harness.answer.verdicts import MARGIN
from harness.evaluate import intervals as bootstrap
from harness.evaluate.metrics import METRICS, dig
from harness.search.axes import AXES

ELIGIBLE = ("ok",)  # degenerate, diverged, return-drop, error and lost children are never recommended


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
    options = manifest.get("options") or {}
    out: dict[str, Any] = {
        "counts": {s: sum(r["status"] == s for r in children) for s in sorted({r["status"] for r in children})},
        "children": len(children), "recommended": None, "prefer_parent": None, "tied_with_recommended": [],
        "best_per_mode": _best_by(eligible, "crossover_mode"),
        **{f"best_per_{a.name}": _best_by(eligible, a.key) for a in AXES.values() if a.lever_axis},
        "subset": subset_statement(manifest), "parents": {"agree_ab": ab, "bound": parents.get("bound"),
                                                           "returns": _parent_returns(parents)},
        "teacher": options.get("teacher"), "advice": [], "next_step": None,
        "unfinished": [{"child_id": r["child_id"], "status": r["status"]} for r in children
                       if r["status"] in ("diverged", "error", "lost")],
    }
    reference = (manifest.get("provenance") or {}).get("reference")
    if reference:  # scored against a reference (harness.inputs.lineage): its rows are the "parents" here
        out["parents"]["reference"] = reference.get("source")
    best = eligible[0] if eligible else None
    beats = best is not None and (ab is None or _margin(best, ab) > 0)
    if best is not None and beats:
        out["recommended"] = _brief(best)
        out["recommended"]["why"] = _why(best, ab)
        out["recommended"]["vs_parents"] = _gap(best, ab)
        tied = [r for r in eligible[1:] if r.get("tied_with_best")]
        out["tied_with_recommended"] = [r["child_id"] for r in tied]
        out["tied_best_return"] = _best_return([best, *tied]) if tied else None
    else:
        out["prefer_parent"] = _prefer_parent(parents, best, ab, bool(children))
    answer = recipe_answer(manifest, float(options.get("equivalence_margin") or MARGIN))
    if answer is not None:
        out.update(recipes=answer["recipes"], levers=answer["levers"], controls=answer["controls"],
                   crossover_vs_control=answer["overall"], replicates=answer["replicates"], eval_units=answer["units"],
                   equivalence_margin=answer["margin"])
        if manifest.get("study") and out["recommended"] and not out["recommended"].get("control"):
            _recipe_mean(out, eligible, parents, ab)
        _control_decision(out, children, ab)
    if manifest.get("study"):  # a study's session: its trials, its best and how much it shrank, its Pareto front
        out["study"] = manifest["study"]
    out["advice"] = advice(finished, manifest, out)
    out["next_step"] = next_step(out)
    return out


def _recipe_mean(out: dict[str, Any], eligible: Sequence[Mapping[str, Any]], parents: Mapping[str, Any],
                 ab: float | None) -> None:
    """A study names the best recipe by its mean over its runs (a trial and its confirmation runs), not its luckiest
    trial: the recipe ranked first among those with a child that finished well, recommended when that mean is
    measurably above the parents' agreement, else the parents are."""
    ids = {r["child_id"]: r for r in eligible}
    for recipe in out["recipes"]:
        rows = [ids[c] for c in recipe["children"] if c in ids]
        if not rows or recipe["control"]:
            continue
        if recipe["replicates"] < 2:
            return
        lo, hi = recipe.get("vs_parents") or (None, None)
        runs = f"its mean over {recipe['replicates']} runs (the trial and its confirmation runs)"
        mean = {**rows[0], "child_id": recipe["recipe"], "primary_metric": recipe["primary"],
                "primary_vs_parents_lo": lo, "primary_vs_parents_hi": hi}
        if ab is not None and _margin(mean, ab) <= 0:
            out["recommended"], out["tied_with_recommended"] = None, []
            out["prefer_parent"] = _prefer_parent(parents, mean, ab, True)
            out["prefer_parent"]["why"] += f"; the primary is {runs}"
            return
        out["recommended"] = {**_brief(rows[0]), "vs_parents": _gap(mean, ab), "child_id": recipe["recipe"],
                              "replicates": recipe["replicates"], "p_best": recipe["p_best"],
                              "primary": {"value": recipe["primary"], "lo": recipe["primary_lo"],
                                          "hi": recipe["primary_hi"]},
                              "why": f"{_why(mean, ab)}; the primary is {runs}"}
        return


def _control_decision(out: dict[str, Any], children: Sequence[Mapping[str, Any]], ab: float | None) -> None:
    """A control that beats the parents, when crossing adds nothing measurable over it, is the thing to use."""
    overall = out.get("crossover_vs_control")
    if not overall:
        return
    recipe = next(r for r in out["recipes"] if r["recipe"] == overall["control"])
    row = next((c for c in children if c["child_id"] in recipe["children"]), None)
    if row is None or (ab is not None and _margin(row, ab) <= 0) or (out["recommended"] and overall["lo"] > 0):
        return
    brief = _brief(row)
    if recipe["replicates"] > 1:  # the unit of ranking is the recipe: its mean over replicates, not one child
        brief.update(child_id=recipe["recipe"], replicates=recipe["replicates"], p_best=recipe["p_best"],
                     primary={"value": recipe["primary"], "lo": recipe["primary_lo"], "hi": recipe["primary_hi"]})
    out["recommended"] = {**brief, "vs_parents": _gap(row, ab), "control": True,
                          "why": f"crossing adds nothing measurable over this control: the best crossover recipe "
                                 f"{overall['crossover']} minus it is {overall['gap']:+.4f} (95 % interval "
                                 f"[{overall['lo']:+.3f}, {overall['hi']:+.3f}]), and it agrees with both parents "
                                 f"more than they agree with each other"}
    out["prefer_parent"], out["tied_with_recommended"] = None, []


def _margin(row: Mapping[str, Any], ab: float) -> float:
    """How far a child's primary is above the parents' agreement, at the low end of its paired interval when the
    bootstrap gave one (the point estimate otherwise)."""
    lo = row.get("primary_vs_parents_lo")
    return float(lo) if lo is not None else float(row["primary_metric"]) - ab


def _gap(row: Mapping[str, Any], ab: float | None) -> dict[str, Any] | None:
    """A child's primary minus the parents' agreement, with its paired 95 % interval when the bootstrap gave one."""
    if ab is None:
        return None
    return {"value": float(row["primary_metric"]) - ab, "lo": row.get("primary_vs_parents_lo"),
            "hi": row.get("primary_vs_parents_hi")}


def _best_return(rows: Sequence[Mapping[str, Any]]) -> dict[str, Any] | None:
    scored = [r for r in rows if r.get("return_mean") is not None]
    if not scored:
        return None
    top = max(scored, key=lambda r: r["return_mean"])  # max keeps the first (higher-ranked) of equal returns
    return {"child_id": top["child_id"], "return": {"value": top["return_mean"], "se": top.get("return_se")}}


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
    gap = _gap(best, ab)
    assert gap is not None
    return (f"its primary {best['primary_metric']:.4f} is above the parents' agreement {ab:.4f} by "
            f"{_gap_text(gap)}: it agrees with both parents more than either parent agrees with the other")


def _gap_text(gap: Mapping[str, Any]) -> str:
    text = f"{gap['value']:+.4f}"
    if gap.get("lo") is not None and gap.get("hi") is not None:
        text += f" (paired 95 % interval [{gap['lo']:+.3f}, {gap['hi']:+.3f}])"
    return text


def _prefer_parent(parents: Mapping[str, Any], best: Mapping[str, Any] | None, ab: float | None,
                   any_child: bool) -> dict[str, Any]:
    pick, which = _which_parent(parents)
    gap = None
    if not any_child:
        why = "no child ran"
    elif best is None:
        why = "no child finished well (see the status column)"
    else:
        gap = _gap(best, ab)
        assert gap is not None and ab is not None
        beyond = gap["hi"] is not None and gap["hi"] < 0
        verdict = ("lies below 0: the children are measurably worse" if beyond else
                   "includes 0: no child is measurably better" if gap["lo"] is not None else
                   "is not above 0 (no interval: nothing to resample)")
        why = (f"the best child, {best['child_id']}, has primary {best['primary_metric']:.4f} against the parents' "
               f"agreement {ab:.4f}: a gap of {_gap_text(gap)}, which {verdict}")
    return {"parent": pick, "why": why, "which": which, "best_child": None if best is None else best["child_id"],
            "vs_parents": gap}


def _which_parent(parents: Mapping[str, Any]) -> tuple[str, str]:
    """The parent to use and why that one: the higher return when the paired interval of the two parents' returns
    (the same episode seeds) excludes 0; else the tie-break, the first parent (parent_a)."""
    got = [dig(parents, "returns", p, "returns") for p in ("parent_a", "parent_b")]
    if not all(got):
        return "parent_a", "no return was measured to tell the parents apart; tie-break: the first parent, parent_a"
    diff = bootstrap.return_intervals({"parent_a": got[0]}, got[1]).get("parent_a", {}).get("return_vs_weaker_parent")
    mean_a, mean_b = statistics.fmean(got[0]), statistics.fmean(got[1])
    shown = f"{mean_a - mean_b:+.1f}" + ("" if diff is None else f", paired 95 % interval [{diff[0]:+.1f}, "
                                                                  f"{diff[1]:+.1f}]")
    if diff is not None and (diff[0] > 0 or diff[1] < 0):
        pick, other = ("parent_a", "parent_b") if diff[0] > 0 else ("parent_b", "parent_a")
        mine, theirs = (mean_a, mean_b) if pick == "parent_a" else (mean_b, mean_a)
        return pick, f"its return {mine:.1f} is above {other}'s {theirs:.1f} (A - B {shown})"
    return "parent_a", (f"the parents' returns {mean_a:.1f} and {mean_b:.1f} are within the noise (A - B {shown}); "
                        "tie-break: the first parent, parent_a")


def subset_statement(manifest: Mapping[str, Any]) -> str | None:
    """One line when the session ran only part of its space (``-k``, ``--lf``, ``--crossover-max-runs``, ...)."""
    sel = manifest.get("selection") or {}
    if not sel.get("subset"):
        return None
    how = ", ".join(sel.get("how") or []) or "a selection"
    return (f"this session ran a subset: {sel.get('selected')} of the {sel.get('space_children')} children of space "
            f"{manifest.get('space')!r} ({how}); the recommendation covers only those")


def reference_statement(manifest: Mapping[str, Any]) -> str | None:
    """One line when the session scores against a reference other than its parents (children as parents): the
    baseline rows named parent_a and parent_b are then the reference's, not this session's parents."""
    provenance = manifest.get("provenance") or {}
    ref = provenance.get("reference")
    if not ref:
        return None
    files = ", ".join(str((ref.get(f"reference_{s}") or {}).get("path")) for s in "ab")
    mine = ", ".join(str((provenance.get(f"parent_{s}") or {}).get("path")) for s in "ab")
    return (f"scored against a fixed reference ({ref.get('source')}: {files}): the baseline rows parent_a and "
            f"parent_b are the reference's, and every agreement is measured against it, not against this "
            f"session's parents ({mine})")


DECISION_TITLE = "crossover decision"


def chosen_id(rec: Mapping[str, Any]) -> str | None:
    """The id the decision chose: the recommended child's, or the preferred parent's."""
    if rec.get("recommended"):
        return str(rec["recommended"]["child_id"])
    return (rec.get("prefer_parent") or {}).get("parent")


def decision_lines(rec: Mapping[str, Any]) -> list[str]:
    """The decision block, the one source of what the terminal ends with and ``report.html`` opens with: what to
    use (a child or a parent), why (the comparison that decided it, with its interval), how sure, and the one
    next step that would change or sharpen the answer."""
    lines = [f"NOTE: {rec['subset']}"] if rec.get("subset") else []
    chosen, pref = rec.get("recommended"), rec.get("prefer_parent") or {}
    finished = sum(n for s, n in (rec.get("counts") or {}).items() if s in ELIGIBLE)
    if chosen:
        p = METRICS.get("primary")
        tied = rec.get("tied_with_recommended") or []
        p_best = "" if chosen.get("p_best") is None else f"P(best) {chosen['p_best']:.2f}; "
        reps = f", mean over {chosen['replicates']} replicates" if chosen.get("replicates") else ""
        what = (f"control {chosen['child_id']} ({chosen['mode']}, regime {chosen['regime']}{reps})"
                if chosen.get("control") else
                f"child {chosen['child_id']} ({chosen['mode']} crossover, regime {chosen['regime']})")
        lines += [f"Use {what}: primary "
                  f"{spread_text(chosen['primary'], p.fmt)}" + return_text(chosen) + ".",
                  f"why: {chosen['why']}",
                  f"how sure: {p_best}" + (f"{len(tied)} other child(ren) statistically tied with it "
                                           "(their gap to it has a 95 % interval containing 0)" if tied else
                                           f"no other of the {finished} children that finished well is tied with it")
                  + _basis(rec)]
    else:
        gap = pref.get("vs_parents") or {}
        sure = (f"a child better than the parents by more than {gap['hi']:+.3f} is ruled out at 95 %; "
                if gap.get("hi") is not None else "")
        whose = (f"of the reference ({rec['parents']['reference']})" if rec["parents"].get("reference")
                 else "(a parent)")
        lines += [f"Use {pref.get('parent')} {whose}: no child here beats the parents.",
                  f"why: {pref.get('why')}", f"which parent: {pref.get('which')}",
                  f"how sure: {sure}{finished} of {rec.get('children', 0)} children finished well" + _basis(rec)]
    return [*lines, f"next: {rec.get('next_step')}"]


def _basis(rec: Mapping[str, Any]) -> str:
    """What the intervals rest on: how many fine-tune runs (replicates) per recipe, and how many held-out episodes
    (of one split), so a user knows which noise the answer has and has not measured."""
    units = rec.get("eval_units")
    episodes = f", scored on {units} evaluation episodes of one split" if units else ""
    k = rec.get("replicates") or 1
    if k > 1:
        return f"; intervals over {k} fine-tune runs per recipe{episodes}"
    measures = ("the next session's confirmation runs measure it" if rec.get("study")
                else "--crossover-replicates 3 measures it")
    return f"; each child is one fine-tune run{episodes}: run-to-run noise is not in these intervals ({measures})"


def recommendation_text(rec: Mapping[str, Any]) -> str:
    """``recommendation.txt``: the decision first, then the evidence."""
    rule = "=" * 72
    lines = [rule, "Crossover search: recommendation", rule]
    block = decision_lines(rec)
    lines += [line if line.startswith(("NOTE", "Use")) else f"  {line}" for line in block]
    p = METRICS.get("primary")
    ab = rec["parents"].get("agree_ab")
    if ab is not None:
        who = f"Reference ({rec['parents']['reference']})" if rec["parents"].get("reference") else "Parents"
        lines += ["", f"{who}: they agree on {ab:.4f} of the held-out states, so the best possible primary is "
                      f"{rec['parents']['bound']:.4f}"
                  + "".join(f"; {k} return {v:.1f}" for k, v in rec["parents"]["returns"].items())]
    for title, key in (("Best child per crossover mode", "best_per_mode"),
                       *((f"Best child per {a.lever}", f"best_per_{a.name}") for a in AXES.values() if a.lever_axis)):
        if rec.get(key) and (key in ("best_per_mode", "best_per_regime") or len(rec[key]) > 1):
            lines += ["", f"{title}:"]
            lines += [f"  {k:<12} {v['child_id']:<42} primary {spread_text(v['primary'], p.fmt)}"
                      for k, v in rec[key].items()]
    lines += recipe_text(rec)
    if rec.get("advice"):
        lines += ["", "Advice:"] + [f"  - {a}" for a in rec["advice"]]
    if rec.get("unfinished"):
        listed = ", ".join(f"{u['child_id']} ({u['status']})" for u in rec["unfinished"])
        lines += ["", f"Children that did not finish (their tests failed): {listed}"]
    counts = ", ".join(f"{n} {s}" for s, n in rec["counts"].items())
    lines += ["", f"Children: {rec['children']} ({counts})", rule]
    return "\n".join(lines)


def recipe_text(rec: Mapping[str, Any]) -> list[str]:
    """The recipes (when they have replicates or controls ran), the lever verdicts and crossing vs the controls."""
    lines: list[str] = []
    recipes = rec.get("recipes") or []
    if recipes and (rec.get("replicates", 1) > 1 or rec.get("controls")):
        lines += ["", f"Recipes (mean primary over {rec['replicates']} replicate(s); 95 % interval over replicates "
                      "and held-out episodes together; sd across replicates):"]
        lines += [f"  {r['rank']:>3} {r['recipe']:<44} {r['primary']:.4f} [{r['primary_lo']:.3f}, "
                  f"{r['primary_hi']:.3f}]" + (f" sd {r['sd']:.3f}" if r.get("sd") is not None else "")
                  + f" P(best) {r['p_best']:.2f}" + (" control" if r["control"] else "") for r in recipes[:TOP]]
    if rec.get("levers"):
        margin = rec.get("equivalence_margin", MARGIN)
        lines += ["", f"Lever verdicts (paired gap of each value's best recipe to the best of the others; no "
                      f"difference = the interval within ±{margin:g}):"]
        values = {lv: sum(v["lever"] == lv for v in rec["levers"]) for lv in {v["lever"] for v in rec["levers"]}}
        # a lever of two values is one comparison: shown once, from the leading value
        lines += [f"  - {lever_line(v, rec.get('eval_units'))}" for v in rec["levers"]
                  if values[v["lever"]] > 2 or v["gap"] >= 0]
    if rec.get("controls"):
        lines += ["", "What crossing adds over the best control, per fine-tune budget:"]
        lines += [f"  - {control_line(c)}" for c in rec["controls"]]
    if rec.get("study"):
        from harness.search.study_summary import summary_lines

        lines += ["", *summary_lines(rec["study"])]
    return lines
