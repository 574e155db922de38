"""harness.pipeline.Context: which children train together as one population."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from harness import pipeline
from harness.crossover import crossover
from harness.networks import QNetwork
from harness.pipeline import Context, Settings
from harness.space import build_space


def _context() -> Context:
    sds = []
    for seed in (1, 2):
        g = torch.Generator().manual_seed(seed)
        sds.append({k: (torch.randn(v.shape, generator=g) * 0.5 if v.dim() == 2 else v.clone())
                    for k, v in QNetwork(8, 4, 16).state_dict().items()})
    states = np.random.default_rng(0).standard_normal((120, 8)).astype(np.float32)
    ctx = Context(sds[0], sds[1], states, Settings(holdout=0.0))
    ctx.specs = build_space("minimal-qat", max_runs=6)  # random s0 and layer, each x (short, short_qat, long)
    return ctx


def _population_of_first_child(ctx: Context) -> set[str]:
    spec = ctx.specs[0]
    child = ctx.new_child(crossover(ctx.sd_a, ctx.sd_b, spec.recipe.mode, alpha=spec.recipe.alpha,
                                    seed=spec.recipe.seed))
    ctx.finetune(spec, child)
    return {spec.child_id, *ctx._pending}


def test_regimes_that_share_batches_form_one_population():
    ctx = _context()
    assert _population_of_first_child(ctx) == {"000_random_a0p50_s0_short", "002_random_a0p50_s0_long",
                                               "003_layer_a0p50_sNone_short", "005_layer_a0p50_sNone_long"}
    # short_qat has other batches (batch size 16, fake quantization): its children train in their own population.
    short = ctx.finetune_share["000_random_a0p50_s0_short"]
    assert ctx.finetune_share["002_random_a0p50_s0_long"] == pytest.approx(4 * short, rel=1e-3)  # 20 vs 5 epochs


@pytest.mark.parametrize("why", ["xdist", "big network"])
def test_otherwise_only_the_children_of_one_regime(monkeypatch, why):
    ctx = _context()
    if why == "xdist":  # what the plugin's workers set: one work unit (here: one regime) per population
        ctx.population_key = lambda s: s.regime.name
    else:
        monkeypatch.setattr(pipeline, "MERGE_LIMIT_FLOATS", 3 * ctx.n_params)
    assert _population_of_first_child(ctx) == {"000_random_a0p50_s0_short", "003_layer_a0p50_sNone_short"}
