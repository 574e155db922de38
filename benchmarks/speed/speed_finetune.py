"""Speed benchmarks of the core library (not collected by `pytest benchmarks`; the file is not test_*.py).

Run: ``pytest benchmarks/speed/speed_finetune.py -p no:xdist`` (one thread, 8-64-64-4 net as in the issue).
"""

from __future__ import annotations

import pytest
import torch

from harness.evaluate.vs_parents import evaluate_model, parent_baseline, predict
from harness.networks.adam import StackedAdam
from harness.networks.qnetwork import QNetwork
from harness.networks.stacked import StackedMLP
from harness.train.finetune import MAX_GRAD_NORM, TEMPERATURE, dropout_mask, finetune, finetune_population, soft_targets
from harness.train.regimes import REGIMES

torch.set_num_threads(1)


def _states(n: int) -> torch.Tensor:
    return torch.randn(n, 8, generator=torch.Generator().manual_seed(0))


@pytest.fixture(scope="module")
def parents() -> tuple[QNetwork, QNetwork]:
    return QNetwork(8, 4, 64).eval(), QNetwork(8, 4, 64).eval()


def test_speed_adam_step_batch32(benchmark: pytest.FixtureRequest, parents: tuple[QNetwork, QNetwork]) -> None:
    """One Adam step (forward with dropout, backward, clip, update) of one child at batch 32."""
    x = _states(32)
    with torch.no_grad():
        p = soft_targets(parents[0](x))
    net = StackedMLP([parents[1]], qat=False, temperature=TEMPERATURE, device=torch.device("cpu"))
    adam = StackedAdam(net.full_flat, net.full_grad, [1e-3])
    gen = torch.Generator().manual_seed(0)
    masks = [dropout_mask(32, 64, 0.1, gen) for _ in range(2)]
    log_q = torch.empty(1, 32, 4)

    def step() -> None:
        net.train_step(x, p, masks, log_q)
        adam.clip(MAX_GRAD_NORM)
        adam.step()

    benchmark.pedantic(step, rounds=2000, iterations=1, warmup_rounds=200)


def test_speed_short_regime_1000_states(benchmark: pytest.FixtureRequest, parents: tuple[QNetwork, QNetwork]) -> None:
    """A whole `short` regime (5 epochs, 900 train rows, 145 steps) including validation and the result copy."""
    x = _states(1000)
    with torch.no_grad():
        p = soft_targets(parents[0](x))
    result = benchmark.pedantic(finetune, args=(parents[1], x, p, REGIMES.get("short")), rounds=30, warmup_rounds=2)
    benchmark.extra_info["steps"] = result.history["steps"]
    benchmark.extra_info["ms_per_step"] = benchmark.stats.stats.median * 1e3 / result.history["steps"]


@pytest.mark.parametrize("size", [1, 3, 7])
def test_speed_short_regime_population(benchmark: pytest.FixtureRequest, parents: tuple[QNetwork, QNetwork],
                                       size: int) -> None:
    """A whole `short` regime for a population of ``size`` children trained together (harness.train.finetune)."""
    x = _states(1000)
    with torch.no_grad():
        p = soft_targets(parents[0](x))
    kids = [parents[i % 2] for i in range(size)]
    results = benchmark.pedantic(finetune_population, args=(kids, x, p, REGIMES.get("short")), rounds=10,
                                 warmup_rounds=1)
    steps = results[0].history["steps"]
    benchmark.extra_info["steps"] = steps
    benchmark.extra_info["ms_per_step_per_child"] = benchmark.stats.stats.median * 1e3 / steps / size


def test_speed_evaluate_100k_states(benchmark: pytest.FixtureRequest, parents: tuple[QNetwork, QNetwork]) -> None:
    """evaluate_model of one child against both parents on 100,000 states (parent logits precomputed)."""
    x = _states(100_000)
    la, lb = predict(parents[0], x), predict(parents[1], x)
    agree = parent_baseline(la, lb)["top1"]
    child = QNetwork(8, 4, 64).eval()
    benchmark.pedantic(evaluate_model, args=(child, x, la, lb, agree), rounds=10, warmup_rounds=1)
