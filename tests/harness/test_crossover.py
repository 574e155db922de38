"""harness.crossing.crossover: established-tool compatibility (coins, layer blocks, blend) and its weaknesses fixed."""

from __future__ import annotations

import warnings
from collections import OrderedDict

import numpy as np
import pytest
import torch
from torch import nn

from harness.core.errors import CrossoverError, HarnessError
from harness.crossing.crossover import check_parents, crossover, layer_blocks
from harness.crossing.operators import OPERATORS
from harness.networks.qnetwork import QNetwork

CROSSOVER_MODES = ("random", "layer", "weighted")

QNET_KEYS = [f"network.{i}.{p}" for i in (0, 1, 4, 5, 8) for p in ("bias", "weight")]


def _filled(sd: dict[str, torch.Tensor], value: float) -> dict[str, torch.Tensor]:
    return {k: torch.full_like(v, value) for k, v in sd.items()}


@pytest.fixture
def const_parents() -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """A of all 1.0 and B of all 2.0, so the source of every child tensor is readable from its values."""
    sd = QNetwork(8, 4, hidden_size=16).state_dict()
    return _filled(sd, 1.0), _filled(sd, 2.0)


@pytest.fixture
def rand_parents() -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    gen = torch.Generator().manual_seed(7)
    sd = QNetwork(8, 4, hidden_size=16).state_dict()
    a = {k: torch.randn(v.shape, generator=gen) for k, v in sd.items()}
    b = {k: torch.randn(v.shape, generator=gen) for k, v in sd.items()}
    return a, b


def _pattern(child: dict[str, torch.Tensor]) -> str:
    return "".join("A" if bool((child[k] == 1.0).all()) else "B" for k in sorted(child))


def test_modes_are_the_established_ones() -> None:
    assert OPERATORS.names()[:3] == CROSSOVER_MODES
    assert sorted(QNetwork(8, 4).state_dict()) == QNET_KEYS


@pytest.mark.parametrize(
    ("seed", "pattern"), [(0, "BAAABBBBBB"), (1, "BBABAABABA"), (2, "AABABBAAAB"), (42, "BABBABBBAA")]
)
def test_random_coin_patterns_match_established_tool(const_parents, seed: int, pattern: str) -> None:
    a, b = const_parents
    assert _pattern(crossover(a, b, "random", alpha=0.5, seed=seed)) == pattern


def test_random_seed0_raw_draws() -> None:
    u = np.random.default_rng(0).random(10)
    np.testing.assert_allclose(u, [0.637, 0.270, 0.041, 0.017, 0.813, 0.913, 0.607, 0.729, 0.544, 0.935], atol=5e-4)


def test_random_rng_argument_wins_over_seed(const_parents) -> None:
    a, b = const_parents
    child = crossover(a, b, "random", seed=0, rng=np.random.default_rng(42))
    assert _pattern(child) == "BABBABBBAA"


def test_random_coin_ignores_dict_order_and_counts_non_tensor_keys(const_parents) -> None:
    a, b = const_parents
    rev_a = OrderedDict(reversed(list(a.items())))
    rev_b = OrderedDict(reversed(list(b.items())))
    assert _pattern(crossover(rev_a, rev_b, "random", seed=0)) == "BAAABBBBBB"
    # A non-tensor key ("aaa") sorts first and consumes the first coin, shifting every tensor's coin by one.
    a2, b2 = {"aaa": {"note": "A"}, **a}, {"aaa": {"note": "B"}, **b}
    child = crossover(a2, b2, "random", seed=0)
    u = np.random.default_rng(0).random(11)[1:]
    assert _pattern({k: v for k, v in child.items() if k != "aaa"}) == "".join("A" if x < 0.5 else "B" for x in u)
    assert child["aaa"] == {"note": "A"} and child["aaa"] is not a2["aaa"]


def test_random_is_reproducible_and_seed_sensitive(rand_parents) -> None:
    a, b = rand_parents
    c1, c2 = crossover(a, b, "random", seed=3), crossover(a, b, "random", seed=3)
    assert all(torch.equal(c1[k], c2[k]) for k in a)
    patterns = {_pattern(crossover(*_filled_pair(a), "random", seed=s)) for s in range(6)}
    assert len(patterns) > 1


def _filled_pair(a: dict[str, torch.Tensor]) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    return _filled(a, 1.0), _filled(a, 2.0)


@pytest.mark.parametrize("mode", ["random", "weighted"])
def test_alpha_endpoints_reproduce_a_parent(rand_parents, mode: str) -> None:
    a, b = rand_parents
    for alpha, parent in ((1.0, a), (0.0, b), (1, a), (0, b)):
        child = crossover(a, b, mode, alpha=alpha, seed=5)
        for k in a:
            assert child[k].dtype == torch.float32
            assert torch.equal(child[k], parent[k]), (mode, alpha, k)


def test_weighted_midpoint_is_bitwise_the_established_formula(rand_parents) -> None:
    a, b = rand_parents
    child = crossover(a, b, "weighted", alpha=0.5)
    for k in a:
        assert torch.equal(child[k], 0.5 * a[k] + 0.5 * b[k])
    child = crossover(a, b, "weighted", alpha=0.3)
    for k in a:
        assert torch.equal(child[k], 0.3 * a[k] + (1 - 0.3) * b[k])
    assert child["network.0.weight"][0, 0].item() == pytest.approx(
        0.3 * a["network.0.weight"][0, 0].item() + 0.7 * b["network.0.weight"][0, 0].item(), rel=1e-6
    )


def test_weighted_casts_half_and_double_to_float32() -> None:
    a = {"w": torch.tensor([1.0, 3.0], dtype=torch.float64)}
    b = {"w": torch.tensor([2.0, 5.0], dtype=torch.float16)}
    child = crossover(a, b, "weighted", alpha=0.25)
    assert child["w"].dtype == torch.float32
    assert child["w"].tolist() == [1.75, 4.5]


def test_layer_qnetwork_blocks_and_child(const_parents) -> None:
    a, b = const_parents
    assert layer_blocks(a) == [
        ["network.0.bias", "network.0.weight", "network.1.bias", "network.1.weight"],
        ["network.4.bias", "network.4.weight", "network.5.bias", "network.5.weight"],
        ["network.8.bias", "network.8.weight"],
    ]
    # Bare keys (no shapes) give the same grouping for this layout.
    assert layer_blocks(list(a)) == layer_blocks(a)
    child = crossover(a, b, "layer", seed=123, alpha=0.9)
    # A: Linear0 + LN1 + Linear8; B: Linear4 + LN5 (the established tool's single layer child).
    assert _pattern(child) == "AAAABBBBAA"


def _deep_net(hidden_layers: int) -> nn.Sequential:
    layers: list[nn.Module] = []
    width_in = 6
    for _ in range(hidden_layers):
        layers += [nn.Linear(width_in, 10), nn.LayerNorm(10), nn.ReLU(), nn.Dropout(0.1)]
        width_in = 10
    layers.append(nn.Linear(width_in, 3))
    return nn.Sequential(*layers)


def test_layer_blocks_deeper_net_orders_indices_naturally() -> None:
    sd = {f"network.{k}": v for k, v in _deep_net(4).state_dict().items()}
    blocks = layer_blocks(sd)
    modules = [
        sorted({key.rpartition(".")[0] for key in block}, key=lambda m: int(m.split(".")[1])) for block in blocks
    ]
    assert modules == [
        ["network.0", "network.1"],
        ["network.4", "network.5"],
        ["network.8", "network.9"],
        ["network.12", "network.13"],
        ["network.16"],
    ]
    assert layer_blocks(list(sd)) == blocks  # the name-based fallback agrees on this layout


def test_layer_crossover_deeper_net_alternates(rand_parents) -> None:
    gen = torch.Generator().manual_seed(1)
    shapes = _deep_net(4).state_dict()
    a = {f"network.{k}": torch.randn(v.shape, generator=gen) for k, v in shapes.items()}
    b = {f"network.{k}": torch.randn(v.shape, generator=gen) for k, v in shapes.items()}
    child = crossover(a, b, "layer")
    expect = {0: a, 1: a, 4: b, 5: b, 8: a, 9: a, 12: b, 13: b, 16: a}
    for key in a:
        assert torch.equal(child[key], expect[int(key.split(".")[1])][key]), key


def test_layer_blocks_generic_modules_batchnorm_and_conv() -> None:
    net = nn.Sequential(nn.Conv2d(1, 2, 3), nn.BatchNorm2d(2), nn.Conv2d(2, 2, 3), nn.Linear(2, 2))
    blocks = layer_blocks(net.state_dict())
    assert [sorted({k.split(".")[0] for k in blk}) for blk in blocks] == [["0", "1"], ["2"], ["3"]]
    assert "1.num_batches_tracked" in blocks[0]


def test_layer_alpha_not_range_checked_but_must_be_a_number(const_parents) -> None:
    a, b = const_parents
    assert _pattern(crossover(a, b, "layer", alpha=7.0)) == "AAAABBBBAA"
    with pytest.raises(CrossoverError, match=r"alpha must be a number, got 'x'; the layer operator ignores it"):
        crossover(a, b, "layer", alpha="x")  # type: ignore[arg-type]


def test_children_never_alias_parent_storage(rand_parents) -> None:
    a, b = rand_parents
    before = {k: v.clone() for k, v in a.items()}
    for mode in CROSSOVER_MODES:
        for alpha in (0.0, 0.5, 1.0):
            child = crossover(a, b, mode, alpha=alpha, seed=0)
            for k, v in child.items():
                assert v.data_ptr() not in (a[k].data_ptr(), b[k].data_ptr()), (mode, k)
                v.add_(100.0)
    for k in a:
        assert torch.equal(a[k], before[k])


def test_parameters_with_grad_give_detached_children() -> None:
    net = QNetwork(4, 2, hidden_size=8)
    sd = dict(net.named_parameters())
    child = crossover(sd, sd, "weighted", alpha=0.5)
    assert all(not v.requires_grad for v in child.values())


def test_quantized_inputs_are_dequantized() -> None:
    w = torch.tensor([[0.5, -1.0], [0.25, 2.0]])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        q = torch.quantize_per_tensor(w, scale=0.25, zero_point=0, dtype=torch.qint8)
    a = {"w": q}
    b = {"w": torch.zeros(2, 2)}
    for mode, alpha in (("random", 1.0), ("layer", 0.5), ("weighted", 1.0)):
        child = crossover(a, b, mode, alpha=alpha, seed=0)
        assert child["w"].dtype == torch.float32 and not child["w"].is_quantized
        assert torch.equal(child["w"], w), mode
    assert torch.equal(crossover(a, b, "weighted", alpha=0.5)["w"], 0.5 * w)


def test_integer_buffers_are_copied_not_blended() -> None:
    bn_a, bn_b = nn.BatchNorm1d(3).state_dict(), nn.BatchNorm1d(3).state_dict()
    bn_a["num_batches_tracked"] = torch.tensor(10)
    bn_b["num_batches_tracked"] = torch.tensor(3)
    bn_a["running_mean"] = torch.full((3,), 4.0)
    a = {f"bn.{k}": v for k, v in bn_a.items()}
    b = {f"bn.{k}": v for k, v in bn_b.items()}
    weighted = crossover(a, b, "weighted", alpha=0.5)
    assert weighted["bn.num_batches_tracked"].dtype == torch.int64
    assert weighted["bn.num_batches_tracked"].item() == 10  # from A, not 6.5
    assert weighted["bn.running_mean"].tolist() == [2.0, 2.0, 2.0]
    randomc = crossover(a, b, "random", alpha=0.0, seed=0)
    assert randomc["bn.num_batches_tracked"].dtype == torch.int64
    assert randomc["bn.num_batches_tracked"].item() == 3
    assert randomc["bn.num_batches_tracked"].data_ptr() != b["bn.num_batches_tracked"].data_ptr()


def test_non_tensor_entries_deep_copied_from_layer_parent() -> None:
    a = {"0.weight": torch.ones(2, 2), "0.meta": ["a"], "1.weight": torch.ones(2, 2), "1.meta": ["a"]}
    b = {"0.weight": torch.zeros(2, 2), "0.meta": ["b"], "1.weight": torch.zeros(2, 2), "1.meta": ["b"]}
    child = crossover(a, b, "layer")
    assert child["0.meta"] == ["a"] and child["1.meta"] == ["b"]
    assert child["0.meta"] is not a["0.meta"]
    assert list(child) == list(a)


def test_unknown_mode_lists_modes(const_parents) -> None:
    a, b = const_parents
    with pytest.raises(CrossoverError) as info:
        crossover(a, b, "blend")
    assert str(info.value).startswith("unknown crossover operator 'blend'; known: random, layer, weighted")
    assert isinstance(info.value, HarnessError) and isinstance(info.value, ValueError)


@pytest.mark.parametrize("mode", ["random", "weighted"])
@pytest.mark.parametrize("alpha", [-0.1, 1.5, float("nan"), float("inf")])
def test_alpha_out_of_range_raises(const_parents, mode: str, alpha: float) -> None:
    a, b = const_parents
    pattern = rf"^alpha of the {mode} operator must be (in \[0, 1\]|finite), got {alpha!r}"
    with pytest.raises(CrossoverError, match=pattern):
        crossover(a, b, mode, alpha=alpha, seed=0)


def test_bool_alpha_and_bad_seed_or_rng_raise(const_parents) -> None:
    a, b = const_parents
    with pytest.raises(CrossoverError, match="alpha of the weighted operator must be a number"):
        crossover(a, b, "weighted", alpha=True)
    with pytest.raises(CrossoverError, match=r"seed of the random operator must be in \[0, inf\], got -1"):
        crossover(a, b, "random", seed=-1)
    with pytest.raises(CrossoverError, match=r"rng must be a numpy.random.Generator, got int"):
        crossover(a, b, "random", rng=3)  # type: ignore[arg-type]


def test_mismatch_error_lists_every_key_with_both_shapes() -> None:
    a = {"x.weight": torch.zeros(2, 3), "y.bias": torch.zeros(4), "only_a": torch.zeros(1), "z": torch.zeros(1)}
    b = {"x.weight": torch.zeros(3, 3), "y.bias": torch.zeros(5), "only_b": torch.zeros(1), "z": 1.0}
    with pytest.raises(CrossoverError) as info:
        crossover(a, b, "weighted")
    lines = str(info.value).splitlines()
    assert lines[0] == (
        "parents cannot be crossed: 5 key(s) differ in name, shape or kind; pass two checkpoints of the same "
        "architecture"
    )
    assert lines[1:] == [
        "  only in A: 'only_a'",
        "  only in B: 'only_b'",
        "  'x.weight': A=(2, 3), B=(3, 3)",
        "  'y.bias': A=(4,), B=(5,)",
        "  'z': A=(1,), B=float (tensor vs non-tensor)",
    ]


def test_integer_vs_float_dtype_is_reported_and_quantized_vs_float_is_not() -> None:
    with pytest.raises(CrossoverError, match=r"'n': A=torch.int64, B=torch.float32 \(integer vs floating dtype\)"):
        check_parents({"n": torch.tensor(1)}, {"n": torch.tensor(1.0)})
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        q = torch.quantize_per_tensor(torch.ones(2), 0.5, 0, torch.qint8)
    check_parents({"w": q}, {"w": torch.ones(2)})


def test_validation_runs_before_any_work(const_parents) -> None:
    a, b = const_parents
    bad_b = dict(b)
    bad_b["network.0.weight"] = torch.zeros(3, 3)
    # The mode error comes first, then alpha, then the parents.
    with pytest.raises(CrossoverError, match="unknown crossover operator"):
        crossover(a, bad_b, "nope", alpha=5.0)
    with pytest.raises(CrossoverError, match="alpha of the random operator must be in"):
        crossover(a, bad_b, "random", alpha=5.0)
    with pytest.raises(CrossoverError, match=r"'network.0.weight': A=\(16, 8\), B=\(3, 3\)"):
        crossover(a, bad_b, "layer")


def test_non_mapping_parent_raises() -> None:
    with pytest.raises(CrossoverError, match="parent B is a list, not a state dict"):
        check_parents({}, [])  # type: ignore[arg-type]
