"""The large evaluation buffer: played by the parents as stated, on seeds nobody used, cached and reused."""

from __future__ import annotations

from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest
import torch

from harness.core.errors import HarnessError
from harness.inputs import embedded, evalbuffer
from harness.inputs.checkpoints import load_parent
from harness.inputs.evalbuffer import EvalSpec, check_disjoint, collect, embedded_seeds
from harness.networks.family import network_from_state_dict
from harness.search.settings import MAX_EPISODES, Settings

torch.set_num_threads(1)


@pytest.fixture(scope="module")
def parents() -> tuple[torch.nn.Module, torch.nn.Module]:
    a, b = (network_from_state_dict(load_parent(p)) for p in embedded.parent_paths())
    return a, b


def test_the_default_seeds_avoid_every_seed_the_embedded_parents_used() -> None:
    used = embedded_seeds(embedded.metadata())
    assert (10_000, 10_000) in used and (20_003, 20_003) in used  # training environments
    assert (500_000, 500_019) in used and (1_000_000, 1_000_099) in used  # checkpoint selection, final returns
    assert (2_000_000, 2_000_125) in used and (3_000_000, 3_000_128) in used  # the fine-tune states
    returns = (Settings().episode_seed, Settings().episode_seed + MAX_EPISODES - 1)
    large = (evalbuffer.SEED, evalbuffer.SEED + MAX_EPISODES - 1)
    check_disjoint(returns, used, field="episode_seed")
    check_disjoint(large, [*used, returns])
    with pytest.raises(HarnessError, match=r"episode seeds 10000-10019 overlap seeds 10000-10000 .*start at 5000000"):
        check_disjoint((10_000, 10_019), used)


def test_a_spec_is_checked_and_described() -> None:
    with pytest.raises(HarnessError, match="evaluation episodes 0 must be an integer >= 1"):
        EvalSpec("LunarLander-v3", 0)
    with pytest.raises(HarnessError, match=r"epsilon 1.5 is outside \[0, 1\]"):
        EvalSpec("LunarLander-v3", 4, epsilon=1.5)
    spec = EvalSpec("LunarLander-v3", 6)
    assert spec.describe()["seeds"] == [5_000_000, 5_000_005] and spec.describe()["epsilon"] == 0.1
    assert spec.key("p") != EvalSpec("LunarLander-v3", 6, epsilon=0.05).key("p") != spec.key("q")


def _replay(net: torch.nn.Module, seed: int, stride: int, epsilon: float) -> np.ndarray:
    """One episode played on its own (no vector env): the states ``collect`` should keep for it."""
    env = gym.make("LunarLander-v3")
    rng = np.random.default_rng([evalbuffer._EXPLORE_STREAM, seed])
    obs, _ = env.reset(seed=seed)
    kept, done, step = [], False, 0
    while not done:
        if step % stride == 0:
            kept.append(np.asarray(obs, dtype=np.float32))
        with torch.no_grad():
            action = int(net(torch.as_tensor(obs, dtype=torch.float32)[None]).argmax())
        if rng.random() < epsilon:
            action = int(rng.integers(0, 4))
        obs, _, terminated, truncated, _ = env.step(action)
        done, step = bool(terminated or truncated), step + 1
    env.close()
    return np.stack(kept)


def test_collect_plays_the_parents_alternately_then_reuses_the_cache(
        parents: tuple[torch.nn.Module, torch.nn.Module], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    a, b = parents
    spec = EvalSpec("LunarLander-v3", 3, stride=7, epsilon=0.2)
    first = collect(a, b, spec, tmp_path)
    assert first.episodes is not None
    assert first.n_episodes == 3 and sorted(set(first.episodes.tolist())) == [5_000_000, 5_000_001, 5_000_002]
    assert np.all(np.diff(first.episodes) >= 0)  # each episode's rows together, in seed order
    for seed, net in ((5_000_000, a), (5_000_001, b), (5_000_002, a)):
        assert np.array_equal(first.states[first.episodes == seed], _replay(net, seed, 7, 0.2))
    files = list((tmp_path / ".eval").iterdir())
    assert [f.suffix for f in files] == [".npz"] and first.path == str(files[0])

    def no_env(*args: object, **kwargs: object) -> None:
        raise AssertionError("the cached buffer was played again")

    monkeypatch.setattr(gym, "make_vec", no_env)
    again = collect(a, b, spec, tmp_path)
    assert again.episodes is not None
    assert again.sha256 == first.sha256 and np.array_equal(again.states, first.states)
    assert np.array_equal(again.episodes, first.episodes)
    with pytest.raises(AssertionError, match="played again"):  # other parents: another buffer
        collect(b, a, spec, tmp_path)
    with pytest.raises(HarnessError, match="overlap"):
        collect(a, b, spec, tmp_path, avoid=[(5_000_002, 5_000_010)])
