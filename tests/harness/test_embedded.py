"""The shipped LunarLander parents, states and metadata: shapes, provenance and recorded returns."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from harness.evaluate.rollout import episode_returns
from harness.inputs import embedded
from harness.networks.family import network_from_state_dict

EXPECTED_SHAPES = {
    "network.0.weight": (64, 8), "network.0.bias": (64,),
    "network.1.weight": (64,), "network.1.bias": (64,),
    "network.4.weight": (64, 64), "network.4.bias": (64,),
    "network.5.weight": (64,), "network.5.bias": (64,),
    "network.8.weight": (4, 64), "network.8.bias": (4,),
}


@pytest.fixture(scope="module")
def parents() -> dict[str, dict[str, torch.Tensor]]:
    path_a, path_b = embedded.parent_paths()
    return {"a": torch.load(path_a, weights_only=True), "b": torch.load(path_b, weights_only=True)}


@pytest.fixture(scope="module")
def meta() -> dict:
    return embedded.metadata()


def test_parent_files_have_the_documented_layout(parents: dict[str, dict[str, torch.Tensor]]) -> None:
    assert [p.name for p in embedded.parent_paths()] == ["parent_a.pt", "parent_b.pt"]
    for sd in parents.values():
        assert {k: tuple(v.shape) for k, v in sd.items()} == EXPECTED_SHAPES
        assert all(v.dtype == torch.float32 and bool(torch.isfinite(v).all()) for v in sd.values())
    assert not torch.equal(parents["a"]["network.0.weight"], parents["b"]["network.0.weight"])


def test_states_buffer_holds_whole_episodes_with_their_ids(meta: dict) -> None:
    with np.load(embedded.states_path(), allow_pickle=False) as npz:
        states, episode = npz["states"], npz["episode"]
    assert states.shape == (10000, 8) and states.dtype == np.float32 and np.isfinite(states).all()
    assert episode.shape == (10000,) and episode.dtype == np.int64
    slices = meta["states"]["slices"]
    assert [s["rows"] for s in slices] == [[0, 5000], [5000, 10000]]
    assert [s["policy"] for s in slices] == ["parent_a epsilon-greedy", "parent_b epsilon-greedy"]
    assert all(s["epsilon"] == 0.1 and s["stride"] == 10 for s in slices)
    # Ids are the episodes' reset seeds, contiguous per episode, and there are many episodes to hold out.
    assert meta["states"]["episodes"] == len(np.unique(episode)) == sum(s["episodes"] for s in slices) > 200
    assert (np.diff(episode) >= 0).all() and set(episode[:5000]) < set(range(2_000_000, 2_001_000))


def test_metadata_records_provenance_and_quality(meta: dict) -> None:
    assert meta["env_id"] == embedded.EMBEDDED_ENV_ID == "LunarLander-v3"
    assert meta["quick"] is False
    for key in ("gymnasium_version", "algorithm", "network", "parents", "states", "agreement_on_states",
                "train_wall_s", "regenerate"):
        assert key in meta
    hp = meta["algorithm"]["hyperparameters"]
    assert (hp["lr"], hp["batch_size"], hp["buffer_size"], hp["target_update_env_steps"]) == (6e-4, 128, 100_000, 1000)
    assert meta["parents"]["a"]["seed"] != meta["parents"]["b"]["seed"]
    for p in meta["parents"].values():
        ret = p["return"]
        assert ret["episodes"] == len(ret["returns"]) == 100
        assert ret["mean"] == pytest.approx(np.mean(ret["returns"]), abs=1e-3)
        assert ret["std"] == pytest.approx(np.std(ret["returns"]), abs=1e-3)
        assert ret["mean"] >= 100.0  # never ship weaker parents
    assert 0.5 <= meta["agreement_on_states"] <= 0.9


def test_recorded_agreement_matches_shipped_files(parents: dict[str, dict[str, torch.Tensor]], meta: dict) -> None:
    with np.load(embedded.states_path()) as npz:
        x = torch.from_numpy(npz["states"])
    with torch.no_grad():
        a = network_from_state_dict(parents["a"])(x).argmax(1)
        b = network_from_state_dict(parents["b"])(x).argmax(1)
    assert float((a == b).float().mean()) == pytest.approx(meta["agreement_on_states"], abs=1e-4)


@pytest.mark.parametrize("label", ["a", "b"])
def test_parent_returns_reproduce_metadata(parents: dict[str, dict[str, torch.Tensor]], meta: dict,
                                           label: str) -> None:
    rec = meta["parents"][label]["return"]
    net = network_from_state_dict(parents[label])
    first = episode_returns(net, embedded.EMBEDDED_ENV_ID, 3, seed=rec["seed"])
    assert first["seeds"] == [rec["seed"], rec["seed"] + 1, rec["seed"] + 2]
    assert first["returns"] == pytest.approx(rec["returns"][:3], abs=1e-3)
    assert episode_returns(net, embedded.EMBEDDED_ENV_ID, 3, seed=rec["seed"]) == first
