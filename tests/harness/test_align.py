"""harness.crossing.align: permuting B's hidden units changes nothing B computes, and lines its units up with A's."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from harness.core.errors import HarnessError
from harness.crossing.align import ALIGNMENTS, align, permute
from harness.networks.family import network_from_state_dict
from harness.networks.qnetwork import QNetwork
from harness.search.child import Context
from harness.search.space import Recipe

DEPTHS = [(16,), (16, 16), (8, 12, 16)]


def _random_sd(hidden: tuple[int, ...], seed: int) -> dict[str, torch.Tensor]:
    """A parent with every tensor random (LayerNorm affine too, so a wrong permutation of it shows)."""
    gen = torch.Generator().manual_seed(seed)
    sd = QNetwork(8, 4, hidden=hidden).state_dict()
    return {k: torch.randn(v.shape, generator=gen) for k, v in sd.items()}


def _outputs(sd: dict[str, torch.Tensor], x: torch.Tensor) -> torch.Tensor:
    net = network_from_state_dict(sd)
    net.eval()
    with torch.no_grad():
        return net(x)


def _states(n: int = 256, seed: int = 3) -> torch.Tensor:
    return torch.randn(n, 8, generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("hidden", DEPTHS, ids=lambda h: f"depth{len(h)}")
@pytest.mark.parametrize("method", ["weights", "activations"])
def test_aligned_b_computes_b(hidden: tuple[int, ...], method: str) -> None:
    a, b = _random_sd(hidden, 1), _random_sd(hidden, 2)
    aligned = align(a, b, method, states=_states())
    x = _states(500, seed=9)
    out_b, out_aligned = _outputs(b, x), _outputs(aligned, x)
    torch.testing.assert_close(out_aligned, out_b, rtol=1e-5, atol=1e-5)
    assert torch.equal(out_aligned.argmax(1), out_b.argmax(1))
    # ... and it is a real reordering, not B unchanged
    assert not torch.equal(aligned["network.0.weight"], b["network.0.weight"])
    assert sorted(aligned) == sorted(b)


@pytest.mark.parametrize("hidden", DEPTHS, ids=lambda h: f"depth{len(h)}")
@pytest.mark.parametrize("method", ["weights", "activations"])
def test_aligning_a_to_itself_is_the_identity(hidden: tuple[int, ...], method: str) -> None:
    a = _random_sd(hidden, 4)
    aligned = align(a, a, method, states=_states())
    assert all(torch.equal(aligned[k], a[k]) for k in a)


@pytest.mark.parametrize("hidden", DEPTHS, ids=lambda h: f"depth{len(h)}")
@pytest.mark.parametrize("method", ["weights", "activations"])
def test_a_shuffled_copy_of_a_is_put_back_in_order(hidden: tuple[int, ...], method: str) -> None:
    a = _random_sd(hidden, 5)
    rng = np.random.default_rng(0)
    shuffled = permute(a, [rng.permutation(w) for w in hidden])
    assert not torch.equal(shuffled["network.0.weight"], a["network.0.weight"])
    aligned = align(a, shuffled, method, states=_states())
    assert all(torch.equal(aligned[k], a[k]) for k in a)


@pytest.mark.parametrize("method", ["weights", "activations"])
def test_alignment_is_deterministic_and_leaves_the_inputs_alone(method: str) -> None:
    a, b = _random_sd((16, 16), 6), _random_sd((16, 16), 7)
    b_before = {k: v.clone() for k, v in b.items()}
    first = align(a, b, method, states=_states())
    second = align(a, b, method, states=_states())
    assert all(torch.equal(first[k], second[k]) for k in first)
    assert all(torch.equal(b[k], b_before[k]) for k in b)


def test_none_is_a_copy_of_b() -> None:
    a, b = _random_sd((16, 16), 1), _random_sd((16, 16), 2)
    out = align(a, b, "none")
    assert all(torch.equal(out[k], b[k]) and out[k] is not b[k] for k in b)


def test_activation_matching_needs_states() -> None:
    a, b = _random_sd((16, 16), 1), _random_sd((16, 16), 2)
    with pytest.raises(HarnessError, match="fine-tune states"):
        align(a, b, "activations")


def test_registry_and_id_keys() -> None:
    assert ALIGNMENTS.names()[:3] == ("none", "weights", "activations")
    assert [ALIGNMENTS.get(n).id_key for n in ("none", "weights", "activations")] == ["", "awm", "aam"]
    with pytest.raises(HarnessError, match="unknown alignment 'wieghts'"):
        ALIGNMENTS.get("wieghts")


def test_alignment_lifts_the_unfinetuned_midpoint_of_the_embedded_parents(embedded_ctx: Context) -> None:
    """The weighted 0.5 child before any fine-tuning, as a share of the blend bound (1 + agree_ab) / 2."""
    ctx = embedded_ctx
    bound = (1 + ctx.agree_ab) / 2
    share = {align: ctx.evaluate(ctx.new_child(ctx.cross(Recipe.of("weighted", alpha=0.5), align)))["primary"]
             / bound for align in ("none", "weights", "activations")}
    assert share["none"] < 0.45
    assert share["activations"] >= 0.6  # measured 0.687 (none 0.314)
    assert share["activations"] > share["none"] + 0.3


def test_activation_matching_uses_only_the_fine_tune_states(embedded_ctx: Context) -> None:
    """The held-out states never choose the permutation: aligning on the fine-tune rows alone gives the context's B."""
    ctx = embedded_ctx
    direct = align(ctx.sd_a, ctx.sd_b, "activations", states=ctx.train_states)
    cached = ctx.aligned_b("activations")
    assert all(torch.equal(direct[k], cached[k]) for k in direct)
    assert ctx.aligned_b("activations") is cached  # computed once per context
