"""Batch-1 forward latency as AgentFarm measures it (3 warm-ups, 20 timed passes, median ms)."""

from __future__ import annotations

import statistics
import time

import torch
from torch import nn


def measure_latency(model: nn.Module, x: torch.Tensor, *, warmup: int = 3, rounds: int = 20) -> dict[str, float | int]:
    """Median wall time in ms of ``model(x)`` over ``rounds`` timed calls after ``warmup`` untimed ones, and the
    quartiles of those calls (``q1_ms``, ``q3_ms``: their spread, so a comparison can tell noise from a difference).

    Runs under no_grad in eval mode (the train/eval flag is restored). ``median_ms`` is 0.0 when ``rounds <= 0``.
    Latency is informational: it is noisy at this size and never used for ranking.
    """
    was_training = model.training
    model.eval()
    times: list[float] = []
    try:
        with torch.no_grad():
            for _ in range(max(0, warmup)):
                model(x)
            for _ in range(max(0, rounds)):
                start = time.perf_counter()
                model(x)
                times.append((time.perf_counter() - start) * 1000.0)
    finally:
        model.train(was_training)
    q1, _, q3 = statistics.quantiles(times, n=4) if len(times) >= 2 else (0.0, 0.0, 0.0)
    return {"median_ms": statistics.median(times) if times else 0.0, "q1_ms": q1, "q3_ms": q3,
            "rounds": max(0, rounds), "warmup": max(0, warmup)}
