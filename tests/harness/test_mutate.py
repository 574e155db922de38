"""The ``mutate`` operator: the weighted blend plus seeded Gaussian noise of a stated relative scale."""

from __future__ import annotations

import pytest
import torch

from harness.crossing.crossover import crossover
from harness.networks.qnetwork import QNetwork


def _parents() -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    g = torch.Generator().manual_seed(0)
    a = {k: torch.randn(v.shape, generator=g) for k, v in QNetwork(8, 4, 64).state_dict().items()}
    b = {k: torch.randn(v.shape, generator=g) for k, v in a.items()}
    return a, b


def test_mutate_is_the_blend_plus_noise_of_the_stated_scale() -> None:
    a, b = _parents()
    blend = crossover(a, b, "weighted", alpha=0.5)
    same = crossover(a, b, "mutate", alpha=0.5, seed=3, scale=0.0)
    assert all(torch.equal(same[k], blend[k]) for k in blend)
    one, two = (crossover(a, b, "mutate", alpha=0.5, seed=3, scale=0.1) for _ in range(2))
    other = crossover(a, b, "mutate", alpha=0.5, seed=4, scale=0.1)
    assert all(torch.equal(one[k], two[k]) for k in one)  # seeded: bit-identical
    assert not torch.equal(one["network.4.weight"], other["network.4.weight"])
    w = blend["network.4.weight"]  # 4,096 weights: the noise's std is 0.1 x their RMS within a few percent
    rel = float((one["network.4.weight"] - w).std() / w.pow(2).mean().sqrt())
    assert rel == pytest.approx(0.1, rel=0.05)
