"""Int8 fake quant (STE) and the conversion to a real int8 model that is batch-invariant."""

from __future__ import annotations

import warnings

import pytest
import torch
import torch.nn.functional as F

from harness.evaluate.vs_parents import pair_metrics, predict
from harness.networks.qnetwork import QNetwork
from harness.networks.quantize import (
    FakeQuantLinear,
    Int8Linear,
    convert_int8,
    fake_quant_copy,
    fake_quant_weight,
    int8_weight,
    is_int8,
    weight_scale,
)

torch.set_num_threads(1)


def _net(seed: int = 0, hidden: int = 32) -> QNetwork:
    gen = torch.Generator().manual_seed(seed)
    net = QNetwork(8, 4, hidden)
    with torch.no_grad():
        for p in net.parameters():
            p.copy_(torch.randn(p.shape, generator=gen) * 0.5)
    return net.eval()


def test_scale_and_grid_are_per_tensor_symmetric_int8() -> None:
    w = torch.tensor([[0.5, -2.55], [1.0, 0.0]])
    s = weight_scale(w)
    assert float(s) == pytest.approx(2.55 / 127.5) and s.dtype == torch.float32
    q = fake_quant_weight(w) / s
    torch.testing.assert_close(q, torch.round(q), rtol=0, atol=1e-4)  # on the integer grid
    assert float(q.min()) == -128 and float(q.max()) <= 127  # -2.55/s = -127.5 rounds (half to even) to -128
    assert float(weight_scale(torch.zeros(3, 3))) == pytest.approx(1e-8)  # all-zero weight: no division by zero
    assert torch.equal(fake_quant_weight(torch.zeros(3, 3)), torch.zeros(3, 3))


def test_fake_quant_linear_quantizes_in_eval_and_passes_gradient_straight_through() -> None:
    lin = torch.nn.Linear(6, 3)
    fq = FakeQuantLinear.from_linear(lin).eval()
    x = torch.randn(4, 6, generator=torch.Generator().manual_seed(0))
    assert torch.equal(fq(x), F.linear(x, fake_quant_weight(lin.weight), lin.bias))
    assert not torch.equal(fq(x), lin(x))
    fq(x).sum().backward()
    torch.testing.assert_close(fq.weight.grad, torch.ones(4, 3).t() @ x)  # identity STE: dL/dW of F.linear


def test_fake_quant_copy_keeps_keys_and_leaves_the_original_float() -> None:
    net = _net()
    copy_ = fake_quant_copy(net)
    assert list(copy_.state_dict()) == list(net.state_dict())
    assert sum(isinstance(m, FakeQuantLinear) for m in copy_.modules()) == 3
    assert not any(isinstance(m, FakeQuantLinear) for m in net.modules())


def test_convert_int8_gives_int8_modules_with_the_fake_quant_weights() -> None:
    net = _net()
    int8 = convert_int8(fake_quant_copy(net))
    linears = [m for m in int8.modules() if isinstance(m, Int8Linear)]
    assert len(linears) == 3 and is_int8(int8) and not is_int8(net) and not is_int8(fake_quant_copy(net))
    for idx, qlin in zip((0, 4, 8), linears):
        float_w = net.network[idx].weight
        assert qlin.weight_int8.dtype == torch.int8 and int(qlin.weight_int8.abs().max()) <= 128
        assert float(qlin.weight_scale) == float(weight_scale(float_w))
        assert torch.equal(int8_weight(qlin), fake_quant_weight(float_w))  # bit-exact
        assert torch.equal(qlin.bias, net.network[idx].bias.detach())
    assert int8.network[1].weight is not net.network[1].weight  # a copy
    assert set(int8.state_dict()) >= {"network.0.weight_int8", "network.0.weight_scale", "network.8.bias"}


def test_scale_equals_torch_quantize_dynamic_observer() -> None:
    net = _net(3)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        theirs = torch.ao.quantization.quantize_dynamic(net, {torch.nn.Linear}, torch.qint8)
    ours = convert_int8(net)
    for idx in (0, 4, 8):
        assert float(ours.network[idx].weight_scale) == theirs.network[idx].weight().q_scale()


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_a_states_int8_output_does_not_depend_on_its_batch(seed: int) -> None:
    """Bitwise the same Q-values evaluated alone, in batches of 7, or all together (how latency is timed and a
    policy deployed vs how the leaderboard evaluates)."""
    int8 = convert_int8(_net(seed, hidden=64))
    x = torch.randn(700, 8, generator=torch.Generator().manual_seed(seed)) * 3
    with torch.no_grad():
        whole = int8(x)
        alone = torch.cat([int8(x[i:i + 1]) for i in range(len(x))])
        sevens = torch.cat([int8(x[i:i + 7]) for i in range(0, len(x), 7)])
        vector = torch.stack([int8(x[i]) for i in range(5)])  # a 1-D state, as a policy steps
    assert torch.equal(whole, alone) and torch.equal(whole, sevens) and torch.equal(whole[:5], vector)
    assert torch.equal(predict(int8, x, chunk_size=64), whole)


def test_the_int8_model_is_the_fake_quant_model_the_regime_trained() -> None:
    """Weight-only int8: it computes what the fake-quant fine-tune validated, to float32 rounding, and differs from
    the float weights behind it only by the weight grid."""
    net = _net(1, hidden=64)
    states = torch.randn(2000, 8, generator=torch.Generator().manual_seed(2))
    fq_logits, int8_logits = predict(fake_quant_copy(net), states), predict(convert_int8(net), states)
    torch.testing.assert_close(int8_logits, fq_logits, rtol=1e-5, atol=1e-5)
    assert pair_metrics(fq_logits, int8_logits)["top1"] > 0.999
    assert not torch.equal(predict(net, states), int8_logits)  # the weight grid is real: float weights differ
