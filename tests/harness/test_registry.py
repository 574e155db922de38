"""The one registry mechanism: names, "did you mean", entry points; and what derives from the declarations."""

from __future__ import annotations

from collections.abc import Iterator
from importlib import metadata
from typing import Any

import pytest

from harness.core import registry
from harness.core.errors import SpaceError
from harness.crossing.operators import OPERATORS, Param, child_value, register_operator
from harness.evaluate.metrics import METRICS, Metric, register_metric
from harness.records import compare
from harness.search.space import Recipe, build_space
from harness.train.regimes import REGIMES, Regime, parse_regime, register_regime


@pytest.fixture
def scratch() -> Iterator[registry.Registry[str]]:
    yield registry.Registry("widget")


def test_names_lookups_and_suggestions(scratch: registry.Registry[str]) -> None:
    scratch.register("alpha", "A")
    scratch.register("beta", "B")
    assert scratch.names() == ("alpha", "beta") and scratch.get("beta") == "B" and "alpha" in scratch
    with pytest.raises(SpaceError, match=r"^unknown widget 'alhpa'; known: alpha, beta \(did you mean 'alpha'\?\)$"):
        scratch.get("alhpa")
    with pytest.raises(SpaceError, match="already registered"):
        scratch.register("alpha", "again")
    scratch.register("alpha", "again", replace=True)
    assert scratch.get("alpha") == "again"
    with pytest.raises(SpaceError, match="must be a non-empty word"):
        scratch.register("two words", "x")


class _EntryPoint:
    def __init__(self, name: str, action: Any) -> None:
        self.name, self.value, self._action = name, f"pkg.{name}:register", action

    def load(self) -> Any:
        return self._action()


def test_entry_points_are_loaded_once_on_first_lookup(monkeypatch: pytest.MonkeyPatch) -> None:
    reg: registry.Registry[str] = registry.Registry("widget", group="pytest_crossover.widgets")
    calls = []
    points = [_EntryPoint("theirs", lambda: calls.append(reg.register("theirs", "T")))]
    monkeypatch.setattr(metadata, "entry_points", lambda group: points if group == "pytest_crossover.widgets" else [])
    assert calls == []  # nothing imported until something is looked up
    assert reg.get("theirs") == "T" and reg.names() == ("theirs",) and len(calls) == 1


def test_a_broken_entry_point_is_one_line_naming_it(monkeypatch: pytest.MonkeyPatch) -> None:
    reg: registry.Registry[str] = registry.Registry("widget", group="g")

    def boom() -> None:
        raise ImportError("No module named 'pkg'")

    monkeypatch.setattr(metadata, "entry_points", lambda group: [_EntryPoint("bad", boom)])
    with pytest.raises(SpaceError, match=r"^entry point 'bad' of group 'g' \(pkg.bad:register\) failed to load "
                                         r"\(ImportError: No module named 'pkg'\); fix or uninstall that package$"):
        reg.names()


@pytest.fixture
def flip() -> Iterator[str]:
    @register_operator("flip", description="B's tensors where A's sign is negative", params=(
        Param("k", int, 1, low=1, high=3, grid=(1, 2), help="a parameter with a grid"),))
    def flip(sd_a: Any, sd_b: Any, *, k: int) -> dict[str, Any]:
        return {n: child_value(sd_b[n] if k > 1 else v) for n, v in sd_a.items()}

    yield "flip"
    OPERATORS.unregister("flip")


def test_an_operator_registered_here_gets_its_grid_ids_and_checks_from_its_declaration(flip: str) -> None:
    specs = build_space("custom", modes=["weighted", flip], grids={"alpha": [0.5]}, levels={"regime": ["short"]})
    assert [s.child_id for s in specs] == ["000_weighted_a0p50_sNone_short", "001_flip_a0p50_sNone_k1_short",
                                           "002_flip_a0p50_sNone_k2_short"]
    assert Recipe.of("flip", k=2).to_dict() == {"mode": "flip", "alpha": 0.5, "seed": None, "k": 2}
    with pytest.raises(SpaceError, match=r"k of the flip operator must be in \[1, 3\], got 5") as info:
        build_space("custom", modes=[flip], grids={"k": [5]})
    assert info.value.field == "k"
    with pytest.raises(SpaceError, match="flip operator takes no parameter 'alpha'"):
        Recipe.of("flip", alpha=0.3)


def test_colliding_and_duplicate_grid_values_are_refused() -> None:
    with pytest.raises(SpaceError, match=r"give the same child id \(weighted_a0p30_sNone_short\)") as info:
        build_space("custom", modes=["weighted"], grids={"alpha": [0.301, 0.299]}, levels={"regime": ["short"]})
    assert info.value.field == "alpha"
    with pytest.raises(SpaceError, match="alpha 0.5 is given twice") as info:
        build_space("custom", modes=["weighted"], grids={"alpha": [0.5, 0.5]})
    with pytest.raises(SpaceError, match="regime 'short' is given twice"):
        build_space("custom", levels={"regime": ["short", "short"]})


def test_regimes_register_and_parse_from_one_declaration() -> None:
    try:
        register_regime(Regime("tiny", epochs=1, lr=1e-3))
        specs = build_space("custom", modes=["layer"], levels={"regime": ["tiny"]})
        assert "tiny" in REGIMES and specs[0].regime.epochs == 1
        with pytest.raises(SpaceError, match="'tiny' is a built-in regime"):
            parse_regime("tiny:epochs=1,lr=1")
    finally:
        REGIMES.unregister("tiny")
    assert parse_regime("fast:epochs=2,lr=3e-3,batch_size=8,seed=7") == Regime("fast", 2, 3e-3, batch_size=8, seed=7)
    for bad, fragment in (("x:epochs=1,lr=1,seed=-5", "seed=-5"), ("x:epochs=1.5,lr=1", "'1.5' is not a valid epochs"),
                          ("x:epochs=1,lr=nan", "lr=nan"), ("x:epochs=1,lr=1e39", "lr=1e+39"),
                          ("x:epochs=1,epochs=2,lr=1", "epochs= is given twice")):
        with pytest.raises(SpaceError, match=fragment.replace("+", r"\+").replace(".", r"\.")):
            parse_regime(bad)


def test_a_registered_metric_is_compared_and_gates_by_its_declaration() -> None:
    register_metric(Metric("oracle_gap", "oracle_gap", "gap", ".3f", lambda rec: 0.0, False, compared=True))
    try:
        assert "oracle_gap" in compare.fail_usage()
        (check,) = compare.parse_fail("oracle_gap:0.1")
        assert check.breached(0.2, 0.35) and not check.breached(0.2, 0.25)  # lower is better: a rise is worse
    finally:
        METRICS.unregister("oracle_gap")
    with pytest.raises(Exception, match="cannot parse 'oracle_gap:0.1'"):
        compare.parse_fail("oracle_gap:0.1")
