"""The per-layer weighted and slerp operators on known tensors, their ids and records, and their one-line refusals."""

from __future__ import annotations

import json

import pytest
import torch

from harness.core.errors import CrossoverError, SpaceError
from harness.crossing.operators import OPERATORS, layer_count, layer_names
from harness.crossing.operators.layerwise import LAYER_ALPHAS
from harness.inputs.checkpoint_meta import TensorMeta
from harness.networks.qnetwork import QNetwork
from harness.search.space import Recipe, build_space


def _parent(seed: int) -> dict[str, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    return {k: torch.randn(v.shape, generator=gen) for k, v in QNetwork(8, 4, hidden=(16, 12)).state_dict().items()}


A, B = _parent(1), _parent(2)
# A LayerNorm belongs to the Linear before it.
LAYERS = {"network.0": 0, "network.1": 0, "network.4": 1, "network.5": 1, "network.8": 2}


def _layer(key: str) -> int:
    return LAYERS[key.rpartition(".")[0]]


def test_layers_are_the_linears_with_their_norms_on_tensors_and_on_metadata() -> None:
    assert layer_names(A) == ["network.0", "network.4", "network.8"] and layer_count(A) == 3
    meta = {k: TensorMeta(tuple(v.shape), "float32", True, False) for k, v in A.items()}
    assert layer_names(meta) == layer_names(A)
    assert LAYER_ALPHAS.layer_keys(3) == ("layer_alphas_l0", "layer_alphas_l1", "layer_alphas_l2")


def test_alphas_one_then_zero_give_parent_a_in_layer_0_and_parent_b_after_it() -> None:
    child = OPERATORS.get("weighted_layerwise")(A, B, layer_alphas=(1.0, 0.0, 0.0))
    for key, value in child.items():
        assert torch.equal(value, A[key] if _layer(key) == 0 else B[key]), key
        assert value.data_ptr() not in (A[key].data_ptr(), B[key].data_ptr())
    mixed = OPERATORS.get("weighted_layerwise")(A, B, layer_alphas=(0.0, 1.0, 0.25))
    for key, value in mixed.items():
        expected = {0: B[key], 1: A[key]}.get(_layer(key), 0.25 * A[key] + 0.75 * B[key])
        assert torch.equal(value, expected), key


@pytest.mark.parametrize("alpha", [0.0, 0.3, 0.5, 0.77, 1.0])
def test_equal_alphas_are_the_weighted_and_slerp_operators_bit_for_bit(alpha: float) -> None:
    for name in ("weighted", "slerp"):
        whole = OPERATORS.get(name)(A, B, alpha=alpha)
        per_layer = OPERATORS.get(f"{name}_layerwise")(A, B, layer_alphas=(alpha,) * 3)
        assert all(torch.equal(per_layer[k], whole[k]) for k in A), name


def test_slerp_layerwise_is_slerp_per_layer_with_that_layers_alpha() -> None:
    alphas = (0.2, 0.5, 0.9)
    child = OPERATORS.get("slerp_layerwise")(A, B, layer_alphas=alphas)
    at = [OPERATORS.get("slerp")(A, B, alpha=a) for a in alphas]
    assert all(torch.equal(child[k], at[_layer(k)][k]) for k in A)
    assert not torch.equal(child["network.0.weight"], at[1]["network.0.weight"])


def test_ids_records_and_custom_grids_show_and_round_trip_the_vector() -> None:
    recipe = Recipe.of("slerp_layerwise", layer_alphas=[0.2, 0.5, 0.8])
    assert recipe.id == "slerp_layerwise_a0p50_sNone_la0p20-0p50-0p80"
    record = json.loads(json.dumps(recipe.to_dict()))
    assert record == {"mode": "slerp_layerwise", "alpha": 0.5, "seed": None, "layer_alphas": [0.2, 0.5, 0.8]}
    assert Recipe.from_dict(record) == recipe and recipe.kwargs["layer_alphas"] == (0.2, 0.5, 0.8)
    specs = build_space("custom", modes=["weighted_layerwise"], grids={"layer_alphas": [(0.2, 0.5, 0.8), (1, 0, 0)]},
                        levels={"regime": ("short",)})
    assert [s.child_id for s in specs] == ["000_weighted_layerwise_a0p50_sNone_la0p20-0p50-0p80_short",
                                           "001_weighted_layerwise_a0p50_sNone_la1p00-0p00-0p00_short"]


def test_bad_lengths_ranges_and_missing_vectors_are_refused_in_one_line() -> None:
    op = OPERATORS.get("weighted_layerwise")
    with pytest.raises(CrossoverError) as err:
        op(A, B, layer_alphas=(0.2, 0.8))
    assert str(err.value) == ("layer_alphas of the weighted_layerwise operator has 2 values (0.2/0.8) but the parents "
                              "have 3 layers (network.0, network.4, network.8); pass 3 values, e.g. 0.5/0.5/0.5")
    assert err.value.field == "layer_alphas"
    for given, text in (((0.2, 1.5, 0.1), "must be in [0, 1], got 1.5"), (None, "needs one value per layer"),
                        ((), "needs one value per layer"), ("0.5", "needs one value per layer")):
        with pytest.raises(SpaceError) as bad:
            Recipe.of("slerp_layerwise", layer_alphas=given)
        assert text in str(bad.value) and "\n" not in str(bad.value) and bad.value.field == "layer_alphas"
