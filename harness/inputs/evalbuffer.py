"""A large evaluation set from the environment: fresh episodes played by the parents, cached by what made them.

The held-out part of a states buffer is small (the embedded one holds ~50 episodes), so agreement measured on it
moves by a few hundredths when other episodes are held out. This module plays N fresh episodes instead: episode i
is played by parent A when i is even and by parent B when it is odd (both parents' state distributions, as in
the fine-tune states), epsilon-greedy with a stated epsilon (the parents' argmax, else with probability epsilon a
uniformly random action drawn from the episode's own generator), from ``reset(seed=seed + i)``. Every k-th state
of an episode is kept (consecutive states are near-duplicates) with its episode seed as the episode id, so the
bootstrap resamples whole episodes.

Episode seeds must not repeat an episode the parents were trained, selected or measured on, nor one of the
fine-tune states or the return episodes: :func:`embedded_seeds` lists what the embedded parents' metadata
records, and :func:`collect` refuses a seed range that overlaps any range it is told to avoid. The default first
seed, 5,000,000, lies past every range the embedded parents used (training 10,000-10,003 and 20,000-20,003,
checkpoint selection 500,000+, final returns 1,000,000+, states 2,000,000+ and 3,000,000+) and past the return
episodes' default (4,000,000+, :mod:`harness.search.settings`); for a user's own parents it is a stated offset, and
``seed`` moves it.

The buffer is written once as ``<storage>/.eval/<key>.npz`` (``states``, ``episode``), where the key is a sha256
of the parents' weights, the environment id, N, k, epsilon and the first seed, and read back from there on every
later call with the same inputs (no environment step).
"""

from __future__ import annotations

import hashlib
import io
import json
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from harness.core import atomic
from harness.core.errors import HarnessError
from harness.evaluate.rollout import MAX_ENVS, _make, _quiet_import
from harness.inputs.states import Buffer, load_buffer

if TYPE_CHECKING:
    from torch import nn

SEED = 5_000_000
EPSILON = 0.1  # as the embedded fine-tune states were gathered
STRIDE = 10  # as the embedded fine-tune states
_EXPLORE_STREAM = 0x65766174  # "evat": each episode's exploration generator is seeded (stream, episode seed)
_FORMAT = 1  # bump when the collection changes, so old caches are not reused


@dataclass(frozen=True)
class EvalSpec:
    """What an evaluation buffer is made of (everything but the parents)."""

    env_id: str
    episodes: int
    stride: int = STRIDE
    epsilon: float = EPSILON
    seed: int = SEED

    def __post_init__(self) -> None:
        for name, value, low in (("episodes", self.episodes, 1), ("stride", self.stride, 1), ("seed", self.seed, 0)):
            if isinstance(value, bool) or not isinstance(value, int) or value < low:
                raise HarnessError(f"evaluation {name} {value!r} must be an integer >= {low}", field=f"eval_{name}")
        if not 0.0 <= self.epsilon <= 1.0:
            raise HarnessError(f"evaluation epsilon {self.epsilon!r} is outside [0, 1]; 0.1 explores a little",
                               field="eval_epsilon")

    @property
    def seeds(self) -> tuple[int, int]:
        """The first and last episode seed."""
        return self.seed, self.seed + self.episodes - 1

    def describe(self) -> dict[str, Any]:
        """JSON-safe, for the manifest and the legend."""
        return {**asdict(self), "seeds": list(self.seeds),
                "policy": "parent A on even episodes, parent B on odd ones, epsilon-greedy"}

    def key(self, parents_digest: str) -> str:
        text = json.dumps({"format": _FORMAT, "parents": parents_digest, **asdict(self)}, sort_keys=True)
        return hashlib.sha256(text.encode()).hexdigest()


def model_digest(*models: nn.Module) -> str:
    """sha256 of the models' weights (names, dtypes, shapes and bytes, in order)."""
    h = hashlib.sha256()
    for model in models:
        for name, tensor in model.state_dict().items():
            t = tensor.detach().cpu().contiguous()
            h.update(f"{name}|{t.dtype}|{tuple(t.shape)}|".encode())
            h.update(t.numpy().tobytes())
    return h.hexdigest()


def embedded_seeds(metadata: Mapping[str, Any]) -> list[tuple[int, int]]:
    """Every episode seed range (first, last) the embedded parents' ``metadata.json`` records: their training
    environments, checkpoint selection, final returns and the fine-tune states' episodes."""
    out: list[tuple[int, int]] = []
    params = (metadata.get("algorithm") or {}).get("hyperparameters") or {}
    chosen = re.search(r"seeded (\d+)\+i", str((metadata.get("algorithm") or {}).get("checkpoint_selection", "")))
    if chosen and params.get("eval_episodes"):
        out.append((int(chosen.group(1)), int(chosen.group(1)) + int(params["eval_episodes"]) - 1))
    for parent in (metadata.get("parents") or {}).values():
        out += [(int(s), int(s)) for s in parent.get("train_env_seeds") or []]
        ret = parent.get("return") or {}
        if ret.get("seed") is not None and ret.get("episodes"):
            out.append((int(ret["seed"]), int(ret["seed"]) + int(ret["episodes"]) - 1))
    for part in (metadata.get("states") or {}).get("slices") or []:
        first, last = part["episode_seeds"]
        out.append((int(first), int(last)))
    return sorted(set(out))


def check_disjoint(seeds: tuple[int, int], avoid: Iterable[tuple[int, int]], field: str = "eval_seed") -> None:
    """A one-line HarnessError when the seed range ``seeds`` overlaps one of ``avoid``."""
    for first, last in avoid:
        if seeds[0] <= last and first <= seeds[1]:
            raise HarnessError(f"episode seeds {seeds[0]}-{seeds[1]} overlap seeds {first}-{last} already used "
                               f"(training, fine-tune states or returns); start at {max(last + 1, SEED)} or later",
                               field=field)


def cache_path(storage: str | Path, spec: EvalSpec, parents_digest: str) -> Path:
    """Where the buffer of ``spec`` for these parents is cached: a hidden folder of the history folder, which the
    history store does not read as records."""
    return Path(storage) / ".eval" / f"{spec.key(parents_digest)}.npz"


def collect(parent_a: nn.Module, parent_b: nn.Module, spec: EvalSpec, storage: str | Path, *,
            avoid: Iterable[tuple[int, int]] = ()) -> Buffer:
    """The evaluation buffer of ``spec`` for these parents: read from ``storage`` when it was collected before,
    else played (module docstring), written atomically and read back. Raises when the seeds overlap ``avoid``."""
    check_disjoint(spec.seeds, avoid)
    path = cache_path(storage, spec, model_digest(parent_a, parent_b))
    if not path.is_file():
        states, episode = play(parent_a, parent_b, spec)
        buf = io.BytesIO()
        np.savez(buf, states=states, episode=episode)
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic.write_bytes(path, buf.getvalue())
    return load_buffer(path, what="evaluation buffer")


def play(parent_a: nn.Module, parent_b: nn.Module, spec: EvalSpec) -> tuple[np.ndarray, np.ndarray]:
    """(states float32 (M, d), episode seeds int64 (M,)), episode by episode in seed order."""
    import gymnasium as gym
    import torch

    seeds = list(range(spec.seeds[0], spec.seeds[1] + 1))
    batches = -(-len(seeds) // MAX_ENVS)
    num_envs = -(-len(seeds) // batches)
    try:
        _quiet_import()
        envs = gym.make_vec(spec.env_id, num_envs=num_envs, vectorization_mode="sync")
    except Exception:
        _make(spec.env_id).close()  # the bad-id / missing-dependency error as one line
        raise
    modes = [m.training for m in (parent_a, parent_b)]
    parent_a.eval(), parent_b.eval()
    rows: list[np.ndarray] = []
    try:
        with torch.no_grad():
            for start in range(0, len(seeds), num_envs):
                rows += _play_batch(parent_a, parent_b, envs, seeds[start:start + num_envs], start, spec)
    finally:
        envs.close()
        parent_a.train(modes[0]), parent_b.train(modes[1])
    episode = np.concatenate([np.full(len(r), s, dtype=np.int64) for r, s in zip(rows, seeds)])
    return np.concatenate(rows).astype(np.float32), episode


def _play_batch(parent_a: nn.Module, parent_b: nn.Module, envs: Any, seeds: Sequence[int], first: int,
                spec: EvalSpec) -> list[np.ndarray]:
    """One episode per seed (episode index ``first + j`` on sub-env j); the kept states of each."""
    import torch

    n, wanted = envs.num_envs, len(seeds)
    obs, _ = envs.reset(seed=list(seeds) + [seeds[-1]] * (n - wanted))
    rngs = [np.random.default_rng([_EXPLORE_STREAM, s]) for s in seeds]
    by_a = np.array([(first + j) % 2 == 0 for j in range(wanted)] + [True] * (n - wanted))
    kept: list[list[np.ndarray]] = [[] for _ in seeds]
    active = np.arange(n) < wanted
    step = 0
    while active.any():
        x = torch.as_tensor(np.asarray(obs, dtype=np.float32))
        qa, qb = parent_a(x), parent_b(x)
        actions = np.where(by_a, qa.argmax(1).numpy(), qb.argmax(1).numpy())
        for j in np.flatnonzero(active):
            if step % spec.stride == 0:
                kept[j].append(np.asarray(obs[j], dtype=np.float32))
            if rngs[j].random() < spec.epsilon:
                actions[j] = int(rngs[j].integers(0, qa.shape[1]))
        obs, _, terminated, truncated, _ = envs.step(actions)
        active &= ~(np.asarray(terminated) | np.asarray(truncated))
        step += 1
    return [np.stack(k) for k in kept]
