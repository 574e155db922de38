"""torch.optim.Adam (defaults: betas 0.9/0.999, eps 1e-8, no weight decay) with L2 clipping, on the rows of a
(K, P) parameter buffer: one learning rate and one clipping norm per row (child), each settable before any step
(a schedule's, harness.train.schedule)."""

from __future__ import annotations

from collections.abc import Sequence

import torch

BETA1, BETA2, ADAM_EPS = 0.9, 0.999, 1e-8  # torch.optim.Adam defaults
CLIP_EPS = 1e-6  # as in torch.nn.utils.clip_grad_norm_
_FUSED_ADAM = getattr(torch, "_fused_adam_", None)


def adam_step(param: torch.Tensor, grad: torch.Tensor, exp_avg: torch.Tensor, exp_avg_sq: torch.Tensor,
              step_t: torch.Tensor, steps: int, lr: float, *, fused: bool) -> None:
    """One in-place Adam update (torch defaults, no weight decay) of contiguous buffers of any shape."""
    if fused and _FUSED_ADAM is not None:
        # The kernel torch.optim.Adam(fused=True) calls: one pass instead of ~7 ops (profiled: 9 µs vs 43 µs).
        step_t.fill_(steps)
        _FUSED_ADAM([param.view(-1)], [grad.view(-1)], [exp_avg.view(-1)], [exp_avg_sq.view(-1)], [], [step_t],
                    lr=lr, beta1=BETA1, beta2=BETA2, weight_decay=0.0, eps=ADAM_EPS, amsgrad=False, maximize=False)
        return
    # torch.optim.Adam's single-tensor path, op for op.
    bc1 = 1 - BETA1 ** steps
    bc2_sqrt = (1 - BETA2 ** steps) ** 0.5
    exp_avg.lerp_(grad, 1 - BETA1)
    exp_avg_sq.mul_(BETA2).addcmul_(grad, grad, value=1 - BETA2)
    denom = (exp_avg_sq.sqrt() / bc2_sqrt).add_(ADAM_EPS)
    param.addcdiv_(exp_avg, denom, value=-lr / bc1)


class StackedAdam:
    """Adam on the rows of a (K, P) buffer, one learning rate per row, with per-row L2 clipping.

    Rows are steered as the stack's: :meth:`narrow` keeps the first ``k`` (the caller sorts rows so the ones that
    leave first are last, and equal learning rates are contiguous).
    """

    def __init__(self, param: torch.Tensor, grad: torch.Tensor, lrs: Sequence[float]) -> None:
        self.param, self.grad, self.lrs = param, grad, list(lrs)
        self.exp_avg, self.exp_avg_sq = torch.zeros_like(param), torch.zeros_like(param)
        self.step_t = torch.zeros((), dtype=torch.float32, device=param.device)
        self.steps = 0
        self.fused = _FUSED_ADAM is not None and param.device.type == "cpu"
        self.narrow(len(self.lrs))

    def narrow(self, k: int) -> None:
        self.k = k
        # Runs of equal learning rate: one Adam call per run, on whole rows, so every child's update is the same
        # elementwise kernel on the same numbers as in any population.
        self.runs: list[tuple[int, int, float]] = []
        for i in range(k):
            if self.runs and self.runs[-1][2] == self.lrs[i]:
                self.runs[-1] = (self.runs[-1][0], i + 1, self.lrs[i])
            else:
                self.runs.append((i, i + 1, self.lrs[i]))

    def set_lrs(self, lrs: Sequence[float]) -> None:
        """New learning rates, one per row (a schedule's, before a step); the active rows stay as they are."""
        self.lrs = list(lrs)
        self.narrow(self.k)

    def clip(self, max_norm: float | torch.Tensor) -> None:
        """``clip_grad_norm_`` per row: scale by ``min(1, max_norm / (‖g‖₂ + 1e-6))``; ``max_norm`` one number, or a
        (K, 1) column of one per row (inf leaves that row as it is)."""
        grad = self.grad[:self.k]
        norms = torch.linalg.vector_norm(grad, dim=1, keepdim=True)
        limit = max_norm[:self.k] if isinstance(max_norm, torch.Tensor) else max_norm
        grad.mul_(norms.add_(CLIP_EPS).reciprocal_().mul_(limit).clamp_(max=1.0))

    def step(self) -> None:
        self.steps += 1
        for a, b, lr in self.runs:
            adam_step(self.param[a:b], self.grad[a:b], self.exp_avg[a:b], self.exp_avg_sq[a:b], self.step_t,
                      self.steps, lr, fused=self.fused)
