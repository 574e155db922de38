"""K children of the QNetwork layout on one (K, P) parameter buffer, with a batched forward and exact backward.

Children of one population share everything but their weights (states, soft targets, split, batch order, dropout
masks), so every matmul of a step becomes one ``bmm`` over the stack, every elementwise op runs once over it, and
Adam is one fused kernel over the (K, P) buffer: per-op overhead is paid once per population instead of once per
child, which is where a small net's time goes. Training one child is a stack of one.

Independence: a child's numbers must not depend on what else is in its stack (``-k`` and ``-n`` change stacks).
Every op here is per child (per matrix, per row or per element), and each child's block of the buffer is padded to
a whole number of SIMD chunks (:data:`PAD` floats), so no child's numbers flow through a different kernel path
when the stack changes (tests/harness/test_finetune.py checks this bit for bit).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

import torch
from torch import nn

from harness.core.errors import HarnessError
from harness.networks.family import Blocks, Family, family_of
from harness.networks.quantize import MIN_SCALE, QMAX, QMIN, SCALE_DIVISOR

PAD = 64  # floats: each child's parameter block is a whole number of (unrolled) SIMD chunks
# A weight gradient at least this big is multiplied straight into the gradient buffer: for a 1024 x 1024 layer the
# product and a copy cost 10.7 ms, the product into place 4.3 ms (measured, 6 children); a small one is faster
# made apart and copied (34 against 38 µs at 64 x 64, 9 children). The same kernel either way: the same bits.
_INTO_PLACE = 1 << 16
_LN_BACKWARD = torch.ops.aten.native_layer_norm_backward.default
_RELU_BACKWARD = torch.ops.aten.threshold_backward.default


def fake_quant_stack(w: torch.Tensor) -> torch.Tensor:
    """Per-child :func:`harness.networks.quantize.fake_quant_weight` of a (K, out, in) stack (same scale formula)."""
    s = w.abs().amax(dim=(1, 2), keepdim=True).div_(SCALE_DIVISOR).clamp_min_(MIN_SCALE)
    return torch.round(w / s).clamp_(QMIN, QMAX).mul_(s)


def flat_views(names: Sequence[str], shapes: Sequence[tuple[int, ...]], buf: torch.Tensor) -> dict[str, torch.Tensor]:
    """``{parameter name: (rows, *shape) view}`` of a (rows, P_pad) buffer whose parameters lie in ``names`` order."""
    out, off = {}, 0
    for name, shape in zip(names, shapes):
        n = math.prod(shape)
        out[name] = buf[:, off:off + n].view(buf.shape[0], *shape)
        off += n
    return out


def row_state_dict(views: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """A one-row buffer's views as a CPU state dict of fresh tensors."""
    return {n: v[0].detach().cpu().clone() for n, v in views.items()}


@dataclass
class Hidden:
    """One ``Linear -> LayerNorm -> ReLU -> Dropout`` block: (K, ...) views of the parameter and gradient buffers."""

    weight: torch.Tensor
    bias: torch.Tensor
    norm_weight: torch.Tensor
    norm_bias: torch.Tensor
    grad_weight: torch.Tensor
    grad_bias: torch.Tensor
    grad_norm_weight: torch.Tensor
    grad_norm_bias: torch.Tensor
    shape: list[int]
    eps: float


@dataclass
class Output:
    """The last Linear: (K, ...) views of its parameters and gradients."""

    weight: torch.Tensor
    bias: torch.Tensor
    grad_weight: torch.Tensor
    grad_bias: torch.Tensor


@dataclass(frozen=True)
class Layout:
    """Where each block's parameters sit in ``model.named_parameters()`` order, and its LayerNorm and dropout."""

    names: tuple[str, ...]
    shapes: tuple[tuple[int, ...], ...]
    hidden: tuple[tuple[str, str, list[int], float, float], ...]  # (linear, norm, norm shape, eps, dropout p)
    output: str

    @classmethod
    def of(cls, model: nn.Module, blocks: Blocks) -> Layout:
        """The layout of a module of a fast family (``.network = [Linear, LayerNorm, ReLU, Dropout]*, Linear``,
        keys named by ``blocks``); else a HarnessError."""
        seq = getattr(model, "network", None)
        mods = list(seq.children()) if isinstance(seq, nn.Sequential) else []
        if not mods or (len(mods) - 1) % 4 or not _layout_ok(mods) or len(mods) // 4 != len(blocks.hidden):
            raise HarnessError(
                f"the fast trainer needs the QNetwork layout (.network = [Linear, LayerNorm, ReLU, Dropout]*, "
                f"Linear), got {type(model).__name__}; build the child with "
                "harness.networks.qnetwork.network_from_state_dict")
        named = list(model.named_parameters())
        hidden = []
        for block, i in zip(blocks.hidden, range(0, len(mods) - 1, 4)):
            _, norm, _, drop = mods[i:i + 4]
            assert isinstance(norm, nn.LayerNorm) and isinstance(drop, nn.Dropout) and block.norm  # _layout_ok
            hidden.append((block.linear, block.norm, list(norm.normalized_shape), float(norm.eps), float(drop.p)))
        return cls(tuple(n for n, _ in named), tuple(tuple(p.shape) for _, p in named), tuple(hidden),
                   blocks.output)

    @property
    def n_params(self) -> int:
        return sum(math.prod(s) for s in self.shapes)


def _layout_ok(mods: list[nn.Module]) -> bool:
    kinds = (nn.Linear, nn.LayerNorm, nn.ReLU, nn.Dropout)
    for i, m in enumerate(mods[:-1]):
        if not isinstance(m, kinds[i % 4]):
            return False
        if isinstance(m, nn.LayerNorm) and (not m.elementwise_affine or m.bias is None):
            return False
        if isinstance(m, nn.Linear) and m.bias is None:
            return False
    last = mods[-1]
    return isinstance(last, nn.Linear) and last.bias is not None


class StackedMLP:
    """The children's parameters in one (K, P_pad) buffer, row k = child k, with a batched forward/backward."""

    def __init__(self, children: Sequence[nn.Module], *, qat: bool, temperature: float,
                 device: torch.device) -> None:
        layouts = [Layout.of(c, _blocks(c)) for c in children]
        self.layout = layouts[0]
        if any(lay != self.layout for lay in layouts[1:]):
            raise HarnessError("population children must share one architecture; fine-tune children of one "
                               "parent pair together")
        n_params = self.layout.n_params
        self.p_pad = -(-n_params // PAD) * PAD
        self.full_flat = torch.zeros(len(children), self.p_pad, device=device)
        for i, child in enumerate(children):
            # A copy: the caller's modules are never written to.
            flat = torch.cat([p.detach().reshape(-1).to(torch.float32) for p in child.parameters()])
            self.full_flat[i, :n_params] = flat.to(device)
        self.full_grad = torch.zeros_like(self.full_flat)
        self.widths = [shape[0] for _, _, shape, _, _ in self.layout.hidden]
        self.dropout = [p for *_, p in self.layout.hidden]
        self.out_dim = self.layout.shapes[self.layout.names.index(f"{self.layout.output}.weight")][0]
        first = self.layout.hidden[0][0] if self.layout.hidden else self.layout.output
        self.in_dim = self.layout.shapes[self.layout.names.index(f"{first}.weight")][1]
        self.qat, self.temperature = qat, temperature
        self.narrow(len(children))

    def narrow(self, k: int) -> None:
        """From now on train the first ``k`` children only; the others' rows stay as they are in the buffer."""
        self.k = k
        self.flat, self.grad = self.full_flat[:k], self.full_grad[:k]
        pv, gv = self.views(self.flat), self.views(self.grad)
        self.hidden = [Hidden(pv[f"{lin}.weight"], pv[f"{lin}.bias"], pv[f"{norm}.weight"], pv[f"{norm}.bias"],
                              gv[f"{lin}.weight"], gv[f"{lin}.bias"], gv[f"{norm}.weight"], gv[f"{norm}.bias"],
                              shape, eps)
                       for lin, norm, shape, eps, _ in self.layout.hidden]
        out = self.layout.output
        self.output = Output(pv[f"{out}.weight"], pv[f"{out}.bias"], gv[f"{out}.weight"], gv[f"{out}.bias"])
        # The (K, 1, n) views a step broadcasts, made once per narrowing rather than at every step.
        self._rows = [(h.bias.unsqueeze(1), h.norm_weight.unsqueeze(1), h.norm_bias.unsqueeze(1)) for h in self.hidden]
        self._out_bias = self.output.bias.unsqueeze(1)

    def views(self, buf: torch.Tensor) -> dict[str, torch.Tensor]:
        """``{parameter name: (rows, *shape) view}`` of a (rows, P_pad) buffer."""
        return flat_views(self.layout.names, self.layout.shapes, buf)

    def state_dict(self, row: torch.Tensor) -> dict[str, torch.Tensor]:
        """One child's parameters (a (P_pad,) row) as a CPU state dict."""
        return row_state_dict(self.views(row.unsqueeze(0)))

    def _weights(self) -> list[torch.Tensor]:
        ws = [h.weight for h in self.hidden] + [self.output.weight]
        # QAT: the forward sees the int8 grid; the backward hands the gradient straight to the float weight (STE).
        return [fake_quant_stack(w) for w in ws] if self.qat else ws

    def logits(self, x: torch.Tensor, children: slice = slice(None)) -> torch.Tensor:
        """Eval forward of the active children (or those of ``children``) on the shared rows ``x`` (N, in) ->
        (K, N, A) (no dropout; QAT fake-quant)."""
        ws = [w[children] for w in self._weights()]
        h = x.unsqueeze(0).expand(ws[0].shape[0], *x.shape)
        for layer, (bias, scale, shift), w in zip(self.hidden, self._rows, ws):
            a = torch.baddbmm(bias[children], h, w.transpose(1, 2))
            n = torch.native_layer_norm(a, layer.shape, None, None, layer.eps)[0]
            h = n.mul_(scale[children]).add_(shift[children]).relu_()
        return torch.baddbmm(self._out_bias[children], h, ws[-1].transpose(1, 2))

    def train_step(self, x: torch.Tensor, p: torch.Tensor, masks: Sequence[torch.Tensor | None],
                   log_q_out: torch.Tensor) -> None:
        """Forward with dropout and the exact backward of ``T² · KL(p ‖ softmax(z/T))`` (batchmean) into the
        gradient buffer; ``log_q_out`` (K, B, A) receives ``log_softmax(z/T)`` for the epoch's loss."""
        ws = self._weights()
        temp = self.temperature
        h = x.unsqueeze(0).expand(self.k, *x.shape)
        saved = []
        for layer, (bias, scale, shift), w, mask in zip(self.hidden, self._rows, ws, masks):
            a = torch.baddbmm(bias, h, w.transpose(1, 2))
            n, mean, rstd = torch.native_layer_norm(a, layer.shape, None, None, layer.eps)
            out = (n * scale).add_(shift).relu_()
            if mask is not None:
                out.mul_(mask)
            saved.append((h, a, n, mean, rstd, out))
            h = out
        z = torch.baddbmm(self._out_bias, h, ws[-1].transpose(1, 2))
        log_q = torch.log_softmax(z.div_(temp), 2)
        log_q_out.copy_(log_q)
        # d/dz of T²·KL(p‖softmax(z/T)), batchmean over B rows = (T/B)·(softmax(z/T) − p)  (rows of p sum to 1)
        dz = log_q.exp_().sub_(p).mul_(temp / x.shape[0])
        _grad_product(self.output.grad_weight, dz.transpose(1, 2), h)
        torch.sum(dz, 1, out=self.output.grad_bias)
        d, w_next = dz, ws[-1]
        for li in range(len(self.hidden) - 1, -1, -1):
            layer = self.hidden[li]
            h_in, a, n, mean, rstd, out = saved[li]
            dh = torch.bmm(d, w_next)
            mask = masks[li]
            if mask is not None:
                dh.mul_(mask)
            dy = _RELU_BACKWARD(dh, out, 0.0)
            torch.sum(dy * n, 1, out=layer.grad_norm_weight)
            torch.sum(dy, 1, out=layer.grad_norm_bias)
            da = _LN_BACKWARD(dy * self._rows[li][1], a, layer.shape, mean, rstd, None, None,
                              [True, False, False])[0]
            _grad_product(layer.grad_weight, da.transpose(1, 2), h_in)
            torch.sum(da, 1, out=layer.grad_bias)
            d, w_next = da, ws[li]


def _grad_product(grad: torch.Tensor, a: torch.Tensor, b: torch.Tensor) -> None:
    """``grad = a @ b`` per child (``grad`` a (K, out, in) view of the gradient buffer)."""
    if grad.shape[1] * grad.shape[2] >= _INTO_PLACE:
        torch.bmm(a, b, out=grad)
    else:
        grad.copy_(torch.bmm(a, b))


class Stack(Protocol):
    """What the trainer (:func:`harness.train.finetune.finetune_population`) needs of a population's networks: the
    (K, P_pad) parameter and gradient buffers (rows = children; Adam steps them), the dropout sites, the eval
    forward and the training step. :class:`StackedMLP` is the fast one, :class:`harness.networks.autograd.
    AutogradStack` the one for every family."""

    full_flat: torch.Tensor
    full_grad: torch.Tensor
    flat: torch.Tensor
    k: int
    in_dim: int
    out_dim: int
    temperature: float
    widths: list[int]
    dropout: list[float]

    def narrow(self, k: int) -> None: ...

    def state_dict(self, row: torch.Tensor) -> dict[str, torch.Tensor]: ...

    def logits(self, x: torch.Tensor, children: slice = slice(None)) -> torch.Tensor: ...

    def train_step(self, x: torch.Tensor, p: torch.Tensor, masks: Sequence[torch.Tensor | None],
                   log_q_out: torch.Tensor) -> None: ...


def family_of_module(model: nn.Module) -> Family:
    """The family whose layout ``model``'s state dict follows; else a HarnessError that says what to pass."""
    from harness.core.errors import CheckpointError
    from harness.networks.family import infer_architecture

    try:
        return family_of(infer_architecture(model.state_dict()))
    except CheckpointError as exc:
        raise HarnessError(f"finetune needs a network of a registered family, got {type(model).__name__} ({exc}); "
                           "for the QNetwork layout build the child with "
                           "harness.networks.qnetwork.network_from_state_dict"
                           ) from None


def _blocks(model: nn.Module) -> Blocks:
    from harness.networks.family import infer_architecture

    arch = infer_architecture(model.state_dict())
    return family_of(arch).blocks(arch)
