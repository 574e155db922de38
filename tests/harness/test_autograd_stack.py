"""The fast stacked step (hand-written backward) against the autograd step over the family's own modules.

Tolerance: the two compute the same loss, gradients and Adam updates in float32 but add in different orders
(``bmm`` over the stack against per-child ``addmm``; the fused LayerNorm backward against autograd's; the batch
sums of the bias gradients), so they agree to float32 reassociation only: gradients within 1e-6 absolute (they are
O(1e-2..1)), parameters within 2e-6 absolute after 10 Adam steps (measured: at most 4e-7; Adam divides each
gradient by its running RMS, so a relative difference of ~1e-7 in a gradient moves a parameter by ~1e-7 · lr per
step, never more than lr). Bit equality is not expected and not asserted.
"""

from __future__ import annotations

import functools

import pytest
import torch

import harness.train.finetune as finetune_module
from harness.networks.adam import StackedAdam
from harness.networks.autograd import AutogradStack
from harness.networks.qnetwork import PlainMLP, QNetwork
from harness.networks.stack import stack_children
from harness.networks.stacked import StackedMLP
from harness.train.finetune import MAX_GRAD_NORM, TEMPERATURE, dropout_mask, finetune_population, soft_targets
from harness.train.regimes import Regime

torch.set_num_threads(1)
CPU = torch.device("cpu")
GRAD_ATOL, PARAM_ATOL, LOGQ_ATOL = 1e-6, 2e-6, 1e-5


def _nets(hidden: tuple[int, ...], dropout: float, seeds: tuple[int, ...],
          cls: type = QNetwork) -> list[torch.nn.Module]:
    out = []
    for seed in seeds:
        gen = torch.Generator().manual_seed(seed)
        net = QNetwork(8, 4, dropout_rate=dropout, hidden=hidden) if cls is QNetwork else PlainMLP(8, 4, hidden,
                                                                                                    dropout)
        with torch.no_grad():
            for name, p in net.named_parameters():
                # LayerNorm weights around 1, everything else around 0
                centre = 1.0 if p.dim() == 1 and name.endswith("weight") else 0.0
                p.copy_(torch.randn(p.shape, generator=gen) * 0.3 + centre)
        out.append(net.eval())
    return out


@pytest.mark.parametrize("qat", [False, True])
@pytest.mark.parametrize("dropout", [0.0, 0.1])
@pytest.mark.parametrize("hidden", [(16,), (16, 12), (16, 12, 8)])
def test_the_fast_step_equals_the_autograd_step_over_ten_steps(hidden: tuple[int, ...], dropout: float,
                                                               qat: bool) -> None:
    children = _nets(hidden, dropout, (3, 4, 5))
    x = torch.randn(96, 8, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        p = soft_targets(_nets(hidden, 0.0, (9,))[0](x))
    fast, slow = (stack_children(children, qat=qat, temperature=TEMPERATURE, device=CPU, fast=f)
                  for f in (True, False))
    assert isinstance(fast, StackedMLP) and isinstance(slow, AutogradStack)
    assert (fast.widths, fast.dropout, fast.in_dim, fast.out_dim) == (slow.widths, slow.dropout, 8, 4)
    torch.testing.assert_close(slow.full_flat, fast.full_flat, rtol=0, atol=0)  # the same start, bit for bit
    adams = [StackedAdam(s.full_flat, s.full_grad, [1e-3, 1e-3, 5e-3]) for s in (fast, slow)]
    gen = torch.Generator().manual_seed(7)
    for step in range(10):
        rows = slice(8 * step, 8 * step + 16)
        masks = [dropout_mask(16, w, q, gen) for w, q in zip(fast.widths, fast.dropout)]
        log_q = [torch.empty(3, 16, 4), torch.empty(3, 16, 4)]
        fast.train_step(x[rows], p[rows], masks, log_q[0])
        slow.train_step(x[rows], p[rows], masks, log_q[1])
        assert float(fast.full_grad.abs().max()) > 1e-3  # a real gradient, not zeros on both sides
        torch.testing.assert_close(slow.full_grad, fast.full_grad, rtol=0, atol=GRAD_ATOL)
        torch.testing.assert_close(log_q[1], log_q[0], rtol=0, atol=LOGQ_ATOL)
        for adam in adams:
            adam.clip(MAX_GRAD_NORM)
            adam.step()
        torch.testing.assert_close(slow.full_flat, fast.full_flat, rtol=0, atol=PARAM_ATOL)
    torch.testing.assert_close(slow.logits(x), fast.logits(x), rtol=0, atol=LOGQ_ATOL)
    assert not torch.equal(fast.full_flat, StackedMLP(children, qat=qat, temperature=TEMPERATURE,
                                                      device=CPU).full_flat)  # the steps moved the weights


def test_a_whole_fine_tune_on_the_autograd_stack_matches_the_fast_one(monkeypatch: pytest.MonkeyPatch) -> None:
    children = _nets((16, 16), 0.1, (3, 4))
    x = torch.randn(150, 8, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        p = soft_targets(_nets((16, 16), 0.0, (9,))[0](x))
    regime = Regime("t", epochs=4, lr=1e-3)
    fast = finetune_population(children, x, p, regime)
    monkeypatch.setattr(finetune_module, "stack_children", functools.partial(stack_children, fast=False))
    slow = finetune_population(children, x, p, regime)
    for f, s in zip(fast, slow):
        assert f.history["best_epoch"] == s.history["best_epoch"] and f.history["steps"] == s.history["steps"] > 0
        assert s.history["train_losses"] == pytest.approx(f.history["train_losses"], rel=1e-5)
        assert s.history["val_losses"] == pytest.approx(f.history["val_losses"], rel=1e-5)
        for key, value in f.model.state_dict().items():
            torch.testing.assert_close(s.model.state_dict()[key], value, rtol=0, atol=PARAM_ATOL)


def test_a_family_without_a_fast_path_trains_on_autograd_with_the_same_population_guarantees() -> None:
    """The mlp family has no fast path: its children train on the autograd stack, fine-tuning lowers their loss,
    and a child's result is bit for bit the same alone or in a population."""
    children = _nets((16, 12), 0.1, (3, 4, 5), cls=PlainMLP)
    assert isinstance(stack_children(children, qat=False, temperature=TEMPERATURE, device=CPU), AutogradStack)
    x = torch.randn(120, 8, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        p = soft_targets(_nets((16, 12), 0.0, (9,), cls=PlainMLP)[0](x))
    regime = Regime("t", epochs=3, lr=5e-3, quantization_applied="ptq_dynamic")
    together = finetune_population(children, x, p, regime)
    for i, result in enumerate(together):
        h = result.history
        assert h["best_val_loss"] < h["initial_val_loss"] and isinstance(result.model, PlainMLP)
        assert result.int8_model is not None
        alone = finetune_population([children[i]], x, p, regime)[0]
        assert alone.history == h
        assert all(torch.equal(v, result.model.state_dict()[k]) for k, v in alone.model.state_dict().items())


def test_the_autograd_stack_refuses_mixed_architectures() -> None:
    with pytest.raises(ValueError, match="share one architecture"):
        AutogradStack(_nets((16,), 0.0, (1,), cls=PlainMLP) + _nets((12,), 0.0, (2,), cls=PlainMLP), qat=False,
                      temperature=TEMPERATURE, device=CPU)
