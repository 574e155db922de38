"""Ranking, intervals and the tied set, return-drop, the Pareto mark, the legend, CSV and the recommendation, on
hand-made records whose per-state agreements are known."""

from __future__ import annotations

import csv
import io
import json

import numpy as np

from harness.answer.leaderboard import build_rows, columns, legend, markdown, outputs, pareto_front, table, to_csv
from harness.answer.recommend import recommend, recommendation_text
from harness.evaluate.intervals import pack_bits

ESTABLISHED_CSV = [
    "rank", "child_id", "crossover_mode", "crossover_alpha", "crossover_seed", "finetune_regime", "finetune_epochs",
    "finetune_lr", "finetune_quantization_applied", "primary_metric", "child_vs_parent_a_agreement",
    "child_vs_parent_b_agreement", "oracle_agreement", "kl_divergence_a", "kl_divergence_b", "mse_a", "mse_b",
    "cosine_a", "cosine_b", "degenerate", "child_pt_path", "eval_report_path", "run_config_path",
    "is_parent_baseline",
]
N = 400  # held-out states of the hand-made records


def _pair(t: float) -> dict:
    return {"top1": t, "top_k": {"1": t, "2": 1.0, "3": 1.0}, "kl": 0.1, "mse": 0.2, "mae": 0.3, "cosine": 0.9}


def _bits(share: float, seed: int) -> np.ndarray:
    """A per-state agreement vector with exactly ``share`` of N states agreeing, in a seeded order."""
    v = np.zeros(N, dtype=bool)
    v[: int(round(share * N))] = True
    return np.random.default_rng(seed).permutation(v)


def _rec(i: int, mode: str, regime: str, a: float, b: float, *, steps: int = 100, ret: list[float] | None = None,
         latency: float = 0.070, status: str = "ok", ranked: str = "float", size: int = 20_000) -> dict:
    ma, mb = _bits(a, 2 * i), _bits(b, 2 * i + 1)
    a, b = float(ma.mean()), float(mb.mean())
    m = {"vs_parent_a": _pair(a), "vs_parent_b": _pair(b), "oracle": max(a, b), "primary": min(a, b), "bound": 0.8,
         "bound_ratio": min(a, b) / 0.8}
    return {
        "child_id": f"{i:03d}_{mode}_a0p50_sNone_{regime}", "index": i,
        "crossover": {"mode": mode, "alpha": 0.5, "seed": None},
        "finetune_regime": {"name": regime, "epochs": 5 if regime == "short" else 20,
                            "lr": 1e-3 if regime == "short" else 1e-4, "quantization_applied": "none"},
        "status": status, "primary": None if status == "diverged" else min(a, b), "ranked_model": ranked,
        "after_finetune": m, "int8": None,
        "return": None if ret is None else {"mean": float(np.mean(ret)), "std": float(np.std(ret)), "returns": ret},
        "finetune_steps": steps, "model_bytes": size,
        "latency_ms": {"ranked": latency, "q1": latency * 0.98, "q3": latency * 1.02},
        "rows": {"n": N, "agree_a": pack_bits(ma), "agree_b": pack_bits(mb)},
    }


RET_A = [250.0 + d for d in (-6, 2, 5, -3, 1, 0, 4, -2, 3, -4)]
RET_B = [240.0 + d for d in (-5, 3, 6, -4, 2, -1, 5, -3, 2, -5)]
PARENTS = {"agree_ab": 0.6, "bound": 0.8, "vs": {"kl": 0.5, "mse": 1.0, "cosine": 0.7},
           "returns": {"parent_a": {"mean": float(np.mean(RET_A)), "std": 4.0, "returns": RET_A},
                       "parent_b": {"mean": float(np.mean(RET_B)), "std": 4.0, "returns": RET_B}},
           "latency_ms": {"parent_a": 0.07, "parent_b": 0.07}}
SPLIT = {"method": "rows", "eval_groups": None}


def _manifest(children: list[dict], **extra: object) -> dict:
    return {"space": "minimal", "complete": True, "children": children, "expected_children": [c["child_id"] for c in
            children], "parents": PARENTS, "split": SPLIT, "options": {"teacher": "a"}, "latency_mode": "timer",
            **extra}


def test_rank_ties_go_to_mean_agreement_then_return_then_cost() -> None:
    recs = [
        _rec(0, "random", "short", 0.70, 0.90, ret=[100.0] * 10),   # primary .70, mean .80
        _rec(1, "layer", "short", 0.70, 0.80, ret=[300.0] * 10),    # primary .70, mean .75
        _rec(2, "weighted", "long", 0.75, 0.70, ret=[50.0] * 10, steps=400),
        _rec(3, "weighted", "short", 0.90, 0.90, status="diverged"),
    ]
    rows = build_rows(recs, PARENTS)
    assert [r["child_id"][:3] for r in rows[:4]] == ["000", "001", "002", "003"]
    assert [r["rank"] for r in rows[:4]] == [1, 2, 3, 4]
    assert rows[3]["status"] == "diverged"  # non-finite children rank last whatever their stale numbers
    assert [r["child_id"] for r in rows[4:]] == ["parent_a", "parent_b"]
    pa = rows[4]
    agreements = (pa["primary_metric"], pa["child_vs_parent_a_agreement"], pa["child_vs_parent_b_agreement"])
    assert agreements == (0.6, 1.0, 0.6)
    assert pa["return_mean"] == PARENTS["returns"]["parent_a"]["mean"] and pa["rank"] is None


def test_intervals_ties_and_p_best_come_from_a_paired_bootstrap() -> None:
    recs = [_rec(0, "weighted", "short", 0.80, 0.70), _rec(1, "layer", "short", 0.80, 0.69),
            _rec(2, "random", "long", 0.80, 0.55)]
    rows = build_rows(recs, PARENTS, SPLIT)
    top, near, far = rows[:3]
    # A primary near 0.7 on 400 states: standard error sqrt(.7*.3/400) = 0.023, a 95 % interval of about ±0.045.
    half = (top["primary_metric_hi"] - top["primary_metric_lo"]) / 2
    assert 0.035 < half < 0.055 and top["primary_metric_lo"] < top["primary_metric"] < top["primary_metric_hi"]
    assert top["tied_with_best"] and near["tied_with_best"] and not far["tied_with_best"]
    assert abs(top["p_best"] + near["p_best"] + far["p_best"] - 1.0) < 1e-9 and far["p_best"] < 0.01
    assert rows == build_rows(recs, PARENTS, SPLIT)  # seeded: identical every time
    # The table shows the interval as ±half-width, and the marks.
    text = table(rows)
    assert f"{top['primary_metric']:.4f} ±{half:.3f}" in text and "| =" in text.replace("  ", " ")


def test_episodes_are_resampled_whole_so_correlated_states_give_wider_intervals() -> None:
    rec = _rec(0, "weighted", "short", 0.75, 0.75)
    by_rows = build_rows([rec], None, SPLIT)[0]
    episodes = {"method": "episodes", "eval_groups": [[e, 20] for e in range(20)]}  # 20 episodes of 20 states
    # Make agreement constant within each episode: the evidence is 20 units, not 400.
    bits = np.repeat(np.arange(20) % 4 != 0, 20)
    rec["rows"] = {"n": N, "agree_a": pack_bits(bits), "agree_b": pack_bits(bits)}
    by_episode = build_rows([rec], None, episodes)[0]
    width = lambda r: r["primary_metric_hi"] - r["primary_metric_lo"]  # noqa: E731
    assert width(by_episode) > 1.8 * width(by_rows)


def test_a_child_whose_return_is_significantly_below_the_weaker_parent_is_return_drop_and_never_recommended() -> None:
    drop = _rec(0, "weighted", "short", 0.80, 0.80, ret=[r - 40 for r in RET_B])  # best primary, far worse return
    fine = _rec(1, "layer", "short", 0.79, 0.79, ret=[r + 1 for r in RET_B])
    rows = build_rows([drop, fine], PARENTS, SPLIT)
    assert [r["status"] for r in rows[:2]] == ["return-drop", "ok"]
    assert rows[0]["return_vs_weaker_parent_hi"] < 0 < rows[1]["return_vs_weaker_parent_hi"]
    assert rows[0]["return_se"] == np.std(drop["return"]["returns"], ddof=1) / np.sqrt(10)
    rec = recommend(rows, _manifest([drop, fine]))
    assert rec["recommended"]["child_id"] == fine["child_id"] and rec["prefer_parent"] is None
    assert not rows[0]["pareto"]  # never on the Pareto front either


def test_pareto_is_stable_under_latency_noise_and_skips_children_that_did_not_finish_well() -> None:
    cheap = _rec(0, "weighted", "short", 0.80, 0.80, steps=100, latency=0.070)
    costly = _rec(1, "random", "long", 0.85, 0.85, steps=400, latency=0.140)  # noise: same model kind and size
    dominated = _rec(2, "layer", "long", 0.75, 0.75, steps=400, latency=0.030)
    int8 = _rec(3, "layer", "short_qat", 0.70, 0.70, steps=200, latency=0.030, ranked="int8", size=6_000)
    degenerate = _rec(4, "weighted", "long", 0.95, 0.95, steps=50, status="degenerate")
    rows = build_rows([cheap, costly, dominated, int8, degenerate], None)
    assert pareto_front(rows) == {cheap["child_id"], costly["child_id"], int8["child_id"]}
    assert {r["child_id"] for r in rows if r["pareto"]} == pareto_front(rows)
    slower = dict(cheap, latency_ms={"ranked": 0.5, "q1": 0.49, "q3": 0.51})  # 7x slower: still the same model
    assert build_rows([slower, costly, dominated, int8], None)[1]["pareto"]


def test_legend_explains_every_column_mark_and_present_status() -> None:
    rows = build_rows([_rec(0, "layer", "short", 0.7, 0.6, status="degenerate")], PARENTS, SPLIT)
    text = "\n".join(legend(rows))
    for needle in ("primary: min(agree_a, agree_b)", "± / [lo, hi]: the 95 % interval", "P(best)", "mark =",
                   "mark *", "mark >", "before ft: primary of the crossed child before fine-tuning",
                   "child_id: NNN_<mode>_a<alpha>_s<seed>_<regime>", "a0p50 = alpha 0.50", "sNone = no seed",
                   "_aam = activations alignment", "_awm = weights alignment", "_t<teacher>",
                   "status degenerate", "status baseline"):
        assert needle in text, needle
    assert "status return-drop" not in text  # only the statuses that occur
    before = _rec(1, "layer", "long", 0.8, 0.7)
    before["before_finetune"] = {"primary": 0.25}
    rows = build_rows([before], PARENTS, SPLIT)
    shown = table(rows, chosen="parent_b")
    head, _, first, *_, parent_b = shown.splitlines()
    assert [c.strip() for c in head.strip("|").split("|")][2:4] == ["primary", "before ft"]
    assert [c.strip() for c in first.strip("|").split("|")][3] == "0.2500" and parent_b.rstrip(" |").endswith(">")
    assert text.splitlines()[0] in markdown(rows, _manifest([]))


def test_csv_starts_with_the_established_columns_and_holds_the_intervals_as_numbers() -> None:
    rows = build_rows([_rec(0, "layer", "short", 0.7, 0.6)], PARENTS, SPLIT)
    assert list(columns()[: len(ESTABLISHED_CSV)]) == ESTABLISHED_CSV
    parsed = list(csv.DictReader(io.StringIO(to_csv(rows))))
    assert parsed[0]["primary_metric"] == "0.6" and parsed[0]["degenerate"] == "False"
    assert 0.5 < float(parsed[0]["primary_metric_lo"]) < 0.6 < float(parsed[0]["primary_metric_hi"]) < 0.7
    assert parsed[1]["child_id"] == "parent_a" and parsed[1]["crossover_alpha"] == ""


def test_the_recommendation_is_a_child_or_a_parent_never_both_and_explains_the_teacher_pull() -> None:
    below = [_rec(0, "weighted", "short", 0.90, 0.58, ret=RET_A), _rec(1, "layer", "long", 0.88, 0.55, ret=RET_A)]
    rec = recommend(build_rows(below, PARENTS, SPLIT), _manifest(below))
    assert rec["recommended"] is None and rec["prefer_parent"]["parent"] == "parent_a"
    text = recommendation_text(rec)
    assert "Use parent_a (a parent): no child here beats the parents." in text
    # A parent is preferred over the other for a stated reason: its return, with the paired interval.
    assert "which parent: its return 250.0 is above parent_b's 240.0 (A - B +10.0, paired 95 % interval [+9.4, " \
        "+10.6])" in text
    assert "next: rerun with --crossover-teacher both" in text
    assert "pulls toward A; --crossover-teacher both" in text and "Use child" not in text
    assert "§" not in text and "seed" not in text.lower()
    above = [_rec(0, "weighted", "short", 0.78, 0.76, ret=RET_A), _rec(1, "layer", "long", 0.77, 0.75, ret=RET_A),
             _rec(2, "random", "long", 0.62, 0.60)]
    rec = recommend(build_rows(above, PARENTS, SPLIT), _manifest(above))
    assert rec["recommended"]["child_id"] == above[0]["child_id"] and rec["prefer_parent"] is None
    assert rec["tied_with_recommended"] == [above[1]["child_id"]]
    assert set(rec["best_per_mode"]) == {"weighted", "layer", "random"}
    assert rec["best_per_regime"]["long"]["child_id"] == above[1]["child_id"]
    text = recommendation_text(rec)
    assert text.count("Use child") == 1 and "(a parent)" not in text and "statistically tied with it" in text
    # The tie-break named is the one applied, and the tied set's best return is named as measured.
    assert "keeps the leaderboard's order: primary, then mean agreement, return, fine-tune steps); within that set, " \
        "the recommended child itself has the highest return (250.0 ±1.2)" in text
    # The longest regime is not the best here, so no advice to fine-tune longer.
    assert "longer fine-tuning" not in text


def test_a_subset_session_says_so_and_the_files_are_strict_json() -> None:
    recs = [_rec(0, "weighted", "short", 0.78, 0.76, ret=RET_A)]
    manifest = _manifest(recs, selection={"space_children": 9, "selected": 1, "subset": True, "how": ["-k weighted"]})
    files = outputs(manifest)
    assert "ran a subset: 1 of the 9 children of space 'minimal' (-k weighted)" in files["recommendation.txt"]
    assert "ran a subset" in files["leaderboard.md"]
    assert json.loads(json.dumps(files["recommendation.json"], allow_nan=False))["subset"].startswith("this session")
