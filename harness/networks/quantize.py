"""Weight-only int8 fake quantization (QAT) and the conversion to a real, batch-invariant int8 model.

Training: per-tensor symmetric int8 on Linear weights (bias and activations stay float): ``s = max|W| / 127.5``
(clamped at 1e-8), ``q = clamp(round(W/s), -128, 127)``, zero point 0 (the scale torch's default weight observer
picks). The deployed model (:func:`convert_int8`) keeps exactly these ``q`` and ``s``, so its dequantized weights
equal the fake-quant weights bit for bit, and accumulates exactly, so a state's action never depends on which other
states share its batch. (The AgentFarm trains with ``/127`` and converts through torch's
exact-type mapping, which skips its fake-quant subclass: its "int8" model stays float.)
"""

from __future__ import annotations

import copy
from typing import cast

import torch
import torch.nn.functional as F
from torch import nn

QMIN, QMAX = -128, 127
SCALE_DIVISOR = 127.5  # (QMAX - QMIN) / 2: torch's MinMaxObserver for qint8 per_tensor_symmetric
MIN_SCALE = 1e-8


def weight_scale(weight: torch.Tensor) -> torch.Tensor:
    """The per-tensor symmetric scale ``max|W| / 127.5`` (0-d float32 tensor, at least 1e-8)."""
    return weight.detach().abs().amax().div(SCALE_DIVISOR).clamp_min(MIN_SCALE)


def fake_quant_weight(weight: torch.Tensor) -> torch.Tensor:
    """``clamp(round(W/s), -128, 127) * s`` as float32 (no gradient tracking; see :class:`FakeQuantLinear`)."""
    w = weight.detach().to(torch.float32)
    s = weight_scale(w)
    return torch.round(w / s).clamp_(QMIN, QMAX).mul_(s)


class _StraightThrough(torch.autograd.Function):
    """Forward: the fake-quant weight exactly; backward: identity (straight-through estimator).

    A custom Function rather than ``W + (Wq - W).detach()`` because the latter is only Wq up to float rounding,
    and we promise the int8 model's weights equal the fake-quant weights exactly.
    """

    @staticmethod
    def forward(ctx: object, weight: torch.Tensor) -> torch.Tensor:
        return fake_quant_weight(weight)

    @staticmethod
    def backward(ctx: object, grad: torch.Tensor) -> torch.Tensor:
        return grad


class FakeQuantLinear(nn.Linear):
    """An ``nn.Linear`` whose forward uses the int8 fake-quant weight in train AND eval mode.

    Staying quantized in eval is deliberate: validation and best-epoch selection must see the weights that will be
    deployed (AgentFarm's fake quant is off in eval). State-dict keys are unchanged.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        weight = cast(torch.Tensor, _StraightThrough.apply(self.weight))  # type: ignore[no-untyped-call]
        return F.linear(x, weight, self.bias)

    @classmethod
    def from_linear(cls, linear: nn.Linear) -> FakeQuantLinear:
        """A FakeQuantLinear holding copies of ``linear``'s weight and bias."""
        new = cls(linear.in_features, linear.out_features, bias=linear.bias is not None)
        with torch.no_grad():
            new.weight.copy_(linear.weight)
            if linear.bias is not None:
                new.bias.copy_(linear.bias)
        new.train(linear.training)
        return new


def _replace_linears(model: nn.Module, make: type | object) -> None:
    for name, child in list(model.named_children()):
        if isinstance(child, nn.Linear):
            setattr(model, name, make(child))  # type: ignore[operator]
        else:
            _replace_linears(child, make)


def fake_quant_copy(model: nn.Module) -> nn.Module:
    """A deep copy of ``model`` with every ``nn.Linear`` replaced by a :class:`FakeQuantLinear` (same keys)."""
    new = copy.deepcopy(model)
    _replace_linears(new, lambda lin: lin if isinstance(lin, FakeQuantLinear) else FakeQuantLinear.from_linear(lin))
    return new


ACTIVATION_BITS = 23  # a row's activations as integers below 2**23: float32's precision relative to the row's max


def _refresh_after_load(module: nn.Module, _keys: object) -> None:
    assert isinstance(module, Int8Linear)
    module.refresh()


class Int8Linear(nn.Module):
    """A weight-only int8 Linear whose every output row depends on its input row only, bit for bit.

    Weights: the per-tensor symmetric grid of :func:`fake_quant_weight` (scale ``max|W| / 127.5``), stored as
    int8, so the dequantized weights equal the fake-quant weights the QAT regime trained with, bit for bit: this
    is the model the regime trained for (weight-only fake quant). Activations are not coarsened: each row is taken
    as integers at a power-of-two scale that puts its largest magnitude just under 2**23 (float32's own precision),
    and the product with the int8 weights is accumulated in float64, where every partial sum is an exact integer.
    Exact arithmetic has no summation order, so a state's Q-values are the same alone, in a batch of 7 or among
    all of them. (torch's dynamic int8 Linear quantizes activations with one scale per batch: a row's output
    depended on its batch-mates, and 3-16 % of the embedded children's actions changed when evaluated alone.)
    """

    weight_int8: torch.Tensor
    weight_scale: torch.Tensor
    bias: torch.Tensor

    def __init__(self, in_features: int, out_features: int) -> None:
        super().__init__()
        self.in_features, self.out_features = in_features, out_features
        self.register_buffer("weight_int8", torch.zeros(out_features, in_features, dtype=torch.int8))
        self.register_buffer("weight_scale", torch.ones((), dtype=torch.float32))
        self.register_buffer("bias", torch.zeros(out_features, dtype=torch.float32))
        # The int8 weights as float64 integers (in, out), for the exact product: derived, so not saved; rebuilt on
        # load.
        self.register_buffer("_weight_q64", torch.zeros(in_features, out_features, dtype=torch.float64),
                             persistent=False)
        self.register_load_state_dict_post_hook(_refresh_after_load)  # type: ignore[no-untyped-call]

    def refresh(self) -> None:
        """Rebuild the derived float64 copy of ``weight_int8``."""
        self._weight_q64 = self.weight_int8.t().to(torch.float64).contiguous()

    @classmethod
    def from_linear(cls, linear: nn.Linear) -> Int8Linear:
        weight = linear.weight.detach().to(device="cpu", dtype=torch.float32)
        scale = weight_scale(weight)
        new = cls(linear.in_features, linear.out_features)
        new.weight_int8.copy_(torch.round(weight / scale).clamp_(QMIN, QMAX).to(torch.int8))
        new.weight_scale.copy_(scale)
        if linear.bias is not None:
            new.bias.copy_(linear.bias.detach().to(torch.float32))
        new.refresh()
        return new

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        rows = x.reshape(-1, self.in_features).to(torch.float64)
        # 2**(e - 23) with max|row| = m * 2**e, m in [0.5, 1): dividing by a power of two is exact.
        largest = rows.abs().amax(dim=1, keepdim=True)
        scale = torch.ldexp(torch.ones_like(largest), torch.frexp(largest)[1] - ACTIVATION_BITS)
        ints = rows.div_(scale).round_()  # integers below 2**23
        # Integers times int8 weights, summed: |sum| < 2**23 * 128 * in_features << 2**53, so every partial sum is
        # exact, whatever order the kernel adds in. Scaled once afterwards.
        acc = ints @ self._weight_q64
        out = acc.mul_(scale * self.weight_scale.double()).to(torch.float32).add_(self.bias)
        return out.reshape(*x.shape[:-1], self.out_features)


def convert_int8(model: nn.Module) -> nn.Module:
    """A copy of ``model`` (float or fake-quant) whose Linear layers are :class:`Int8Linear` (int8 weights from
    the fake-quant grid, batch-invariant). Returned in eval mode on the CPU; ``model`` is untouched."""
    new = copy.deepcopy(model).cpu().eval()
    _replace_linears(new, Int8Linear.from_linear)
    return new


def is_int8(model: nn.Module) -> bool:
    """True when ``model`` has at least one :class:`Int8Linear` and no float ``nn.Linear`` left."""
    modules = list(model.modules())
    return any(isinstance(m, Int8Linear) for m in modules) and not any(isinstance(m, nn.Linear) for m in modules)


def int8_weight(module: Int8Linear) -> torch.Tensor:
    """The dequantized float32 weight of an :class:`Int8Linear` (for checks and reports)."""
    return module.weight_int8.to(torch.float32) * module.weight_scale
