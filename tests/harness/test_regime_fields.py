"""The regime's learning-rate schedule, dropout and gradient clipping (harness.train.schedule): what each does on a
known case, that every child keeps its own in a population, and that the fast and autograd stacks agree on them."""

from __future__ import annotations

import functools
import math

import pytest
import torch

import harness.networks.adam as adam_module
import harness.train.finetune as finetune_module
from harness.core.errors import HarnessError, SpaceError
from harness.networks.adam import StackedAdam
from harness.networks.qnetwork import QNetwork
from harness.networks.stack import stack_children
from harness.search.axes import Levels
from harness.search.populations import plan_populations
from harness.search.space import ChildSpec, Recipe
from harness.train.finetune import TEMPERATURE, finetune_population, soft_targets
from harness.train.regimes import REGIMES, Regime, parse_regime
from harness.train.schedule import Steps, dropout_rates, steps_per_epoch

torch.set_num_threads(1)
CPU = torch.device("cpu")
PARAM_ATOL = 2e-6  # fast against autograd: float32 reassociation only (tests/harness/test_autograd_stack.py)


def _net(seed: int, dropout: float = 0.1) -> QNetwork:
    gen = torch.Generator().manual_seed(seed)
    net = QNetwork(8, 4, dropout_rate=dropout, hidden=(16, 12))
    with torch.no_grad():
        for name, p in net.named_parameters():
            p.copy_(torch.randn(p.shape, generator=gen) * 0.3 + (1.0 if p.dim() == 1 and "1." in name else 0.0))
    return net.eval()


@pytest.fixture(scope="module")
def data() -> tuple[list[QNetwork], torch.Tensor, torch.Tensor]:
    x = torch.randn(60, 8, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        p = soft_targets(_net(9)(x))
    return [_net(s) for s in (3, 4, 5, 6)], x, p


def _same(r1, r2) -> bool:
    s1, s2 = r1.model.state_dict(), r2.model.state_dict()
    return all(torch.equal(s1[k], s2[k]) for k in s1) and r1.history == r2.history


def test_a_cosine_regime_steps_its_learning_rate_down_the_half_cosine(data, monkeypatch) -> None:
    regime = Regime("cos", epochs=2, lr=1e-3, batch_size=16, lr_schedule="cosine")
    # 60 states, 10 % validation: 54 train rows, 4 batches of 16 (the last 6), so T = 2 x 4 = 8 steps.
    assert steps_per_epoch(54, 16) == 4
    expected = [1e-3 * 0.5 * (1 + math.cos(math.pi * t / 8)) for t in range(8)]
    assert Steps([regime], 4).lrs(0) == [1e-3] and Steps([regime], 4).lrs(4) == [pytest.approx(5e-4, abs=1e-18)]
    seen: list[float] = []
    real = adam_module.adam_step

    def spy(*args, **kwargs):
        seen.append(args[6])  # the learning rate of this step
        return real(*args, **kwargs)

    monkeypatch.setattr(adam_module, "adam_step", spy)
    kids, x, p = data
    result = finetune_population([kids[0]], x, p, regime)[0]
    assert result.history["steps"] == 8 and seen == expected
    seen.clear()
    finetune_population([kids[0]], x, p, Regime("flat", epochs=2, lr=1e-3, batch_size=16))
    assert seen == [1e-3] * 8


def test_grad_clip_bounds_each_rows_gradient_as_clip_grad_norm_does() -> None:
    gen = torch.Generator().manual_seed(0)
    g = torch.randn(3, 40, generator=gen) * 5.0  # norms ~30: every clipping row clips
    param, grad = torch.zeros(3, 40), g.clone()
    adam = StackedAdam(param, grad, [1e-3] * 3)
    regimes = [Regime("a", epochs=1, lr=1e-3, grad_clip=0.25), Regime("b", epochs=1, lr=1e-3, grad_clip=2.0),
               Regime("c", epochs=1, lr=1e-3, grad_clip=0)]
    clip = Steps(regimes, 1).clip_norms(CPU)
    assert isinstance(clip, torch.Tensor) and clip[:, 0].tolist() == [0.25, 2.0, math.inf]
    adam.clip(clip)
    for i, max_norm in enumerate((0.25, 2.0)):
        # clip_grad_norm_'s rule (tests/harness/test_finetune.py checks the two agree at norm 1)
        norm = float(torch.linalg.vector_norm(g[i].double()))
        assert torch.allclose(grad[i], g[i] * (max_norm / (norm + 1e-6)), rtol=1e-6, atol=0)
        assert float(torch.linalg.vector_norm(grad[i])) == pytest.approx(max_norm, rel=1e-5)
    assert torch.equal(grad[2], g[2])  # grad_clip 0: that row is not clipped
    assert Steps(regimes[2:], 1).clip_norms(CPU) is None and Steps(regimes[:1], 1).clip_norms(CPU) == 0.25


def test_dropout_0_gives_a_deterministic_training_forward_and_overrides_the_networks_rate(data) -> None:
    kids, x, p = data
    assert dropout_rates(Regime("d", epochs=1, lr=1e-3), [0.1, 0.1]) == [0.1, 0.1]
    assert dropout_rates(Regime("d", epochs=1, lr=1e-3, dropout=0.0), [0.1, 0.1]) == [0.0, 0.0]
    stack = stack_children(kids[:2], qat=False, temperature=TEMPERATURE, device=CPU)
    outs = [torch.empty(2, 16, 4) for _ in range(2)]
    for out in outs:  # no masks (rate 0): the same rows give the same training forward and gradient
        stack.train_step(x[:16], p[:16], [None, None], out)
    assert torch.equal(outs[0], outs[1])
    # Regime dropout 0 on a network of rate 0.1 trains exactly as the same weights in a network of rate 0.
    no_drop = _net(3, dropout=0.0)
    a = finetune_population([kids[0]], x, p, Regime("d0", epochs=2, lr=1e-3, dropout=0.0))[0]
    b = finetune_population([no_drop], x, p, Regime("plain", epochs=2, lr=1e-3))[0]
    c = finetune_population([kids[0]], x, p, Regime("plain", epochs=2, lr=1e-3))[0]
    assert _same(a, b) and not _same(a, c)


def test_schedules_and_clipping_are_per_child_in_a_population(data) -> None:
    """Children of other schedules and clipping norms (same batches) train together with the results of training
    apart; other dropout rates are other batches, kept apart by the plan and refused in one population."""
    kids, x, p = data
    regimes = [Regime("c", epochs=3, lr=1e-3), Regime("cos", epochs=3, lr=1e-3, lr_schedule="cosine"),
               Regime("half", epochs=2, lr=5e-3, grad_clip=0.5), Regime("off", epochs=3, lr=1e-3, lr_schedule="cosine",
                                                                       grad_clip=0)]
    together = finetune_population(kids, x, p, regimes)
    for kid, regime, result in zip(kids, regimes, together):
        assert _same(finetune_population([kid], x, p, regime)[0], result), regime.name
    assert not _same(together[0], finetune_population([kids[0]], x, p, regimes[1])[0])  # the schedule matters
    drop = Regime("drop", epochs=3, lr=1e-3, dropout=0.0)
    with pytest.raises(HarnessError, match="one dropout rate"):
        finetune_population(kids[:2], x, p, [regimes[0], drop])
    specs = [ChildSpec(i, Recipe.of("layer"), Levels((("regime", r), ("teacher", "a")), frozenset()))
             for i, r in enumerate((regimes[0], regimes[1], drop))]
    assert [len(pop) for pop in plan_populations(specs, n_params=500)] == [2, 1]


def test_the_fast_and_autograd_stacks_agree_with_the_new_fields(data, monkeypatch) -> None:
    kids, x, p = data
    regime = Regime("t", epochs=3, lr=2e-3, lr_schedule="cosine", dropout=0.2, grad_clip=0.5)
    fast = finetune_population(kids[:2], x, p, regime)
    monkeypatch.setattr(finetune_module, "stack_children", functools.partial(stack_children, fast=False))
    slow = finetune_population(kids[:2], x, p, regime)
    for f, s in zip(fast, slow):
        assert f.history["best_epoch"] == s.history["best_epoch"] and f.history["steps"] == s.history["steps"] > 0
        assert s.history["train_losses"] == pytest.approx(f.history["train_losses"], rel=1e-5)
        for key, value in f.model.state_dict().items():
            assert torch.allclose(s.model.state_dict()[key], value, rtol=0, atol=PARAM_ATOL), key


@pytest.mark.parametrize(("field", "fix"), [("lr_schedule=linear", "unknown lr_schedule 'linear'; known: constant"),
                                            ("dropout=1.5", "has dropout=1.5"), ("grad_clip=-1", "has grad_clip=-1.0"),
                                            ("grad_clip=nan", "has grad_clip=nan")])
def test_bad_values_are_refused_in_one_line(field: str, fix: str) -> None:
    with pytest.raises(SpaceError, match=fix) as err:
        parse_regime(f"x:epochs=3,lr=1e-3,{field}")
    assert err.value.field == "define_regime" and "\n" not in str(err.value)


def test_the_new_fields_parse_show_and_leave_the_records_of_other_regimes_as_they_were() -> None:
    r = parse_regime("x:epochs=3,lr=1e-3,lr_schedule=cosine,dropout=0,grad_clip=1")
    assert (r.lr_schedule, r.dropout, r.grad_clip) == ("cosine", 0.0, 1.0)
    assert r.to_dict()["lr_schedule"] == "cosine" and "grad_clip" not in r.to_dict()
    assert list(REGIMES.get("short").to_dict()) == ["name", "epochs", "lr", "batch_size", "val_fraction", "seed",
                                                    "quantization_applied", "patience"]
    tuned = REGIMES.get("tuned")
    assert tuned.describe() == "200 epochs, lr 0.001, batch 64, early stop after 10, cosine lr, dropout 0"
    assert (tuned.batch_size, tuned.grad_clip, tuned.patience) == (64, 1.0, 10)
