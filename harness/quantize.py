"""Weight-only int8 fake quantization (QAT) and the conversion to a REAL int8 model.

Quantization is per-tensor symmetric int8 on Linear weights only (bias and activations stay float):
``s = max|W| / 127.5`` (clamped at 1e-8), ``q = clamp(round(W/s), -128, 127)``, zero point 0. The scale is the
one torch's default dynamic-quant weight observer picks, and :func:`convert_int8` builds the quantized modules
from exactly this ``s`` and ``q``, so the int8 model's dequantized weights equal the fake-quant weights bit for
bit. (The established tool trains with ``/127`` and converts through torch's exact-type mapping, which skips its
fake-quant subclass: its "int8" model stays float, reference §8.4.)
"""

from __future__ import annotations

import copy
import warnings
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

    Staying quantized in eval is deliberate: validation and best-epoch selection must see the model that will be
    deployed (the established tool's fake quant is off in eval, reference §8.3). State-dict keys are unchanged.
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


def _quantized_dynamic_linear(linear: nn.Linear) -> nn.Module:
    from torch.ao.nn.quantized.dynamic import Linear as DynamicQuantizedLinear

    weight = linear.weight.detach().to(torch.float32)
    scale = float(weight_scale(weight))
    # Quantizing q*s (exact multiples of s) recovers q exactly, whatever rounding the quantizer uses internally.
    qweight = torch.quantize_per_tensor(fake_quant_weight(weight), scale, 0, torch.qint8)
    module = DynamicQuantizedLinear(linear.in_features, linear.out_features,  # type: ignore[no-untyped-call]
                                    bias_=linear.bias is not None, dtype=torch.qint8)
    bias = None if linear.bias is None else linear.bias.detach().to(torch.float32).clone()
    module.set_weight_bias(qweight, bias)
    return module


def convert_int8(model: nn.Module) -> nn.Module:
    """A copy of ``model`` (float or fake-quant) whose Linear layers are real dynamic-quantized int8 modules.

    Each layer becomes ``torch.ao.nn.quantized.dynamic.Linear`` (int8 weights, float bias, activations quantized
    on the fly) built from the same scale and integer weights as :func:`fake_quant_weight`. Returned in eval mode;
    ``model`` is not modified.
    """
    new = copy.deepcopy(model).eval()
    with warnings.catch_warnings():
        # torch 2.13 flags quantized-tensor creation as deprecated; it is still the only CPU int8 Linear path,
        # and the warning would otherwise repeat once per converted child in every search.
        warnings.simplefilter("ignore", UserWarning)
        warnings.simplefilter("ignore", DeprecationWarning)
        _replace_linears(new, _quantized_dynamic_linear)
    return new


def is_int8(model: nn.Module) -> bool:
    """True when ``model`` has at least one dynamic-quantized int8 Linear and no float ``nn.Linear`` left."""
    from torch.ao.nn.quantized.dynamic import Linear as DynamicQuantizedLinear

    modules = list(model.modules())
    has_q = any(isinstance(m, DynamicQuantizedLinear) and m._packed_params.dtype == torch.qint8 for m in modules)
    return has_q and not any(isinstance(m, nn.Linear) for m in modules)


def int8_weight(module: nn.Module) -> torch.Tensor:
    """The dequantized float32 weight of a dynamic-quantized Linear (for checks and reports)."""
    return cast(torch.Tensor, module.weight().dequantize())  # type: ignore[operator]
