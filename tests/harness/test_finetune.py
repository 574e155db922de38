"""The trainer: loss, val split, stacked backward/Adam vs torch, determinism, independence, divergence and QAT."""

from __future__ import annotations

import copy
import json
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import harness.networks.adam as adam_module
import harness.train.finetune as finetune_module
import harness.train.validation as validation_module
from harness.core.errors import HarnessError, StatesError
from harness.crossing.crossover import crossover
from harness.networks.adam import StackedAdam
from harness.networks.qnetwork import QNetwork
from harness.networks.quantize import fake_quant_copy, fake_quant_weight, is_int8
from harness.networks.stacked import StackedMLP
from harness.train.batches import dropout_mask, mask_streams
from harness.train.finetune import (
    MAX_GRAD_NORM,
    TEMPERATURE,
    distill_loss,
    finetune,
    finetune_population,
    soft_targets,
    split_indices,
)
from harness.train.regimes import REGIMES, Regime

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


def _autograd_loss(net: QNetwork, x: torch.Tensor, p: torch.Tensor, masks: list[torch.Tensor],
                   qat: bool) -> torch.Tensor:
    w = dict(net.named_parameters())
    lin = (lambda k: ft_quant(w[k])) if qat else (lambda k: w[k])
    h = x
    for (li, ni), m in zip(((0, 1), (4, 5)), masks):
        h = F.linear(h, lin(f"network.{li}.weight"), w[f"network.{li}.bias"])
        h = F.layer_norm(h, (h.shape[1],), w[f"network.{ni}.weight"], w[f"network.{ni}.bias"]).relu() * m
    z = F.linear(h, lin("network.8.weight"), w["network.8.bias"])
    distill_loss(z, p).backward()
    return z


def ft_quant(w: torch.Tensor) -> torch.Tensor:
    return w + (fake_quant_weight(w) - w).detach()  # STE reference


@pytest.mark.parametrize("qat", [False, True])
def test_stacked_backward_equals_autograd_for_every_child(data: tuple[torch.Tensor, torch.Tensor], qat: bool) -> None:
    """The one trainer's hand-written backward, per child of a stack of three, against autograd on a QNetwork."""
    x, p = data[0][:32], data[1][:32]
    children = [_net(s) for s in (3, 4, 5)]
    gen = torch.Generator().manual_seed(5)
    masks = [(torch.rand(32, 32, generator=gen) >= 0.1).float() / 0.9 for _ in range(2)]
    net = StackedMLP(children, qat=qat, temperature=TEMPERATURE, device=torch.device("cpu"))
    log_q = torch.empty(3, 32, 4)
    net.train_step(x, p, masks, log_q)
    grads = net.views(net.grad)
    logits = net.logits(x)
    for k, child in enumerate(children):
        ref = copy.deepcopy(child)
        z = _autograd_loss(ref, x, p, masks, qat)
        for name, param in ref.named_parameters():
            assert param.grad is not None and float(param.grad.abs().max()) > 0, name
            torch.testing.assert_close(grads[name][k], param.grad, rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(log_q[k], F.log_softmax(z.detach() / TEMPERATURE, 1), rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(logits[k], fake_quant_copy(child)(x) if qat else child(x), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("fused", [True, False])
def test_stacked_adam_and_clip_match_torch_per_row(monkeypatch: pytest.MonkeyPatch, fused: bool) -> None:
    if not fused:
        monkeypatch.setattr(adam_module, "_FUSED_ADAM", None)
    gen = torch.Generator().manual_seed(0)
    mine = torch.randn(3, 50, generator=gen)
    refs = [torch.nn.Parameter(row.clone()) for row in mine]
    grad = torch.zeros(3, 50)
    lrs = [1e-2, 1e-2, 5e-3]
    adam = StackedAdam(mine, grad, lrs)
    opts = [torch.optim.Adam([r], lr=lr, fused=fused, foreach=False if not fused else None) for r, lr in zip(refs, lrs)]
    for _ in range(5):
        g = torch.randn(3, 50, generator=gen) * 3.0
        grad.copy_(g)
        adam.clip(1.0)
        for i, (ref, opt) in enumerate(zip(refs, opts)):
            ref.grad = g[i].clone()
            torch.nn.utils.clip_grad_norm_([ref], 1.0)
            torch.testing.assert_close(grad[i], ref.grad, rtol=1e-6, atol=0)
            ref.grad.copy_(grad[i])  # same clipped grads, so the Adam update itself can be compared bit for bit
            opt.step()
        adam.step()
        for i, ref in enumerate(refs):
            assert torch.equal(mine[i], ref.detach()), i


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


# -- populations: a child's result is bit-for-bit independent of what else trains with it ---------------------
RECIPES = [("random", 0.5, 0), ("layer", 0.5, None), ("weighted", 0.3, None), ("weighted", 0.7, None),
           ("random", 0.5, 1)]


def _parent(seed: int, hidden: int) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return {k: (torch.randn(v.shape, generator=g) * 0.5 if v.dim() == 2 else v.clone())
            for k, v in QNetwork(8, 4, hidden).state_dict().items()}


def _setup(hidden: int, n: int) -> tuple[list[QNetwork], torch.Tensor, torch.Tensor]:
    a, b = _parent(1, hidden), _parent(2, hidden)
    x = torch.randn(n, 8, generator=torch.Generator().manual_seed(0))
    teacher = QNetwork(8, 4, hidden).eval()
    teacher.load_state_dict(a)
    with torch.no_grad():
        p = soft_targets(teacher(x))
    kids = []
    for mode, alpha, seed in RECIPES:
        q = QNetwork(8, 4, hidden)
        q.load_state_dict(crossover(a, b, mode, alpha=alpha, seed=seed))
        kids.append(q.eval())
    return kids, x, p


def _same(r1, r2) -> bool:
    s1, s2 = r1.model.state_dict(), r2.model.state_dict()
    return all(torch.equal(s1[k], s2[k]) for k in s1) and r1.history == r2.history and r1.diverged == r2.diverged


# hidden/n chosen so the last batch is ragged (n_train % batch != 0) and odd-sized (1 row for 91 states, bs 16).
@pytest.mark.parametrize(("hidden", "n", "regime"), [
    (16, 203, Regime("t", epochs=3, lr=1e-3)),
    (16, 91, Regime("tq", epochs=2, lr=1e-3, batch_size=16, quantization_applied="ptq_dynamic")),
    (32, 150, Regime("v0", epochs=2, lr=1e-3, val_fraction=0.0)),
])
def test_child_result_is_independent_of_its_population(hidden, n, regime):
    kids, x, p = _setup(hidden, n)
    full = finetune_population(kids, x, p, regime)
    assert len(full) == 5 and all(r.history["steps"] == full[0].history["steps"] > 0 for r in full)
    for subset in ([0], [3], [4, 1], [2, 0, 4], [1, 3, 0, 2]):
        part = finetune_population([kids[i] for i in subset], x, p, regime)
        for j, i in enumerate(subset):
            assert _same(part[j], full[i]), (subset, i)
    # Populations differ from one another: the test above compares real, distinct children.
    first, second = (r.model.state_dict()["network.0.weight"] for r in full[:2])
    assert not torch.equal(first, second)
    if regime.qat:
        assert all(r.int8_model is not None for r in full)


@pytest.mark.parametrize("qat", [False, True])
def test_regimes_that_share_batches_train_together_with_the_results_of_training_apart(qat):
    """A shorter regime leaves the population when its epochs are done; learning rates differ per child."""
    q = "ptq_dynamic" if qat else "none"
    regimes = [Regime("s", epochs=2, lr=1e-3, quantization_applied=q), Regime("l", epochs=4, lr=1e-3,
               quantization_applied=q), Regime("h", epochs=2, lr=5e-3, quantization_applied=q),
               Regime("m", epochs=3, lr=5e-4, quantization_applied=q), Regime("l", epochs=4, lr=1e-3,
               quantization_applied=q)]
    kids, x, p = _setup(16, 203)
    mixed = finetune_population(kids, x, p, regimes)
    for i, (kid, reg) in enumerate(zip(kids, regimes)):
        alone = finetune_population([kid], x, p, reg)[0]
        assert _same(mixed[i], alone), regimes[i]
        assert mixed[i].history["steps"] == reg.epochs * 6 and len(mixed[i].history["train_losses"]) == reg.epochs
    same_regime = finetune_population([kids[1], kids[4]], x, p, regimes[1])
    assert _same(same_regime[0], mixed[1]) and _same(same_regime[1], mixed[4])


def test_regimes_with_other_batches_are_refused():
    kids, x, p = _setup(16, 60)
    with pytest.raises(HarnessError, match="same batch size, val_fraction, seed and quantization"):
        finetune_population(kids[:2], x, p, [REGIMES.get("short"), REGIMES.get("short_qat")])
    with pytest.raises(HarnessError, match="one regime per child"):
        finetune_population(kids[:2], x, p, [REGIMES.get("short")])


def test_population_leaves_children_untouched_and_returns_cpu_models():
    kids, x, p = _setup(16, 120)
    before = {k: v.clone() for k, v in kids[0].state_dict().items()}
    res = finetune_population(kids[:2], x, p, REGIMES.get("short"))
    assert all(torch.equal(before[k], v) for k, v in kids[0].state_dict().items())
    assert res[0].model is not kids[0] and not res[0].model.training
    assert finetune_population([], x, p, REGIMES.get("short")) == []


def test_diverging_child_does_not_disturb_the_others():
    kids, x, p = _setup(16, 120)
    reg = Regime("hot", epochs=3, lr=1e-3)
    bad = QNetwork(8, 4, 16).eval()
    bad.load_state_dict({k: v * float("inf") if k == "network.8.bias" else v for k, v in kids[0].state_dict().items()})
    together = finetune_population([bad, kids[1]], x, p, reg)
    alone = finetune_population([kids[1]], x, p, reg)
    assert together[0].diverged and together[0].history["train_losses"][0] is None
    assert together[0].history["steps"] == together[1].history["steps"] // 3
    assert _same(together[1], alone[0])


def test_population_needs_one_architecture():
    kids, x, p = _setup(16, 60)
    other = QNetwork(8, 4, 32).eval()
    with pytest.raises(HarnessError, match="share one architecture"):
        finetune_population([kids[0], other], x, p, REGIMES.get("short"))


@pytest.mark.parametrize("how", ["weighted alpha 1", "both parents the same"])
def test_a_child_that_starts_as_its_teacher_leaves_no_worse_on_validation(
        how: str, data: tuple[torch.Tensor, torch.Tensor]) -> None:
    """The starting weights are candidate zero of the best-validation selection: a child equal to parent A,
    distilled from A, cannot validate better than it starts (loss 0), so it comes back as it went in."""
    x, _ = data
    a = _net(100)
    other = a if how == "both parents the same" else _net(5)
    child = QNetwork(8, 4, 32, dropout_rate=0.1)
    child.load_state_dict(crossover(a.state_dict(), other.state_dict(), "weighted", alpha=1.0))
    with torch.no_grad():
        probs_a = soft_targets(a(x))
    res = finetune(child.eval(), x, probs_a, Regime("t", epochs=4, lr=3e-3))
    h = res.history
    assert h["kept_start"] and h["best_epoch"] == -1 and h["initial_val_agreement"] == 1.0
    assert h["best_val_loss"] == h["initial_val_loss"] < min(h["val_losses"])  # every epoch validated worse
    assert len(h["val_losses"]) == 4 and h["steps"] == 4 * math.ceil(270 / 32)  # training itself is unchanged
    for k, v in res.model.state_dict().items():
        assert torch.equal(v, a.state_dict()[k]), k
    _, val = split_indices(300, 0.1, 42)
    with torch.no_grad():
        assert torch.equal(res.model(x[val]).argmax(1), a(x[val]).argmax(1))


def test_an_epoch_that_validates_better_than_the_start_is_kept(data: tuple[torch.Tensor, torch.Tensor]) -> None:
    x, p = data
    h = finetune(_net(7), x, p, Regime("t", epochs=4, lr=3e-3)).history
    assert not h["kept_start"] and h["best_epoch"] >= 0 and h["best_val_loss"] < h["initial_val_loss"]


def test_mask_streams_draw_the_whole_epoch_masks_a_chunk_at_a_time():
    """Each site's generator starts where that site's whole-epoch mask began in the one stream; a site of rate 0 or 1
    draws nothing; the stream is left where the whole epoch left it."""
    rows, widths, rates = 1000, [16, 8, 12], [0.1, 0.0, 0.3]
    whole = torch.Generator().manual_seed(7)
    expected = [dropout_mask(rows, w, q, whole) for w, q in zip(widths, rates)]
    gen = torch.Generator().manual_seed(7)
    streams = mask_streams(gen, rows, widths, rates)
    for w, q, g, exp in zip(widths, rates, streams, expected):
        parts = [dropout_mask(n, w, q, g) for n in (1, 512, 37, 450)]
        if exp is None:
            assert all(m is None for m in parts)
        else:
            assert torch.equal(torch.cat(parts), exp)  # type: ignore[arg-type]
    assert torch.equal(torch.rand(5, generator=gen), torch.rand(5, generator=whole))


@pytest.mark.parametrize("regime", [Regime("c", epochs=2, lr=1e-3), Regime("cv", epochs=2, lr=1e-3, val_fraction=0.0),
                                    Regime("cd", epochs=2, lr=1e-3, dropout=0.4, lr_schedule="cosine")])
def test_an_epoch_trained_a_chunk_of_rows_at_a_time_gives_the_same_children(monkeypatch, regime):
    """Memory is bounded by the epoch's chunk (gathered rows, masks, log-probabilities), never the numbers: a chunk of
    48 rows (3 batches, the last one ragged) gives every child bit for bit what one chunk of all rows gives."""
    kids, x, p = _setup(16, 203)
    whole = finetune_population(kids, x, p, regime)
    monkeypatch.setattr(finetune_module, "_EPOCH_CHUNK", 48)
    chunked = finetune_population(kids, x, p, regime)
    assert all(_same(a, b) for a, b in zip(whole, chunked))
    assert whole[0].history["steps"] == 2 * -(-(203 - (0 if regime.val_fraction == 0 else 20)) // 32)


def test_validation_forward_in_parts_gives_the_same_children_and_losses(monkeypatch):
    """Validation's forward holds a few children at a time (memory): one child at a time gives every child, and
    every validation loss, bit for bit."""
    regime = Regime(name="val", epochs=3, lr=1e-3, val_fraction=0.3)
    kids, x, p = _setup(16, 203)
    whole = finetune_population(kids, x, p, regime)
    monkeypatch.setattr(validation_module, "_FORWARD_VALUES", 1)
    parts = finetune_population(kids, x, p, regime)
    assert all(_same(a, b) for a, b in zip(whole, parts))
    assert whole[0].history["val_losses"] == parts[0].history["val_losses"] and len(whole[0].history["val_losses"]) == 3
