"""Population fine-tuning: a child's result is bit-for-bit independent of what else is in its population."""

from __future__ import annotations

import pytest
import torch

from harness.crossover import crossover
from harness.errors import HarnessError
from harness.finetune import finetune, soft_targets
from harness.networks import QNetwork
from harness.population import finetune_population
from harness.space import REGIMES, Regime

RECIPES = [("random", 0.5, 0), ("layer", 0.5, None), ("weighted", 0.3, None), ("weighted", 0.7, None),
           ("random", 0.5, 1)]


def _parent(seed: int, hidden: int) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return {k: (torch.randn(v.shape, generator=g) * 0.5 if v.dim() == 2 else v.clone())
            for k, v in QNetwork(8, 4, hidden).state_dict().items()}


def _setup(hidden: int, n: int) -> tuple[list[QNetwork], torch.Tensor, torch.Tensor]:
    a, b = _parent(1, hidden), _parent(2, hidden)
    x = torch.randn(n, 8, generator=torch.Generator().manual_seed(0))
    teacher = QNetwork(8, 4, hidden).eval()
    teacher.load_state_dict(a)
    with torch.no_grad():
        p = soft_targets(teacher(x))
    kids = []
    for mode, alpha, seed in RECIPES:
        q = QNetwork(8, 4, hidden)
        q.load_state_dict(crossover(a, b, mode, alpha=alpha, seed=seed))
        kids.append(q.eval())
    return kids, x, p


def _same(r1, r2) -> bool:
    s1, s2 = r1.model.state_dict(), r2.model.state_dict()
    return all(torch.equal(s1[k], s2[k]) for k in s1) and r1.history == r2.history and r1.diverged == r2.diverged


# hidden/n chosen so the last batch is ragged (n_train % batch != 0) and odd-sized (1 row for 91 states, bs 16).
@pytest.mark.parametrize(("hidden", "n", "regime"), [
    (16, 203, Regime("t", epochs=3, lr=1e-3)),
    (16, 91, Regime("tq", epochs=2, lr=1e-3, batch_size=16, quantization_applied="ptq_dynamic")),
    (32, 150, Regime("v0", epochs=2, lr=1e-3, val_fraction=0.0)),
])
def test_child_result_is_independent_of_its_population(hidden, n, regime):
    kids, x, p = _setup(hidden, n)
    full = finetune_population(kids, x, p, regime)
    assert len(full) == 5 and all(r.history["steps"] == full[0].history["steps"] > 0 for r in full)
    for subset in ([0], [3], [4, 1], [2, 0, 4], [1, 3, 0, 2]):
        part = finetune_population([kids[i] for i in subset], x, p, regime)
        for j, i in enumerate(subset):
            assert _same(part[j], full[i]), (subset, i)
    # Populations differ from one another: the test above compares real, distinct children.
    assert not torch.equal(full[0].model.state_dict()["network.0.weight"], full[1].model.state_dict()["network.0.weight"])
    if regime.qat:
        assert all(r.int8_model is not None for r in full)


@pytest.mark.parametrize("qat", [False, True])
def test_regimes_that_share_batches_train_together_with_the_results_of_training_apart(qat):
    """A shorter regime leaves the population when its epochs are done; learning rates differ per child."""
    q = "ptq_dynamic" if qat else "none"
    regimes = [Regime("s", epochs=2, lr=1e-3, quantization_applied=q), Regime("l", epochs=4, lr=1e-3,
               quantization_applied=q), Regime("h", epochs=2, lr=5e-3, quantization_applied=q),
               Regime("m", epochs=3, lr=5e-4, quantization_applied=q), Regime("l", epochs=4, lr=1e-3,
               quantization_applied=q)]
    kids, x, p = _setup(16, 203)
    mixed = finetune_population(kids, x, p, regimes)
    for i, (kid, reg) in enumerate(zip(kids, regimes)):
        alone = finetune_population([kid], x, p, reg)[0]
        assert _same(mixed[i], alone), regimes[i]
        assert mixed[i].history["steps"] == reg.epochs * 6 and len(mixed[i].history["train_losses"]) == reg.epochs
    same_regime = finetune_population([kids[1], kids[4]], x, p, regimes[1])
    assert _same(same_regime[0], mixed[1]) and _same(same_regime[1], mixed[4])


def test_regimes_with_other_batches_are_refused():
    kids, x, p = _setup(16, 60)
    with pytest.raises(HarnessError, match="same batch size, val_fraction, seed and quantization"):
        finetune_population(kids[:2], x, p, [REGIMES["short"], REGIMES["short_qat"]])
    with pytest.raises(HarnessError, match="one regime per child"):
        finetune_population(kids[:2], x, p, [REGIMES["short"]])


def test_population_matches_single_child_finetune_closely():
    kids, x, p = _setup(16, 203)
    reg = Regime("t", epochs=3, lr=1e-3)
    pop = finetune_population(kids[:2], x, p, reg)[0]
    single = finetune(kids[0], x, p, reg)
    # Same algorithm, different kernels (bmm vs addmm): equal to float rounding, not bit for bit.
    assert pop.history["steps"] == single.history["steps"] == 3 * 6  # 183 train rows, batch 32
    assert pop.history["best_epoch"] == single.history["best_epoch"]
    assert pop.history["val_losses"] == pytest.approx(single.history["val_losses"], rel=1e-4)
    for k, v in single.model.state_dict().items():
        assert torch.allclose(pop.model.state_dict()[k], v, atol=1e-4), k


def test_population_leaves_children_untouched_and_returns_cpu_models():
    kids, x, p = _setup(16, 120)
    before = {k: v.clone() for k, v in kids[0].state_dict().items()}
    res = finetune_population(kids[:2], x, p, REGIMES["short"])
    assert all(torch.equal(before[k], v) for k, v in kids[0].state_dict().items())
    assert res[0].model is not kids[0] and not res[0].model.training
    assert finetune_population([], x, p, REGIMES["short"]) == []


def test_diverging_child_does_not_disturb_the_others():
    kids, x, p = _setup(16, 120)
    reg = Regime("hot", epochs=3, lr=1e-3)
    bad = QNetwork(8, 4, 16).eval()
    bad.load_state_dict({k: v * float("inf") if k == "network.8.bias" else v for k, v in kids[0].state_dict().items()})
    together = finetune_population([bad, kids[1]], x, p, reg)
    alone = finetune_population([kids[1]], x, p, reg)
    assert together[0].diverged and together[0].history["train_losses"][0] is None
    assert together[0].history["steps"] == together[1].history["steps"] // 3
    assert _same(together[1], alone[0])


def test_population_needs_one_architecture():
    kids, x, p = _setup(16, 60)
    other = QNetwork(8, 4, 32).eval()
    with pytest.raises(HarnessError, match="share one architecture"):
        finetune_population([kids[0], other], x, p, REGIMES["short"])
