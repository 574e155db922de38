"""Regenerate the embedded LunarLander parents, states buffer and metadata.

    python -m harness.inputs.train_parents                  # full run -> harness/data/ (two processes, ~10-20 min)
    python -m harness.inputs.train_parents --quick --out D  # smoke run of the pipeline, a few thousand steps

Two compact Double DQN agents on AgentFarm's QNetwork(8, 4, 64) layout are trained in two
processes (one thread each) with different seeds; each keeps its best-evaluated checkpoint,
because greedy return swings widely between evaluations. Then each parent is scored on 100
unseen seeded episodes, 10,000 states are gathered from both parents' epsilon-greedy rollouts (every 10th
step, with each row's episode id, so a holdout can keep whole episodes out), and their argmax agreement on
those states is recorded. Everything is driven by local
generators and fixed seeds, so the shipped files are reproduced given the same library versions.

Dropout: DQN gains nothing from dropout noise in its bootstrapped targets, so the networks are
trained as ``QNetwork(..., dropout_rate=0.0)``; the state-dict keys are identical, and in eval
mode (how parents are always used) a dropout-0.1 QNetwork computes exactly the same function.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Mapping
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass, replace
from multiprocessing import get_context
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import torch
from torch import nn

from harness.evaluate.rollout import episode_returns
from harness.inputs.embedded import EMBEDDED_ENV_ID
from harness.networks.family import network_from_state_dict
from harness.networks.qnetwork import QNetwork

HIDDEN = 64
PARENT_SEEDS = {"a": 1, "b": 2}
# Disjoint seed ranges: training envs, in-training evaluation, final evaluation, states rollouts.
TRAIN_ENV_SEED_BASE = 10_000  # parent seed s resets its 4 envs with s*10_000 + i
SELECT_EVAL_SEED = 500_000  # the fixed episodes used to pick the best checkpoint
FINAL_EVAL_SEED = 1_000_000  # 100 unseen episodes reported in the metadata
STATES_SEED = {"a": 2_000_000, "b": 3_000_000}  # episode seeds (and rng seed) of each states slice


@dataclass(frozen=True)
class TrainConfig:
    """Hyper-parameters of the compact Double DQN (env steps count real transitions over all envs)."""

    total_env_steps: int = 400_000
    num_envs: int = 4
    lr: float = 6e-4
    batch_size: int = 128
    buffer_size: int = 100_000
    gamma: float = 0.99
    eps_start: float = 1.0
    eps_end: float = 0.05
    eps_decay_steps: int = 50_000
    learning_starts: int = 5_000
    update_every_vector_steps: int = 2  # one gradient update per 2 steps of the vector env (8 transitions)
    target_update_env_steps: int = 1_000  # hard copy online -> target
    max_grad_norm: float = 10.0
    eval_every_env_steps: int = 25_000
    eval_episodes: int = 20
    final_eval_episodes: int = 100
    states_per_parent: int = 5_000
    states_epsilon: float = 0.1
    states_stride: int = 10  # every 10th step: ~5,000 states per parent from ~130 episodes


QUICK = TrainConfig(
    total_env_steps=4_000, learning_starts=1_000, eps_decay_steps=2_000, eval_every_env_steps=2_000,
    eval_episodes=3, final_eval_episodes=5, states_per_parent=250,
)


def init_network(seed: int) -> QNetwork:
    """A dropout-free QNetwork(8, 4, 64) re-initialised from a local generator (xavier, zero bias)."""
    # QNetwork's own init draws from torch's global RNG; overwrite it from a seeded local one.
    net = QNetwork(8, 4, HIDDEN, dropout_rate=0.0)
    gen = torch.Generator().manual_seed(seed)
    for module in net.modules():
        if isinstance(module, nn.Linear):
            nn.init.xavier_uniform_(module.weight, generator=gen)
            nn.init.zeros_(module.bias)
    return net


class Replay:
    """A fixed-size ring buffer of transitions held in preallocated numpy arrays."""

    def __init__(self, capacity: int, obs_dim: int) -> None:
        self.obs = np.zeros((capacity, obs_dim), dtype=np.float32)
        self.next_obs = np.zeros((capacity, obs_dim), dtype=np.float32)
        self.actions = np.zeros(capacity, dtype=np.int64)
        self.rewards = np.zeros(capacity, dtype=np.float32)
        self.terminal = np.zeros(capacity, dtype=np.float32)
        self.capacity, self.size, self.pos = capacity, 0, 0

    def add(self, obs: np.ndarray, action: int, reward: float, next_obs: np.ndarray, terminal: bool) -> None:
        i = self.pos
        self.obs[i], self.actions[i], self.rewards[i] = obs, action, reward
        self.next_obs[i], self.terminal[i] = next_obs, float(terminal)
        self.pos = (i + 1) % self.capacity
        self.size = min(self.size + 1, self.capacity)

    def sample(self, rng: np.random.Generator, n: int) -> tuple[torch.Tensor, ...]:
        idx = rng.integers(0, self.size, size=n)
        return tuple(
            torch.from_numpy(a[idx]) for a in (self.obs, self.actions, self.rewards, self.next_obs, self.terminal)
        )


def _update(online: nn.Module, target: nn.Module, opt: torch.optim.Optimizer, batch: tuple[torch.Tensor, ...],
            cfg: TrainConfig) -> float:
    obs, actions, rewards, next_obs, terminal = batch
    with torch.no_grad():
        # Double DQN: the online net picks the next action, the target net scores it.
        next_a = online(next_obs).argmax(dim=1, keepdim=True)
        next_q = target(next_obs).gather(1, next_a).squeeze(1)
        y = rewards + cfg.gamma * (1.0 - terminal) * next_q
    q = online(obs).gather(1, actions.unsqueeze(1)).squeeze(1)
    loss = nn.functional.smooth_l1_loss(q, y)
    opt.zero_grad(set_to_none=True)
    loss.backward()  # type: ignore[no-untyped-call]
    nn.utils.clip_grad_norm_(online.parameters(), cfg.max_grad_norm)
    opt.step()
    return float(loss.detach())


def train_parent(label: str, seed: int, cfg: TrainConfig) -> dict[str, Any]:
    """Train one parent; return its best-evaluated state dict and the training record."""
    torch.set_num_threads(1)
    t0 = time.perf_counter()
    rng = np.random.default_rng(seed)
    online = init_network(seed)
    target = init_network(seed)
    target.load_state_dict(online.state_dict())
    opt = torch.optim.Adam(online.parameters(), lr=cfg.lr)
    replay = Replay(cfg.buffer_size, 8)
    envs = gym.make_vec(EMBEDDED_ENV_ID, num_envs=cfg.num_envs, vectorization_mode="sync")
    env_seeds = [seed * TRAIN_ENV_SEED_BASE + i for i in range(cfg.num_envs)]
    obs, _ = envs.reset(seed=env_seeds)  # type: ignore[arg-type]  # one seed per sub-env
    # Next-step autoreset: the step after an episode ends only resets that sub-env; skip it.
    just_reset = np.zeros(cfg.num_envs, dtype=bool)
    env_steps = updates = vector_steps = episodes = 0
    next_target, next_eval = cfg.target_update_env_steps, cfg.eval_every_env_steps
    best: dict[str, Any] = {"mean": -float("inf")}
    evals: list[dict[str, Any]] = []
    while env_steps < cfg.total_env_steps:
        eps = max(cfg.eps_end, cfg.eps_start - (cfg.eps_start - cfg.eps_end) * env_steps / cfg.eps_decay_steps)
        with torch.no_grad():
            greedy = online(torch.from_numpy(np.asarray(obs, dtype=np.float32))).argmax(dim=1).numpy()
        explore = rng.random(cfg.num_envs) < eps
        actions = np.where(explore, rng.integers(0, 4, size=cfg.num_envs), greedy)
        next_obs, rewards, terminated, truncated, _ = envs.step(actions)
        for i in range(cfg.num_envs):
            if not just_reset[i]:
                # Truncation (time limit) is not terminal: the target still bootstraps.
                replay.add(obs[i], int(actions[i]), float(rewards[i]), next_obs[i], bool(terminated[i]))
                env_steps += 1
        done = np.asarray(terminated) | np.asarray(truncated)
        episodes += int(done.sum())
        just_reset = done
        obs = next_obs
        vector_steps += 1
        if replay.size >= cfg.learning_starts and vector_steps % cfg.update_every_vector_steps == 0:
            _update(online, target, opt, replay.sample(rng, cfg.batch_size), cfg)
            updates += 1
        if env_steps >= next_target:
            target.load_state_dict(online.state_dict())
            next_target += cfg.target_update_env_steps
        if env_steps >= next_eval or env_steps >= cfg.total_env_steps:
            next_eval += cfg.eval_every_env_steps
            res = episode_returns(online, EMBEDDED_ENV_ID, cfg.eval_episodes, seed=SELECT_EVAL_SEED)
            online.train()
            rec = {"env_steps": env_steps, "mean": round(res["mean"], 3), "std": round(res["std"], 3),
                   "elapsed_s": round(time.perf_counter() - t0, 1)}
            evals.append(rec)
            if res["mean"] > best["mean"]:  # strict: the earliest of equal scores wins
                best = {"mean": res["mean"], "std": res["std"], "env_steps": env_steps,
                        "state_dict": {k: v.detach().clone().float().contiguous()
                                       for k, v in online.state_dict().items()}}
            print(f"[parent {label}] steps={env_steps} eps={eps:.3f} eval={res['mean']:.1f}±{res['std']:.1f} "
                  f"best={best['mean']:.1f}@{best['env_steps']} t={rec['elapsed_s']}s", flush=True)
    envs.close()
    return {
        "label": label, "seed": seed, "state_dict": best.pop("state_dict"),
        "best_eval": {k: (round(v, 3) if isinstance(v, float) else v) for k, v in best.items()},
        "evals": evals, "env_steps": env_steps, "vector_steps": vector_steps, "updates": updates,
        "episodes": episodes, "train_env_seeds": env_seeds, "wall_s": round(time.perf_counter() - t0, 1),
    }


def gather_states(net: nn.Module, count: int, epsilon: float, seed: int,
                  stride: int = 1) -> tuple[np.ndarray, np.ndarray, list[int]]:
    """``count`` observations, every ``stride``-th step of epsilon-greedy episodes seeded ``seed, seed+1, ...``
    (rng seeded ``seed``), with the episode seed of each row.

    A stride above 1 spreads the buffer over more episodes: consecutive states of one trajectory are
    near-duplicates, and a held-out set needs many independent episodes for its noise to be small.
    """
    rng = np.random.default_rng(seed)
    env = gym.make(EMBEDDED_ENV_ID)
    rows: list[np.ndarray] = []
    ids: list[int] = []
    episode_seeds: list[int] = []
    net.eval()
    while len(rows) < count:
        ep_seed = seed + len(episode_seeds)
        episode_seeds.append(ep_seed)
        obs, _ = env.reset(seed=ep_seed)
        done, step = False, 0
        while not done and len(rows) < count:
            state = np.asarray(obs, dtype=np.float32)
            if step % stride == 0:
                rows.append(state)
                ids.append(ep_seed)
            if rng.random() < epsilon:
                action = int(rng.integers(0, 4))
            else:
                with torch.no_grad():
                    action = int(net(torch.from_numpy(state)).argmax())
            obs, _, terminated, truncated, _ = env.step(action)
            done, step = bool(terminated or truncated), step + 1
    env.close()
    return np.stack(rows).astype(np.float32), np.asarray(ids, dtype=np.int64), episode_seeds


def write_states(out: Path, nets: Mapping[str, nn.Module],
                 cfg: TrainConfig) -> tuple[np.ndarray, np.ndarray, list[dict[str, Any]], float]:
    """Gather both parents' states with their episode ids into ``out/states.npz``; (states, ids, provenance,
    the parents' agreement on the states)."""
    slices: list[np.ndarray] = []
    ids: list[np.ndarray] = []
    provenance: list[dict[str, Any]] = []
    for lab in PARENT_SEEDS:
        rows, episode, ep_seeds = gather_states(nets[lab], cfg.states_per_parent, cfg.states_epsilon,
                                                STATES_SEED[lab], cfg.states_stride)
        start = sum(len(s) for s in slices)
        slices.append(rows)
        ids.append(episode)
        provenance.append({"rows": [start, start + len(rows)], "policy": f"parent_{lab} epsilon-greedy",
                           "epsilon": cfg.states_epsilon, "rng_seed": STATES_SEED[lab], "stride": cfg.states_stride,
                           "episode_seeds": [ep_seeds[0], ep_seeds[-1]], "episodes": len(ep_seeds)})
    states = np.ascontiguousarray(np.concatenate(slices), dtype=np.float32)
    episode = np.concatenate(ids)
    np.savez(out / "states.npz", states=states, episode=episode)
    with torch.no_grad():
        x = torch.from_numpy(states)
        agreement = float((nets["a"](x).argmax(1) == nets["b"](x).argmax(1)).float().mean())
    return states, episode, provenance, agreement


def states_meta(states: np.ndarray, episode: np.ndarray, provenance: list[dict[str, Any]],
                cfg: TrainConfig) -> dict[str, Any]:
    return {"file": "states.npz", "arrays": {"states": "float32 (N, 8)", "episode": "int64 (N,): the episode's "
            "reset seed"}, "shape": list(states.shape), "dtype": "float32", "count": int(states.shape[0]),
            "episodes": int(len(np.unique(episode))), "stride": cfg.states_stride, "slices": provenance}


def regenerate_states(out: Path, cfg: TrainConfig) -> dict[str, Any]:
    """Only the states buffer (and its metadata) of the parents already in ``out``: the parents stay byte-identical."""
    torch.set_num_threads(1)
    nets = {lab: network_from_state_dict(torch.load(out / f"parent_{lab}.pt", weights_only=True))
            for lab in PARENT_SEEDS}
    states, episode, provenance, agreement = write_states(out, nets, cfg)
    meta: dict[str, Any] = json.loads((out / "metadata.json").read_text())
    meta["states"] = states_meta(states, episode, provenance, cfg)
    meta["agreement_on_states"] = round(agreement, 4)
    meta["states_regenerated"] = {"gymnasium_version": gym.__version__, "torch_version": torch.__version__,
                                  "numpy_version": np.__version__, "command": "python -m harness.inputs.train_parents "
                                  "--states-only"}
    (out / "metadata.json").write_text(json.dumps(meta, indent=1) + "\n")
    return meta


def build(out: Path, cfg: TrainConfig) -> dict[str, Any]:
    """Train both parents in parallel, evaluate them, gather states and write everything to ``out``."""
    torch.set_num_threads(1)
    t0 = time.perf_counter()
    out.mkdir(parents=True, exist_ok=True)
    with ProcessPoolExecutor(max_workers=2, mp_context=get_context("spawn")) as pool:
        futures = {lab: pool.submit(train_parent, lab, s, cfg) for lab, s in PARENT_SEEDS.items()}
        trained = {lab: f.result() for lab, f in futures.items()}
    train_wall = time.perf_counter() - t0
    nets = {lab: network_from_state_dict(r["state_dict"]) for lab, r in trained.items()}
    parents: dict[str, Any] = {}
    for lab, r in trained.items():
        torch.save(r["state_dict"], out / f"parent_{lab}.pt")
        final = episode_returns(nets[lab], EMBEDDED_ENV_ID, cfg.final_eval_episodes, seed=FINAL_EVAL_SEED)
        parents[lab] = {
            "file": f"parent_{lab}.pt", "seed": r["seed"], "train_env_seeds": r["train_env_seeds"],
            "env_steps": r["env_steps"], "vector_steps": r["vector_steps"], "updates": r["updates"],
            "train_episodes": r["episodes"], "train_wall_s": r["wall_s"],
            "selected_checkpoint": r["best_eval"], "evals": r["evals"],
            "return": {"mean": round(final["mean"], 3), "std": round(final["std"], 3),
                       "episodes": final["episodes"], "seed": FINAL_EVAL_SEED,
                       "returns": final["returns"]},
        }
        print(f"[parent {lab}] {final['episodes']}-episode return {final['mean']:.1f} ± {final['std']:.1f}",
              flush=True)
    states, episode, provenance, agreement = write_states(out, nets, cfg)
    meta = {
        "env_id": EMBEDDED_ENV_ID, "gymnasium_version": gym.__version__, "torch_version": torch.__version__,
        "numpy_version": np.__version__, "quick": cfg != TrainConfig(),
        "network": {"class": "harness.networks.qnetwork.QNetwork",
                    "input_dim": 8, "output_dim": 4, "hidden_size": HIDDEN,
                    "trained_dropout_rate": 0.0,
                    "dropout_note": "trained without dropout; keys match QNetwork and eval-mode outputs are "
                                    "identical for any dropout_rate"},
        "algorithm": {"name": "Double DQN", "loss": "Huber (smooth_l1, beta=1)", "optimizer": "Adam",
                      "target_update": "hard copy", "exploration": "linear epsilon decay over env steps",
                      "vector_env": "gymnasium.make_vec sync, next-step autoreset (reset steps not stored)",
                      "checkpoint_selection": f"best mean over {cfg.eval_episodes} greedy episodes seeded "
                                              f"{SELECT_EVAL_SEED}+i, evaluated every "
                                              f"{cfg.eval_every_env_steps} env steps and at the end",
                      "hyperparameters": asdict(cfg)},
        "regenerate": "python -m harness.inputs.train_parents",
        "parents": parents,
        "states": states_meta(states, episode, provenance, cfg),
        "agreement_on_states": round(agreement, 4),
        "train_wall_s": round(train_wall, 1),
        "total_wall_s": round(time.perf_counter() - t0, 1),
    }
    (out / "metadata.json").write_text(json.dumps(meta, indent=1) + "\n")
    return meta


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m harness.inputs.train_parents", description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=None, help="Output folder (default: harness/data)")
    parser.add_argument("--quick", action="store_true", help="Smoke run of a few thousand steps; needs --out")
    parser.add_argument("--steps", type=int, default=None, help="Override the env-step budget per parent")
    parser.add_argument("--states-only", action="store_true",
                        help="Regather only the states buffer (with episode ids) from the parents in --out")
    args = parser.parse_args(argv)
    if args.quick and args.out is None:
        parser.error("--quick needs --out DIR (it must not overwrite the shipped parents)")
    cfg = QUICK if args.quick else TrainConfig()
    if args.steps is not None:
        cfg = replace(cfg, total_env_steps=args.steps)
    out = args.out if args.out is not None else Path(__file__).parent.parent / "data"
    meta = regenerate_states(out, cfg) if args.states_only else build(out, cfg)
    print(json.dumps({"out": str(out), "agreement_on_states": meta["agreement_on_states"],
                      "returns": {k: v["return"]["mean"] for k, v in meta["parents"].items()},
                      "total_wall_s": meta["total_wall_s"]}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
