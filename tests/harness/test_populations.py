"""Which children train together: the plan is a pure function of the selected children; the Finetuner trains each
population once and hands every child its own result."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from harness.networks.qnetwork import QNetwork
from harness.search import populations
from harness.search.child import Context, run_child
from harness.search.populations import Finetuner, plan_populations
from harness.search.settings import Settings
from harness.search.space import build_space

SPECS = build_space("minimal-qat", max_runs=6)  # random s0 and layer, each x (short, short_qat, long)


def _context() -> Context:
    sds = []
    for seed in (1, 2):
        g = torch.Generator().manual_seed(seed)
        sds.append({k: (torch.randn(v.shape, generator=g) * 0.5 if v.dim() == 2 else v.clone())
                    for k, v in QNetwork(8, 4, 16).state_dict().items()})
    states = np.random.default_rng(0).standard_normal((120, 8)).astype(np.float32)
    return Context.build(sds[0], sds[1], states, Settings(holdout=0.0))


def _ids(plan: populations.Plan) -> list[set[str]]:
    return [{s.child_id for s in members} for members in plan]


def test_regimes_that_share_batches_form_one_population() -> None:
    plan = plan_populations(SPECS, n_params=1000)
    # short_qat has other batches (batch size 16, fake quantization): its children train in their own population.
    assert _ids(plan) == [{"000_random_a0p50_s0_short", "002_random_a0p50_s0_long", "003_layer_a0p50_sNone_short",
                           "005_layer_a0p50_sNone_long"}, {"001_random_a0p50_s0_short_qat",
                                                            "004_layer_a0p50_sNone_short_qat"}]
    assert plan_populations(SPECS, n_params=1000) == plan  # a pure function of its arguments


@pytest.mark.parametrize("why", ["xdist", "big network"])
def test_otherwise_only_the_children_of_one_regime(why: str) -> None:
    if why == "xdist":  # what the plugin's workers pass: one work unit (here: one regime) per population
        plan = plan_populations(SPECS, n_params=1000, unit_of=lambda s: s.regime.name)
    else:
        plan = plan_populations(SPECS, n_params=populations.MERGE_LIMIT_FLOATS // 3)
    assert {"000_random_a0p50_s0_short", "003_layer_a0p50_sNone_short"} in _ids(plan) and len(plan) == 3


def test_the_finetuner_trains_a_population_once_and_gives_each_child_the_result_of_training_alone() -> None:
    ctx = _context()
    plan = plan_populations(SPECS, n_params=ctx.n_params)
    fin = Finetuner(ctx, plan)
    first = fin.result(SPECS[0])
    assert set(fin._results) == {"002_random_a0p50_s0_long", "003_layer_a0p50_sNone_short",
                                 "005_layer_a0p50_sNone_long"}  # trained with it, waiting for their turn
    long = fin.result(SPECS[2])
    assert long.result.seconds == pytest.approx(4 * first.result.seconds, rel=1e-3)  # its share: 20 vs 5 epochs
    for spec in (SPECS[0], SPECS[2], SPECS[4]):
        together = run_child(spec, ctx, trained=Finetuner(ctx, plan).result(spec))
        alone = run_child(spec, ctx)
        assert together.result.after_finetune == alone.result.after_finetune
        assert together.result.finetune == alone.result.finetune
    again = fin.result(SPECS[0])  # handed out once: asked again, the child trains alone, to the same numbers
    assert again is not first and again.result.history == first.result.history
