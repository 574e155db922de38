"""Fine-tune the children of one regime together, as one population with stacked weights.

Children of a regime share everything but their starting weights: the states, the teacher's soft targets, the
validation split, the batch order and the dropout masks (all derived from the regime, see :mod:`harness.finetune`).
So K children can take each Adam step together: every matmul becomes one ``bmm`` over a (K, ...) stack, every
elementwise op runs once over the stack, and Adam is one fused kernel over a (K, P) buffer. Per-op overhead is
paid once per population instead of once per child, which is where a small net's time goes.

Independence: a child's result must not depend on what else is in its population (``-k`` selection and ``-n``
change populations). Every op here is per-child (per matrix, per row or per element) and the stack keeps each
child's block of every tensor a whole number of SIMD chunks (parameters are padded to :data:`_PAD` floats), so no
child's numbers flow through a different kernel path when the population changes; ``tests/harness/
test_population.py`` checks bit-for-bit equality across population sizes and orders. Results are *not* bitwise
equal to :func:`harness.finetune.finetune` (bmm and the split LayerNorm round differently from addmm and the
fused one), so a search uses this path for every child, alone or not.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from harness.errors import HarnessError
from harness.finetune import (
    _CLIP_EPS,
    _DROPOUT_STREAM,
    _FUSED_ADAM,
    MAX_GRAD_NORM,
    TEMPERATURE,
    FinetuneResult,
    _check_inputs,
    _dropout_mask,
    _finite,
    _FlatMLP,
    adam_step,
    split_indices,
)
from harness.quantize import _MIN_SCALE, _SCALE_DIVISOR, QMAX, QMIN, convert_int8
from harness.space import Regime

_PAD = 64  # floats: each child's parameter block is a whole number of (unrolled) SIMD chunks
_EVAL_CHUNK = 16384
_LN_BACKWARD = torch.ops.aten.native_layer_norm_backward.default
_RELU_BACKWARD = torch.ops.aten.threshold_backward.default


def _fake_quant(w: torch.Tensor) -> torch.Tensor:
    """Per-child :func:`harness.quantize.fake_quant_weight` of a (K, out, in) stack (same scale formula)."""
    s = w.abs().amax(dim=(1, 2), keepdim=True).div_(_SCALE_DIVISOR).clamp_min_(_MIN_SCALE)
    return torch.round(w / s).clamp_(QMIN, QMAX).mul_(s)


class _Stack:
    """K QNetwork-layout children on one (K, P_pad) parameter buffer, with a batched forward/backward."""

    def __init__(self, children: Sequence[nn.Module], *, qat: bool, temperature: float,
                 device: torch.device) -> None:
        flats = [_FlatMLP(c, qat=qat, temperature=temperature) for c in children]  # checks each layout
        ref = flats[0]
        for f in flats[1:]:
            if f.names != ref.names or f.shapes != ref.shapes:
                raise HarnessError("population children must share one architecture; fine-tune children of one "
                                   "parent pair together")
        self.k, self.names, self.shapes = len(flats), ref.names, ref.shapes
        n_params = ref.flat.numel()
        self.p_pad = -(-n_params // _PAD) * _PAD
        self.full_flat = torch.zeros(self.k, self.p_pad, device=device)
        for i, f in enumerate(flats):
            self.full_flat[i, :n_params] = f.flat.to(device)
        self.full_grad = torch.zeros_like(self.full_flat)
        self._ln_meta = [(h[8], h[9]) for h in ref.hidden]
        self._lin = [n for n in self.names if n.endswith(".weight") and len(self.shapes[self.names.index(n)]) == 2]
        self._norms = [n for n in self.names if n.endswith(".weight") and len(self.shapes[self.names.index(n)]) == 1]
        self.widths, self.dropout = ref.widths, ref.dropout
        self.in_dim, self.out_dim = ref.in_dim, ref.out_dim
        self.qat, self.temperature = qat, temperature
        self.narrow(self.k)

    def narrow(self, k: int) -> None:
        """From now on train the first ``k`` children only; the others' rows stay as they are in the buffer."""
        self.k = k
        self.flat, self.grad = self.full_flat[:k], self.full_grad[:k]
        pv, gv = self.views(self.flat), self.views(self.grad)
        self.hidden = []
        for (w_name, ln_name), meta in zip(zip(self._lin, self._norms), self._ln_meta):
            w, ln = w_name[:-len(".weight")], ln_name[:-len(".weight")]
            keys = (f"{w}.weight", f"{w}.bias", f"{ln}.weight", f"{ln}.bias")
            self.hidden.append(tuple(pv[key] for key in keys) + tuple(gv[key] for key in keys) + meta)
        last = self._lin[-1][:-len(".weight")]
        self.last = (pv[f"{last}.weight"], pv[f"{last}.bias"], gv[f"{last}.weight"], gv[f"{last}.bias"])

    def views(self, buf: torch.Tensor) -> dict[str, torch.Tensor]:
        out, off = {}, 0
        for name, shape in zip(self.names, self.shapes):
            n = math.prod(shape)
            out[name] = buf[:, off:off + n].view(buf.shape[0], *shape)
            off += n
        return out

    def _weights(self) -> list[torch.Tensor]:
        ws = [h[0] for h in self.hidden] + [self.last[0]]
        return [_fake_quant(w) for w in ws] if self.qat else ws

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        """Eval forward of every child on the shared rows ``x`` (N, in) -> (K, N, A)."""
        ws = self._weights()
        h = x.unsqueeze(0).expand(self.k, *x.shape)
        for (_, b, g, e, *_, shape, eps), w in zip(self.hidden, ws):
            a = torch.baddbmm(b.unsqueeze(1), h, w.transpose(1, 2))
            n = torch.native_layer_norm(a, shape, None, None, eps)[0]
            h = n.mul_(g.unsqueeze(1)).add_(e.unsqueeze(1)).relu_()
        return torch.baddbmm(self.last[1].unsqueeze(1), h, ws[-1].transpose(1, 2))

    def train_step(self, x: torch.Tensor, p: torch.Tensor, masks: list[torch.Tensor | None],
                   log_q_out: torch.Tensor) -> None:
        """One forward with dropout and the exact backward of the distillation loss into ``self.grad``."""
        ws = self._weights()
        temp, k = self.temperature, self.k
        h = x.unsqueeze(0).expand(k, *x.shape)
        saved = []
        for (_, b, g, e, *_, shape, eps), w, mask in zip(self.hidden, ws, masks):
            a = torch.baddbmm(b.unsqueeze(1), h, w.transpose(1, 2))
            n, mean, rstd = torch.native_layer_norm(a, shape, None, None, eps)
            out = (n * g.unsqueeze(1)).add_(e.unsqueeze(1)).relu_()
            if mask is not None:
                out.mul_(mask)
            saved.append((h, a, n, mean, rstd, out))
            h = out
        log_q = torch.log_softmax(torch.baddbmm(self.last[1].unsqueeze(1), h, ws[-1].transpose(1, 2)).div_(temp), 2)
        log_q_out.copy_(log_q)
        # d/dz of T²·KL(p‖softmax(z/T)), batchmean over B rows = (T/B)·(softmax(z/T) − p)
        dz = log_q.exp_().sub_(p).mul_(temp / x.shape[0])
        self.last[2].copy_(torch.bmm(dz.transpose(1, 2), h))
        self.last[3].copy_(dz.sum(1))
        d, w_next = dz, ws[-1]
        for li in range(len(self.hidden) - 1, -1, -1):
            _, _, g, _, gw, gb, gg, ge, shape, _eps = self.hidden[li]
            h_in, a, n, mean, rstd, out = saved[li]
            dh = torch.bmm(d, w_next)
            mask = masks[li]
            if mask is not None:
                dh.mul_(mask)
            dy = _RELU_BACKWARD(dh, out, 0.0)
            gg.copy_((dy * n).sum(1))
            ge.copy_(dy.sum(1))
            da = _LN_BACKWARD(dy * g.unsqueeze(1), a, shape, mean, rstd, None, None, [True, False, False])[0]
            gw.copy_(torch.bmm(da.transpose(1, 2), h_in))
            gb.copy_(da.sum(1))
            d, w_next = da, ws[li]


class _StackAdam:
    """torch.optim.Adam (defaults) on the rows of the (K, P_pad) buffer, one learning rate per row, with per-row L2
    clipping at ``max_norm``. Rows are steered as the stack's: :meth:`narrow` keeps the first ``k``."""

    def __init__(self, param: torch.Tensor, grad: torch.Tensor, lrs: Sequence[float]) -> None:
        self.param, self.grad, self.lrs = param, grad, list(lrs)
        self.exp_avg, self.exp_avg_sq = torch.zeros_like(param), torch.zeros_like(param)
        self.step_t = torch.zeros((), dtype=torch.float32, device=param.device)
        self.steps = 0
        self.fused = _FUSED_ADAM is not None and param.device.type == "cpu"
        self.narrow(len(self.lrs))

    def narrow(self, k: int) -> None:
        self.k = k
        # Runs of equal learning rate (rows are sorted so they are contiguous): one Adam call per run, on whole
        # rows, so every child's update is the same elementwise kernel on the same numbers as in any population.
        self.runs: list[tuple[int, int, float]] = []
        for i in range(k):
            if self.runs and self.runs[-1][2] == self.lrs[i]:
                self.runs[-1] = (self.runs[-1][0], i + 1, self.lrs[i])
            else:
                self.runs.append((i, i + 1, self.lrs[i]))

    def clip(self, max_norm: float) -> None:
        grad = self.grad[:self.k]
        norms = torch.linalg.vector_norm(grad, dim=1, keepdim=True)  # one norm per child (row)
        grad.mul_(norms.add_(_CLIP_EPS).reciprocal_().mul_(max_norm).clamp_(max=1.0))

    def step(self) -> None:
        self.steps += 1
        for a, b, lr in self.runs:
            adam_step(self.param[a:b], self.grad[a:b], self.exp_avg[a:b], self.exp_avg_sq[a:b], self.step_t,
                      self.steps, lr, fused=self.fused)


def _evaluate(net: _Stack, x: torch.Tensor, p: torch.Tensor, target_arg: torch.Tensor) -> tuple[list[float],
                                                                                                   list[float]]:
    """Per child: (T²·mean KL, top-1 agreement) on a whole split, in chunks, summed in float64."""
    temp, k = net.temperature, net.k
    kl = torch.zeros(k, dtype=torch.float64, device=x.device)
    agree = torch.zeros(k, dtype=torch.int64, device=x.device)
    for s in range(0, x.shape[0], _EVAL_CHUNK):
        z = net.logits(x[s:s + _EVAL_CHUNK])
        log_q = torch.log_softmax(z / temp, 2)
        pc = p[s:s + _EVAL_CHUNK]
        rows = torch.xlogy(pc, pc).unsqueeze(0).sub(pc.unsqueeze(0) * log_q).sum(2)  # KL per row, (K, n)
        kl += rows.double().sum(1)
        agree += (z.argmax(2) == target_arg[s:s + _EVAL_CHUNK]).sum(1)
    n = x.shape[0]
    return [float(v) * temp * temp / n for v in kl.tolist()], [int(a) / n for a in agree.tolist()]


def finetune_population(children: Sequence[nn.Module], states: torch.Tensor, target_probs: torch.Tensor,
                        regime: Regime | Sequence[Regime]) -> list[FinetuneResult]:
    """Fine-tune every child of ``children`` together; one :class:`FinetuneResult` per child, in order.

    ``regime`` is one regime for all, or one per child; regimes of one population must share their ``batches``
    (split, batch order and dropout masks), so they differ only in learning rate and epochs: a child whose regime
    is shorter leaves the population when its epochs are done, with exactly the result it would have had alone.

    Same contract per child as :func:`harness.finetune.finetune` (split, batch order, dropout masks, Adam,
    clipping, best-epoch selection, divergence, QAT) — a diverged child stops contributing to its own history and
    keeps its best weights while the others go on. Works on CPU and CUDA tensors (the device of ``states``).
    Children are not modified; each result's model is a CPU copy of its child with the best weights.
    """
    if not children:
        return []
    regimes = [regime] * len(children) if isinstance(regime, Regime) else list(regime)
    if len(regimes) != len(children) or len({r.batches for r in regimes}) != 1:
        raise HarnessError("a population needs one regime per child, all with the same batch size, val_fraction, "
                           "seed and quantization; train other regimes in their own population")
    # Longest regime first, so a child that is done leaves from the end (the stack narrows to a prefix); equal
    # learning rates next to each other, so each run of them takes one Adam call.
    order = sorted(range(len(children)), key=lambda i: (-regimes[i].epochs, regimes[i].lr))
    rows = [regimes[i] for i in order]
    ref = rows[0]
    x_in = torch.as_tensor(states)
    device = x_in.device
    net = _Stack([children[i] for i in order], qat=ref.qat, temperature=TEMPERATURE, device=device)
    x, p = _check_inputs(x_in, torch.as_tensor(target_probs).to(device), net)  # type: ignore[arg-type]
    train_np, val_np = split_indices(x.shape[0], ref.val_fraction, ref.seed)
    tr, va = torch.from_numpy(train_np).to(device), torch.from_numpy(val_np).to(device)
    x_tr, p_tr, x_val, p_val = x[tr], p[tr], x[va], p[va]
    val_arg = p_val.argmax(1)
    kl_const = torch.xlogy(p_tr, p_tr).sum(1)
    n_train, n_val, k = x_tr.shape[0], x_val.shape[0], net.k
    order_gen = torch.Generator().manual_seed(ref.seed)
    drop_gen = torch.Generator().manual_seed((ref.seed ^ _DROPOUT_STREAM) & 0xFFFF_FFFF_FFFF)
    adam = _StackAdam(net.full_flat, net.full_grad, [r.lr for r in rows])
    hist: list[dict[str, Any]] = [{
        "train_losses": [], "val_losses": [], "val_agreements": [], "initial_val_loss": None,
        "initial_val_agreement": None, "best_epoch": -1, "best_val_loss": None,
        "selection": "val" if n_val else "train", "steps": 0, "diverged": False, "n_train": n_train,
        "n_val": n_val, "temperature": TEMPERATURE, "qat": ref.qat,
    } for _ in range(k)]
    if n_val:
        losses, agrees = _evaluate(net, x_val, p_val, val_arg)
        for h, loss, agree in zip(hist, losses, agrees):
            h["initial_val_loss"], h["initial_val_agreement"] = _finite(loss), agree
    best_loss = [math.inf] * k
    best_flat: list[torch.Tensor | None] = [None] * k
    alive = set(range(k))  # not diverged
    log_q_buf = torch.empty(k, n_train, net.out_dim, device=device)
    bs = ref.batch_size
    for epoch in range(ref.epochs):
        active = sum(r.epochs > epoch for r in rows)
        if not alive & set(range(active)):
            break
        if active < net.k:
            net.narrow(active)
            adam.narrow(active)
        # The generators stay on the CPU so the batch order and masks are the same on every device.
        perm = torch.randperm(n_train, generator=order_gen).to(device)
        xe, pe, ce = x_tr[perm], p_tr[perm], kl_const[perm]
        masks = [_dropout_mask(n_train, w, q, drop_gen) for w, q in zip(net.widths, net.dropout)]
        masks = [None if m is None else m.to(device) for m in masks]
        log_q = log_q_buf[:active]
        for s in range(0, n_train, bs):
            e = s + bs
            net.train_step(xe[s:e], pe[s:e], [None if m is None else m[s:e] for m in masks], log_q[:, s:e])
            adam.clip(MAX_GRAD_NORM)
            adam.step()
        train_losses = ((ce - (pe * log_q).sum(2)).double().mean(1) * (TEMPERATURE * TEMPERATURE)).tolist()
        scores = train_losses
        if n_val:
            scores, agrees = _evaluate(net, x_val, p_val, val_arg)
        for i in sorted(alive & set(range(active))):
            h = hist[i]
            if epoch == rows[i].epochs - 1:
                h["steps"] = adam.steps
            if not math.isfinite(train_losses[i]):
                h["train_losses"].append(None)
                h["diverged"], h["steps"] = True, adam.steps
                alive.discard(i)
                continue
            h["train_losses"].append(train_losses[i])
            if n_val:
                h["val_losses"].append(_finite(scores[i]))
                h["val_agreements"].append(agrees[i])
                if not math.isfinite(scores[i]):
                    h["diverged"], h["steps"] = True, adam.steps
                    alive.discard(i)
                    continue
            if scores[i] < best_loss[i]:
                best_loss[i], best_flat[i] = scores[i], net.flat[i].clone()
                h["best_epoch"], h["best_val_loss"] = epoch, scores[i]
    results: list[FinetuneResult | None] = [None] * k
    for row, i in enumerate(order):
        model = copy.deepcopy(children[i]).cpu()
        best = best_flat[row]
        if best is not None:
            views = net.views(best.unsqueeze(0))
            model.load_state_dict({n: v[0].detach().cpu().clone() for n, v in views.items()})
        model.eval()
        int8_model = convert_int8(model) if ref.qat else None
        results[i] = FinetuneResult(model=model, int8_model=int8_model, history=hist[row],
                                    diverged=bool(hist[row]["diverged"]))
    return [r for r in results if r is not None]
