"""The one next step a decision names: the first rule of :data:`NEXT_STEPS` that applies to a recommendation.

Each rule reads the recommendation (:func:`harness.answer.recommend.recommend`'s) and returns its step, or None;
their order is their priority (a subset or unfinished children first, noise last).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any


def next_step(rec: Mapping[str, Any]) -> str:
    """The one step that would change or sharpen this answer: the first rule of :data:`NEXT_STEPS` that applies."""
    for rule in NEXT_STEPS:
        step = rule(rec)
        if step:
            return step
    return "none needed at this session's noise"


def _next_subset(rec: Mapping[str, Any]) -> str | None:
    return "run the whole space (drop the selection): the answer covers only the children this session ran" \
        if rec.get("subset") else None


def _next_unfinished(rec: Mapping[str, Any]) -> str | None:
    pref = rec.get("prefer_parent") or {}
    if rec.get("recommended") or pref.get("best_child") or not rec.get("children"):
        return None
    return "fix what the failed children's lines say (status column), then rerun: no child finished well"


def _next_teacher(rec: Mapping[str, Any]) -> str | None:
    teacher = rec.get("teacher")
    if not rec.get("prefer_parent") or teacher not in ("a", "b") or len(rec.get("best_per_teacher") or {}) > 1:
        return None
    return (f"rerun with --crossover-teacher both: every child here distils from parent {teacher.upper()} alone, "
            "so it agrees with the other parent only where the two agree")


def _next_noise(rec: Mapping[str, Any]) -> str | None:
    gap = (rec.get("prefer_parent") or {}).get("vs_parents") or {}
    if gap.get("hi") is not None and gap["hi"] > 0:
        return (f"more held-out states (a larger --crossover-states buffer) narrow the best child's gap interval "
                f"[{gap['lo']:+.3f}, {gap['hi']:+.3f}]: it may be up to {gap['hi']:+.3f} above the parents")
    if rec.get("prefer_parent") and rec["prefer_parent"].get("best_child"):
        return "a wider search (--crossover-space extended, or a longer regime): every child here is below the parents"
    return None


def _next_tied(rec: Mapping[str, Any]) -> str | None:
    tied = rec.get("tied_with_recommended") or []
    if not rec.get("recommended") or not tied:
        return None
    return (f"more held-out states (a larger --crossover-states buffer) to separate it from the {len(tied)} "
            "child(ren) tied with it; the answer can change among those")


def _next_returns(rec: Mapping[str, Any]) -> str | None:
    chosen = rec.get("recommended") or {}
    if not chosen or (chosen.get("return") or {}).get("value") is not None:
        return None
    return "measure returns (--crossover-env ID --crossover-episodes 20): agreement alone does not say it acts well"


def _next_confirm(rec: Mapping[str, Any]) -> str | None:
    """A study's choice that rests on one run: the next session re-runs the top trials with other seeds."""
    chosen = rec.get("recommended")
    if not rec.get("study") or not chosen or chosen.get("control") or (chosen.get("replicates") or 1) > 1:
        return None
    return ("rerun the same command (--crossover-trials 0 only confirms): the next session re-runs the top trials "
            f"with other seeds, and {chosen['child_id']} is one run, perhaps the study's luckiest")


def _next_replicates(rec: Mapping[str, Any]) -> str | None:
    """An undecided lever: the replicates (or held-out episodes) that its interval's scaling says would decide it."""
    undecided = [v for v in rec.get("levers") or [] if v["verdict"] == "undecided" and v.get("need")]
    if not undecided or rec.get("study"):  # a study replicates by confirmation runs, not --crossover-replicates
        return None
    first = min(undecided, key=lambda v: v["need"]["replicates"])
    need = first["need"]
    episodes = (f" (or about {need['episodes']} held-out episodes)"
                if need["episodes"] > (rec.get("eval_units") or 0) else "")
    return (f"rerun with --crossover-replicates {need['replicates']}{episodes} to decide {first['lever']}: "
            f"{first['value']} vs {first['versus']} is undecided [{first['lo']:+.3f}, {first['hi']:+.3f}]")


NEXT_STEPS: tuple[Callable[[Mapping[str, Any]], str | None], ...] = (
    _next_subset, _next_unfinished, _next_confirm, _next_teacher, _next_noise, _next_replicates, _next_tied,
    _next_returns)
