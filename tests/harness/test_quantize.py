"""Int8 fake quant (STE) and the conversion to REAL dynamic-quantized int8 Linear modules."""

from __future__ import annotations

import warnings

import pytest
import torch
import torch.nn.functional as F
from torch.ao.nn.quantized.dynamic import Linear as DynamicQuantizedLinear

from harness.evaluate import pair_metrics, predict
from harness.networks import QNetwork
from harness.quantize import (
    FakeQuantLinear,
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


def test_convert_int8_gives_real_quantized_modules_with_the_fake_quant_weights() -> None:
    net = _net()
    int8 = convert_int8(fake_quant_copy(net))
    linears = [m for m in int8.modules() if isinstance(m, DynamicQuantizedLinear)]
    assert len(linears) == 3 and is_int8(int8) and not is_int8(net) and not is_int8(fake_quant_copy(net))
    for idx, qlin in zip((0, 4, 8), linears):
        float_w = net.network[idx].weight
        qw = qlin.weight()
        assert qw.dtype == torch.qint8 and qw.q_zero_point() == 0
        assert qw.q_scale() == float(weight_scale(float_w))
        assert torch.equal(int8_weight(qlin), fake_quant_weight(float_w))  # bit-exact
        assert torch.equal(qlin.bias(), net.network[idx].bias.detach())
    assert int8.network[1].weight is not net.network[1].weight  # a copy


def test_scale_equals_torch_quantize_dynamic_observer() -> None:
    net = _net(3)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        theirs = torch.ao.quantization.quantize_dynamic(net, {torch.nn.Linear}, torch.qint8)
    ours = convert_int8(net)
    for idx in (0, 4, 8):
        assert ours.network[idx].weight().q_scale() == theirs.network[idx].weight().q_scale()


def test_int8_agreement_with_its_float_self_is_reported() -> None:
    net = _net(1, hidden=64)
    states = torch.randn(2000, 8, generator=torch.Generator().manual_seed(2))
    fq_logits = predict(fake_quant_copy(net), states)
    int8_logits = predict(convert_int8(net), states)
    m = pair_metrics(fq_logits, int8_logits)
    assert 0.9 < m["top1"] <= 1.0 and m["mse"] < 1e-2  # only activation quantization separates them
    assert not torch.equal(fq_logits, int8_logits)  # the int8 model really runs int8 kernels
