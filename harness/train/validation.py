"""Scoring the children of a population on a whole split (validation after every epoch): the loss the trainer keeps
the best epoch by, and the top-1 agreement with each parent."""

from __future__ import annotations

from collections.abc import Sequence

import torch

from harness.networks.stacked import Stack

_EVAL_CHUNK = 16384  # rows a loss is summed over before it is added up in float64 (its grouping fixes its bits)
_FORWARD_VALUES = 1 << 20  # children x rows x width of a forward's activations (4 MB a tensor)


def score_split(net: Stack, x: torch.Tensor, p: torch.Tensor,
                target_args: Sequence[torch.Tensor]) -> tuple[list[float], list[list[float]]]:
    """Per child: T²·mean KL to ``p`` ((n, A) shared, or (K, n, A) one per child) and the top-1 agreement with each
    of ``target_args`` (per-row actions) on a whole split, in chunks, summed in float64."""
    temp, k = net.temperature, net.k
    kl = torch.zeros(k, dtype=torch.float64, device=x.device)
    agree = [torch.zeros(k, dtype=torch.int64, device=x.device) for _ in target_args]
    # The forward runs a few children at a time: its activations are children x rows x width floats (75 MB a
    # tensor at 18 children, 16,384 rows and width 64). A child's logits are the same in any stack (each matrix is
    # its own product), so the grouping changes memory, not a bit (tests/harness/test_finetune.py).
    group = max(1, _FORWARD_VALUES // (min(_EVAL_CHUNK, x.shape[0]) * max(net.widths, default=1)))
    for s in range(0, x.shape[0], _EVAL_CHUNK):
        z = torch.cat([net.logits(x[s:s + _EVAL_CHUNK], slice(c, c + group)) for c in range(0, k, group)])
        log_q = torch.log_softmax(z / temp, 2)
        pc = p[..., s:s + _EVAL_CHUNK, :]
        rows = torch.xlogy(pc, pc).sub(pc * log_q).sum(-1)  # KL per row, (K, n)
        kl += rows.double().sum(1)
        arg = z.argmax(2)
        for total, target in zip(agree, target_args):
            total += (arg == target[s:s + _EVAL_CHUNK]).sum(1)
    n = x.shape[0]
    return ([float(v) * temp * temp / n for v in kl.tolist()],
            [[int(c) / n for c in total.tolist()] for total in agree])
