"""Recipe statistics: replicate means, the stratified bootstrap, K = 1 against the per-child intervals, coverage."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from harness.core.errors import HarnessError
from harness.evaluate import intervals as bootstrap
from harness.evaluate.intervals import _interval
from harness.evaluate.statistics import recipe_statistics

DATA = Path(__file__).parent / "data" / "minimal_session_rows.json"


def simulate(sims: int, k: int, episodes: int, seed: int, *, mu: float = 0.70, sd_seed: float = 0.01,
             sd_episode: float = 0.08, sd_cell: float = 0.02) -> tuple[dict[str, list[dict[str, Any]]], np.ndarray]:
    """``sims`` independent recipes (one per simulated session), each with ``k`` replicates evaluated on
    ``episodes`` episodes of 10-40 states: agreement with A is Bernoulli(mu + seed effect + episode effect + cell
    noise), with B Bernoulli(0.95), so the true primary is ``mu``."""
    rng = np.random.default_rng(seed)
    groups = np.repeat(np.arange(episodes), rng.integers(10, 41, size=episodes))
    n = len(groups)
    p = (mu + rng.normal(0, sd_seed, (sims, k, 1)) + rng.normal(0, sd_episode, (sims, 1, episodes))
         + rng.normal(0, sd_cell, (sims, k, episodes)))
    a = rng.random((sims, k, n)) < np.clip(p, 0, 1)[..., groups]
    b = rng.random((sims, k, n)) < 0.95
    return ({f"sim{j}": [{"n": n, "agree_a": bootstrap.pack_bits(a[j, r]), "agree_b": bootstrap.pack_bits(b[j, r])}
                         for r in range(k)] for j in range(sims)}, groups)


def test_one_replicate_per_recipe_gives_a_real_sessions_per_child_statistics_bit_for_bit() -> None:
    data = json.loads(DATA.read_text())
    rows = {c: rec["rows"] for c, rec in data["children"].items()}
    n = next(iter(rows.values()))["n"]
    groups = bootstrap.groups_from_rle(data["eval_groups"], n)
    old = bootstrap.agreement_intervals(rows, groups, data["rank_1"], parents=data["parents_agree_ab"])
    stats = recipe_statistics({c: [r] for c, r in rows.items()}, groups, best=data["rank_1"],
                              parents=data["parents_agree_ab"])
    new = stats.summary()
    assert len(old) == 9
    for child, got in old.items():
        for key, value in got.items():
            assert new[child][key] == value, (child, key)  # exact: same resamples, same arithmetic
        assert new[child]["mean"] == data["children"][child]["primary"]  # the record's primary, exactly
        assert new[child]["replicates"] == 1 and new[child]["sd"] is None
        board = data["leaderboard"][child]
        assert (board["primary_metric_lo"], board["primary_metric_hi"]) == got["primary"]
        assert board["p_best"] == got["p_best"]


def test_one_replicate_matches_on_random_records_with_rows_as_units() -> None:
    rng = np.random.default_rng(5)
    n = 301
    rows = {f"c{i}": {"n": n, "agree_a": bootstrap.pack_bits(rng.random(n) < 0.6 + 0.02 * i),
                      "agree_b": bootstrap.pack_bits(rng.random(n) < 0.7)} for i in range(4)}
    groups = np.arange(n)
    old = bootstrap.agreement_intervals(rows, groups, "c3", resamples=450)
    new = recipe_statistics({c: [r] for c, r in rows.items()}, groups, best="c3", resamples=450).summary()
    assert all(new[c][k] == v for c in old for k, v in old[c].items())


def test_replicates_give_the_mean_the_spread_and_a_paired_gap() -> None:
    recipes, groups = simulate(3, 4, 30, seed=2)
    recipes["sim0"] = recipes["sim0"][:3]  # recipes may have different replicate counts
    stats = recipe_statistics(recipes, groups)
    n = len(groups)
    per_rep = [[min(bootstrap.unpack_bits(r["agree_a"], n).sum(), bootstrap.unpack_bits(r["agree_b"], n).sum()) / n
                for r in recipes[s]] for s in ("sim0", "sim1", "sim2")]
    summary = stats.summary()
    for s, values in zip(("sim0", "sim1", "sim2"), per_rep):
        assert summary[s]["mean"] == pytest.approx(np.mean(values), abs=1e-12)
        assert summary[s]["sd"] == pytest.approx(np.std(values, ddof=1), abs=1e-12)
        assert summary[s]["replicates"] == len(values)
        lo, hi = summary[s]["primary"]
        assert lo < summary[s]["mean"] < hi
    assert stats.best == max(summary, key=lambda s: summary[s]["mean"])
    assert sum(summary[s]["p_best"] for s in summary) == pytest.approx(1.0)
    gap, back = stats.gap("sim1", "sim2"), stats.gap("sim2", "sim1")
    assert gap.point == pytest.approx(summary["sim1"]["mean"] - summary["sim2"]["mean"])
    assert (gap.lo, gap.hi) == pytest.approx((-back.hi, -back.lo))
    assert gap.var_seeds > 0 and gap.var_episodes > 0
    assert summary[stats.best]["tied_with_best"] and summary[stats.best]["gap"] == (0.0, 0.0)


def test_a_recipes_interval_depends_on_its_own_replicates_only_and_repeats_bitwise() -> None:
    recipes, groups = simulate(4, 3, 25, seed=3)
    alone = recipe_statistics({"sim1": recipes["sim1"]}, groups)
    together = recipe_statistics(recipes, groups)
    again = recipe_statistics(recipes, groups)
    assert alone.interval("sim1") == together.interval("sim1")
    assert np.array_equal(together.samples["primary"], again.samples["primary"])


def test_rows_of_another_split_are_refused() -> None:
    recipes, groups = simulate(1, 2, 10, seed=4)
    with pytest.raises(HarnessError, match="recipe 'sim0'"):
        recipe_statistics(recipes, groups[:-1])
    with pytest.raises(HarnessError, match="unknown recipe 'x'"):
        recipe_statistics(recipes, groups).gap("x", "sim0")


@pytest.mark.parametrize(("k", "sd_seed", "sd_episode"), [(5, 0.01, 0.08), (5, 0.02, 0.03), (3, 0.01, 0.08)],
                         ids=["episodes-dominate", "seeds-dominate", "three-replicates"])
def test_the_95_interval_covers_the_truth_in_93_to_97_percent_of_simulated_sessions(
        k: int, sd_seed: float, sd_episode: float) -> None:
    # 1000 simulated sessions with a known mean (0.70), a seed effect, an episode effect and per-state noise; each
    # is one recipe of one call (recipes share the episode resamples, which keeps the sessions independent).
    recipes, groups = simulate(1000, k, 50, seed=11, sd_seed=sd_seed, sd_episode=sd_episode)
    lo, hi = _interval(recipe_statistics(recipes, groups).samples["primary"])
    coverage = float(((lo <= 0.70) & (hi >= 0.70)).mean())
    assert 0.93 <= coverage <= 0.97, coverage


def test_resample_blocks_bound_memory_without_changing_an_interval(monkeypatch) -> None:
    rng = np.random.default_rng(11)
    n = 997
    rows = {f"c{i}": {"n": n, "agree_a": bootstrap.pack_bits(rng.random(n) < 0.6 + 0.03 * i),
                      "agree_b": bootstrap.pack_bits(rng.random(n) < 0.7)} for i in range(3)}
    parents = bootstrap.pack_bits(rng.random(n) < 0.8)
    groups = np.arange(n)
    recipes = {c: [r, r] for c, r in rows.items()}
    whole = (bootstrap.agreement_intervals(rows, groups, "c2", parents=parents),
             recipe_statistics(recipes, groups, best="c2", parents=parents).summary())
    assert bootstrap.resample_blocks(n, 1000) == [(s, 200) for s in range(0, 1000, 200)]
    # A budget of 7 states' worth of counts a block: 7 // 997 -> blocks of one resample each.
    monkeypatch.setattr(bootstrap, "_BLOCK_ENTRIES", 7 * n + 5)
    assert bootstrap.resample_blocks(n, 20) == [(s, 7) for s in (0, 7)] + [(14, 6)]
    monkeypatch.setattr(bootstrap, "_BLOCK_ENTRIES", 1)
    assert bootstrap.resample_blocks(n, 3) == [(0, 1), (1, 1), (2, 1)]
    bootstrap._LAST.clear()  # the rates of the last columns asked for are kept: compute them again, in blocks
    blocked = (bootstrap.agreement_intervals(rows, groups, "c2", parents=parents),
               recipe_statistics(recipes, groups, best="c2", parents=parents).summary())
    assert blocked == whole  # every interval, bit for bit


def test_per_unit_counts_are_narrow_and_their_resampled_sums_exact(monkeypatch) -> None:
    rng = np.random.default_rng(3)
    n = 5000
    packed = [bootstrap.pack_bits(rng.random(n) < p) for p in (0.2, 0.5, 0.9)]
    groups = np.repeat(np.arange(25), 200)
    groups[:300] = 0  # episodes of up to 300 states
    _, unit = np.unique(groups, return_inverse=True)
    w = bootstrap._counts(np.random.default_rng(0), 25, 40)
    floats = bootstrap.unit_counts(packed, unit, 25)  # few: floats for BLAS, exact below 2**24
    assert floats.dtype == np.float32 and int(floats[2, 0]) == int(bootstrap.unpack_bits(packed[2], n)[:300].sum())
    want = w.astype(np.float64) @ floats.T.astype(np.float64)  # what float64 arithmetic gives
    monkeypatch.setattr(bootstrap, "_FLOAT_COUNTS", 0)  # many: the narrowest integers, multiplied a slice at a time
    per_state = bootstrap.unit_counts(packed, np.arange(n), n)
    assert per_state.dtype == np.uint8  # a byte a unit (18 children x 1,000,000 states: 18 MB, not 144)
    assert np.array_equal(per_state[1], bootstrap.unpack_bits(packed[1], n))
    per_episode = bootstrap.unit_counts(packed, unit, 25)
    assert per_episode.dtype == np.uint16 and np.array_equal(per_episode, floats)
    for counts in (floats, per_episode):
        got = bootstrap.resampled_sums(w, counts)
        assert got.dtype == np.int64 and np.array_equal(got.astype(np.float64), want)
