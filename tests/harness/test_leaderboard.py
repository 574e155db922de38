"""Ranking, the Pareto mark, baseline rows, CSV and the recommendation, on hand-made records."""

from __future__ import annotations

import csv
import io

from harness.leaderboard import build_rows, columns, pareto_front, recommendation, to_csv

ESTABLISHED_CSV = [
    "rank", "child_id", "crossover_mode", "crossover_alpha", "crossover_seed", "finetune_regime", "finetune_epochs",
    "finetune_lr", "finetune_quantization_applied", "primary_metric", "child_vs_parent_a_agreement",
    "child_vs_parent_b_agreement", "oracle_agreement", "kl_divergence_a", "kl_divergence_b", "mse_a", "mse_b",
    "cosine_a", "cosine_b", "degenerate", "child_pt_path", "eval_report_path", "run_config_path",
    "is_parent_baseline",
]


def _m(a: float, b: float) -> dict:
    pair = lambda t: {"top1": t, "top_k": {"1": t, "2": 1.0, "3": 1.0}, "kl": 0.1, "mse": 0.2, "mae": 0.3,  # noqa: E731
                      "cosine": 0.9}
    return {"vs_parent_a": pair(a), "vs_parent_b": pair(b), "oracle": max(a, b), "primary": min(a, b),
            "bound": 0.8, "bound_ratio": min(a, b) / 0.8}


def _rec(i: int, mode: str, regime: str, a: float, b: float, *, steps: int = 100, ret: float | None = None,
         latency: float = 0.070, status: str = "ok") -> dict:
    return {
        "child_id": f"{i:03d}_{mode}_a0p50_sNone_{regime}", "index": i,
        "crossover": {"mode": mode, "alpha": 0.5, "seed": None},
        "finetune_regime": {"name": regime, "epochs": 5 if regime == "short" else 20,
                            "lr": 1e-3 if regime == "short" else 1e-4, "quantization_applied": "none"},
        "status": status, "primary": None if status == "diverged" else min(a, b), "ranked_model": "float",
        "after_finetune": _m(a, b), "int8": None, "return": None if ret is None else {"mean": ret, "std": 1.0},
        "finetune_steps": steps, "latency_ms": {"ranked": latency},
    }


PARENTS = {"agree_ab": 0.6, "vs": {"kl": 0.5, "mse": 1.0, "cosine": 0.7},
           "returns": {"parent_a": {"mean": 250.0, "std": 5.0}, "parent_b": {"mean": 240.0, "std": 6.0}},
           "latency_ms": {"parent_a": 0.07, "parent_b": 0.07}}


def test_rank_ties_go_to_mean_agreement_then_return_then_cost():
    recs = [
        _rec(0, "random", "short", 0.70, 0.90, ret=100.0),   # primary .70, mean .80
        _rec(1, "layer", "short", 0.70, 0.80, ret=300.0),    # primary .70, mean .75
        _rec(2, "weighted", "long", 0.75, 0.70, ret=50.0, steps=400),
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
    assert pa["return_mean"] == 250.0 and pa["bound_ratio"] == 0.6 / 0.8 and pa["rank"] is None


def test_pareto_ignores_latency_noise_but_not_real_differences():
    cheap = _rec(0, "weighted", "short", 0.80, 0.80, steps=100, latency=0.070)
    costly = _rec(1, "random", "long", 0.85, 0.85, steps=400, latency=0.072)
    dominated = _rec(2, "layer", "long", 0.75, 0.75, steps=400, latency=0.069)  # 1.5% faster: noise
    int8 = _rec(3, "layer", "short_qat", 0.70, 0.70, steps=200, latency=0.030)  # really faster
    rows = build_rows([cheap, costly, dominated, int8], None)
    assert pareto_front(rows) == {cheap["child_id"], costly["child_id"], int8["child_id"]}
    assert {r["child_id"] for r in rows if r["pareto"]} == pareto_front(rows)


def test_csv_starts_with_the_established_columns_and_keeps_none_empty():
    rows = build_rows([_rec(0, "layer", "short", 0.7, 0.6)], PARENTS)
    assert list(columns()[: len(ESTABLISHED_CSV)]) == ESTABLISHED_CSV
    parsed = list(csv.DictReader(io.StringIO(to_csv(rows))))
    assert parsed[0]["primary_metric"] == "0.6" and parsed[0]["degenerate"] == "False"
    assert parsed[1]["child_id"] == "parent_a" and parsed[1]["crossover_alpha"] == ""


def test_recommendation_says_when_no_child_beats_the_parents_and_when_return_disagrees():
    recs = [_rec(0, "weighted", "short", 0.58, 0.9, ret=100.0), _rec(1, "layer", "long", 0.55, 0.9, ret=260.0)]
    text = recommendation(build_rows(recs, PARENTS), PARENTS)
    assert "No child beats the parent baseline" in text
    assert "NOT the top child by agreement: 001_layer_a0p50_sNone_long earns the best return" in text
    assert "Crossover : weighted" in text and "Fine-tune : short  (LR=1e-03  epochs=5)" in text
    better = [_rec(0, "weighted", "short", 0.65, 0.9, ret=300.0)]
    text = recommendation(build_rows(better, PARENTS), PARENTS)
    assert "Children above the parent baseline: 1 of 1" in text and "the same child" in text
    assert recommendation([], None) == "No runs to analyse — manifest is empty."
