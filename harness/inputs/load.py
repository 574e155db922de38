"""Resolve what a search runs on: parent checkpoints, the states buffer(s) and the environment for returns.

With no paths, the embedded LunarLander parents and states are used, and returns come from LunarLander-v3.
``load_inputs`` loads everything (torch); ``check_inputs`` runs the same checks without importing torch, for
the plugin's controller, whose xdist workers do the loading. Every file is read once, and its sha256 is taken of
the bytes that were used.

A parent may be a child folder of an earlier run, and the children may be scored against a fixed reference
instead of the parents (:mod:`harness.inputs.lineage`): ``ref_a``/``ref_b`` are then set and the provenance
records the ``lineage`` and the ``reference``.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from harness.core.errors import CrossoverError, HarnessError, StatesError, as_field
from harness.inputs import embedded, lineage
from harness.inputs.checkpoints import peek_parent_sha, read_parent
from harness.inputs.states import Buffer, load_buffer
from harness.networks.architecture import check_parents
from harness.networks.checks import check_outputs, check_weights
from harness.networks.family import claimed, infer_architecture

DEFAULT_EPISODES = 10


@dataclass
class SearchInputs:
    """The parents (tensors, or torch-free metadata from :func:`check_inputs`), the buffers and their provenance."""

    sd_a: dict[str, Any]
    sd_b: dict[str, Any]
    buffer: Buffer
    eval_buffer: Buffer | None
    env_id: str | None
    episodes: int
    provenance: dict[str, Any] = field(default_factory=dict)
    ref_a: dict[str, Any] | None = None  # the reference scored against, when it is not the parents
    ref_b: dict[str, Any] | None = None

    @property
    def states(self) -> Any:
        return self.buffer.states


@dataclass(frozen=True)
class _Sources:
    embedded: bool
    parent_a: Path
    parent_b: Path
    states: Path
    eval_states: Path | None
    env_id: str | None
    episodes: int
    reference: tuple[Path, Path] | None = None  # given explicitly


def _reference_paths(reference_a: str | Path | None, reference_b: str | Path | None) -> tuple[Path, Path] | None:
    if (reference_a is None) != (reference_b is None):
        raise HarnessError("give both reference checkpoints or neither (neither: the founders of the parents' "
                           "lineage, else the parents)", field="reference_a" if reference_a is None else "reference_b")
    if reference_a is None or reference_b is None:
        return None
    with as_field("reference_a"):
        ref_a = lineage.parent_file(reference_a)
    with as_field("reference_b"):
        return ref_a, lineage.parent_file(reference_b)


def _sources(parent_a: str | Path | None, parent_b: str | Path | None, states: str | Path | None,
             eval_states: str | Path | None, env_id: str | None, episodes: int | None,
             reference: tuple[str | Path | None, str | Path | None] = (None, None)) -> _Sources:
    if (parent_a is None) != (parent_b is None):
        raise HarnessError("give both parent checkpoints or neither (neither uses the embedded parents)",
                           field="parent_a" if parent_a is None else "parent_b")
    use_embedded = parent_a is None
    path_a, path_b = embedded.parent_paths() if use_embedded else (Path(parent_a), Path(parent_b))  # type: ignore[arg-type]
    with as_field("parent_a"):
        path_a = lineage.parent_file(path_a)
    with as_field("parent_b"):
        path_b = lineage.parent_file(path_b)
    # The embedded parents' returns come from their environment when gymnasium is installed (the [env] extra);
    # a library-only install searches on agreement alone rather than fail on a default the user never chose.
    if env_id is None and use_embedded and importlib.util.find_spec("gymnasium") is not None:
        env_id = embedded.EMBEDDED_ENV_ID
    # Children as parents play the environment their runs played (both must agree), so a generation's returns
    # stay on the founders' scale rather than silently disappear.
    inherited = {lineage.recorded_env(p) for p in (parent_a, parent_b) if p is not None}
    if env_id is None and len(inherited) == 1 and None not in inherited:
        env_id = inherited.pop()
    if episodes is None:
        episodes = DEFAULT_EPISODES if env_id else 0
    states_path = Path(states) if states is not None else embedded.states_path()
    return _Sources(use_embedded, path_a, path_b, states_path, None if eval_states is None else Path(eval_states),
                    env_id, episodes, _reference_paths(*reference))


def _reference(src: _Sources, provenance: dict[str, Any], sds: tuple[Any, Any],
               read: Callable[[Path], tuple[Any, str]]) -> tuple[Any, Any] | None:
    """Record the parents' lineage and the reference in ``provenance``; the reference's tensors (or metadata,
    as ``read`` gives them), or None when the parents are the reference."""
    nodes = {f"parent_{s}": lineage.node(provenance[f"parent_{s}"]["path"], provenance[f"parent_{s}"]["sha256"])
             for s in lineage.SLOTS}
    if src.reference is not None:
        paths, source = src.reference, "given"
    else:
        founders = lineage.default_reference(nodes)
        if founders is None:
            return None  # plain checkpoints scored against themselves: the provenance is as it always was
        paths, source = (Path(founders["reference_a"]["path"]), Path(founders["reference_b"]["path"])), "founders"
    refs, entries = [], {}
    for slot, path in zip(lineage.SLOTS, paths):
        with as_field(f"reference_{slot}"):
            sd, sha = read(path)
            if sd is not None:  # None: metadata only torch.load can give (check_inputs' caller then loads)
                check_parents(sds[0], sd)
                check_weights(sd, f"reference {slot.upper()}")
        refs.append(sd)
        entries[f"reference_{slot}"] = {"path": str(path), "sha256": sha}
    provenance["lineage"] = nodes
    provenance["reference"] = {**entries, "source": source}
    return refs[0], refs[1]


def _check(src: _Sources, sd_a: Any, sd_b: Any, shas: tuple[str, str], states_given: bool,
           check_environment: bool) -> tuple[Buffer, Buffer | None, dict[str, Any]]:
    """The checks shared by both paths, on tensors or their metadata: (buffer, eval buffer, provenance)."""
    try:
        check_parents(sd_a, sd_b)
    except CrossoverError:
        # A parent that is no network the harness knows is named, with what to change, rather than its keys
        # listed against the other parent's.
        for name, sd in (("parent_a", sd_a), ("parent_b", sd_b)):
            if not claimed(sd):
                with as_field(name):
                    infer_architecture(sd)
        raise
    with as_field("parent_a"):
        arch = infer_architecture(sd_a)
    check_weights(sd_a, "A")
    check_weights(sd_b, "B")
    if not states_given and not src.embedded and arch.input_dim != embedded.INPUT_DIM:
        raise StatesError(
            f"the parents take {arch.input_dim} inputs but the embedded states have {embedded.INPUT_DIM}; "
            "pass your own (N, input_dim) states buffer", field="states")
    with as_field("states"):
        buffer = load_buffer(src.states, input_dim=arch.input_dim)
    check_outputs(sd_a, sd_b, arch, buffer.states)
    eval_buffer = None
    if src.eval_states is not None:
        with as_field("eval_states"):
            eval_buffer = load_buffer(src.eval_states, input_dim=arch.input_dim, what="evaluation states file")
            check_outputs(sd_a, sd_b, arch, eval_buffer.states, "evaluation states")
    if src.env_id and src.episodes > 0 and check_environment:
        with as_field("env_id"):
            if importlib.util.find_spec("gymnasium") is None:
                raise HarnessError(f"returns in {src.env_id!r} need gymnasium, which is not installed; "
                                   "pip install 'pytest-crossover[env]', or set episodes to 0")
            from harness.evaluate.rollout import check_env  # gymnasium only when returns are asked for

            check_env(src.env_id, arch.input_dim, arch.output_dim)
    provenance = {
        "source": "embedded" if src.embedded else "files",
        "parent_a": {"path": str(src.parent_a), "sha256": shas[0]},
        "parent_b": {"path": str(src.parent_b), "sha256": shas[1]},
        "states_file": _describe(buffer),
        "eval_states_file": None if eval_buffer is None else _describe(eval_buffer),
        "env_id": src.env_id,
        "episodes": src.episodes,
    }
    return buffer, eval_buffer, provenance


def _describe(buffer: Buffer) -> dict[str, Any]:
    return {"path": buffer.path, "sha256": buffer.sha256, "shape": list(buffer.states.shape),
            "episodes": buffer.n_episodes}


def load_inputs(
    parent_a: str | Path | None = None,
    parent_b: str | Path | None = None,
    states: str | Path | None = None,
    *,
    eval_states: str | Path | None = None,
    allow_unsafe_unpickle: bool = False,
    env_id: str | None = None,
    episodes: int | None = None,
    check_environment: bool = True,
    reference_a: str | Path | None = None,
    reference_b: str | Path | None = None,
) -> SearchInputs:
    """Load and check everything before any child runs; raise a one-line HarnessError on bad input."""
    src = _sources(parent_a, parent_b, states, eval_states, env_id, episodes, (reference_a, reference_b))
    with as_field("parent_a"):
        sd_a, sha_a = read_parent(src.parent_a, allow_unsafe_unpickle=allow_unsafe_unpickle)
    with as_field("parent_b"):
        sd_b, sha_b = read_parent(src.parent_b, allow_unsafe_unpickle=allow_unsafe_unpickle)
    buffer, eval_buffer, provenance = _check(src, sd_a, sd_b, (sha_a, sha_b), states is not None, check_environment)
    refs = _reference(src, provenance, (sd_a, sd_b),
                      lambda p: read_parent(p, allow_unsafe_unpickle=allow_unsafe_unpickle))
    return SearchInputs(sd_a, sd_b, buffer, eval_buffer, src.env_id, src.episodes, provenance,
                        *(refs or (None, None)))


def check_inputs(
    parent_a: str | Path | None = None,
    parent_b: str | Path | None = None,
    states: str | Path | None = None,
    *,
    eval_states: str | Path | None = None,
    env_id: str | None = None,
    episodes: int | None = None,
    check_environment: bool = True,
    reference_a: str | Path | None = None,
    reference_b: str | Path | None = None,
) -> SearchInputs | None:
    """``load_inputs``'s checks without importing torch: the parents as tensor metadata.

    Returns ``None`` when a parent checkpoint can only be judged by ``torch.load`` (see
    :func:`harness.inputs.checkpoints.peek_parent`); the caller then runs ``load_inputs``.
    """
    src = _sources(parent_a, parent_b, states, eval_states, env_id, episodes, (reference_a, reference_b))
    with as_field("parent_a"):
        meta_a, sha_a = peek_parent_sha(src.parent_a)
    with as_field("parent_b"):
        meta_b, sha_b = peek_parent_sha(src.parent_b)
    if meta_a is None or meta_b is None:
        return None
    buffer, eval_buffer, provenance = _check(src, meta_a, meta_b, (sha_a, sha_b), states is not None,
                                             check_environment)
    refs = _reference(src, provenance, (meta_a, meta_b), peek_parent_sha)
    if refs is not None and (refs[0] is None or refs[1] is None):
        return None  # a reference only torch.load can judge
    return SearchInputs(meta_a, meta_b, buffer, eval_buffer, src.env_id, src.episodes, provenance,
                        *(refs or (None, None)))
