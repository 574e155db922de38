"""The large evaluation of a session: fresh episodes from the environment, collected once on the controller.

The buffer is played by the parents (:mod:`harness.inputs.evalbuffer`) on seeds disjoint from everything the
inputs record (the embedded parents' training, selection, return and state seeds; the return episodes of this
session), cached in the history folder, and handed on as the session's evaluation buffer.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from harness.core.errors import HarnessError
from pytest_crossover.options import CrossoverOptions


def collect_for(options: CrossoverOptions, episodes: int, config: Any) -> Path:
    """Collect (or find in the cache) ``episodes`` evaluation episodes for the session's parents; the file's path."""
    import torch

    from harness.inputs import embedded
    from harness.inputs.evalbuffer import EvalSpec, cache_path, collect, embedded_seeds, model_digest
    from harness.inputs.load import load_inputs
    from harness.networks.family import network_from_state_dict
    from harness.search.settings import Settings
    from pytest_crossover.history import resolve_history

    o = options
    inputs = load_inputs(o.parent_a, o.parent_b, o.states, allow_unsafe_unpickle=o.allow_unsafe_unpickle,
                         env_id=o.env, episodes=o.episodes, reference_a=o.reference_a, reference_b=o.reference_b)
    if inputs.env_id is None:
        raise HarnessError(f"{episodes} evaluation episodes need an environment for your parents; add "
                           "--crossover-env ID, or pass --crossover-eval-states", field="eval_episodes")
    torch.set_num_threads(o.threads)
    # The reference plays the episodes when there is one (the founders of a lineage), so every generation of an
    # evolution is scored on the same held-out episodes.
    scored = (inputs.sd_a, inputs.sd_b)
    if inputs.ref_a is not None and inputs.ref_b is not None:
        scored = (inputs.ref_a, inputs.ref_b)
    nets = [network_from_state_dict(sd) for sd in scored]
    returns_seed = Settings().episode_seed
    avoid = [(returns_seed, returns_seed + max(inputs.episodes, 1) - 1)]
    if o.parent_a is None:  # the embedded parents: every seed their metadata records
        avoid += embedded_seeds(embedded.metadata())
    spec = EvalSpec(inputs.env_id, episodes)
    storage = resolve_history(config).storage
    collect(nets[0], nets[1], spec, storage, avoid=avoid)
    return cache_path(storage, spec, model_digest(*nets))
