"""Distillation fine-tuning of a crossover child (reference §3, seed §4), float or weight-only int8 QAT.

Loss: ``T² · KL(softmax(z_t/T) ‖ softmax(z_c/T))``, batchmean, T = 3, pure soft loss; Adam with torch defaults;
gradient clipping at L2 norm 1; the best-validation-loss weights are kept.

Speed: a child is small (8-64-64-4), so eager PyTorch spends most of a step in per-op and autograd overhead.
:class:`_FlatMLP` therefore keeps all parameters (and gradients) in ONE flat float32 buffer and runs a
hand-written forward/backward of the QNetwork layout on it, so clipping is one norm and Adam one fused kernel
over the whole buffer. The gradients equal autograd's (tests compare them).

Determinism: batch order and dropout masks come from local ``torch.Generator``s seeded by ``regime.seed``; no
global RNG is read or written, so a child's result never depends on what ran before it. The masks depend only on
the regime and the data size, never on the child, so children of one regime see the same noise.
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from harness.errors import HarnessError, StatesError
from harness.quantize import convert_int8, fake_quant_weight
from harness.space import Regime

TEMPERATURE = 3.0
MAX_GRAD_NORM = 1.0
_BETA1, _BETA2, _ADAM_EPS = 0.9, 0.999, 1e-8  # torch.optim.Adam defaults
_CLIP_EPS = 1e-6  # as in torch.nn.utils.clip_grad_norm_
_EVAL_CHUNK = 65536
_DROPOUT_STREAM = 0x64726F70  # "drop": derives the dropout generator's seed from regime.seed

_LN_BACKWARD = torch.ops.aten.native_layer_norm_backward.default
_RELU_BACKWARD = torch.ops.aten.threshold_backward.default
_FUSED_ADAM = getattr(torch, "_fused_adam_", None)


def soft_targets(teacher_logits: torch.Tensor, temperature: float = TEMPERATURE) -> torch.Tensor:
    """The teacher's soft targets ``softmax(z_t / T)`` as float32; compute once, share across children."""
    return torch.softmax(teacher_logits.detach().to(torch.float32) / temperature, dim=1)


def distill_loss(child_logits: torch.Tensor, target_probs: torch.Tensor,
                 temperature: float = TEMPERATURE) -> torch.Tensor:
    """``T² · KL(p ‖ softmax(z_c/T))`` averaged over the batch (``batchmean``), ``p`` = soft targets."""
    log_q = F.log_softmax(child_logits / temperature, dim=1)
    return F.kl_div(log_q, target_probs, reduction="batchmean") * (temperature * temperature)


def split_indices(n: int, val_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(train, val) row indices: ``n_val = max(1, int(n*val_fraction))`` from ``default_rng(seed)``.

    As the established rule: no val set (all rows train, in order) when ``val_fraction <= 0`` or it would leave no
    training row; otherwise ``perm = permutation(n)``, train = ``perm[:n_train]``, val = ``perm[n_train:]``.
    """
    if n < 1:
        raise HarnessError(f"cannot split {n} states; pass a states buffer with at least one row")
    if not 0.0 <= val_fraction < 1.0:
        raise HarnessError(f"val_fraction must be in [0, 1), got {val_fraction!r}; use e.g. 0.1 or 0 for none")
    n_val = max(1, int(n * val_fraction)) if val_fraction > 0 else 0
    n_train = n - n_val
    if n_val == 0 or n_train <= 0:
        return np.arange(n, dtype=np.int64), np.empty(0, dtype=np.int64)
    perm = np.random.default_rng(seed).permutation(n)
    return perm[:n_train], perm[n_train:]


@dataclass
class FinetuneResult:
    """``model``: float, eval mode, best weights (for QAT the float weights behind the fake-quant model);
    ``int8_model``: the real int8 model for QAT regimes, else None; ``history``: JSON-safe record."""

    model: nn.Module
    int8_model: nn.Module | None
    history: dict[str, Any] = field(default_factory=dict)
    diverged: bool = False


class _FlatMLP:
    """A QNetwork-layout MLP (``[Linear, LayerNorm, ReLU, Dropout]* , Linear`` in ``.network``) on flat buffers."""

    def __init__(self, model: nn.Module, *, qat: bool, temperature: float) -> None:
        seq = getattr(model, "network", None)
        mods = list(seq.named_children()) if isinstance(seq, nn.Sequential) else []
        if not mods or (len(mods) - 1) % 4 or not self._layout_ok([m for _, m in mods]):
            raise HarnessError(
                f"finetune needs the QNetwork layout (.network = [Linear, LayerNorm, ReLU, Dropout]*, Linear), "
                f"got {type(model).__name__}; build the child with harness.networks.network_from_state_dict"
            )
        named = list(model.named_parameters())
        self.names = [name for name, _ in named]
        self.shapes = [tuple(p.shape) for _, p in named]
        # torch.cat makes fresh storage: the caller's module is never written to.
        self.flat = torch.cat([p.detach().reshape(-1).to(torch.float32) for _, p in named])
        self.grad = torch.zeros_like(self.flat)
        pv, gv = self.views(self.flat), self.views(self.grad)
        expected = {f"network.{n}.{k}" for n, m in mods for k in ("weight", "bias") if not isinstance(m, (nn.ReLU,
                                                                                                       nn.Dropout))}
        if expected != set(self.names):
            raise HarnessError(f"finetune expects exactly the parameters {sorted(expected)}, got {self.names}; "
                               "use a plain QNetwork child")
        self.hidden: list[tuple[Any, ...]] = []
        for i in range(0, len(mods) - 1, 4):
            (li, _), (ni, norm), _, (_, drop) = mods[i:i + 4]
            assert isinstance(norm, nn.LayerNorm) and isinstance(drop, nn.Dropout)  # checked by _layout_ok
            w, b, g, e = (f"network.{li}.weight", f"network.{li}.bias", f"network.{ni}.weight", f"network.{ni}.bias")
            self.hidden.append((pv[w], pv[b], pv[g], pv[e], gv[w], gv[b], gv[g], gv[e],
                                list(norm.normalized_shape), float(norm.eps), float(drop.p)))
        li = mods[-1][0]
        self.last = (pv[f"network.{li}.weight"], pv[f"network.{li}.bias"],
                     gv[f"network.{li}.weight"], gv[f"network.{li}.bias"])
        self.widths = [h[0].shape[0] for h in self.hidden]
        self.dropout = [h[-1] for h in self.hidden]
        self.in_dim = int(self.hidden[0][0].shape[1] if self.hidden else self.last[0].shape[1])
        self.out_dim = int(self.last[0].shape[0])
        self.qat = qat
        self.temperature = temperature
        self._ws = [h[0] for h in self.hidden] + [self.last[0]]
        self._wts = [w.t() for w in self._ws]

    @staticmethod
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

    def views(self, buf: torch.Tensor) -> dict[str, torch.Tensor]:
        out, off = {}, 0
        for name, shape in zip(self.names, self.shapes):
            n = math.prod(shape)
            out[name] = buf[off:off + n].view(shape)
            off += n
        return out

    def state_dict(self, flat: torch.Tensor) -> dict[str, torch.Tensor]:
        return {k: v.clone() for k, v in self.views(flat).items()}

    def _weights(self) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        """(weights, their transposes) used by the forward."""
        if not self.qat:
            return self._ws, self._wts  # views of self.flat: Adam's in-place update keeps them current
        # QAT: the forward sees the int8 grid; backward hands the gradient straight to the float weight (STE).
        ws = [fake_quant_weight(w) for w in self._ws]
        return ws, [w.t() for w in ws]

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        """Eval-mode forward (no dropout; fake-quant on for QAT)."""
        _, wts = self._weights()
        h = x
        for (_, b, g, e, *_, shape, eps, _p), wt in zip(self.hidden, wts):
            h = torch.native_layer_norm(torch.addmm(b, h, wt), shape, g, e, eps)[0].relu_()
        return torch.addmm(self.last[1], h, wts[-1])

    def train_step(self, x: torch.Tensor, p: torch.Tensor, masks: list[torch.Tensor | None],
                   log_q_out: torch.Tensor) -> None:
        """Forward with dropout, exact backward of the distillation loss into ``self.grad``; no update.

        ``log_q_out`` receives ``log_softmax(z/T)`` so the caller can compute the epoch loss once per epoch.
        """
        ws, wts = self._weights()
        temp = self.temperature
        h, saved = x, []
        for (_, b, g, e, *_, shape, eps, _p), wt, mask in zip(self.hidden, wts, masks):
            a = torch.addmm(b, h, wt)
            n, mean, rstd = torch.native_layer_norm(a, shape, g, e, eps)
            out = n.relu_() if mask is None else n.relu_().mul_(mask)
            saved.append((h, a, mean, rstd, out))
            h = out
        log_q = torch.log_softmax(torch.addmm(self.last[1], h, wts[-1]).div_(temp), 1)
        log_q_out.copy_(log_q)
        # d/dz of T²·KL(p‖softmax(z/T)) averaged over B rows = (T/B)·(softmax(z/T) − p)  (rows of p sum to 1)
        dz = log_q.exp_().sub_(p).mul_(temp / x.shape[0])
        torch.mm(dz.t(), h, out=self.last[2])
        torch.sum(dz, 0, out=self.last[3])
        d, w_next = dz, ws[-1]
        for li in range(len(self.hidden) - 1, -1, -1):
            _, _, g, e, gw, gb, gg, ge, shape, _eps, _p = self.hidden[li]
            h_in, a, mean, rstd, out = saved[li]
            dh = torch.mm(d, w_next)
            mask = masks[li]
            if mask is not None:
                dh.mul_(mask)
            da, dg, de = _LN_BACKWARD(_RELU_BACKWARD(dh, out, 0.0), a, shape, mean, rstd, g, e, [True, True, True])
            gg.copy_(dg)
            ge.copy_(de)
            torch.mm(da.t(), h_in, out=gw)
            torch.sum(da, 0, out=gb)
            d, w_next = da, ws[li]


class _Adam:
    """torch.optim.Adam (defaults, no weight decay) on one flat buffer, with L2 clipping folded in."""

    def __init__(self, param: torch.Tensor, grad: torch.Tensor, lr: float) -> None:
        self.param, self.grad, self.lr = param, grad, lr
        self.exp_avg = torch.zeros_like(param)
        self.exp_avg_sq = torch.zeros_like(param)
        self.step_t = torch.zeros((), dtype=torch.float32)
        self.steps = 0

    def clip(self, max_norm: float) -> None:
        """``clip_grad_norm_``: scale by ``min(1, max_norm / (‖g‖₂ + 1e-6))``."""
        total = torch.linalg.vector_norm(self.grad)
        self.grad.mul_(total.add_(_CLIP_EPS).reciprocal_().mul_(max_norm).clamp_(max=1.0))

    def step(self) -> None:
        self.steps += 1
        adam_step(self.param, self.grad, self.exp_avg, self.exp_avg_sq, self.step_t, self.steps, self.lr,
                  fused=_FUSED_ADAM is not None)


def adam_step(param: torch.Tensor, grad: torch.Tensor, exp_avg: torch.Tensor, exp_avg_sq: torch.Tensor,
              step_t: torch.Tensor, steps: int, lr: float, *, fused: bool) -> None:
    """One in-place Adam update (torch defaults, no weight decay) of contiguous buffers of any shape."""
    if fused and _FUSED_ADAM is not None:
        # The kernel torch.optim.Adam(fused=True) calls: one pass instead of ~7 ops (profiled: 9 µs vs 43 µs).
        step_t.fill_(steps)
        _FUSED_ADAM([param.view(-1)], [grad.view(-1)], [exp_avg.view(-1)], [exp_avg_sq.view(-1)], [], [step_t],
                    lr=lr, beta1=_BETA1, beta2=_BETA2, weight_decay=0.0, eps=_ADAM_EPS, amsgrad=False, maximize=False)
        return
    # torch.optim.Adam's single-tensor path, op for op.
    bc1 = 1 - _BETA1 ** steps
    bc2_sqrt = (1 - _BETA2 ** steps) ** 0.5
    exp_avg.lerp_(grad, 1 - _BETA1)
    exp_avg_sq.mul_(_BETA2).addcmul_(grad, grad, value=1 - _BETA2)
    denom = (exp_avg_sq.sqrt() / bc2_sqrt).add_(_ADAM_EPS)
    param.addcdiv_(exp_avg, denom, value=-lr / bc1)


def _finite(value: float) -> float | None:
    return value if math.isfinite(value) else None


def _check_inputs(states: Any, target_probs: Any, net: _FlatMLP) -> tuple[torch.Tensor, torch.Tensor]:
    x = torch.as_tensor(states).detach().to(torch.float32)
    p = torch.as_tensor(target_probs).detach().to(torch.float32)
    if x.dim() != 2 or x.shape[0] < 1 or x.shape[1] != net.in_dim:
        raise StatesError(f"finetune states must be (N, {net.in_dim}) with N >= 1, got {tuple(x.shape)}; "
                          "pass the states buffer the parents were trained on")
    if p.dim() != 2 or p.shape != (x.shape[0], net.out_dim):
        raise HarnessError(f"target_probs must be ({x.shape[0]}, {net.out_dim}), got {tuple(p.shape)}; "
                           "pass soft_targets(teacher_logits) for the same states")
    if not bool(torch.isfinite(x).all()):
        raise StatesError("finetune states contain NaN or inf; clean the states buffer")
    if not bool(torch.isfinite(p).all()) or bool((p < 0).any()) or \
            float((p.sum(1) - 1).abs().max()) > 1e-3:
        raise HarnessError("target_probs must be finite probability rows summing to 1; "
                           "pass soft_targets(teacher_logits), not raw logits")
    return x.contiguous(), p.contiguous()


def _evaluate(net: _FlatMLP, x: torch.Tensor, p: torch.Tensor, target_arg: torch.Tensor) -> tuple[float, float]:
    """(T²·mean KL, top-1 agreement) on a whole split, in chunks, summed in float64."""
    kl_sum, agree, temp = 0.0, 0, net.temperature
    for s in range(0, x.shape[0], _EVAL_CHUNK):
        z = net.logits(x[s:s + _EVAL_CHUNK])
        log_q = torch.log_softmax(z / temp, 1)
        kl_sum += float(F.kl_div(log_q, p[s:s + _EVAL_CHUNK], reduction="none").sum(1).double().sum())
        agree += int((z.argmax(1) == target_arg[s:s + _EVAL_CHUNK]).sum())
    return kl_sum * temp * temp / x.shape[0], agree / x.shape[0]


def finetune(child: nn.Module, states: torch.Tensor, target_probs: torch.Tensor, regime: Regime) -> FinetuneResult:
    """Distil ``target_probs`` (teacher soft targets at T=3) into a copy of ``child`` under ``regime``.

    ``child`` is not modified. Validation rows come from :func:`split_indices`; each epoch's batch order is a
    ``randperm`` of the training rows from a generator seeded with ``regime.seed``. The weights of the epoch with
    the strictly lowest validation loss are kept (training loss when there is no val set: ``selection="train"``).
    A non-finite loss stops training with ``diverged=True`` and the best weights so far (the initial weights if no
    epoch finished). QAT regimes train, validate and select under int8 fake quant and return ``int8_model``.
    """
    net = _FlatMLP(child, qat=regime.qat, temperature=TEMPERATURE)
    x, p = _check_inputs(states, target_probs, net)
    train_np, val_np = split_indices(x.shape[0], regime.val_fraction, regime.seed)
    x_tr, p_tr = x[torch.from_numpy(train_np)], p[torch.from_numpy(train_np)]
    x_val, p_val = x[torch.from_numpy(val_np)], p[torch.from_numpy(val_np)]
    val_arg = p_val.argmax(1)  # softmax is monotone: the teacher's argmax, up to exact float ties
    kl_const = torch.xlogy(p_tr, p_tr).sum(1)  # Σ p log p per row, for the once-per-epoch train loss
    n_train, n_val = x_tr.shape[0], x_val.shape[0]
    selection = "val" if n_val else "train"
    order_gen = torch.Generator().manual_seed(regime.seed)
    drop_gen = torch.Generator().manual_seed((regime.seed ^ _DROPOUT_STREAM) & 0xFFFF_FFFF_FFFF)
    adam = _Adam(net.flat, net.grad, regime.lr)
    history: dict[str, Any] = {
        "train_losses": [], "val_losses": [], "val_agreements": [], "initial_val_loss": None,
        "initial_val_agreement": None, "best_epoch": -1, "best_val_loss": None, "selection": selection,
        "steps": 0, "diverged": False, "n_train": n_train, "n_val": n_val, "temperature": TEMPERATURE,
        "qat": regime.qat,
    }
    if n_val:
        loss0, agree0 = _evaluate(net, x_val, p_val, val_arg)
        history["initial_val_loss"], history["initial_val_agreement"] = _finite(loss0), agree0
    best_loss, best_flat = math.inf, None
    log_q_buf = torch.empty(n_train, net.out_dim)
    bs = regime.batch_size
    for epoch in range(regime.epochs):
        perm = torch.randperm(n_train, generator=order_gen)
        xe, pe, ce = x_tr[perm], p_tr[perm], kl_const[perm]
        masks = [_dropout_mask(n_train, w, q, drop_gen) for w, q in zip(net.widths, net.dropout)]
        for s in range(0, n_train, bs):
            e = s + bs
            net.train_step(xe[s:e], pe[s:e], [None if m is None else m[s:e] for m in masks], log_q_buf[s:e])
            adam.clip(MAX_GRAD_NORM)
            adam.step()
        # Epoch loss = Σ_batches(batch mean · B) / n_train = mean per-row T²·KL, computed once per epoch.
        train_loss = float((ce - (pe * log_q_buf).sum(1)).double().mean()) * TEMPERATURE * TEMPERATURE
        if not math.isfinite(train_loss):
            history["train_losses"].append(None)
            history["diverged"] = True
            break
        history["train_losses"].append(train_loss)
        score = train_loss
        if n_val:
            score, agree = _evaluate(net, x_val, p_val, val_arg)
            history["val_losses"].append(_finite(score))
            history["val_agreements"].append(agree)
            if not math.isfinite(score):
                history["diverged"] = True
                break
        if score < best_loss:
            best_loss, best_flat = score, net.flat.clone()
            history["best_epoch"], history["best_val_loss"] = epoch, score
    history["steps"] = adam.steps
    model = copy.deepcopy(child)
    model.load_state_dict(net.state_dict(best_flat if best_flat is not None else _initial_flat(child)))
    model.eval()
    int8_model = convert_int8(model) if regime.qat else None
    return FinetuneResult(model=model, int8_model=int8_model, history=history, diverged=history["diverged"])


def _dropout_mask(rows: int, width: int, rate: float, gen: torch.Generator) -> torch.Tensor | None:
    """nn.Dropout's mask (keep with prob 1-p, scaled by 1/(1-p)) for a whole epoch, from the local generator."""
    if rate == 0.0:
        return None
    if rate >= 1.0:
        return torch.zeros(rows, width)
    return (torch.rand(rows, width, generator=gen) >= rate).to(torch.float32).mul_(1.0 / (1.0 - rate))


def _initial_flat(child: nn.Module) -> torch.Tensor:
    return torch.cat([p.detach().reshape(-1).to(torch.float32) for p in child.parameters()])
