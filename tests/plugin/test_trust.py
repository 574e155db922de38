"""What makes the answer trustworthy, end to end: the deployed model loads back as ranked, whole episodes are held
out (or a separate evaluation buffer scores), the split is recorded and seeded, and bad episode data stops the
session in one line."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

import harness
from harness.evaluate.vs_parents import evaluate_model, predict
from harness.networks.family import network_from_state_dict
from tests.plugin.conftest import base_args, read_json
from tests.plugin.conftest import run_search_inprocess as run_search

CLIENT = "def test_child(crossover_child):\n    crossover_child.run()\n"


def _episodes(files: dict[str, Path], name: str = "ep.npz", **override: np.ndarray) -> Path:
    states = np.load(files["states"])
    arrays = {"states": states, "episode": np.repeat(np.arange(50), 6), **override}
    path = files["dir"] / name
    np.savez(path, **arrays)
    return path


def test_load_child_returns_the_model_the_leaderboard_ranked(pytester, search_files):
    result = run_search(pytester, search_files, "--crossover-space=minimal-qat", "--crossover-max-runs=2")
    result.assert_outcomes(passed=2)
    run_dir = pytester.path / "runs"
    manifest = read_json(run_dir / "manifest.json")
    a, b = (network_from_state_dict(torch.load(search_files[p], weights_only=True)) for p in ("parent_a", "parent_b"))
    states = np.load(search_files["states"])
    eval_states = states[np.array(manifest["split"]["held_out_rows"])]
    la, lb = predict(a, eval_states), predict(b, eval_states)
    agree_ab = float((la.argmax(1) == lb.argmax(1)).double().mean())
    for child in manifest["children"]:
        model = harness.load_child(run_dir / child["child_id"])
        assert not model.training
        assert type(model.network[0]).__name__ == ("Int8Linear" if child["ranked_model"] == "int8" else "Linear")
        assert evaluate_model(model, eval_states, la, lb, agree_ab)["primary"] == child["primary"]
    assert [c["ranked_model"] for c in manifest["children"]] == ["float", "int8"]


def test_whole_episodes_are_held_out_and_the_split_is_recorded(pytester, search_files):
    path = _episodes(search_files)
    result = run_search(pytester, search_files, "--crossover-space=smoke", "--crossover-max-runs=1",
                        f"--crossover-states={path}", "--crossover-split-seed=3")
    result.assert_outcomes(passed=1)
    split = read_json(pytester.path / "runs" / "manifest.json")["split"]
    assert split["method"] == "episodes" and split["seed"] == 3 and len(split["held_out_episodes"]) == 10
    assert split["n_eval"] == 60 and split["eval_units"] == 10
    assert split["eval_groups"] == [[e, 6] for e in split["held_out_episodes"]]
    again = run_search(pytester, search_files, "--crossover-space=smoke", "--crossover-max-runs=1",
                       f"--crossover-states={path}", "--crossover-split-seed=4", "--crossover-run-dir=r2")
    again.assert_outcomes(passed=1)
    assert read_json(pytester.path / "r2" / "manifest.json")["split"]["held_out_episodes"] != \
        split["held_out_episodes"]


def test_a_separate_evaluation_buffer_scores_and_every_state_fine_tunes(pytester, search_files):
    eval_path = search_files["dir"] / "eval.npy"
    np.save(eval_path, np.random.default_rng(9).standard_normal((40, 8)).astype(np.float32))
    result = run_search(pytester, search_files, "--crossover-space=smoke", "--crossover-max-runs=1",
                        f"--crossover-eval-states={eval_path}")
    result.assert_outcomes(passed=1)
    manifest = read_json(pytester.path / "runs" / "manifest.json")
    assert manifest["split"]["method"] == "eval-file" and manifest["split"]["n_eval"] == 40
    assert manifest["split"]["n_finetune"] == 300
    assert manifest["provenance"]["eval_states_file"]["shape"] == [40, 8]


def _usage_error(pytester: pytest.Pytester, files: dict[str, Path], *args: str) -> str:
    pytester.makepyfile(test_search=CLIENT)
    result = pytester.runpytest_inprocess(*base_args(files), "--crossover-space=smoke", *args)
    assert result.ret == pytest.ExitCode.USAGE_ERROR, result.stdout.str()
    (line,) = [ln for ln in result.stderr.str().splitlines() if ln.startswith("ERROR:")]
    assert "Traceback" not in result.stderr.str()
    return line


@pytest.mark.parametrize(("make", "fragment"), [
    (lambda f: _episodes(f, "short.npz", episode=np.arange(299)), "has 299 episode ids for 300 states"),
    (lambda f: _episodes(f, "float.npz", episode=np.arange(300) / 2), "episode ids of dtype float64"),
    (lambda f: _episodes(f, "one.npz", episode=np.zeros(300, np.int64)), "holds one episode only"),
    (lambda f: _episodes(f, "typo.npz", episodes=np.arange(300)), "holds 'states', 'episode', 'episodes'"),
])
def test_bad_episode_data_is_one_line(pytester, search_files, make, fragment):
    line = _usage_error(pytester, search_files, f"--crossover-states={make(search_files)}")
    assert line.startswith("ERROR: --crossover-states: ") and fragment in line


def test_a_wrong_evaluation_buffer_and_an_ignored_holdout_are_one_line(pytester, search_files):
    narrow = search_files["dir"] / "narrow.npy"
    np.save(narrow, np.zeros((5, 3), np.float32))
    line = _usage_error(pytester, search_files, f"--crossover-eval-states={narrow}")
    assert line.startswith("ERROR: --crossover-eval-states: evaluation states file") and "has 3 columns" in line
    line = _usage_error(pytester, search_files, f"--crossover-eval-states={narrow}", "--crossover-holdout=0.3")
    assert line.startswith("ERROR: --crossover-holdout: is ignored with --crossover-eval-states")
