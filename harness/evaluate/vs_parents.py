"""Child-vs-parent metrics with AgentFarm's exact definitions, streamed in chunks.

Every metric is accumulated as a sum over rows (counts as ints, continuous terms in float64) and divided once at
the end, so chunked evaluation equals single-batch evaluation and memory does not grow with the buffer beyond
the parents' logits.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from harness.core.errors import HarnessError, StatesError

DEFAULT_CHUNK = 65536
DEFAULT_KS = (1, 2, 3)
_COSINE_EPS = 1e-8


def _rows(states: Any) -> int:
    if getattr(states, "ndim", None) != 2 or len(states) < 1 or states.shape[1] < 1:
        raise StatesError(f"states must be a non-empty 2-D array, got shape {getattr(states, 'shape', None)}; "
                          "pass an (N, input_dim) float array")
    return int(states.shape[0])


def _chunk(states: Any, start: int, stop: int) -> torch.Tensor:
    part = states[start:stop]
    if isinstance(part, torch.Tensor):
        return part.detach().to(torch.float32)
    # Copy just this chunk (a memmap is read lazily, and torch must not wrap a read-only array).
    return torch.from_numpy(np.array(part, dtype=np.float32, copy=True))


def _device(model: nn.Module) -> torch.device:
    """Where ``model`` runs: its first parameter's device (int8 modules have packed params: CPU)."""
    for param in model.parameters():
        return param.device
    return torch.device("cpu")


def _check_chunk_size(chunk_size: int) -> None:
    if chunk_size < 1:
        raise HarnessError(f"chunk_size must be >= 1, got {chunk_size}; use the default 65536")


def predict(model: nn.Module, states: np.ndarray | torch.Tensor, *, chunk_size: int = DEFAULT_CHUNK) -> torch.Tensor:
    """``model``'s Q-values for every row of ``states`` as float32 (N, A), under no_grad in eval mode.

    The model's train/eval flag is restored afterwards.
    """
    _check_chunk_size(chunk_size)
    n = _rows(states)
    dev = _device(model)
    was_training = model.training
    model.eval()
    out: torch.Tensor | None = None
    try:
        with torch.no_grad():
            for s in range(0, n, chunk_size):
                z = model(_chunk(states, s, s + chunk_size).to(dev)).to(device="cpu", dtype=torch.float32)
                if out is None:
                    out = torch.empty(n, z.shape[1], dtype=torch.float32)
                out[s:s + z.shape[0]] = z
    finally:
        model.train(was_training)
    assert out is not None
    return out


class PairSums:
    """Running sums of the pair metrics of a reference ``r`` and a query ``q`` (ref → query)."""

    def __init__(self, ks: Sequence[int] = DEFAULT_KS) -> None:
        if not ks or any(int(k) < 1 for k in ks):
            raise HarnessError(f"top-k values must be >= 1, got {list(ks)}; use e.g. (1, 2, 3)")
        self.ks = tuple(int(k) for k in ks)
        self.n = 0
        self.top1 = 0
        self.topk = {k: 0 for k in self.ks}
        self.kl = self.se = self.ae = self.cos = 0.0
        self.actions = 0

    def update(self, ref: torch.Tensor, query: torch.Tensor) -> torch.Tensor:
        """Add a chunk of rows; returns ``argmax`` of the query (handy for the oracle count)."""
        if ref.shape != query.shape or ref.dim() != 2:
            raise HarnessError(f"reference and query logits must have the same (N, A) shape, got "
                               f"{tuple(ref.shape)} and {tuple(query.shape)}; pass logits of the same states")
        r, q = ref.detach().to(torch.float32), query.detach().to(torch.float32)
        n, actions = r.shape
        self.n += n
        self.actions = actions
        r_arg, q_arg = r.argmax(1), q.argmax(1)  # torch argmax: ties go to the first index
        self.top1 += int((r_arg == q_arg).sum())
        for k in self.ks:
            top = q.topk(min(k, actions), dim=1).indices
            self.topk[k] += int((top == r_arg[:, None]).any(1).sum())
        # Continuous terms in float64: exact enough that chunking cannot change the reported value.
        r64, q64 = r.double(), q.double()
        log_p, log_q = F.log_softmax(r64, 1), F.log_softmax(q64, 1)  # T = 1 on raw Q-values
        self.kl += float(F.kl_div(log_q, log_p, reduction="sum", log_target=True))
        diff = q64 - r64
        self.se += float(diff.square().sum())
        self.ae += float(diff.abs().sum())
        self.cos += float(F.cosine_similarity(r64, q64, dim=1, eps=_COSINE_EPS).sum())
        return q_arg

    def result(self) -> dict[str, Any]:
        """The metrics dict: top1, top_k {"1","2","3"}, kl, mse, mae, cosine."""
        if self.n == 0:
            raise HarnessError("no rows were evaluated; pass a non-empty states buffer")
        cells = self.n * self.actions
        return {
            "top1": self.top1 / self.n,
            "top_k": {str(k): self.topk[k] / self.n for k in self.ks},
            "kl": self.kl / self.n,
            "mse": self.se / cells,
            "mae": self.ae / cells,
            "cosine": self.cos / self.n,
        }


def _logits(values: Any, name: str) -> torch.Tensor:
    t = torch.as_tensor(values).detach().to(torch.float32)
    if t.dim() != 2 or t.shape[0] < 1:
        raise HarnessError(f"{name} must be (N, A) logits, got shape {tuple(t.shape)}; pass predict(model, states)")
    return t


def pair_metrics(ref_logits: torch.Tensor, query_logits: torch.Tensor,
                 ks: Sequence[int] = DEFAULT_KS) -> dict[str, Any]:
    """The metrics of ``query`` against ``ref``: top-1, top-k, KL(ref ‖ query) at T=1, MSE, MAE, cosine."""
    ref, query = _logits(ref_logits, "ref_logits"), _logits(query_logits, "query_logits")
    sums = PairSums(ks)
    if ref.shape != query.shape:
        sums.update(ref, query)  # raises the shape error
    for s in range(0, ref.shape[0], DEFAULT_CHUNK):
        sums.update(ref[s:s + DEFAULT_CHUNK], query[s:s + DEFAULT_CHUNK])
    return sums.result()


def parent_baseline(logits_a: torch.Tensor, logits_b: torch.Tensor) -> dict[str, Any]:
    """The parent A → parent B pair metrics (informational, never gated)."""
    return pair_metrics(logits_a, logits_b)


def evaluate_model(model: nn.Module, states: np.ndarray | torch.Tensor, logits_a: torch.Tensor,
                   logits_b: torch.Tensor, agree_ab: float, *, chunk_size: int = DEFAULT_CHUNK,
                   actions: list[torch.Tensor] | None = None) -> dict[str, Any]:
    """Score a child against both parents on ``states``, running the child chunk by chunk.

    Returns ``{"vs_parent_a", "vs_parent_b", "oracle", "primary", "bound", "bound_ratio"}`` where
    ``primary = min(top1 vs A, top1 vs B)``, ``oracle`` = share of rows whose child argmax equals A's or B's,
    ``bound = (1 + agree_ab) / 2`` (the best ``primary`` a child can reach when A and B agree on ``agree_ab`` of
    the rows) and ``bound_ratio = primary / bound``. ``actions``, when given, receives the child's action per row,
    chunk by chunk (for per-row statistics such as the bootstrap).
    """
    _check_chunk_size(chunk_size)
    n = _rows(states)
    la, lb = _logits(logits_a, "logits_a"), _logits(logits_b, "logits_b")
    if la.shape[0] != n or lb.shape != la.shape:
        raise HarnessError(f"parent logits {tuple(la.shape)} / {tuple(lb.shape)} do not match {n} states; "
                           "compute them with predict(parent, states) on the same buffer")
    sums_a, sums_b = PairSums(), PairSums()
    oracle = 0
    dev = _device(model)
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            for s in range(0, n, chunk_size):
                z = model(_chunk(states, s, s + chunk_size).to(dev)).cpu()
                a, b = la[s:s + chunk_size], lb[s:s + chunk_size]
                c_arg = sums_a.update(a, z)
                sums_b.update(b, z)
                if actions is not None:
                    actions.append(c_arg)
                oracle += int(((c_arg == a.argmax(1)) | (c_arg == b.argmax(1))).sum())
    finally:
        model.train(was_training)
    vs_a, vs_b = sums_a.result(), sums_b.result()
    primary = min(vs_a["top1"], vs_b["top1"])
    bound = (1.0 + float(agree_ab)) / 2.0
    return {
        "vs_parent_a": vs_a,
        "vs_parent_b": vs_b,
        "oracle": oracle / n,
        "primary": primary,
        "bound": bound,
        "bound_ratio": primary / bound,
    }
