"""A user's own search axis: one declaration in a conftest, searched by a real session in the custom space."""

from __future__ import annotations

import pytest

from harness.search.axes import AXES
from tests.plugin.conftest import base_args, read_json

AXIS = '''
import dataclasses

from harness.search.axes import Axis, register_axis

register_axis(Axis(
    "lr_scale", "learning-rate scale", "train", 1.0,
    lambda v, searched: ("_lrx" + format(v, "g").replace(".", "p")) if searched else "",
    "a factor on the regime's learning rate (id suffix _lrx<factor>)",
    resolve=lambda v, known: float(v),
    adjust=lambda regime, v: dataclasses.replace(regime, lr=regime.lr * v)))
'''
CLIENT = "def test_child(crossover_child):\n    crossover_child.run()\n"


def _session(pytester: pytest.Pytester, files: dict, *args: str) -> pytest.RunResult:
    pytester.makeconftest(AXIS)
    pytester.makepyfile(test_search=CLIENT)
    # In this process: the conftest registers the axis afresh in each session, so it is removed after each.
    try:
        return pytester.runpytest_inprocess(*base_args(files), "--crossover-space=custom",
                                            "--crossover-modes=weighted", "--crossover-alphas=0.5",
                                            "--crossover-regimes=short", "--crossover-barrier=off", *args)
    finally:
        AXES.unregister("lr_scale")


def test_a_declared_axis_is_searched_with_its_ids_columns_records_and_lever(pytester, search_files):
    result = _session(pytester, search_files, "--crossover-axis=lr_scale=0,1")
    assert result.ret == pytest.ExitCode.USAGE_ERROR  # a factor of 0 would be lr 0: the regime refuses it
    result.stderr.fnmatch_lines(["ERROR: --crossover-axis: regime 'short' has lr=0.0*"])
    result = _session(pytester, search_files, "--crossover-axis=lr_scale=0.5,2")
    result.assert_outcomes(passed=2)
    manifest = read_json(pytester.path / "runs" / "manifest.json")
    by_id = {c["child_id"]: c for c in manifest["children"]}
    assert list(by_id) == ["000_weighted_a0p50_sNone_short_lrx0p5", "001_weighted_a0p50_sNone_short_lrx2"]
    # The axis entered the children: each trained with its scaled learning rate, recorded as it was used.
    assert [c["finetune_regime"]["lr"] for c in by_id.values()] == [0.0005, 0.002]
    assert [c["levels"]["lr_scale"] for c in by_id.values()] == [0.5, 2.0]
    assert by_id["000_weighted_a0p50_sNone_short_lrx0p5"]["after_finetune"] != \
        by_id["001_weighted_a0p50_sNone_short_lrx2"]["after_finetune"]
    rows = [r for r in read_json(pytester.path / "runs" / "leaderboard.json") if not r["is_parent_baseline"]]
    assert sorted(r["lr_scale"] for r in rows) == [0.5, 2.0]  # a column of its own
    rec = read_json(pytester.path / "runs" / "recommendation.json")
    assert set(rec["best_per_lr_scale"]) == {"0.5", "2.0"}  # the recommendation's lever
    assert any(line.startswith("learning-rate scale: the best child per value is") for line in rec["advice"])


def test_an_unknown_axis_is_one_line_naming_the_option(pytester, search_files):
    result = _session(pytester, search_files, "--crossover-axis=lr_scal=0.5")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["ERROR: --crossover-axis: 'lr_scal=0.5' is not NAME=V1,V2 with NAME a declared "
                                 "search axis (known: lr_scale)"])
