"""A custom grid of per-layer alphas, fine-tuned by a defined regime with a cosine schedule, no dropout and
clipping: one real session; and their bad values, refused in one line before any child runs."""

from __future__ import annotations

import csv

import pytest

from tests.plugin.conftest import base_args, read_json
from tests.plugin.test_bad_input import _assert_usage_error, _run

CLIENT = "def test_child(crossover_child):\n    crossover_child.run()\n"
REGIME = "cos:epochs=3,lr=1e-3,lr_schedule=cosine,dropout=0,grad_clip=1"


def test_per_layer_alphas_and_a_cosine_regime_run_and_show_in_ids_columns_and_records(pytester, search_files):
    pytester.makepyfile(test_search=CLIENT)
    result = pytester.runpytest_inprocess(
        *base_args(search_files), "--crossover-space=custom", "--crossover-modes=weighted_layerwise,slerp_layerwise",
        "--crossover-layer-alphas=0.2/0.5/0.8", f"--crossover-define-regime={REGIME}", "--crossover-regimes=cos",
        "--crossover-barrier=off")
    result.assert_outcomes(passed=2)
    run = pytester.path / "runs"
    children = read_json(run / "manifest.json")["children"]
    assert [c["child_id"] for c in children] == ["000_weighted_layerwise_a0p50_sNone_la0p20-0p50-0p80_cos",
                                                 "001_slerp_layerwise_a0p50_sNone_la0p20-0p50-0p80_cos"]
    assert children[0]["crossover"] == {"mode": "weighted_layerwise", "alpha": 0.5, "seed": None,
                                        "layer_alphas": [0.2, 0.5, 0.8]}
    regime = children[1]["finetune_regime"]
    assert (regime["lr_schedule"], regime["dropout"], regime["epochs"]) == ("cosine", 0.0, 3)
    assert "grad_clip" not in regime  # the default norm: shown only when a regime sets another
    rows = {r["child_id"]: r for r in read_json(run / "leaderboard.json") if not r["is_parent_baseline"]}
    assert [r["crossover_layer_alphas"] for r in rows.values()] == [[0.2, 0.5, 0.8]] * 2
    assert all(r["status"] == "ok" and r["finetune_epochs"] == 3 for r in rows.values())
    cells = {r["child_id"]: r["crossover_layer_alphas"] for r in csv.DictReader((run / "leaderboard.csv").open())}
    assert cells["000_weighted_layerwise_a0p50_sNone_la0p20-0p50-0p80_cos"] == "0.2/0.5/0.8"


@pytest.mark.parametrize(("args", "fragments"), [
    (["--crossover-modes=weighted_layerwise", "--crossover-layer-alphas=0.2/0.8"],
     ["ERROR: --crossover-layer-alphas: layer_alphas of the weighted_layerwise operator has 2 values (0.2/0.8) but "
      "the parents have 3 layers (network.0, network.4, network.8); pass 3 values, e.g. 0.5/0.5/0.5"]),
    (["--crossover-modes=slerp_layerwise", "--crossover-layer-alphas=0.2/1.5/0.1"],
     ["ERROR: --crossover-layer-alphas:", "must be in [0, 1], got 1.5"]),
    (["--crossover-modes=slerp_layerwise"], ["ERROR: --crossover-layer-alphas:", "needs one value per layer"]),
    (["--crossover-define-regime=x:epochs=3,lr=1e-3,lr_schedule=linear"],
     ["ERROR: --crossover-define-regime:", "'linear'", "constant, cosine"]),
    (["--crossover-define-regime=x:epochs=3,lr=1e-3,dropout=1.5"],
     ["ERROR: --crossover-define-regime:", "dropout=1.5"]),
    (["--crossover-define-regime=x:epochs=3,lr=1e-3,grad_clip=-1"],
     ["ERROR: --crossover-define-regime:", "grad_clip=-1.0", "grad_clip >= 0"]),
], ids=["length", "range", "missing", "schedule", "dropout", "grad-clip"])
def test_bad_per_layer_alphas_and_regime_fields_are_refused_in_one_line(pytester, search_files, args, fragments):
    _assert_usage_error(_run(pytester, search_files, "--crossover-space=custom", *args), *fragments)
