"""The population's training step by ``torch.autograd`` over each child's own module: for every network family.

The same step as :class:`harness.networks.stacked.StackedMLP` (loss ``T² · KL(p ‖ softmax(z/T))`` batchmean, the same
dropout masks applied after each hidden block's activation, weight-only int8 fake quant with a straight-through
gradient for QAT), computed by autograd one child at a time instead of by hand over the whole stack. The children's
parameters live in the same (K, P_pad) buffer, row k = child k, so Adam, clipping, best-weight selection and
narrowing are the trainer's own, unchanged. Slower for small nets (one forward and backward per child); exact up
to float32 reassociation (tests/harness/test_autograd_stack.py checks it against the fast stack).
"""

from __future__ import annotations

import copy
import math
from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from harness.core.errors import HarnessError
from harness.networks.quantize import fake_quant_copy
from harness.networks.stacked import PAD, flat_views, row_state_dict


class AutogradStack:
    """K children of one architecture of any family, their parameters views of one (K, P_pad) buffer."""

    def __init__(self, children: Sequence[nn.Module], *, qat: bool, temperature: float,
                 device: torch.device) -> None:
        # Copies (fake-quant copies for QAT), kept in eval mode: dropout comes from the trainer's masks, never
        # from nn.Dropout's own draws on the global generator.
        self.modules = [(fake_quant_copy(c) if qat else copy.deepcopy(c)).to(device).eval() for c in children]
        named = [list(m.named_parameters()) for m in self.modules]
        self.names = tuple(n for n, _ in named[0])
        self.shapes = tuple(tuple(p.shape) for _, p in named[0])
        if any(tuple((n, tuple(p.shape)) for n, p in params) != tuple(zip(self.names, self.shapes))
               for params in named[1:]):
            raise HarnessError("population children must share one architecture; fine-tune children of one "
                               "parent pair together")
        if any(True for m in self.modules for _ in m.buffers()):
            raise HarnessError("the autograd trainer takes modules whose state is all parameters (no buffers such "
                               "as BatchNorm's running statistics); use LayerNorm or none")
        n_params = sum(math.prod(s) for s in self.shapes)
        self.p_pad = -(-n_params // PAD) * PAD
        self.full_flat = torch.zeros(len(children), self.p_pad, device=device)
        self.full_grad = torch.zeros_like(self.full_flat)
        self._params: list[list[torch.Tensor]] = []
        for i, params in enumerate(named):
            views = self.views(self.full_flat[i:i + 1])
            with torch.no_grad():
                for name, param in params:
                    views[name][0].copy_(param.detach().to(torch.float32))
                    param.data = views[name][0]  # the module reads (and Adam writes) the buffer's row
            self._params.append([p for _, p in params])
        self.temperature, self.qat = temperature, qat
        self._masks: Sequence[torch.Tensor | None] = []
        self._sites = [m for m in self.modules[0].modules() if isinstance(m, nn.Dropout)]
        self.dropout = [float(m.p) for m in self._sites]
        for module in self.modules:
            for site, drop in enumerate(m for m in module.modules() if isinstance(m, nn.Dropout)):
                drop.register_forward_hook(self._hook(site))
        self.in_dim = next(m.in_features for m in self.modules[0].modules() if isinstance(m, nn.Linear))
        self.widths, self.out_dim = self._probe(device)
        self.narrow(len(children))

    def _hook(self, site: int) -> Any:
        def apply_mask(module: nn.Module, inputs: tuple[torch.Tensor, ...], output: torch.Tensor) -> torch.Tensor:
            mask = self._masks[site] if site < len(self._masks) else None
            return inputs[0] if mask is None else inputs[0] * mask
        return apply_mask

    def _probe(self, device: torch.device) -> tuple[list[int], int]:
        """The width at each dropout site and the number of outputs, from one forward of a zero row."""
        widths: list[int] = []
        handles = [site.register_forward_hook(lambda m, i, o: widths.append(int(o.shape[-1]))) for site in self._sites]
        with torch.no_grad():
            out = self.modules[0](torch.zeros(1, self.in_dim, device=device))
        for handle in handles:
            handle.remove()
        return widths, int(out.shape[-1])

    def narrow(self, k: int) -> None:
        """From now on train the first ``k`` children only; the others' rows stay as they are in the buffer."""
        self.k = k
        self.flat, self.grad = self.full_flat[:k], self.full_grad[:k]

    def views(self, buf: torch.Tensor) -> dict[str, torch.Tensor]:
        """``{parameter name: (rows, *shape) view}`` of a (rows, P_pad) buffer."""
        return flat_views(self.names, self.shapes, buf)

    def state_dict(self, row: torch.Tensor) -> dict[str, torch.Tensor]:
        """One child's parameters (a (P_pad,) row) as a CPU state dict."""
        return row_state_dict(self.views(row.unsqueeze(0)))

    def logits(self, x: torch.Tensor, children: slice = slice(None)) -> torch.Tensor:
        """Eval forward of the active children (or those of ``children``) on the shared rows ``x`` (N, in) ->
        (K, N, A) (no dropout; QAT fake-quant)."""
        self._masks = []
        with torch.no_grad():
            return torch.stack([m(x) for m in self.modules[:self.k][children]])

    def train_step(self, x: torch.Tensor, p: torch.Tensor, masks: Sequence[torch.Tensor | None],
                   log_q_out: torch.Tensor) -> None:
        """Each child's forward with the masks and autograd's backward of ``T² · KL(p ‖ softmax(z/T))``
        (batchmean) into the gradient buffer; ``log_q_out`` (K, B, A) receives ``log_softmax(z/T)``."""
        temp = self.temperature
        self._masks = masks
        grads = self.views(self.grad)
        for i in range(self.k):
            z = self.modules[i](x)
            log_q = F.log_softmax(z / temp, dim=1)
            target = p[i] if p.dim() == 3 else p
            loss = F.kl_div(log_q, target, reduction="batchmean") * (temp * temp)
            for name, grad in zip(self.names, torch.autograd.grad(loss, self._params[i])):
                grads[name][i].copy_(grad)
            log_q_out[i].copy_(log_q.detach())
        self._masks = []
