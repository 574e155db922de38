"""The established metric definitions on hand-made Q-tables, chunked == single-batch, evaluate_model, latency."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import nn

from harness.core.errors import HarnessError, StatesError
from harness.evaluate.timing import measure_latency
from harness.evaluate.vs_parents import evaluate_model, pair_metrics, parent_baseline, predict
from harness.networks.qnetwork import QNetwork

torch.set_num_threads(1)

REF = torch.tensor([[1.0, 2.0, 3.0],
                    [5.0, 5.0, 0.0],    # tie: argmax -> index 0
                    [0.0, 1.0, 0.0]])
QUERY = torch.tensor([[3.0, 2.0, 1.0],   # argmax 0 vs ref 2; ref's argmax is last in query's ranking
                      [1.0, 0.0, 0.5],   # argmax 0 == ref (tie resolved to the first index)
                      [0.0, 4.0, 2.0]])  # agree


def _softmax(v: np.ndarray) -> np.ndarray:
    e = np.exp(v - v.max(1, keepdims=True))
    return e / e.sum(1, keepdims=True)


def test_pair_metrics_on_a_hand_made_table() -> None:
    m = pair_metrics(REF, QUERY)
    assert m["top1"] == pytest.approx(2 / 3)
    assert m["top_k"] == pytest.approx({"1": 2 / 3, "2": 2 / 3, "3": 1.0})
    r, q = REF.numpy().astype(np.float64), QUERY.numpy().astype(np.float64)
    p, qq = _softmax(r), _softmax(q)
    assert m["kl"] == pytest.approx(float((p * (np.log(p) - np.log(qq))).sum(1).mean()), rel=1e-9)
    assert m["mse"] == pytest.approx(float(((q - r) ** 2).sum()) / 9, rel=1e-12)
    assert m["mae"] == pytest.approx(float(np.abs(q - r).sum()) / 9, rel=1e-12)
    cos = (r * q).sum(1) / (np.linalg.norm(r, axis=1) * np.linalg.norm(q, axis=1))
    assert m["cosine"] == pytest.approx(float(cos.mean()), rel=1e-9)
    assert set(m) == {"top1", "top_k", "kl", "mse", "mae", "cosine"}


def test_k_larger_than_actions_is_capped_and_identical_tables_are_perfect() -> None:
    two = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    m = pair_metrics(two, -two, ks=(1, 3, 5))  # k' = min(k, 2) covers every action
    assert m["top1"] == 0.0 and m["top_k"] == {"1": 0.0, "3": 1.0, "5": 1.0}
    same = pair_metrics(REF, REF)
    assert (same["top1"], same["kl"], same["mse"], same["mae"]) == (1.0, 0.0, 0.0, 0.0)
    assert same["cosine"] == pytest.approx(1.0)
    zeros = pair_metrics(torch.zeros(2, 3), torch.zeros(2, 3))  # cosine eps keeps 0/0 at 0
    assert zeros["cosine"] == 0.0 and zeros["top1"] == 1.0  # all ties -> index 0 on both sides


def test_chunked_evaluation_equals_single_batch() -> None:
    gen = torch.Generator().manual_seed(0)
    states = torch.randn(1001, 8, generator=gen)
    child, a, b = QNetwork(8, 4, 16).eval(), QNetwork(8, 4, 16).eval(), QNetwork(8, 4, 16).eval()
    la, lb = predict(a, states), predict(b, states)
    torch.testing.assert_close(predict(a, states, chunk_size=100), la, rtol=1e-6, atol=1e-6)
    agree = parent_baseline(la, lb)["top1"]
    whole = evaluate_model(child, states, la, lb, agree, chunk_size=65536)
    parts = evaluate_model(child, states.numpy(), la, lb, agree, chunk_size=97)
    assert whole.keys() == parts.keys() == {"vs_parent_a", "vs_parent_b", "oracle", "primary", "bound",
                                            "bound_ratio"}
    for side in ("vs_parent_a", "vs_parent_b"):
        assert (whole[side]["top1"], whole[side]["top_k"]) == (parts[side]["top1"], parts[side]["top_k"])
        for key in ("kl", "mse", "mae", "cosine"):
            assert whole[side][key] == pytest.approx(parts[side][key], rel=1e-6)
    assert whole["oracle"] == parts["oracle"]


def test_evaluate_model_primary_oracle_and_bound_by_hand() -> None:
    # nn.Identity turns the states into the child's Q-values, so every number is countable by hand.
    child = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 0.0], [0.0, 1.0]])
    la = torch.tensor([[1.0, 0.0], [1.0, 0.0], [1.0, 0.0], [1.0, 0.0]])  # agrees on rows 0, 2
    lb = torch.tensor([[0.0, 1.0], [0.0, 1.0], [0.0, 1.0], [1.0, 0.0]])  # agrees on row 1
    m = evaluate_model(nn.Identity(), child, la, lb, agree_ab=0.25, chunk_size=3)
    assert m["vs_parent_a"]["top1"] == 0.5 and m["vs_parent_b"]["top1"] == 0.25
    assert m["primary"] == 0.25 and m["oracle"] == 0.75  # row 3: child 1, A 0, B 0
    assert m["bound"] == 0.625 and m["bound_ratio"] == pytest.approx(0.4)


def test_predict_reads_a_memmap_and_restores_train_mode(tmp_path) -> None:
    arr = np.random.default_rng(0).standard_normal((50, 8)).astype(np.float32)
    np.save(tmp_path / "s.npy", arr)
    mm = np.load(tmp_path / "s.npy", mmap_mode="r")
    net = QNetwork(8, 4, 16).train()
    out = predict(net, mm, chunk_size=7)
    assert net.training and out.shape == (50, 4) and out.dtype == torch.float32
    with torch.no_grad():
        torch.testing.assert_close(out, net.eval()(torch.from_numpy(arr)))


def test_bad_input_raises() -> None:
    with pytest.raises(HarnessError, match="same \\(N, A\\) shape"):
        pair_metrics(torch.zeros(3, 4), torch.zeros(3, 3))
    with pytest.raises(HarnessError, match="top-k values must be >= 1"):
        pair_metrics(REF, QUERY, ks=(0,))
    with pytest.raises(StatesError, match="non-empty 2-D"):
        predict(QNetwork(8, 4, 16), np.zeros((0, 8), dtype=np.float32))
    with pytest.raises(HarnessError, match="chunk_size must be >= 1"):
        predict(QNetwork(8, 4, 16), np.zeros((2, 8), dtype=np.float32), chunk_size=0)
    with pytest.raises(HarnessError, match="do not match 4 states"):
        evaluate_model(nn.Identity(), torch.zeros(4, 2), torch.zeros(3, 2), torch.zeros(3, 2), 0.5)


def test_measure_latency_reports_a_median_of_the_timed_rounds() -> None:
    net = QNetwork(8, 4, 16).train()
    res = measure_latency(net, torch.zeros(1, 8))
    assert res["rounds"] == 20 and res["warmup"] == 3 and 0.0 < res["median_ms"] < 1000.0
    assert net.training and math.isfinite(res["median_ms"])
    assert measure_latency(net, torch.zeros(1, 8), rounds=0)["median_ms"] == 0.0
