"""A user's own crossover operator: one file with a decorator, run by a real session in the custom space."""

from __future__ import annotations

import pytest

from harness.crossing.operators import OPERATORS
from tests.plugin.conftest import base_args, read_json

OPERATOR = '''
from harness.crossing.operators import Param, child_value, register_operator


@register_operator("shrink", description="parent A scaled by k (a user's operator)",
                   params=(Param("k", float, 1.0, low=0.0, high=1.0, grid=(0.5, 1.0), help="scale of A"),))
def shrink(sd_a, sd_b, *, k):
    return {key: child_value(v) * k for key, v in sd_a.items()}
'''
CLIENT = "def test_child(crossover_child):\n    crossover_child.run()\n"


@pytest.fixture(autouse=True)
def _no_operator_left():
    """Whatever a test asserts, the operator its sessions registered in this process is gone after it."""
    yield
    OPERATORS.unregister("shrink")


def _inprocess(pytester: pytest.Pytester, *args: str) -> pytest.RunResult:
    """A session in this process, whose conftest registers the operator afresh: the registry is this process's, so
    the operator is removed after each session (nothing a later session finds was left by an earlier one)."""
    try:
        return pytester.runpytest_inprocess(*args)
    finally:
        OPERATORS.unregister("shrink")


def _session(pytester: pytest.Pytester, files: dict, *args: str) -> pytest.RunResult:
    pytester.makeconftest(OPERATOR)
    pytester.makepyfile(test_search=CLIENT)
    return _inprocess(pytester, *base_args(files), "--crossover-space=custom", *args)


def test_a_registered_operator_runs_in_a_session_with_its_declared_parameter(pytester, search_files):
    result = _session(pytester, search_files, "--crossover-modes=shrink,weighted", "--crossover-alphas=0.5",
                      "--crossover-regimes=short", "-v")
    result.assert_outcomes(passed=3)
    manifest = read_json(pytester.path / "runs" / "manifest.json")
    by_id = {c["child_id"]: c for c in manifest["children"]}
    # Ids derive from the declaration: the established alpha/seed slots, then the parameter's key and value.
    assert list(by_id) == ["000_shrink_a0p50_sNone_k0p5_short", "001_shrink_a0p50_sNone_k1_short",
                           "002_weighted_a0p50_sNone_short"]
    assert by_id["001_shrink_a0p50_sNone_k1_short"]["crossover"] == {"mode": "shrink", "alpha": 0.5, "seed": None,
                                                                      "k": 1.0}
    # k = 1 is parent A itself: before fine-tuning it agrees with A on every held-out state.
    assert by_id["001_shrink_a0p50_sNone_k1_short"]["before_finetune"]["vs_parent_a"]["top1"] == 1.0
    rows = read_json(pytester.path / "runs" / "leaderboard.json")
    assert {r["child_id"]: r.get("crossover_k") for r in rows if not r["is_parent_baseline"]} == {
        "000_shrink_a0p50_sNone_k0p5_short": 0.5, "001_shrink_a0p50_sNone_k1_short": 1.0,
        "002_weighted_a0p50_sNone_short": None}


def test_a_registered_operator_takes_its_grid_from_the_command_line_and_is_checked(pytester, search_files):
    result = _session(pytester, search_files, "--crossover-modes=shrink", "--crossover-param=k=0.25",
                      "--crossover-regimes=short")
    result.assert_outcomes(passed=1)
    assert [c["child_id"] for c in read_json(pytester.path / "runs" / "manifest.json")["children"]] == [
        "000_shrink_a0p50_sNone_k0p25_short"]
    bad = _session(pytester, search_files, "--crossover-modes=shrink", "--crossover-param=k=1.5")
    assert bad.ret == pytest.ExitCode.USAGE_ERROR
    bad.stderr.fnmatch_lines(
        ["ERROR: --crossover-param: k of the shrink operator must be in ?0, 1?, got 1.5; pass e.g. k=0.5"])


def test_an_unknown_operator_gets_a_suggestion_and_help_lists_the_registered_ones(pytester, search_files):
    pytester.makeconftest(OPERATOR)
    pytester.makepyfile(test_search=CLIENT)
    bad = pytester.runpytest_inprocess(*base_args(search_files), "--crossover-space=custom", "--crossover-modes=shrnk")
    assert bad.ret == pytest.ExitCode.USAGE_ERROR
    bad.stderr.fnmatch_lines(["ERROR: --crossover-modes: unknown crossover operator 'shrnk'; known: random, layer, "
                              "weighted, slerp, weighted_layerwise, slerp_layerwise, mutate, control_a, "
                              "control_b, control_distill, shrink "
                              "(did you mean 'shrink'?)"])
    # The help is built before a conftest is imported: it lists the operator this process registered in the session
    # above (a fresh ``pytest --help`` beside that conftest does not list it).
    helptext = _inprocess(pytester, "--help").stdout.str()
    assert "shrink: parent A scaled by k (a user's operator)" in " ".join(helptext.split())
