"""Resolve what a search runs on: parent checkpoints, the states buffer and the environment for returns.

With no paths, the embedded LunarLander parents and states are used, and returns come from LunarLander-v3.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from harness import embedded
from harness.checkpoints import check_parents, file_sha256, load_parent, load_states
from harness.errors import HarnessError, StatesError
from harness.networks import infer_architecture

DEFAULT_EPISODES = 10


@dataclass
class SearchInputs:
    sd_a: dict[str, torch.Tensor]
    sd_b: dict[str, torch.Tensor]
    states: np.ndarray
    env_id: str | None
    episodes: int
    provenance: dict[str, Any] = field(default_factory=dict)


def load_inputs(
    parent_a: str | Path | None = None,
    parent_b: str | Path | None = None,
    states: str | Path | None = None,
    *,
    allow_unsafe_unpickle: bool = False,
    env_id: str | None = None,
    episodes: int | None = None,
    check_environment: bool = True,
) -> SearchInputs:
    """Load and check everything before any child runs; raise a one-line HarnessError on bad input."""
    if (parent_a is None) != (parent_b is None):
        raise HarnessError("give both parent checkpoints or neither (neither uses the embedded parents)")
    use_embedded = parent_a is None
    path_a, path_b = embedded.parent_paths() if use_embedded else (Path(parent_a), Path(parent_b))  # type: ignore[arg-type]
    sd_a = load_parent(path_a, allow_unsafe_unpickle=allow_unsafe_unpickle)
    sd_b = load_parent(path_b, allow_unsafe_unpickle=allow_unsafe_unpickle)
    check_parents(sd_a, sd_b)
    arch = infer_architecture(sd_a)
    states_path = Path(states) if states is not None else embedded.states_path()
    if states is None and not use_embedded and arch.input_dim != embedded.INPUT_DIM:
        raise StatesError(
            f"the parents take {arch.input_dim} inputs but the embedded states have {embedded.INPUT_DIM}; "
            "pass --crossover-states PATH.npy with your own (N, input_dim) buffer"
        )
    buffer = load_states(states_path, input_dim=arch.input_dim)
    if env_id is None and use_embedded:
        env_id = embedded.EMBEDDED_ENV_ID
    if episodes is None:
        episodes = DEFAULT_EPISODES if env_id else 0
    if env_id and episodes > 0 and check_environment:
        from harness.rollout import check_env  # gymnasium only when returns are asked for

        check_env(env_id, arch.input_dim, arch.output_dim)
    provenance = {
        "source": "embedded" if use_embedded else "files",
        "parent_a": {"path": str(path_a), "sha256": file_sha256(path_a)},
        "parent_b": {"path": str(path_b), "sha256": file_sha256(path_b)},
        "states_file": {"path": str(states_path), "sha256": file_sha256(states_path),
                        "shape": list(buffer.shape)},
        "env_id": env_id,
        "episodes": episodes,
    }
    return SearchInputs(sd_a, sd_b, buffer, env_id, episodes, provenance)
