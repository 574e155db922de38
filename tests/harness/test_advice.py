"""Advice only beyond the noise: each line about a lever or a regime rests on 95 % intervals that are apart, or
says there is no measurable difference; fine-tuning that hurt is named with its numbers; a parent is chosen over
the other for a stated reason. Hand-made records whose per-state agreements are known (tests.harness's leaderboard
helpers)."""

from __future__ import annotations

from harness.answer.leaderboard import build_rows
from harness.answer.recommend import decision_lines, recommend
from tests.harness.test_leaderboard import PARENTS, RET_A, SPLIT, _manifest, _rec


def _advice(recs: list[dict], parents: dict = PARENTS) -> dict:
    return recommend(build_rows(recs, parents, SPLIT), {**_manifest(recs), "parents": parents})


def test_a_lever_is_called_only_when_its_intervals_are_apart() -> None:
    apart = [_rec(0, "weighted", "long", 0.80, 0.79), _rec(1, "layer", "short", 0.62, 0.61)]
    lines = _advice(apart)["advice"]
    assert "crossover mode: the best child per value is weighted 0.7900 ±0.035, layer 0.6100 ±0.041; weighted leads " \
        "and it mattered: its 95 % interval lies above every other value's" in lines
    assert any(ln.startswith("the longest regime (long, 20 epochs) has measurably the best child (0.7900") and
               ln.endswith("longer fine-tuning may help further") for ln in lines)
    close = [_rec(0, "weighted", "long", 0.70, 0.69), _rec(1, "layer", "short", 0.69, 0.68)]
    lines = _advice(close)["advice"]
    assert "crossover mode: the best child per value is weighted 0.6900 ±0.039, layer 0.6800 ±0.040; no measurable " \
        "difference (the 95 % intervals overlap)" in lines
    # The longest regime has the best child, but within the noise: no advice to fine-tune longer.
    assert not any("longer fine-tuning" in ln for ln in lines)


def test_the_teacher_pull_needs_every_child_apart() -> None:
    pulled = [_rec(0, "weighted", "short", 0.90, 0.58), _rec(1, "layer", "long", 0.88, 0.55)]
    assert any(ln.startswith("every child agrees with parent A measurably more than with parent B") for ln in
               _advice(pulled)["advice"])
    one_close = [_rec(0, "weighted", "short", 0.90, 0.58), _rec(1, "layer", "long", 0.64, 0.62)]
    assert not any("pulls toward" in ln for ln in _advice(one_close)["advice"])


def test_fine_tuning_that_hurt_is_named_with_its_numbers() -> None:
    hurt = _rec(0, "weighted", "short", 0.70, 0.62)
    hurt["before_finetune"] = {"primary": 0.80}
    fine = _rec(1, "layer", "long", 0.72, 0.63)
    fine["before_finetune"] = {"primary": 0.64}  # lower before: fine-tuning helped
    small = _rec(2, "random", "long", 0.71, 0.61)
    small["before_finetune"] = {"primary": 0.62}  # 0.01 lower after: inside its interval, not called
    lines = _advice([hurt, fine, small])["advice"]
    assert "fine-tuning lowered the held-out primary of 1 of 3 children by more than half its 95 % interval " \
        "(000_weighted_a0p50_sNone_short 0.8000 → 0.6200): the teacher leads away from a blend of both parents; " \
        "--crossover-teacher both, or a shorter regime, keeps more of the start" in lines


def test_a_parent_is_chosen_over_the_other_for_a_stated_reason() -> None:
    below = [_rec(0, "weighted", "short", 0.90, 0.58, ret=RET_A)]
    near = [250.0 + d for d in (-30, 25, 12, -18, 4, 0, 20, -22, 9, -5)]
    tied = {**PARENTS, "returns": {"parent_a": {"mean": 245.0, "returns": [r - 5 for r in near]},
                                   "parent_b": {"mean": 250.0, "returns": near[::-1]}}}
    rec = _advice(below, tied)
    assert rec["prefer_parent"]["parent"] == "parent_a"
    assert rec["prefer_parent"]["which"].startswith("the parents' returns 244.5 and 249.5 are within the noise (A - B "
                                                    "-5.0, paired 95 % interval [-21.5, +10.9]")
    assert rec["prefer_parent"]["which"].endswith("]); tie-break: the first parent, parent_a")
    better_b = {**PARENTS, "returns": {"parent_a": {"mean": 200.0, "returns": [r - 50 for r in RET_A]},
                                       "parent_b": {"mean": 250.0, "returns": RET_A}}}
    rec = _advice(below, better_b)
    assert rec["prefer_parent"]["parent"] == "parent_b"
    assert rec["prefer_parent"]["which"] == "its return 250.0 is above parent_a's 200.0 (A - B -50.0, paired 95 % " \
        "interval [-50.0, -50.0])"
    no_returns = {k: v for k, v in PARENTS.items() if k != "returns"}
    rec = _advice(below, no_returns)
    assert rec["prefer_parent"]["which"] == "no return was measured to tell the parents apart; tie-break: the first " \
        "parent, parent_a"
    assert decision_lines(rec)[:3] == [
        "Use parent_a (a parent): no child here beats the parents.",
        "why: the best child, 000_weighted_a0p50_sNone_short, has primary 0.5800 against the parents' agreement "
        "0.6000: a gap of -0.0200, which is not above 0 (no interval: nothing to resample)",
        "which parent: no return was measured to tell the parents apart; tie-break: the first parent, parent_a"]
