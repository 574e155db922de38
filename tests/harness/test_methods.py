"""The levers beyond the established search: slerp, the balanced teacher, early stopping, the interpolation
barrier and the frontier space."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from harness.crossing.crossover import crossover
from harness.crossing.operators.slerp import slerp_tensor
from harness.networks.qnetwork import QNetwork
from harness.search.barrier import ALPHAS, barrier, interpolation, summary
from harness.search.child import Context
from harness.search.space import SPACES, build_space
from harness.train.finetune import finetune_population, soft_targets
from harness.train.regimes import REGIMES, Regime
from harness.train.teachers import ADAPTIVE_STEP, TEACHERS, Targets

torch.set_num_threads(1)


# --- slerp -------------------------------------------------------------------------------------------------------

def test_slerp_of_orthogonal_unit_vectors_follows_the_circle() -> None:
    a, b = torch.tensor([1.0, 0.0]), torch.tensor([0.0, 1.0])
    torch.testing.assert_close(slerp_tensor(a, b, 0.5), torch.tensor([math.sqrt(0.5), math.sqrt(0.5)]))
    # alpha is the weight of A: a third of the way from B, the angle to B is 30 degrees
    torch.testing.assert_close(slerp_tensor(a, b, 1 / 3), torch.tensor([0.5, math.sqrt(3) / 2]))
    torch.testing.assert_close(slerp_tensor(a, b, 1.0), a)
    torch.testing.assert_close(slerp_tensor(a, b, 0.0), b)


def test_slerp_keeps_the_norm_a_linear_blend_shrinks() -> None:
    gen = torch.Generator().manual_seed(0)
    a, b = torch.randn(4, 16, generator=gen), torch.randn(4, 16, generator=gen)
    b = b / b.norm() * a.norm()
    mid = slerp_tensor(a, b, 0.5)
    assert mid.shape == a.shape and mid.dtype == torch.float32
    assert float(mid.norm()) == pytest.approx(float(a.norm()), rel=1e-5)
    assert float(((a + b) / 2).norm()) < 0.8 * float(a.norm())


@pytest.mark.parametrize("b", [torch.tensor([2.0, 0.0]), torch.tensor([-3.0, 0.0]), torch.tensor([0.0, 0.0])],
                         ids=["parallel", "antiparallel", "zero"])
def test_slerp_falls_back_to_the_linear_blend(b: torch.Tensor) -> None:
    a = torch.tensor([1.0, 0.0])
    torch.testing.assert_close(slerp_tensor(a, b, 0.3), 0.3 * a + 0.7 * b)


def test_slerp_operator_keeps_integer_entries_from_a() -> None:
    sd = QNetwork(8, 4, hidden_size=16).state_dict()
    a = {**{k: v + 1 for k, v in sd.items()}, "steps": torch.tensor(3)}
    b = {**{k: v - 1 for k, v in sd.items()}, "steps": torch.tensor(5)}
    child = crossover(a, b, "slerp", alpha=0.5)
    assert int(child["steps"]) == 3
    expected = slerp_tensor(a["network.0.weight"], b["network.0.weight"], 0.5)
    torch.testing.assert_close(child["network.0.weight"], expected)


# --- the balanced teacher ----------------------------------------------------------------------------------------

def test_balanced_rule_moves_toward_the_parent_agreed_with_less() -> None:
    t = TEACHERS.get("balanced")
    assert t.adaptive and t.weight_a == 0.5 and ADAPTIVE_STEP == 0.1
    assert t.update(0.5, agree_a=0.6, agree_b=0.8) == 0.6  # agrees less with A: more of A's targets
    assert t.update(0.5, agree_a=0.9, agree_b=0.7) == 0.4
    assert t.update(0.5, agree_a=0.7, agree_b=0.7) == 0.5
    assert t.update(1.0, agree_a=0.1, agree_b=0.9) == 1.0 and t.update(0.0, agree_a=0.9, agree_b=0.1) == 0.0
    assert t.update(0.7, agree_a=0.1, agree_b=0.9) == 0.8  # exact steps, no float drift


def _net(seed: int) -> QNetwork:
    gen = torch.Generator().manual_seed(seed)
    net = QNetwork(8, 4, 16)
    with torch.no_grad():
        for p in net.parameters():
            p.copy_(torch.randn(p.shape, generator=gen) * 0.5)
    return net.eval()


@pytest.fixture(scope="module")
def two_teachers() -> tuple[torch.Tensor, Targets]:
    x = torch.randn(400, 8, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        pa, pb = soft_targets(_net(100)(x)), soft_targets(_net(101)(x))
    return x, Targets(pa, pb, TEACHERS.get("balanced"))


def test_balanced_children_reweigh_deterministically_and_alone_as_in_a_population(
        two_teachers: tuple[torch.Tensor, Targets]) -> None:
    x, targets = two_teachers
    regime = Regime("t_bal", epochs=6, lr=3e-3)
    kids = [_net(1), _net(2), _net(3)]
    together = finetune_population(kids, x, targets, regime)
    again = finetune_population(kids, x, targets, regime)
    alone = finetune_population([kids[1]], x, targets, regime)[0]
    for r in together:
        weights = r.history["teacher_weights"]
        assert len(weights) == 6 and weights[0] == 0.5
        assert all(abs(round(w2 - w1, 10)) in (0.0, ADAPTIVE_STEP) for w1, w2 in zip(weights, weights[1:]))
        assert r.history["selection"] == "val min(agree_a, agree_b)"
        best = r.history["best_epoch"]
        assert r.history["val_agreements"][best] == max(r.history["val_agreements"])
    assert any(set(r.history["teacher_weights"]) != {0.5} for r in together)  # the weight does move
    for r, s in zip(together, again):
        assert r.history == s.history
        assert all(torch.equal(p, q) for p, q in zip(r.model.state_dict().values(), s.model.state_dict().values()))
    assert alone.history == together[1].history
    assert all(torch.equal(p, q) for p, q in zip(alone.model.state_dict().values(),
                                                 together[1].model.state_dict().values()))


# --- regimes that converge ---------------------------------------------------------------------------------------

def test_xlong_regimes_are_registered() -> None:
    assert (REGIMES.get("xlong").epochs, REGIMES.get("xlong").lr, REGIMES.get("xlong").patience) == (50, 1e-3, 5)
    assert (REGIMES.get("xlong_lo").epochs, REGIMES.get("xlong_lo").lr) == (50, 3e-4)


def test_patience_stops_a_child_and_keeps_its_best_epoch(two_teachers: tuple[torch.Tensor, Targets]) -> None:
    x, targets = two_teachers
    probs = TEACHERS.get("both").mix(targets.probs_a, targets.probs_b)
    patient, eager = Regime("t_p", epochs=60, lr=3e-2, patience=3), Regime("t_np", epochs=60, lr=3e-2)
    stopped, full = finetune_population([_net(5), _net(5)], x, probs, [patient, eager])
    h, f = stopped.history, full.history
    assert h["early_stopped"] and not f["early_stopped"]
    n = len(h["train_losses"])
    assert n < 60 and len(f["train_losses"]) == 60
    assert n - 1 - h["best_epoch"] == 3  # three epochs without a better validation loss, then stop
    assert h["val_losses"][h["best_epoch"]] == min(h["val_losses"])
    assert h["train_losses"] == f["train_losses"][:n]  # until it stops, the same as without patience
    assert h["steps"] < f["steps"]


# --- the interpolation barrier -----------------------------------------------------------------------------------

def test_barrier_is_the_largest_drop_below_the_line() -> None:
    assert barrier([1.0, 1.0, 1.0]) == 0.0
    assert barrier([1.0, 0.2, 0.6]) == pytest.approx(0.6)  # the line is at 0.8 in the middle
    assert barrier([0.0, 1.0, 0.0]) == 0.0  # above the line: no barrier
    assert barrier([0.5, None, 0.5]) is None and barrier([]) is None


def test_interpolation_curves_of_the_embedded_parents(embedded_ctx: Context) -> None:
    ctx = embedded_ctx
    data = interpolation(ctx, ("none", "activations"))
    assert data["alphas"] == list(ALPHAS) and len(ALPHAS) == 11
    for align in ("none", "activations"):
        curve = data["curves"][align]
        assert all(len(curve[k]) == 11 for k in ("primary", "agree_a", "agree_b")) and curve["return"] is None
        # the endpoints are the parents: B at alpha 0, A at alpha 1
        assert curve["agree_b"][0] == 1.0 and curve["agree_a"][-1] == 1.0
        assert curve["primary"][0] == curve["primary"][-1] == pytest.approx(ctx.agree_ab)
        assert data["barrier"][align]["primary"] == barrier(curve["primary"])
    b_none, b_aam = data["barrier"]["none"]["primary"], data["barrier"]["activations"]["primary"]
    assert b_none > 0.3 and b_aam < 0.1  # measured 0.369 and 0.051: alignment removes most of the barrier
    lines = summary(data)
    assert len(lines) == 2 and f"{b_none:.4f}" in lines[0] and "activations" in lines[1]
    assert np.isfinite(data["curves"]["activations"]["primary"]).all()


# --- the frontier space -------------------------------------------------------------------------------------------

def test_frontier_space_crosses_every_lever() -> None:
    specs = build_space("frontier")
    assert len(specs) == 8 * 2 * 2 * 2 == 64
    assert {s.recipe.operator for s in specs} == {"random", "layer", "weighted", "slerp"}
    assert {s.align for s in specs} == {"none", "activations"}
    assert {s.regime.name for s in specs} == {"short", "xlong"}
    assert {s.teacher for s in specs} == {"both", "balanced"}
    ids = [s.child_id for s in specs]
    assert len(set(ids)) == 64
    assert ids[:5] == ["000_random_a0p50_s0_short_tboth", "001_random_a0p50_s0_short_tbalanced",
                       "002_random_a0p50_s0_xlong_tboth", "003_random_a0p50_s0_xlong_tbalanced",
                       "004_random_a0p50_s0_short_aam_tboth"]
    assert ids[-1] == "063_slerp_a0p50_sNone_xlong_aam_tbalanced"
    assert "frontier" in SPACES.names()


def test_seed_spaces_keep_their_children() -> None:
    """Alignment and teachers default off: the established spaces' ids are unchanged."""
    ids = [s.child_id for s in build_space("minimal")]
    assert ids[0] == "000_random_a0p50_s0_short" and ids[-1] == "008_weighted_a0p50_sNone_long"
    assert all(s.align == "none" and s.teacher == "a" for s in build_space("default-qat"))
