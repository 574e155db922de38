"""Lever verdicts on constructed cases: a clear effect matters, identical recipes make no difference, a small noisy
sample is undecided with a need that decides it when simulated."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pytest

from harness.answer.verdicts import lever_verdicts, need, verdict
from harness.evaluate import intervals as bootstrap
from harness.evaluate.statistics import Gap, recipe_statistics


def simulate_pairs(sims: int, k: int, episodes: int, gap: float, seed: int, *, sd_seed: float = 0.01,
                   ) -> tuple[dict[str, list[dict[str, Any]]], np.ndarray]:
    """``sims`` independent sessions of two recipes ``x<j>`` (true primary 0.70) and ``y<j>`` (0.70 + gap), each
    with ``k`` replicates on the same ``episodes`` episodes of 10-40 states (an episode effect both share, a seed
    effect, cell noise and per-state Bernoulli noise)."""
    rng = np.random.default_rng(seed)
    groups = np.repeat(np.arange(episodes), rng.integers(10, 41, size=episodes))
    n = len(groups)
    means = np.array([0.70, 0.70 + gap])[None, :, None, None]
    p = (means + rng.normal(0, 0.08, (sims, 1, 1, episodes)) + rng.normal(0, sd_seed, (sims, 2, k, 1))
         + rng.normal(0, 0.02, (sims, 2, k, episodes)))
    a = rng.random((sims, 2, k, n)) < np.clip(p, 0, 1)[..., groups]
    b = rng.random((sims, 2, k, n)) < 0.95
    return ({f"{'xy'[i]}{j}": [{"n": n, "agree_a": bootstrap.pack_bits(a[j, i, r]),
                                "agree_b": bootstrap.pack_bits(b[j, i, r])} for r in range(k)]
             for j in range(sims) for i in range(2)}, groups)


def one_lever(recipes: dict[str, Any], groups: np.ndarray, sims: int = 1) -> list[dict[str, Any]]:
    stats = recipe_statistics(recipes, groups)
    return lever_verdicts(stats, {f"lever{j}": {"x": [f"x{j}"], "y": [f"y{j}"]} for j in range(sims)})


def test_the_verdict_reads_the_interval() -> None:
    assert verdict(0.001, 0.03) == "matters" and verdict(-0.03, -0.001) == "matters"
    assert verdict(-0.01, 0.01) == "no difference" and verdict(-0.004, 0.009, margin=0.01) == "no difference"
    assert verdict(-0.011, 0.005) == "undecided" and verdict(-0.004, 0.009, margin=0.005) == "undecided"


def test_a_clear_effect_matters() -> None:
    rows = one_lever(*simulate_pairs(1, 5, 100, 0.08, seed=1))
    x, y = rows
    assert (x["value"], x["recipe"], x["versus"], y["versus"]) == ("x", "x0", "y0", "x0")
    assert x["verdict"] == y["verdict"] == "matters" and x["need"] is None
    assert x["hi"] < 0 < y["lo"] and x["gap"] == -y["gap"]
    assert -0.10 < x["gap"] < -0.06


def test_identical_recipes_with_many_samples_make_no_difference() -> None:
    x, _ = one_lever(*simulate_pairs(1, 20, 400, 0.0, seed=1, sd_seed=0.005))
    assert x["verdict"] == "no difference" and x["need"] is None
    assert -0.01 <= x["lo"] < x["gap"] < x["hi"] <= 0.01


def test_a_small_noisy_sample_is_undecided_and_its_need_decides_most_simulations() -> None:
    x, _ = one_lever(*simulate_pairs(1, 2, 30, 0.03, seed=4))
    assert x["verdict"] == "undecided"
    assert x["lo"] < 0 < x["hi"] and x["hi"] - x["lo"] > 0.2
    wanted = x["need"]
    assert wanted == {"replicates": 7, "episodes": 66}
    # 40 fresh sessions of that size, with the same true gap: most of them reach a verdict (the right one).
    rows = one_lever(*simulate_pairs(40, wanted["replicates"], wanted["episodes"], 0.03, seed=104), sims=40)
    said = [r["verdict"] for r in rows if r["value"] == "x"]
    assert said.count("matters") / len(said) >= 0.6, said
    assert "no difference" not in said


def test_need_raises_the_count_that_dominates_and_asks_for_replicates_when_there_is_one() -> None:
    episodes_heavy = Gap(point=0.02, lo=-0.01, hi=0.05, var_seeds=1e-6, var_episodes=2.3e-4)
    got = need(episodes_heavy, 5, 50)
    wanted = (0.02 * 1.959964 / (1.959964 + 0.841621) / 1.959964) ** 2
    upper = 4 / (4 * (1 - 2 / 36 - 0.841621 * math.sqrt(2 / 36)) ** 3)  # 80 % bound of a 5-value variance
    seeds = 1e-6 * upper * (2.776 / 1.959964) ** 2
    assert got == {"replicates": 5, "episodes": math.ceil(50 * 2.3e-4 / (wanted - seeds))}
    seeds_heavy = Gap(point=0.02, lo=-0.01, hi=0.05, var_seeds=2.3e-4, var_episodes=1e-6)
    more = need(seeds_heavy, 5, 50)
    assert more["episodes"] == 50 and more["replicates"] > 5
    one = need(Gap(point=0.02, lo=-0.01, hi=0.05, var_seeds=0.0, var_episodes=2.3e-4), 1, 50)
    assert one["replicates"] == 3 and one["episodes"] > 50


def test_a_lever_compares_each_values_best_with_the_best_of_the_others() -> None:
    recipes, groups = simulate_pairs(3, 3, 60, 0.05, seed=7)  # x<j> ≈ 0.70, y<j> ≈ 0.75
    stats = recipe_statistics(recipes, groups)
    rows = lever_verdicts(stats, {"operator": {"slerp": ["x0", "y0"], "layer": ["x1"], "none": ["z"]},
                                  "alone": {"only": ["x2", "y2"]}})
    assert [r["value"] for r in rows] == ["slerp", "layer"]  # no recipe: left out; one value: no lever
    slerp, layer = rows
    assert slerp["recipe"] == "y0" and slerp["versus"] == "x1" and slerp["gap"] > 0
    assert layer["recipe"] == "x1" and layer["versus"] == "y0" and layer["gap"] == pytest.approx(-slerp["gap"])
    assert {"lever", "value", "gap", "lo", "hi", "verdict", "need"} <= set(slerp)
