"""Distillation fine-tuning of crossover children (float, or weight-only int8 QAT): the one trainer.

Loss: ``T² · KL(softmax(z_t/T) ‖ softmax(z_c/T))``, batchmean, T = 3, pure soft loss; Adam with torch defaults, at
the regime's learning rate and schedule; each child's gradient clipped to the regime's L2 norm (1 unless it says
otherwise), dropout at the regime's rate (the network's own unless it says); the best-validation-loss weights are
kept, the starting weights included (fine-tuning never returns a child that validates worse than it started).

Children are trained as a population (:mod:`harness.networks.stacked`): every child of a population sees the same
validation split, batch order and dropout masks, all drawn from its regime's seed by local generators (no global
RNG is read or written), and differs only in its starting weights, learning rate (and its schedule), clipping and
number of epochs (:mod:`harness.train.schedule`). Training one child is a population of one, and a child's result
is bit-for-bit the same in any population.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from harness.core.errors import HarnessError, StatesError
from harness.networks.adam import StackedAdam
from harness.networks.quantize import convert_int8
from harness.networks.stack import stack_children
from harness.networks.stacked import Stack
from harness.train.batches import dropout_mask, mask_streams, split_indices
from harness.train.regimes import GRAD_CLIP, Regime
from harness.train.schedule import Steps, dropout_rates, steps_per_epoch
from harness.train.teachers import Targets, Teacher
from harness.train.validation import score_split

TEMPERATURE = 3.0
MAX_GRAD_NORM = GRAD_CLIP  # the default regime's clipping norm
# An epoch is gathered, masked and scored this many rows at a time (rounded down to whole batches): what it holds
# is bounded by the chunk, not by the states (1M rows' masks and log-probabilities were ~0.7 GB).
_EPOCH_CHUNK = 16384
_DROPOUT_STREAM = 0x64726F70  # "drop": derives the dropout generator's seed from regime.seed


def soft_targets(teacher_logits: torch.Tensor, temperature: float = TEMPERATURE) -> torch.Tensor:
    """The teacher's soft targets ``softmax(z_t / T)`` as float32; compute once, share across children."""
    return torch.softmax(teacher_logits.detach().to(torch.float32) / temperature, dim=1)


def distill_loss(child_logits: torch.Tensor, target_probs: torch.Tensor,
                 temperature: float = TEMPERATURE) -> torch.Tensor:
    """``T² · KL(p ‖ softmax(z_c/T))`` averaged over the batch (``batchmean``), ``p`` = soft targets."""
    log_q = F.log_softmax(child_logits / temperature, dim=1)
    return F.kl_div(log_q, target_probs, reduction="batchmean") * (temperature * temperature)


@dataclass
class FinetuneResult:
    """``model``: float, eval mode, best weights (for QAT the float weights behind the fake-quant model);
    ``int8_model``: the real int8 model for QAT regimes, else None; ``history``: JSON-safe record;
    ``seconds``: this child's share of its population's training time."""

    model: nn.Module
    int8_model: nn.Module | None
    history: dict[str, Any] = field(default_factory=dict)
    diverged: bool = False
    seconds: float = 0.0


def _finite(value: float) -> float | None:
    return value if math.isfinite(value) else None


def _check_inputs(states: Any, target_probs: Any, net: Stack) -> tuple[torch.Tensor, torch.Tensor]:
    x = torch.as_tensor(states).detach().to(torch.float32)
    p = torch.as_tensor(target_probs).detach().to(device=x.device, dtype=torch.float32)
    if x.dim() != 2 or x.shape[0] < 1 or x.shape[1] != net.in_dim:
        raise StatesError(f"finetune states must be (N, {net.in_dim}) with N >= 1, got {tuple(x.shape)}; "
                          "pass the states buffer the parents were trained on")
    if p.dim() != 2 or p.shape != (x.shape[0], net.out_dim):
        raise HarnessError(f"target_probs must be ({x.shape[0]}, {net.out_dim}), got {tuple(p.shape)}; "
                           "pass soft_targets(teacher_logits) for the same states")
    if not bool(torch.isfinite(x).all()):
        raise StatesError("finetune states contain NaN or inf; clean the states buffer")
    if not bool(torch.isfinite(p).all()) or bool((p < 0).any()) or float((p.sum(1) - 1).abs().max()) > 1e-3:
        raise HarnessError("target_probs must be finite probability rows summing to 1; "
                           "pass soft_targets(teacher_logits), not raw logits")
    return x.contiguous(), p.contiguous()


class _Targets:
    """What a population trains toward: one shared (N, A) target (a static teacher), or, for an adaptive teacher
    (harness.train.teachers), one mix of the parents' soft targets per child, reweighed after every epoch."""

    def __init__(self, target_probs: torch.Tensor | Targets, net: Stack, x: torch.Tensor, tr: torch.Tensor,
                 va: torch.Tensor) -> None:
        self.teacher = target_probs.teacher if isinstance(target_probs, Targets) else None
        self.adaptive = self.teacher is not None and self.teacher.adaptive
        if isinstance(target_probs, Targets):
            parents = [target_probs.probs_a, target_probs.probs_b]
            parts = parents if self.adaptive else [target_probs.teacher.mix(*parents)]
        else:
            parents, parts = [], [target_probs]
        checked = [_check_inputs(x, q, net)[1] for q in parts]
        self.train_parts, self.val_parts = [q[tr] for q in checked], [q[va] for q in checked]
        # softmax is monotone: a teacher's argmax, up to exact float ties
        self.val_args = [q.argmax(1) for q in self.val_parts]
        # Where the agreements with A's and B's argmax sit among the evaluated ones (the validation primary, for
        # budget curves): an adaptive teacher's targets are the parents'; a static one's are appended.
        self.parents_at: tuple[int, int] | None = (0, 1) if self.adaptive else (1, 2) if parents else None
        self.own = len(self.val_args)  # the teacher's own targets: the agreements selection and teachers read
        if parents and not self.adaptive:
            self.val_args += [torch.as_tensor(q).to(x.device)[va].argmax(1) for q in parents]
        self.weights = [self.teacher.weight_a] * net.k if self.adaptive and self.teacher else []
        if not self.adaptive:
            self.kl_const = torch.xlogy(self.train_parts[0], self.train_parts[0]).sum(1)  # Σ p log p per row

    def primary(self, agrees: Sequence[Sequence[float]], i: int) -> float | None:
        """Child ``i``'s validation min(agree_a, agree_b) among ``agrees`` (None when the parents are unknown)."""
        return None if self.parents_at is None else min(agrees[j][i] for j in self.parents_at)

    def _mix(self, parts: Sequence[torch.Tensor], active: int) -> torch.Tensor:
        w = torch.tensor(self.weights[:active], dtype=torch.float32, device=parts[0].device).view(-1, 1, 1)
        return parts[0].unsqueeze(0) * w + parts[1].unsqueeze(0) * (1 - w)

    def epoch(self, rows: torch.Tensor, active: int) -> tuple[torch.Tensor, torch.Tensor]:
        """The targets of training ``rows`` (a chunk of the epoch's order) and their Σ p log p per row: shared
        (n, A), or (active, n, A) per child."""
        if not self.adaptive:
            return self.train_parts[0][rows], self.kl_const[rows]
        p = self._mix([q[rows] for q in self.train_parts], active)
        return p, torch.xlogy(p, p).sum(2)

    def val(self, active: int) -> torch.Tensor:
        return self.val_parts[0] if not self.adaptive else self._mix(self.val_parts, active)

    def after_epoch(self, i: int, agrees: Sequence[float]) -> None:
        """Reweigh child ``i`` by its validation agreements with A and B (adaptive teachers only)."""
        if self.adaptive and self.teacher is not None:
            self.weights[i] = self.teacher.update(self.weights[i], agrees[0], agrees[1])


def _new_history(n_train: int, n_val: int, qat: bool, teacher: Teacher | None) -> dict[str, Any]:
    history: dict[str, Any] = {
        "train_losses": [], "val_losses": [], "val_agreements": [], "initial_val_loss": None,
        "initial_val_agreement": None, "best_epoch": -1, "best_val_loss": None, "kept_start": False,
        "selection": "val" if n_val else "train", "steps": 0, "diverged": False, "early_stopped": False,
        "n_train": n_train, "n_val": n_val, "temperature": TEMPERATURE, "qat": qat,
        # the budget curve: optimiser steps at the end of each recorded epoch, and the validation primary
        # min(agree with A's argmax, agree with B's argmax) at each validated epoch (known when the trainer is
        # given both parents' targets, harness.train.teachers.Targets)
        "epoch_steps": [], "val_primary": [], "initial_val_primary": None}
    if teacher is not None and teacher.adaptive:
        history.update({"teacher_weights": [], "val_agreements_a": [], "val_agreements_b": [],
                        "selection": "val min(agree_a, agree_b)" if n_val else "train"})
    return history


@dataclass
class _Child:
    """One row of the population while it trains."""

    regime: Regime
    history: dict[str, Any]
    by_agreement: bool = False  # select on validation min(agree_a, agree_b) (adaptive teachers), else on loss
    best_score: tuple[float, ...] = (math.inf,)
    best_flat: torch.Tensor | None = None
    alive: bool = True  # not diverged, not stopped early
    since_best: int = 0
    start_score: tuple[float, ...] = (math.inf,)  # candidate zero: the starting weights' validation score

    def start(self, loss: float, agrees: list[float]) -> None:
        """Score the starting weights on the validation split, as an epoch is scored."""
        self.history["initial_val_loss"], self.history["initial_val_agreement"] = _finite(loss), min(agrees)
        if math.isfinite(loss):
            self.start_score = (-min(agrees), loss) if self.by_agreement else (loss,)

    def keeps_start(self) -> bool:
        """The starting weights win the selection when no epoch scored strictly better. Patience still counts
        from the best epoch, so training (and early stopping) is the same whichever weights are kept."""
        if self.best_score < self.start_score:
            return False
        h = self.history
        h["kept_start"], h["best_epoch"], h["best_val_loss"] = True, -1, h["initial_val_loss"]
        return True

    def end_epoch(self, epoch: int, train_loss: float, val: tuple[float, list[float]] | None, steps: int,
                  flat: torch.Tensor) -> None:
        """Record one epoch; keep the weights when the score (val loss, else train loss; for an adaptive teacher
        the lower of the val agreements with A and B, then the loss) is strictly the best; stop the child after
        ``regime.patience`` epochs without a better score."""
        h = self.history
        if epoch == self.regime.epochs - 1:
            h["steps"] = steps
        if not math.isfinite(train_loss):
            h["train_losses"].append(None)
            h["diverged"], h["steps"], self.alive = True, steps, False
            return
        h["train_losses"].append(train_loss)
        loss = train_loss
        score: tuple[float, ...] = (train_loss,)
        if val is not None:
            loss, agrees = val
            h["val_losses"].append(_finite(loss))
            if self.by_agreement:
                h["val_agreements_a"].append(agrees[0])
                h["val_agreements_b"].append(agrees[1])
                h["val_agreements"].append(min(agrees))
                score = (-min(agrees), loss)
            else:
                h["val_agreements"].append(agrees[0])
                score = (loss,)
            if not math.isfinite(loss):
                h["diverged"], h["steps"], self.alive = True, steps, False
                return
        if score < self.best_score:
            self.best_score, self.best_flat, self.since_best = score, flat.clone(), 0
            h["best_epoch"], h["best_val_loss"] = epoch, loss
        else:
            self.since_best += 1
            if self.regime.patience and self.since_best >= self.regime.patience:
                h["early_stopped"], h["steps"], self.alive = True, steps, False


@dataclass
class _Run:
    """One population's training state between epochs: the stack, its splits and targets, its children's rows, the
    optimiser and the generators of batch order and dropout masks (seeded by the regime, local to the run)."""

    net: Any
    x_tr: torch.Tensor
    x_val: torch.Tensor
    targets: _Targets
    rows: list[_Child]
    ref: Regime
    order_gen: torch.Generator = field(init=False)
    drop_gen: torch.Generator = field(init=False)
    adam: StackedAdam = field(init=False)
    chunk: int = field(init=False)
    log_q_buf: torch.Tensor = field(init=False)
    row_loss: torch.Tensor = field(init=False)
    steps: Steps = field(init=False)
    clip: float | torch.Tensor | None = field(init=False)

    def __post_init__(self) -> None:
        n_train, k, device = self.x_tr.shape[0], len(self.rows), self.x_tr.device
        self.order_gen = torch.Generator().manual_seed(self.ref.seed)
        self.drop_gen = torch.Generator().manual_seed((self.ref.seed ^ _DROPOUT_STREAM) & 0xFFFF_FFFF_FFFF)
        self.adam = StackedAdam(self.net.full_flat, self.net.full_grad, [r.regime.lr for r in self.rows])
        self.chunk = min(n_train, max(1, _EPOCH_CHUNK // self.ref.batch_size) * self.ref.batch_size)
        self.log_q_buf = torch.empty(k, self.chunk, self.net.out_dim, device=device)
        self.row_loss = torch.empty(k, n_train, device=device)  # each training row's KL, for the epoch's loss
        self.steps = Steps([r.regime for r in self.rows], steps_per_epoch(n_train, self.ref.batch_size))
        self.clip = self.steps.clip_norms(device)

    def epoch(self, epoch: int) -> bool:
        """Train one epoch of every active child, then score it; False when no child is left to train."""
        net, adam, rows, ref, device = self.net, self.adam, self.rows, self.ref, self.x_tr.device
        n_train, size = self.x_tr.shape[0], ref.batch_size
        active = sum(r.regime.epochs > epoch for r in rows)
        if not any(r.alive for r in rows[:active]):
            return False
        if active < net.k:
            net.narrow(active)
            adam.narrow(active)
        # The generators stay on the CPU so the batch order and masks are the same on every device.
        perm = torch.randperm(n_train, generator=self.order_gen).to(device)
        rates = dropout_rates(ref, net.dropout)
        streams = mask_streams(self.drop_gen, n_train, net.widths, rates)
        row_loss = self.row_loss[:active]
        for c in range(0, n_train, self.chunk):
            chunk = perm[c:c + self.chunk]
            n = chunk.shape[0]
            xe = self.x_tr[chunk]
            pe, ce = self.targets.epoch(chunk, active)
            masks = [dropout_mask(n, w, q, g) for w, q, g in zip(net.widths, rates, streams)]
            log_q = self.log_q_buf[:active, :n]
            # One split per tensor rather than a slice per step: the views are made in one call each.
            mask_batches = [[None] * -(-n // size) if m is None else torch.split(m.to(device), size) for m in masks]
            for x_b, p_b, lq_b, *m_b in zip(torch.split(xe, size), torch.split(pe, size, -2),
                                             torch.split(log_q, size, 1), *mask_batches):
                net.train_step(x_b, p_b, m_b, lq_b)
                self.steps.before_step(adam, self.clip)
                adam.step()
            row_loss[:, c:c + n] = ce - (pe * log_q).sum(2)
        # A child's row at a time: the same mean as over the (K, N) matrix (each row is reduced alone), without a
        # float64 copy of every child's rows (130 MB at 18 children and 900,000 rows).
        train_losses = [float(r.double().mean() * (TEMPERATURE * TEMPERATURE)) for r in row_loss]
        self.score(epoch, active, train_losses)
        return True

    def score(self, epoch: int, active: int, train_losses: list[float]) -> None:
        """Validate the active children after an epoch and let each row keep, stop or reweigh."""
        targets = self.targets
        vals: list[tuple[float, list[float]] | None] = [None] * active
        primaries: list[float | None] = [None] * active
        if self.x_val.shape[0]:
            losses, agrees = score_split(self.net, self.x_val, targets.val(active), targets.val_args)
            vals = [(loss, [a[i] for a in agrees[:targets.own]]) for i, loss in enumerate(losses)]
            primaries = [targets.primary(agrees, i) for i in range(active)]
        for i, row in enumerate(self.rows[:active]):
            if row.alive:
                if targets.adaptive:
                    row.history["teacher_weights"].append(targets.weights[i])
                val = vals[i]
                row.history["epoch_steps"].append(self.adam.steps)
                if val is not None and primaries[i] is not None:
                    row.history["val_primary"].append(primaries[i])
                row.end_epoch(epoch, train_losses[i], val, self.adam.steps, self.net.flat[i])
                if val is not None:
                    targets.after_epoch(i, val[1])


def finetune_population(children: Sequence[nn.Module], states: torch.Tensor, target_probs: torch.Tensor | Targets,
                        regime: Regime | Sequence[Regime]) -> list[FinetuneResult]:
    """Fine-tune every child of ``children`` together; one :class:`FinetuneResult` per child, in order.

    ``regime`` is one regime for all, or one per child; regimes of one population share their ``batches`` (split,
    batch order, dropout masks) and differ only in learning rate, schedule, clipping and epochs: a child of a shorter
    regime leaves the population when its epochs are done, with exactly the result it would have had alone.

    Validation rows come from :func:`split_indices`; each epoch's batch order is a ``randperm`` of the training rows
    from a generator seeded with the regime's seed, and dropout masks come from a second one. The weights of the
    epoch with the strictly lowest validation loss are kept (training loss when there is no val set:
    ``selection="train"``); the starting weights are candidate zero of that selection: when no epoch validates
    strictly better, they are kept (``kept_start``, ``best_epoch`` -1). ``target_probs`` is the teacher's soft
    targets, or a :class:`harness.train.teachers.Targets` whose adaptive teacher gives each child its own mix of the
    parents' soft targets, reweighed after every epoch by its validation agreements with A and B (then the best
    epoch is the one with the highest validation min(agree_a, agree_b)). A regime with ``patience`` stops a child
    after that many epochs without a better score (``early_stopped``). A non-finite loss stops that child with
    ``diverged=True`` and its best weights so far (its initial weights if no epoch finished) while the others go on.
    QAT regimes train, validate and select under int8 fake quant and return ``int8_model``. Works on CPU and CUDA
    (the device of ``states``). Children are not modified; each result's model is a CPU copy of its child with the
    best weights.
    """
    if not children:
        return []
    regimes = [regime] * len(children) if isinstance(regime, Regime) else list(regime)
    if len(regimes) != len(children) or len({r.batches for r in regimes}) != 1:
        raise HarnessError("a population needs one regime per child, all with the same batch size, val_fraction, "
                           "seed and quantization and one dropout rate; train other regimes in their own population")
    # Longest regime first, so a child that is done leaves from the end (the stack narrows to a prefix); equal
    # learning rates next to each other, so each run of them takes one Adam call.
    order = sorted(range(len(children)), key=lambda i: (-regimes[i].epochs, regimes[i].lr))
    ref = regimes[order[0]]
    x_in = torch.as_tensor(states)
    device = x_in.device
    net = stack_children([children[i] for i in order], qat=ref.qat, temperature=TEMPERATURE, device=device)
    x, _ = _check_inputs(x_in, target_probs.probs_a if isinstance(target_probs, Targets) else target_probs, net)
    train_np, val_np = split_indices(x.shape[0], ref.val_fraction, ref.seed)
    tr, va = torch.from_numpy(train_np).to(device), torch.from_numpy(val_np).to(device)
    x_tr, x_val = x[tr], x[va]
    targets = _Targets(target_probs, net, x, tr, va)
    n_train, n_val = x_tr.shape[0], x_val.shape[0]
    rows = [_Child(regimes[i], _new_history(n_train, n_val, ref.qat, targets.teacher), targets.adaptive)
            for i in order]
    if n_val:
        losses, agrees = score_split(net, x_val, targets.val(net.k), targets.val_args)
        for i, (row, loss) in enumerate(zip(rows, losses)):
            row.start(loss, [a[i] for a in agrees[:targets.own]])
            row.history["initial_val_primary"] = targets.primary(agrees, i)
    run = _Run(net, x_tr, x_val, targets, rows, ref)
    for epoch in range(ref.epochs):
        if not run.epoch(epoch):
            break
    results: list[FinetuneResult | None] = [None] * len(rows)
    for row, i in zip(rows, order):
        model = copy.deepcopy(children[i]).cpu()
        if row.best_flat is not None and not row.keeps_start():
            model.load_state_dict(net.state_dict(row.best_flat))
        model.eval()
        results[i] = FinetuneResult(model=model, int8_model=convert_int8(model) if ref.qat else None,
                                    history=row.history, diverged=bool(row.history["diverged"]))
    return [r for r in results if r is not None]


def finetune(child: nn.Module, states: torch.Tensor, target_probs: torch.Tensor, regime: Regime) -> FinetuneResult:
    """Distil ``target_probs`` (teacher soft targets at T=3) into a copy of ``child`` under ``regime``: a population
    of one (:func:`finetune_population`), so the result is the one the search gives this child."""
    return finetune_population([child], states, target_probs, regime)[0]
