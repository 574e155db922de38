"""Advice that follows from a session's numbers: which lever or regime mattered (only beyond the noise: 95 %
intervals that are apart, else "no measurable difference"), where the teacher pulls, and when fine-tuning hurt."""

from __future__ import annotations

import statistics
from collections.abc import Mapping, Sequence
from typing import Any

from harness.search.axes import AXES


def advice(finished: Sequence[Mapping[str, Any]], manifest: Mapping[str, Any],
           decision: Mapping[str, Any]) -> list[str]:
    """Advice that follows from this session's numbers: each line about a lever or a regime is backed by 95 %
    intervals that are apart, or says that there is no measurable difference."""
    lines = _pull(finished, (manifest.get("options") or {}).get("teacher"))
    lines += levers(decision)
    lines += _longer(finished, decision) + _finetune_hurt(finished)
    if manifest.get("barrier"):
        from harness.search.barrier import summary

        lines += summary(manifest["barrier"])
    rec, top = decision.get("recommended"), decision.get("tied_best_return")
    tied = decision.get("tied_with_recommended") or []
    if rec and tied:
        line = (f"{len(tied)} other child(ren) are statistically tied with {rec['child_id']} on primary (the "
                "recommendation keeps the leaderboard's order: primary, then mean agreement, return, fine-tune steps)")
        if top:
            who = "the recommended child itself" if top["child_id"] == rec["child_id"] else top["child_id"]
            line += f"; within that set, {who} has the highest return ({return_text(top)[len(', return '):]})"
        lines.append(line)
    return lines


def _apart(hi_side: Mapping[str, Any], column_hi: str, lo_side: Mapping[str, Any], column_lo: str) -> bool:
    lo, hi = hi_side.get(f"{column_hi}_lo"), lo_side.get(f"{column_lo}_hi")
    return lo is not None and hi is not None and lo > hi


def _pull(finished: Sequence[Mapping[str, Any]], teacher: str | None) -> list[str]:
    """Every child agrees with one parent measurably more than with the other: the teacher pulls that way."""
    a_col, b_col = "child_vs_parent_a_agreement", "child_vs_parent_b_agreement"
    rows = [r for r in finished if r[a_col] is not None and r[b_col] is not None]
    if not rows:
        return []
    for side, other, near, far in (("A", "B", a_col, b_col), ("B", "A", b_col, a_col)):
        if all(_apart(r, near, r, far) for r in rows):
            mean_near, mean_far = statistics.fmean(r[near] for r in rows), statistics.fmean(r[far] for r in rows)
            source = f"the teacher ({teacher})" if teacher else "the teacher"
            return [f"every child agrees with parent {side} measurably more than with parent {other} (95 % intervals "
                    f"apart for each; mean {mean_near:.3f} vs {mean_far:.3f}): {source} pulls toward {side}; "
                    "--crossover-teacher both distils from both parents"]
    return []


def levers(decision: Mapping[str, Any]) -> list[str]:
    """For each lever the session searched with more than one value (the mode and every declared axis): which
    value's best child was best, and whether that lead is beyond the noise (its interval clear of every other
    value's best), else "no measurable difference"."""
    out = []
    for axis, key in (*((a.lever, f"best_per_{a.name}") for a in AXES.values() if a.lever_axis),
                      ("crossover mode", "best_per_mode")):
        best = decision.get(key) or {}
        if len(best) < 2:
            continue
        ranked = sorted(best.items(), key=lambda kv: -(kv[1]["primary"]["value"] or 0.0))
        (top, first), others = ranked[0], ranked[1:]
        shown = ", ".join(f"{k} {spread_text(v['primary'], '.4f')}" for k, v in ranked)
        if _clear(first, [o for _, o in others]):
            verdict = f"{top} leads and it mattered: its 95 % interval lies above every other value's"
        else:
            verdict = "no measurable difference (the 95 % intervals overlap)"
        out.append(f"{axis}: the best child per value is {shown}; {verdict}")
    return out


def _clear(first: Mapping[str, Any], others: Sequence[Mapping[str, Any]]) -> bool:
    lo = first["primary"]["lo"]
    return lo is not None and all(o["primary"]["hi"] is not None and o["primary"]["hi"] < lo for o in others)


def _longer(finished: Sequence[Mapping[str, Any]], decision: Mapping[str, Any]) -> list[str]:
    """"Fine-tune longer" only when the longest regime's best child is measurably better than every other's."""
    best = decision.get("best_per_regime") or {}
    epochs = {r["finetune_regime"]: r["finetune_epochs"] or 0 for r in finished}
    if len(best) < 2 or len(set(epochs.values())) < 2:
        return []
    longest = max(best, key=lambda k: epochs.get(k, 0))
    if not _clear(best[longest], [v for k, v in best.items() if k != longest]):
        return []
    return [f"the longest regime ({longest}, {epochs[longest]} epochs) has measurably the best child "
            f"({spread_text(best[longest]['primary'], '.4f')}): longer fine-tuning may help further"]


def _finetune_hurt(finished: Sequence[Mapping[str, Any]]) -> list[str]:
    """Children whose held-out primary fell in fine-tuning by more than half its 95 % interval."""
    hurt = []
    for r in finished:
        before, after = r.get("primary_before_finetune"), r["primary_metric"]
        lo, hi = r.get("primary_metric_lo"), r.get("primary_metric_hi")
        if before is not None and after is not None and before - after > (0.0 if lo is None else (hi - lo) / 2):
            hurt.append((before - after, r["child_id"], before, after))
    if not hurt:
        return []
    hurt.sort(reverse=True)
    shown = ", ".join(f"{cid} {b:.4f} → {a:.4f}" for _, cid, b, a in hurt[:3])
    return [f"fine-tuning lowered the held-out primary of {len(hurt)} of {len(finished)} children by more than half "
            f"its 95 % interval ({shown}{', …' if len(hurt) > 3 else ''}): the teacher leads away from a blend of "
            "both parents; --crossover-teacher both, or a shorter regime, keeps more of the start"]


def spread_text(value: Mapping[str, Any], fmt: str) -> str:
    """A value with ± half its 95 % interval, when it has one."""
    if value.get("value") is None:
        return "—"
    text = format(value["value"], fmt)
    if value.get("lo") is not None and value.get("hi") is not None:
        text += f" ±{(value['hi'] - value['lo']) / 2:.3f}"
    return text


def return_text(brief: Mapping[str, Any]) -> str:
    ret = brief.get("return") or {}
    if ret.get("value") is None:
        return ""
    se = f" ±{ret['se']:.1f}" if ret.get("se") is not None else ""
    return f", return {ret['value']:.1f}{se}"
