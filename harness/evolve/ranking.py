"""What one generation's run folder says: its best recipe with its interval, the next parents, and paired gaps
between generations' best recipes.

Every generation of an evolution is scored against one reference on the same held-out episodes, so two
generations' best recipes can be compared as two recipes of one session are: a paired bootstrap over the same
episodes, with replicates resampled by index (:func:`harness.evaluate.statistics.recipe_statistics`).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from harness.answer.recipes import recipe_answer
from harness.core.errors import HarnessError
from harness.evaluate.intervals import groups_from_rle
from harness.evaluate.metrics import dig

RECIPES_KEPT = 5  # recipes each generation lists in lineage.json


def _records(manifest: Mapping[str, Any]) -> dict[str, Mapping[str, Any]]:
    return {str(r["child_id"]): r for r in manifest.get("children") or []}


def candidates(manifest: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The generation's crossover recipes, best first (by the replicate-mean primary), that can be parents:
    each with its interval and the replicate carried forward (its highest primary; a float child)."""
    answer = recipe_answer(manifest)
    if answer is None:
        raise HarnessError("the generation's run folder has no finished child to rank; see its leaderboard")
    records = _records(manifest)
    out = []
    for row in answer["recipes"]:
        reps = [records[c] for c in row["children"]]
        if row["control"] or any(r.get("ranked_model") == "int8" for r in reps):
            continue  # a control is no crossover; an int8 child cannot be a parent (harness.inputs.lineage)
        carried = max(reps, key=lambda r: (float(r["primary"]), -int(r.get("index") or 0)))
        out.append({"recipe": row["recipe"], "primary": row["primary"], "lo": row["primary_lo"],
                    "hi": row["primary_hi"], "replicates": row["replicates"], "children": row["children"],
                    "child": carried["child_id"]})
    if not out:
        raise HarnessError("the generation has no crossover recipe that finished as a float child; no parent to "
                           "carry forward")
    return out


def _top2(ranked: Sequence[Mapping[str, Any]], run_dir: Path, founders: tuple[str, str]) -> tuple[str, str]:
    if len(ranked) < 2:
        raise HarnessError("--select top2 needs two crossover recipes in a generation; use a larger space or "
                           "--select best+founder", field="select")
    return str(run_dir / ranked[0]["child"]), str(run_dir / ranked[1]["child"])


def _best_founder(ranked: Sequence[Mapping[str, Any]], run_dir: Path, founders: tuple[str, str]) -> tuple[str, str]:
    return str(run_dir / ranked[0]["child"]), founders[1]


# How the next generation's parents are chosen from a generation's ranked recipes (a registry of names).
SELECTIONS: dict[str, Callable[[Sequence[Mapping[str, Any]], Path, tuple[str, str]], tuple[str, str]]] = {
    "top2": _top2,          # the two best recipes' children
    "best+founder": _best_founder,  # the best recipe's child and founder B
}


def summary(manifest: Mapping[str, Any]) -> dict[str, Any]:
    """A generation's numbers for lineage.json: its best recipes, the reference's bound and the split."""
    ranked = candidates(manifest)
    split = manifest.get("split") or {}
    return {"best": ranked[0], "recipes": ranked[:RECIPES_KEPT], "split": split.get("digest"),
            "eval_units": split.get("eval_units"), "agree_ab": dig(manifest, "parents", "agree_ab"),
            "bound": dig(manifest, "parents", "bound"),
            "reference": dig(manifest, "provenance", "reference"), "complete": bool(manifest.get("complete"))}


def _rows(manifest: Mapping[str, Any], children: Sequence[str]) -> list[Mapping[str, Any]]:
    records = _records(manifest)
    return [records[c]["rows"] for c in children]


def paired_gap(later: Mapping[str, Any], earlier: Mapping[str, Any], later_children: Sequence[str],
               earlier_children: Sequence[str]) -> dict[str, float]:
    """``later − earlier`` in primary between two generations' recipes (their replicates' children), paired over
    the shared held-out episodes: {gap, lo, hi}. Refused when the generations were scored on other rows."""
    from harness.evaluate.statistics import recipe_statistics

    split_l, split_e = later.get("split") or {}, earlier.get("split") or {}
    if split_l.get("digest") != split_e.get("digest"):
        raise HarnessError("two generations were scored on different held-out states; an evolution keeps the "
                           "states, holdout and split seed of its first generation")
    ref_l, ref_e = dig(later, "provenance", "reference"), dig(earlier, "provenance", "reference")
    shas = [tuple(dig(r, f"reference_{s}", "sha256") if r else None for s in "ab") for r in (ref_l, ref_e)]
    founders = tuple(dig(earlier, "provenance", f"parent_{s}", "sha256") for s in "ab")
    if shas[0] != (shas[1] if ref_e else founders):
        raise HarnessError("two generations were scored against different references; their scores do not compare")
    rows = {"later": _rows(later, later_children), "earlier": _rows(earlier, earlier_children)}
    n = int(rows["later"][0]["n"])
    stats = recipe_statistics(rows, groups_from_rle(split_l.get("eval_groups"), n))
    gap = stats.gap("later", "earlier")
    return {"gap": gap.point, "lo": gap.lo, "hi": gap.hi}
