"""What a regime's seed draws before training: the validation split of the fine-tune states, and the dropout masks
of an epoch. Local generators only (numpy's ``default_rng``, a ``torch.Generator``): no global RNG state is read or
written, so the same seed gives the same split and masks in any process.
"""

from __future__ import annotations

import numpy as np
import torch

from harness.core.errors import HarnessError


def split_indices(n: int, val_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(train, val) row indices: ``n_val = max(1, int(n*val_fraction))`` from ``default_rng(seed)``.

    The compatible rule: no val set (all rows train, in order) when ``val_fraction <= 0`` or it would leave no
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


_SKIP_CHUNK = 1 << 22  # uniform draws discarded at a time when a generator is moved on (16 MiB of float32)


def dropout_mask(rows: int, width: int, rate: float, gen: torch.Generator) -> torch.Tensor | None:
    """nn.Dropout's mask (keep with prob 1-p, scaled by 1/(1-p)) for ``rows`` rows, from the local generator."""
    if rate == 0.0:
        return None
    if rate >= 1.0:
        return torch.zeros(rows, width)
    return (torch.rand(rows, width, generator=gen) >= rate).to(torch.float32).mul_(1.0 / (1.0 - rate))


def mask_streams(gen: torch.Generator, rows: int, widths: list[int], rates: list[float]) -> list[torch.Generator]:
    """One generator per dropout site, each where that site's part of an epoch begins in ``gen``'s stream, and
    ``gen`` moved on past the whole epoch.

    An epoch's masks are drawn site by site, each for every training row at once (``dropout_mask(rows, w, q, gen)``
    in site order). torch's CPU uniform draws are sequential, so drawing a site's mask a chunk of rows at a time from
    its own generator gives exactly those masks, while only a chunk is ever held (a 1M-row epoch's masks are 512 MB
    at width 64). A site that draws nothing (rate 0, or 1) takes nothing from the stream.
    """
    streams = []
    for width, rate in zip(widths, rates):
        streams.append(torch.Generator().set_state(gen.get_state()))
        if 0.0 < rate < 1.0:
            for start in range(0, rows * width, _SKIP_CHUNK):
                torch.rand(min(_SKIP_CHUNK, rows * width - start), generator=gen)
    return streams
