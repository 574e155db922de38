"""The degenerate gate's threshold: absolute, or relative to the parents (``bound:F``, ``parents:+D``), resolved on
constructed parents whose agreement (and so blend bound) is known."""

from __future__ import annotations

import pytest

from harness.core.errors import HarnessError
from harness.search.child import child_status
from harness.search.settings import Settings, resolve_threshold, threshold_value

AB = 0.195  # parents that agree on 0.195 of the states: the best possible primary is (1 + 0.195) / 2 = 0.5975


def test_relative_forms_resolve_on_the_parents_agreement() -> None:
    assert resolve_threshold(threshold_value("bound:0.8"), AB) == pytest.approx(0.8 * 0.5975)
    assert resolve_threshold(threshold_value("bound:1"), AB) == pytest.approx(0.5975)
    assert resolve_threshold(threshold_value("parents:+0.02"), AB) == pytest.approx(0.215)
    assert resolve_threshold(threshold_value(" parents:-0.05 "), AB) == pytest.approx(0.145)
    assert resolve_threshold(threshold_value("0.5"), AB) == 0.5 and threshold_value("0") == 0.0
    assert Settings(degenerate_threshold="bound:0.8").gate(AB) == pytest.approx(0.478)
    assert Settings().gate(AB) == 0.0 and Settings().to_dict()["degenerate_threshold"] == 0.0


def test_the_readme_gate_passes_children_as_good_as_the_parents() -> None:
    """An absolute 0.5 fails a child at the parents' own level (0.2) on dissimilar parents; the relative gate
    passes it and still fails a child well under the parents."""
    assert child_status(0.21, Settings(degenerate_threshold=0.5).gate(AB), diverged=False) == "degenerate"
    gate = Settings(degenerate_threshold="parents:-0.02").gate(AB)
    assert child_status(0.21, gate, diverged=False) == "ok"
    assert child_status(0.10, gate, diverged=False) == "degenerate"


def test_an_absolute_threshold_above_the_bound_is_refused_naming_it() -> None:
    with pytest.raises(HarnessError) as err:
        Settings(degenerate_threshold=0.6).gate(AB)
    assert err.value.field == "degenerate_threshold" and "\n" not in str(err.value)
    assert str(err.value) == ("degenerate threshold 0.6 is above the blend bound 0.5975 of these parents "
                              "((1 + agree_ab) / 2, agree_ab 0.1950): no child can reach it; give at most 0.5975, or "
                              "a relative form such as bound:0.8")
    assert Settings(degenerate_threshold=0.5975).gate(AB) == 0.5975  # at the bound: allowed


@pytest.mark.parametrize(("text", "says"), [
    ("bound:0", "'bound:0': 0.0 is outside (0, 1]"), ("bound:1.5", "outside (0, 1]"),
    ("parents:+2", "'parents:+2': 2.0 is outside [-1, 1]"), ("parents:x", "'x' is not a number"),
    ("median:0.5", "unknown relative form 'median'"), ("half", "'half' is neither a number nor a relative form"),
    ("1.5", "degenerate threshold 1.5 is outside [0, 1]"), ("nan", "outside [0, 1]"),
])
def test_bad_thresholds_are_refused_in_one_line(text: str, says: str) -> None:
    with pytest.raises(HarnessError) as err:
        threshold_value(text)
    assert says in str(err.value) and err.value.field == "degenerate_threshold" and "\n" not in str(err.value)
