"""Resolve what a search runs on: parent checkpoints, the states buffer and the environment for returns.

With no paths, the embedded LunarLander parents and states are used, and returns come from LunarLander-v3.
``load_inputs`` loads everything (torch); ``check_inputs`` runs the same checks without importing torch, for
the plugin's controller, whose xdist workers do the loading.
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from harness import embedded
from harness.architecture import check_parents, infer_architecture
from harness.checkpoints import file_sha256, load_parent, peek_parent
from harness.errors import HarnessError, StatesError, as_field
from harness.states import load_states

if TYPE_CHECKING:
    import torch

DEFAULT_EPISODES = 10


@dataclass
class SearchInputs:
    sd_a: dict[str, torch.Tensor]
    sd_b: dict[str, torch.Tensor]
    states: np.ndarray
    env_id: str | None
    episodes: int
    provenance: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class _Sources:
    embedded: bool
    parent_a: Path
    parent_b: Path
    states: Path
    env_id: str | None
    episodes: int


def _sources(parent_a: str | Path | None, parent_b: str | Path | None, states: str | Path | None,
             env_id: str | None, episodes: int | None) -> _Sources:
    if (parent_a is None) != (parent_b is None):
        raise HarnessError("give both parent checkpoints or neither (neither uses the embedded parents)")
    use_embedded = parent_a is None
    path_a, path_b = embedded.parent_paths() if use_embedded else (Path(parent_a), Path(parent_b))  # type: ignore[arg-type]
    # The embedded parents' returns come from their environment when gymnasium is installed (the [env] extra);
    # a library-only install searches on agreement alone rather than fail on a default the user never chose.
    if env_id is None and use_embedded and importlib.util.find_spec("gymnasium") is not None:
        env_id = embedded.EMBEDDED_ENV_ID
    if episodes is None:
        episodes = DEFAULT_EPISODES if env_id else 0
    states_path = Path(states) if states is not None else embedded.states_path()
    return _Sources(use_embedded, path_a, path_b, states_path, env_id, episodes)


def _check(src: _Sources, sd_a: Any, sd_b: Any, states_given: bool, check_environment: bool) -> tuple[np.ndarray,
                                                                                                      dict[str, Any]]:
    """The checks shared by both paths, on tensors or their metadata: (states buffer, provenance)."""
    check_parents(sd_a, sd_b)
    arch = infer_architecture(sd_a)
    if not states_given and not src.embedded and arch.input_dim != embedded.INPUT_DIM:
        raise StatesError(
            f"the parents take {arch.input_dim} inputs but the embedded states have {embedded.INPUT_DIM}; "
            "pass --crossover-states PATH.npy with your own (N, input_dim) buffer"
        )
    with as_field("states"):
        buffer = load_states(src.states, input_dim=arch.input_dim)
    if src.env_id and src.episodes > 0 and check_environment:
        with as_field("env_id"):
            if importlib.util.find_spec("gymnasium") is None:
                raise HarnessError(f"returns in {src.env_id!r} need gymnasium, which is not installed; "
                                   "pip install 'pytest-crossover[env]', or set episodes to 0")
            from harness.rollout import check_env  # gymnasium only when returns are asked for

            check_env(src.env_id, arch.input_dim, arch.output_dim)
    provenance = {
        "source": "embedded" if src.embedded else "files",
        "parent_a": {"path": str(src.parent_a), "sha256": file_sha256(src.parent_a)},
        "parent_b": {"path": str(src.parent_b), "sha256": file_sha256(src.parent_b)},
        "states_file": {"path": str(src.states), "sha256": file_sha256(src.states), "shape": list(buffer.shape)},
        "env_id": src.env_id,
        "episodes": src.episodes,
    }
    return buffer, provenance


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
    src = _sources(parent_a, parent_b, states, env_id, episodes)
    with as_field("parent_a"):
        sd_a = load_parent(src.parent_a, allow_unsafe_unpickle=allow_unsafe_unpickle)
    with as_field("parent_b"):
        sd_b = load_parent(src.parent_b, allow_unsafe_unpickle=allow_unsafe_unpickle)
    buffer, provenance = _check(src, sd_a, sd_b, states is not None, check_environment)
    return SearchInputs(sd_a, sd_b, buffer, src.env_id, src.episodes, provenance)


def check_inputs(
    parent_a: str | Path | None = None,
    parent_b: str | Path | None = None,
    states: str | Path | None = None,
    *,
    env_id: str | None = None,
    episodes: int | None = None,
    check_environment: bool = True,
) -> dict[str, Any] | None:
    """``load_inputs``'s checks without importing torch; returns the provenance it would record.

    Returns ``None`` when a parent checkpoint can only be judged by ``torch.load`` (see
    :func:`harness.checkpoints.peek_parent`); the caller then runs ``load_inputs``.
    """
    src = _sources(parent_a, parent_b, states, env_id, episodes)
    with as_field("parent_a"):
        meta_a = peek_parent(src.parent_a)
    with as_field("parent_b"):
        meta_b = peek_parent(src.parent_b)
    if meta_a is None or meta_b is None:
        return None
    return _check(src, meta_a, meta_b, states is not None, check_environment)[1]
