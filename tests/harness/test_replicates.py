"""Replicates and controls: the axes and operators that make the answer decisive, on known tensors and ids."""

from __future__ import annotations

import pytest
import torch

from harness.answer.recipes import levers, recipe_answer, unit_of
from harness.crossing.operators import OPERATORS
from harness.search.axes import derived_seed
from harness.search.space import build_space
from tests.plugin.conftest import make_parent


def test_one_replicate_is_the_space_as_it_always_was() -> None:
    plain = build_space("minimal")
    once = build_space("minimal", levels={"replicate": None})
    assert [s.child_id for s in once] == [s.child_id for s in plain]
    assert [s.regime for s in once] == [s.regime for s in plain]
    assert [s.crossed_recipe for s in plain] == [s.recipe for s in plain]


def test_replicate_seeds_are_distinct_deterministic_and_replicate_zero_is_the_base() -> None:
    specs = build_space("smoke", levels={"replicate": [0, 1, 2]})
    assert [s.child_id for s in specs[:3]] == ["000_random_a0p50_s0_short_r0", "001_random_a0p50_s0_short_r1",
                                               "002_random_a0p50_s0_short_r2"]
    base = build_space("smoke")[0]
    r0, r1, r2 = specs[:3]
    assert r0.regime == base.regime and r0.crossed_recipe == base.recipe  # replicate 0: the child itself
    seeds = {s.regime.seed for s in specs[:3]}
    assert len(seeds) == 3 and base.regime.seed in seeds
    crossover_seeds = [s.crossed_recipe.kwargs["seed"] for s in specs[:3]]
    assert len(set(crossover_seeds)) == 3 and crossover_seeds[0] == 0  # the random operator's coin flips differ
    assert r1.recipe == base.recipe and r1.unit_id == r2.unit_id == base.unit_id == "random_a0p50_s0_short"
    again = build_space("smoke", levels={"replicate": [0, 1, 2]})
    assert [(s.regime.seed, s.crossed_recipe) for s in again] == [(s.regime.seed, s.crossed_recipe) for s in specs]
    assert derived_seed(42, 1) == derived_seed(42, 1) != derived_seed(42, 2) != derived_seed(43, 1)
    layer = specs[3]
    assert layer.crossed_recipe == layer.recipe  # no seed of its own to vary (its regime seed still varies)


def test_controls_cover_every_budget_teacher_and_replicate_without_alignment() -> None:
    specs = build_space("frontier", controls=True, levels={"replicate": [0, 1]})
    controls = [s for s in specs if s.control]
    assert len(controls) == 3 * 2 * 2 * 2  # control_a/b/distill x short/xlong x both/balanced x 2 replicates
    assert {s.align for s in controls} == {"none"} and {s.regime.name for s in controls} == {"short", "xlong"}
    assert controls[0].child_id == "128_control_a_short_tboth_r0"
    assert [s.child_id for s in specs[:128]] == [s.child_id for s in build_space(
        "frontier", levels={"replicate": [0, 1]})]  # the crossover children keep their ids
    assert build_space("minimal", controls=True)[-1].child_id == "017_control_distill_s0_long"


def test_control_operators_are_a_parent_or_a_seeded_fresh_network() -> None:
    a, b = make_parent(1), make_parent(2)
    for name, parent in (("control_a", a), ("control_b", b)):
        child = OPERATORS.get(name)(a, b)
        assert all(torch.equal(child[k], parent[k]) and child[k].data_ptr() != parent[k].data_ptr() for k in a)
    distill = OPERATORS.get("control_distill")
    fresh = distill(a, b, seed=0)
    assert torch.equal(fresh["network.0.weight"], distill(a, b, seed=0)["network.0.weight"])
    assert not torch.equal(fresh["network.0.weight"], distill(a, b, seed=1)["network.0.weight"])
    bound = 1 / 8 ** 0.5  # nn.Linear's default: U(-1/sqrt(fan_in), 1/sqrt(fan_in)), fan_in 8
    assert float(fresh["network.0.weight"].abs().max()) <= bound and float(fresh["network.0.weight"].std()) > 0.1
    assert torch.equal(fresh["network.1.weight"], torch.ones(16))  # a LayerNorm starts as the identity
    assert torch.equal(fresh["network.1.bias"], torch.zeros(16))


def _record(cid: str, unit: str, bits_a: list[int], bits_b: list[int], status: str = "ok",
            mode: str = "weighted", regime: str = "short") -> dict:
    from harness.evaluate.intervals import pack_bits

    return {"child_id": cid, "unit": unit, "status": status, "crossover": {"mode": mode},
            "levels": {"regime": regime, "align": "none", "teacher": "both", "replicate": 0},
            "rows": {"n": len(bits_a), "agree_a": pack_bits(torch.tensor(bits_a, dtype=torch.bool)),
                     "agree_b": pack_bits(torch.tensor(bits_b, dtype=torch.bool))}}


def test_the_answer_ranks_recipes_and_says_what_crossing_adds_over_the_control() -> None:
    n = 200
    good = [1] * 180 + [0] * 20  # 0.90 agreement with both
    poor = [1] * 120 + [0] * 80  # 0.60
    records = [_record("000_w_short_r0", "w_short", good, good), _record("001_w_short_r1", "w_short", good, good),
               _record("002_c_short_r0", "c_short", poor, poor, status="control", mode="control_a"),
               _record("003_c_short_r1", "c_short", poor, poor, status="control", mode="control_a")]
    manifest = {"children": records, "split": {"eval_groups": [[i, 1] for i in range(n)]}, "parents": None}
    answer = recipe_answer(manifest)
    assert answer is not None and answer["replicates"] == 2 and answer["units"] == n
    assert [r["recipe"] for r in answer["recipes"]] == ["w_short", "c_short"]
    top = answer["recipes"][0]
    assert top["primary"] == pytest.approx(0.9) and top["replicates"] == 2 and top["sd"] == 0.0
    (gap,) = answer["controls"]
    assert gap["regime"] == "short" and gap["gap"] == pytest.approx(0.3) and gap["lo"] > 0
    assert gap["verdict"] == "matters" and answer["overall"]["control"] == "c_short"
    assert levers({u: [r for r in records if unit_of(r) == u] for u in ("w_short", "c_short")}) == {
        "crossover vs control": {"crossover": ["w_short"], "control": ["c_short"]}}


def test_the_report_and_the_recommendation_say_the_same_about_recipes_and_levers() -> None:
    from harness.answer.leaderboard import build_rows
    from harness.answer.recommend import recipe_text, recommend, recommendation_text
    from harness.pictures.page import esc
    from harness.pictures.report import recipes_html

    good, poor = [1] * 180 + [0] * 20, [1] * 120 + [0] * 80
    records = [_record("000_w_short_r0", "w_short", good, good), _record("001_w_short_r1", "w_short", good, poor),
               _record("002_c_short_r0", "c_short", poor, poor, status="control", mode="control_a"),
               _record("003_c_short_r1", "c_short", poor, good, status="control", mode="control_a")]
    for i, r in enumerate(records):
        r.update(index=i, primary=0.75, crossover={"mode": r["crossover"]["mode"]},
                 finetune_regime={"name": "short"}, teacher="both")
    split = {"eval_groups": [[i, 1] for i in range(200)]}
    manifest = {"children": records, "split": split, "parents": None, "options": {}}
    rec = recommend(build_rows(records, None, split), manifest)
    lines = [line for line in recipe_text(rec) if line]
    assert any(line.startswith("Lever verdicts") for line in lines) and any("budget short" in line for line in lines)
    text, html = recommendation_text(rec), recipes_html(rec)
    for line in lines:
        assert line in text and esc(line.strip().removeprefix("- ").rstrip(":")) in html
