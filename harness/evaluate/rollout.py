"""Greedy-policy returns in a gymnasium environment: each child's score beyond agreement.

Agreement with the parents can rise while the policy gets worse, so the harness also runs
every child's argmax policy for a few seeded episodes in the real environment. Episodes run
in a synchronous gymnasium vector env and the whole batch of observations goes through the
network in one forward call, which keeps the cost per child well under a second.
"""

from __future__ import annotations

import contextlib
import warnings
from typing import TYPE_CHECKING, Any

import gymnasium as gym
import numpy as np
from gymnasium import spaces

if TYPE_CHECKING:
    from torch import nn

from harness.core.errors import HarnessError

# More sub-environments than this buys little: stepping is serial in a sync vector env.
MAX_ENVS = 16


def _one_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__


def _quiet_import() -> None:
    # Box2D's SWIG bindings emit DeprecationWarnings on import; import them once here, silenced, so they
    # do not show up in every user's session warnings summary.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        with contextlib.suppress(ImportError):  # not installed: make() below reports it if the env needs it
            import Box2D  # noqa: F401


def _make(env_id: str) -> gym.Env[Any, Any]:
    _quiet_import()
    try:
        return gym.make(env_id)
    except gym.error.DependencyNotInstalled as exc:
        raise HarnessError(
            f"environment {env_id!r} needs a missing dependency ({_one_line(exc)}); install it, "
            "e.g. `pip install gymnasium[box2d]`"
        ) from None
    # A bad id raises gymnasium.error.Error subclasses; a broken registration raises import/attribute errors.
    except (gym.error.Error, ImportError, AttributeError, TypeError, ValueError) as exc:
        raise HarnessError(
            f"unknown gymnasium environment id {env_id!r} ({_one_line(exc)}); "
            "pass a registered id such as 'LunarLander-v3' or 'CartPole-v1'"
        ) from None


def check_env(env_id: str, input_dim: int, output_dim: int) -> None:
    """Raise HarnessError (one line) unless ``env_id`` fits a network with ``input_dim`` → ``output_dim``.

    The environment must exist, have a ``Discrete`` action space with ``output_dim`` actions and a
    1-D ``Box`` observation space of width ``input_dim``.
    """
    env = _make(env_id)
    try:
        act, obs = env.action_space, env.observation_space
    finally:
        env.close()
    if not isinstance(act, spaces.Discrete):
        raise HarnessError(
            f"environment {env_id!r} has action space {act}, not Discrete; "
            "pick an environment with discrete actions (the policy is an argmax over Q-values)"
        )
    if not isinstance(obs, spaces.Box) or len(obs.shape) != 1:
        raise HarnessError(
            f"environment {env_id!r} has observation space {obs}, not a 1-D Box; "
            "pick an environment with flat vector observations"
        )
    if int(obs.shape[0]) != input_dim:
        raise HarnessError(
            f"environment {env_id!r} observations have width {int(obs.shape[0])} but the parents take "
            f"input_dim={input_dim}; pick an environment with {input_dim} observations"
        )
    if int(act.n) != output_dim:
        raise HarnessError(
            f"environment {env_id!r} has {int(act.n)} actions but the parents output {output_dim}; "
            f"pick an environment with {output_dim} discrete actions"
        )


def episode_returns(model: nn.Module, env_id: str, episodes: int, *, seed: int = 0) -> dict[str, Any]:
    """Undiscounted returns of the greedy (argmax) policy of ``model`` over ``episodes`` episodes.

    Episode ``i`` starts from ``reset(seed=seed + i)``. Episodes run in balanced batches of at
    most 16 sub-environments of one synchronous vector env; a batch steps until
    every one of its episodes has terminated or been truncated, and steps after an episode's end
    (gymnasium's next-step autoreset) are ignored, so exactly the requested episodes are counted.

    ``model`` may be any module mapping a float32 ``(B, obs_dim)`` batch to ``(B, actions)``
    (float or dynamic-quantized int8). It runs under ``torch.no_grad()`` in eval mode; its
    train/eval mode is restored afterwards. A call is deterministic for fixed arguments.

    Returns ``{"mean", "std" (population, ddof=0), "returns", "episodes", "seeds"}``.
    """
    if isinstance(episodes, bool) or not isinstance(episodes, int) or episodes < 1:
        raise HarnessError(f"episodes must be a positive integer, got {episodes!r}; pass e.g. episodes=10")
    seeds = [int(seed) + i for i in range(episodes)]
    # Balanced batches: 20 episodes run as 2 x 10, not 16 + 4 padded to 16.
    batches = -(-episodes // MAX_ENVS)
    num_envs = -(-episodes // batches)
    try:
        _quiet_import()
        envs = gym.make_vec(env_id, num_envs=num_envs, vectorization_mode="sync")
    except Exception:
        _make(env_id).close()  # re-raise the bad-id / missing-dependency error as one line
        raise
    was_training = model.training
    model.eval()
    returns: list[float] = []
    try:
        for start in range(0, episodes, num_envs):
            batch = seeds[start : start + num_envs]
            returns.extend(_run_batch(model, envs, batch))
    finally:
        envs.close()
        model.train(was_training)
    arr = np.asarray(returns, dtype=np.float64)
    return {
        "mean": float(arr.mean()),
        "std": float(arr.std()),
        "returns": [float(r) for r in arr],
        "episodes": episodes,
        "seeds": seeds,
    }


def _run_batch(model: nn.Module, envs: gym.vector.VectorEnv, batch_seeds: list[int]) -> list[float]:
    """Run one episode per seed in ``batch_seeds`` (the first ``len(batch_seeds)`` sub-envs)."""
    import torch  # here, not at the top: check_env runs on the plugin's controller, which never imports torch

    n = envs.num_envs
    wanted = len(batch_seeds)
    # Sub-envs beyond the last partial batch reuse the last seed; their rewards are discarded.
    # gymnasium's annotation says int, but vector envs take one seed per sub-env.
    obs, _ = envs.reset(seed=batch_seeds + [batch_seeds[-1]] * (n - wanted))  # type: ignore[arg-type]
    totals = np.zeros(n, dtype=np.float64)
    active = np.zeros(n, dtype=bool)
    active[:wanted] = True
    while active.any():
        with torch.no_grad():
            q = model(torch.as_tensor(np.asarray(obs, dtype=np.float32)))
        actions = torch.argmax(q, dim=1).numpy()
        obs, reward, terminated, truncated, _ = envs.step(actions)
        totals[active] += np.asarray(reward, dtype=np.float64)[active]
        active &= ~(np.asarray(terminated) | np.asarray(truncated))
    return [float(r) for r in totals[:wanted]]
