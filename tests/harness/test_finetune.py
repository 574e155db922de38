"""Distillation loss, val split, hand-written backward/Adam vs torch, determinism, divergence and QAT."""

from __future__ import annotations

import copy
import json
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import harness.finetune as ft
from harness.errors import HarnessError, StatesError
from harness.finetune import MAX_GRAD_NORM, TEMPERATURE, distill_loss, finetune, soft_targets, split_indices
from harness.networks import QNetwork
from harness.quantize import fake_quant_copy, fake_quant_weight, is_int8
from harness.space import Regime

torch.set_num_threads(1)


def _net(seed: int, hidden: int = 32, dropout: float = 0.1) -> QNetwork:
    gen = torch.Generator().manual_seed(seed)
    net = QNetwork(8, 4, hidden, dropout_rate=dropout)
    with torch.no_grad():
        for p in net.parameters():
            p.copy_(torch.randn(p.shape, generator=gen) * 0.3 + (1.0 if p.dim() == 1 and p.shape[0] == hidden else 0))
    return net.eval()


@pytest.fixture(scope="module")
def data() -> tuple[torch.Tensor, torch.Tensor]:
    x = torch.randn(300, 8, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        probs = soft_targets(_net(100)(x))
    return x, probs


SHORT = Regime("t_short", epochs=3, lr=1e-3)


def test_soft_targets_are_softmax_at_t3() -> None:
    z = torch.tensor([[3.0, 0.0, -3.0, 6.0]])
    expected = np.exp(z.numpy()[0] / 3) / np.exp(z.numpy()[0] / 3).sum()
    np.testing.assert_allclose(soft_targets(z)[0].numpy(), expected, rtol=1e-6)
    assert soft_targets(z).dtype == torch.float32 and TEMPERATURE == 3.0 and MAX_GRAD_NORM == 1.0


def test_distill_loss_matches_hand_computation_and_t_squared_scaling() -> None:
    teacher = np.array([[2.0, 1.0, 0.0], [0.0, 0.0, 3.0]])
    child = np.array([[0.5, 1.5, -1.0], [1.0, -1.0, 2.0]])

    def hand(T: float) -> float:
        p = np.exp(teacher / T) / np.exp(teacher / T).sum(1, keepdims=True)
        q = np.exp(child / T) / np.exp(child / T).sum(1, keepdims=True)
        return float((p * (np.log(p) - np.log(q))).sum(1).mean()) * T * T

    zc = torch.tensor(child, dtype=torch.float32)
    for T in (1.0, 3.0, 5.0):
        p = soft_targets(torch.tensor(teacher, dtype=torch.float32), T)
        assert float(distill_loss(zc, p, T)) == pytest.approx(hand(T), rel=1e-5)
    p3 = soft_targets(torch.tensor(teacher, dtype=torch.float32))
    plain_kl = float(F.kl_div(F.log_softmax(zc / 3, 1), p3, reduction="batchmean"))
    assert float(distill_loss(zc, p3)) == pytest.approx(9.0 * plain_kl, rel=1e-6)
    assert float(distill_loss(zc, soft_targets(zc))) == pytest.approx(0.0, abs=1e-6)


def test_split_indices_follow_the_established_rule() -> None:
    train, val = split_indices(100, 0.1, 42)
    perm = np.random.default_rng(42).permutation(100)
    assert len(val) == 10 and np.array_equal(train, perm[:90]) and np.array_equal(val, perm[90:])
    again = split_indices(100, 0.1, 42)
    assert np.array_equal(again[0], train) and np.array_equal(again[1], val)
    assert not np.array_equal(split_indices(100, 0.1, 43)[1], val)
    assert len(split_indices(5, 0.1, 0)[1]) == 1  # max(1, int(0.5))
    for n, frac in ((1, 0.1), (10, 0.0)):  # no training row left / no val requested -> all rows train, in order
        tr, va = split_indices(n, frac, 0)
        assert np.array_equal(tr, np.arange(n)) and len(va) == 0
    with pytest.raises(HarnessError, match="val_fraction must be in"):
        split_indices(10, 1.0, 0)


def _autograd_loss(net: QNetwork, x: torch.Tensor, p: torch.Tensor, masks: list[torch.Tensor], qat: bool) -> None:
    w = dict(net.named_parameters())
    lin = (lambda k: ft_quant(w[k])) if qat else (lambda k: w[k])
    h = x
    for (li, ni), m in zip(((0, 1), (4, 5)), masks):
        h = F.linear(h, lin(f"network.{li}.weight"), w[f"network.{li}.bias"])
        h = F.layer_norm(h, (h.shape[1],), w[f"network.{ni}.weight"], w[f"network.{ni}.bias"]).relu() * m
    distill_loss(F.linear(h, lin("network.8.weight"), w["network.8.bias"]), p).backward()


def ft_quant(w: torch.Tensor) -> torch.Tensor:
    return w + (fake_quant_weight(w) - w).detach()  # STE reference


@pytest.mark.parametrize("qat", [False, True])
def test_hand_written_backward_equals_autograd(data: tuple[torch.Tensor, torch.Tensor], qat: bool) -> None:
    x, p = data[0][:32], data[1][:32]
    child = _net(3)
    gen = torch.Generator().manual_seed(5)
    masks = [(torch.rand(32, 32, generator=gen) >= 0.1).float() / 0.9 for _ in range(2)]
    flat = ft._FlatMLP(child, qat=qat, temperature=TEMPERATURE)
    log_q = torch.empty(32, 4)
    flat.train_step(x, p, masks, log_q)
    ref = copy.deepcopy(child)
    _autograd_loss(ref, x, p, masks, qat)
    grads = flat.views(flat.grad)
    for name, param in ref.named_parameters():
        torch.testing.assert_close(grads[name], param.grad, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(flat.logits(x), fake_quant_copy(child)(x) if qat else child(x))


@pytest.mark.parametrize("fused", [True, False])
def test_flat_adam_and_clip_match_torch(monkeypatch: pytest.MonkeyPatch, fused: bool) -> None:
    if not fused:
        monkeypatch.setattr(ft, "_FUSED_ADAM", None)
    gen = torch.Generator().manual_seed(0)
    mine, ref = torch.randn(50, generator=gen), None
    ref = torch.nn.Parameter(mine.clone())
    grad = torch.zeros(50)
    adam = ft._Adam(mine, grad, lr=1e-2)
    opt = torch.optim.Adam([ref], lr=1e-2, fused=fused, foreach=False if not fused else None)
    for _ in range(5):
        g = torch.randn(50, generator=gen) * 3.0
        grad.copy_(g)
        ref.grad = g.clone()
        adam.clip(1.0)
        torch.nn.utils.clip_grad_norm_([ref], 1.0)
        torch.testing.assert_close(grad, ref.grad, rtol=1e-6, atol=0)
        ref.grad.copy_(grad)  # same clipped grads, so the Adam update itself can be compared bit for bit
        adam.step()
        opt.step()
        assert torch.equal(mine, ref.detach())


def test_finetune_is_deterministic_whatever_the_global_rng(data: tuple[torch.Tensor, torch.Tensor]) -> None:
    x, p = data
    child = _net(7)
    before = copy.deepcopy(child.state_dict())
    first = finetune(child, x, p, SHORT)
    torch.manual_seed(1234)
    np.random.seed(99)
    torch.rand(1000), np.random.rand(10)
    second = finetune(child, x, p, SHORT)
    for k, v in first.model.state_dict().items():
        assert torch.equal(v, second.model.state_dict()[k]), k
    assert first.history == second.history
    assert all(torch.equal(v, child.state_dict()[k]) for k, v in before.items())  # caller's child untouched
    assert list(first.model.state_dict()) == list(child.state_dict()) and not first.model.training


def test_history_records_the_best_val_epoch(data: tuple[torch.Tensor, torch.Tensor]) -> None:
    x, p = data
    res = finetune(_net(7), x, p, Regime("t", epochs=4, lr=3e-3))
    h = res.history
    assert (h["n_train"], h["n_val"], h["selection"], h["steps"]) == (270, 30, "val", 4 * math.ceil(270 / 32))
    assert len(h["train_losses"]) == len(h["val_losses"]) == len(h["val_agreements"]) == 4
    assert h["best_epoch"] == int(np.argmin(h["val_losses"])) and h["best_val_loss"] == min(h["val_losses"])
    assert h["best_val_loss"] < h["initial_val_loss"]  # distillation actually moves the child to the teacher
    _, val = split_indices(300, 0.1, 42)
    with torch.no_grad():
        assert float(distill_loss(res.model(x[val]), p[val])) == pytest.approx(h["best_val_loss"], rel=1e-5)
        agree = float((res.model(x[val]).argmax(1) == p[val].argmax(1)).float().mean())
    assert agree == pytest.approx(h["val_agreements"][h["best_epoch"]], abs=1e-6)
    json.dumps(h, allow_nan=False)
    assert res.int8_model is None and not res.diverged


def test_without_a_val_set_selection_is_by_train_loss(data: tuple[torch.Tensor, torch.Tensor]) -> None:
    x, p = data
    h = finetune(_net(7), x[:40], p[:40], Regime("t", epochs=2, lr=1e-3, batch_size=16, val_fraction=0.0)).history
    assert h["selection"] == "train" and h["val_losses"] == [] and h["initial_val_loss"] is None
    assert h["best_val_loss"] == min(h["train_losses"]) and h["steps"] == 2 * 3  # 16 + 16 + 8 (partial)


def test_divergence_stops_with_json_safe_history(data: tuple[torch.Tensor, torch.Tensor]) -> None:
    x, p = data
    res = finetune(_net(7), x, p, Regime("boom", epochs=5, lr=1e30))
    h = res.history
    assert res.diverged and h["diverged"]
    assert len(h["train_losses"]) < 5 or None in h["val_losses"] or None in h["train_losses"]
    json.dumps(h, allow_nan=False)
    assert all(bool(torch.isfinite(v).all()) for v in res.model.state_dict().values())


def test_qat_selects_under_fake_quant_and_returns_real_int8(data: tuple[torch.Tensor, torch.Tensor]) -> None:
    x, p = data
    res = finetune(_net(7), x, p, Regime("q", epochs=2, lr=1e-3, batch_size=16, quantization_applied="qat_float"))
    assert is_int8(res.int8_model) and not is_int8(res.model) and res.history["qat"]
    _, val = split_indices(300, 0.1, 42)
    with torch.no_grad():
        fq_loss = float(distill_loss(fake_quant_copy(res.model)(x[val]), p[val]))
    assert fq_loss == pytest.approx(res.history["best_val_loss"], rel=1e-5)


def test_bad_inputs_raise_one_line_errors(data: tuple[torch.Tensor, torch.Tensor]) -> None:
    x, p = data
    with pytest.raises(StatesError, match=r"must be \(N, 8\)"):
        finetune(_net(1), x[:, :5], p, SHORT)
    with pytest.raises(HarnessError, match="probability rows"):
        finetune(_net(1), x, p * 5.0, SHORT)
    with pytest.raises(HarnessError, match="target_probs must be"):
        finetune(_net(1), x, p[:10], SHORT)
    with pytest.raises(HarnessError, match="QNetwork layout"):
        finetune(torch.nn.Sequential(torch.nn.Linear(8, 4)), x, p, SHORT)
