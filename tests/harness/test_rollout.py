"""check_env's one-line errors and episode_returns against a plain one-env reference loop."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest
import torch
from torch import nn

from harness.core.errors import HarnessError
from harness.evaluate.rollout import check_env, episode_returns


def _cartpole_net(sign: float = 1.0) -> nn.Module:
    """4 -> 2 linear policy: push right when the pole leans/rotates right (a classic balancer)."""
    net = nn.Sequential(nn.Linear(4, 2))
    with torch.no_grad():
        net[0].weight.copy_(torch.tensor([[0.0, 0.0, -1.0, -0.5], [0.0, 0.0, 1.0, 0.5]]) * sign)
        net[0].bias.zero_()
    return net


def _reference_return(model: nn.Module, env_id: str, seed: int) -> float:
    """One episode in a plain env, one observation at a time: the semantics episode_returns must match."""
    env = gym.make(env_id)
    obs, _ = env.reset(seed=seed)
    total, done = 0.0, False
    while not done:
        with torch.no_grad():
            action = int(model(torch.as_tensor(obs, dtype=torch.float32).unsqueeze(0)).argmax())
        obs, reward, terminated, truncated, _ = env.step(action)
        total += float(reward)
        done = terminated or truncated
    env.close()
    return total


def _single_line_error(call: object, *args: object) -> str:
    with pytest.raises(HarnessError) as info:
        call(*args)  # type: ignore[operator]
    message = str(info.value)
    assert "\n" not in message
    return message


def test_check_env_accepts_matching_env() -> None:
    check_env("CartPole-v1", 4, 2)
    check_env("LunarLander-v3", 8, 4)


def test_check_env_unknown_id_is_one_line() -> None:
    message = _single_line_error(check_env, "NoSuchEnv-v0", 8, 4)
    assert "unknown gymnasium environment id 'NoSuchEnv-v0'" in message
    assert "LunarLander-v3" in message


def test_check_env_width_mismatch_is_one_line() -> None:
    message = _single_line_error(check_env, "CartPole-v1", 8, 4)
    assert message == (
        "environment 'CartPole-v1' observations have width 4 but the parents take input_dim=8; "
        "pick an environment with 8 observations"
    )


def test_check_env_action_count_and_continuous_actions() -> None:
    assert "has 4 actions but the parents output 3" in _single_line_error(check_env, "LunarLander-v3", 8, 3)
    assert "not Discrete" in _single_line_error(check_env, "Pendulum-v1", 3, 1)


def test_episode_returns_match_reference_loop_across_batches() -> None:
    # 20 episodes run as two vector batches of 10; a good and a bad policy give long and short episodes.
    for sign in (1.0, -1.0):
        net = _cartpole_net(sign)
        res = episode_returns(net, "CartPole-v1", 20, seed=7)
        expected = [_reference_return(net, "CartPole-v1", 7 + i) for i in range(20)]
        assert res["returns"] == expected
        assert res["seeds"] == list(range(7, 27))
        assert res["episodes"] == 20
        assert res["mean"] == pytest.approx(float(np.mean(expected)))
        assert res["std"] == pytest.approx(float(np.std(expected)))
    # The balancer reaches CartPole's 500-step limit; the inverted one falls within a few steps.
    assert episode_returns(_cartpole_net(1.0), "CartPole-v1", 3, seed=0)["returns"] == [500.0, 500.0, 500.0]
    assert max(episode_returns(_cartpole_net(-1.0), "CartPole-v1", 3, seed=0)["returns"]) < 20


def test_episode_returns_deterministic_and_mode_restored() -> None:
    net = nn.Sequential(nn.Linear(4, 8), nn.Dropout(0.5), nn.Linear(8, 2))
    with torch.no_grad():
        for p in net.parameters():
            p.copy_(torch.linspace(-1.0, 1.0, p.numel()).reshape(p.shape))
    net.train()
    first = episode_returns(net, "CartPole-v1", 5, seed=3)
    assert net.training  # eval() during the rollout only
    assert episode_returns(net, "CartPole-v1", 5, seed=3) == first


def test_episode_returns_int8_dynamic_model() -> None:
    q = torch.ao.quantization.quantize_dynamic(_cartpole_net(1.0), {nn.Linear}, dtype=torch.qint8)
    res = episode_returns(q, "CartPole-v1", 4, seed=0)
    assert res["returns"] == [500.0] * 4


def test_episode_returns_rejects_bad_counts_and_ids() -> None:
    assert "episodes must be a positive integer, got 0" in _single_line_error(
        episode_returns, _cartpole_net(), "CartPole-v1", 0
    )
    assert "unknown gymnasium environment id" in _single_line_error(
        episode_returns, _cartpole_net(), "NoSuchEnv-v0", 2
    )
