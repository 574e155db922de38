"""Generations (python -m harness.evolve): children as the next parents, scored against the founders, with lineage.

One evolution of two generations (serial), stopped by Ctrl-C in generation 2 and resumed, is shared by the tests;
a second, uninterrupted one runs its sessions with ``-n 2``: resume and workers must both give the same file.
"""

from __future__ import annotations

import dataclasses
import json
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import torch

from harness.core.errors import HarnessError
from harness.evolve.driver import LINEAGE, EvolveConfig, evolve, run_pytest
from harness.evolve.ranking import SELECTIONS, candidates
from harness.inputs import lineage
from harness.inputs.load import load_inputs
from harness.search.child import Context
from harness.search.rundir import load_child
from tests.plugin.conftest import CLIENT, base_args, read_json

pytestmark = pytest.mark.slow


def _args(files: dict[str, Path]) -> tuple[str, ...]:
    return (f"--crossover-states={files['states']}", "--crossover-episodes=0", "--crossover-report=off",
            "--crossover-controls=off", "--crossover-barrier=off", "--crossover-workers=asked", "-p",
            "no:cacheprovider", "-p", "no:randomly")


def _config(files: dict[str, Path], out: Path, *extra: str) -> EvolveConfig:
    return EvolveConfig(out=str(out), generations=2, space="smoke", select="top2", founder_a=str(files["parent_a"]),
                        founder_b=str(files["parent_b"]), pytest_args=(*_args(files), *extra))


def _interrupt_in_generation_2(command: list[str], log: Path) -> int:
    """Generation 1 as usual; generation 2 gets Ctrl-C (SIGINT) once its session holds its run folder."""
    run_dir = Path(next(a.split("=", 1)[1] for a in command if a.startswith("--crossover-run-dir=")))
    if run_dir.name == "gen_001":
        return run_pytest(command, log)
    with log.open("w") as fh:
        proc = subprocess.Popen(command, stdout=fh, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 60
        while not (run_dir / ".lock").exists() and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.01)
        proc.send_signal(signal.SIGINT)
        proc.wait(60)
    raise KeyboardInterrupt


@pytest.fixture(scope="module")
def evolved(search_files: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    out = tmp_path_factory.mktemp("evolution")
    cfg = _config(search_files, out)
    with pytest.raises(KeyboardInterrupt):
        evolve(cfg, runner=_interrupt_in_generation_2, progress=lambda _: None)
    interrupted = read_json(out / LINEAGE)
    partial = out / "gen_002" / "manifest.json"  # Ctrl-C left generation 2 unfinished
    assert not partial.exists() or not read_json(partial)["complete"]
    calls: list[list[str]] = []

    def counting(command: list[str], log: Path) -> int:
        calls.append(command)
        return run_pytest(command, log)

    state = evolve(cfg, runner=counting, progress=lambda _: None)
    return {"out": out, "state": state, "interrupted": interrupted, "resumed_runs": calls}


def test_resume_runs_only_the_unfinished_generation(evolved: dict[str, Any]) -> None:
    assert [g["generation"] for g in evolved["interrupted"]["generations"]] == [1]
    assert len(evolved["resumed_runs"]) == 1 and "--crossover-run-dir=" + str(evolved["out"] / "gen_002") in \
        evolved["resumed_runs"][0]
    assert [g["generation"] for g in evolved["state"]["generations"]] == [1, 2]
    assert evolved["state"]["generations"][0] == evolved["interrupted"]["generations"][0]


def test_resumed_equals_uninterrupted_under_workers(evolved: dict[str, Any], search_files: dict[str, Path],
                                                    tmp_path: Path) -> None:
    """Generation 2 run uninterrupted, as one session on 2 xdist workers with gen-1 children as its parents: an
    evolution that finds it (and generation 1) complete reads both and writes the resumed evolution's lineage.json
    byte for byte (paths inside the folder are relative), runs nothing."""
    out = evolved["out"]
    shutil.copytree(out / "gen_001", tmp_path / "gen_001")
    gen1 = evolved["state"]["generations"][0]
    parents = [f"--crossover-parent-{s}={tmp_path / gen1['next_parents'][s]}" for s in lineage.SLOTS]
    cfg = _config(search_files, tmp_path)
    command = [sys.executable, "-m", "pytest", str(out / "crossover_generation.py"), "--crossover-space=smoke",
               f"--crossover-run-dir={tmp_path / 'gen_002'}", "--crossover-replicates=1", *parents,
               *cfg.pytest_args, "-n", "2"]
    assert run_pytest(command, tmp_path / "gen_002.log") == 0, (tmp_path / "gen_002.log").read_text()
    ran: list[list[str]] = []
    evolve(cfg, runner=lambda c, log: ran.append(c) or 0, progress=lambda _: None)
    assert ran == []
    assert (tmp_path / LINEAGE).read_bytes() == (out / LINEAGE).read_bytes()
    assert evolved["state"]["generations"][1]["best"]["primary"] > 0.5


def test_lineage_hashes_match_the_files(evolved: dict[str, Any]) -> None:
    out, gen1, gen2 = evolved["out"], *evolved["state"]["generations"]
    tree = gen2["lineage"]
    for slot in lineage.SLOTS:
        node = tree[f"parent_{slot}"]
        assert node["kind"] == "child" and node["path"] == f"{gen1['next_parents'][slot]}/child.pt"
        assert node["regime"] == "short" and node["teacher"] == "a" and node["seed"] == 42
        assert node["recipe"]["mode"] in ("random", "layer", "weighted")
        assert {p["kind"] for p in node["parents"].values()} == {"file"}
        assert lineage.verify(node, base=out) == []
        assert [sha for _, sha in lineage.files(node)[1:]] == [evolved["state"]["founders"][f"parent_{s}"]["sha256"]
                                                             for s in lineage.SLOTS]
    tampered = json.loads(json.dumps(tree["parent_a"]))
    tampered["parents"]["parent_b"]["sha256"] = "0" * 64
    assert lineage.verify(tampered, base=out) == [tampered["parents"]["parent_b"]["path"]]


def test_every_generation_is_scored_against_the_founders(evolved: dict[str, Any]) -> None:
    out, gen1, gen2 = evolved["out"], *evolved["state"]["generations"]
    m2 = read_json(out / "gen_002" / "manifest.json")
    founders = evolved["state"]["founders"]
    assert {s: m2["provenance"]["reference"][f"reference_{s}"]["sha256"] for s in lineage.SLOTS} == \
        {s: founders[f"parent_{s}"]["sha256"] for s in lineage.SLOTS}
    assert m2["provenance"]["reference"]["source"] == "founders"
    assert f"Reference (founders): they agree on {gen1['agree_ab']:.4f}" in \
        (out / "gen_002" / "recommendation.txt").read_text()
    assert gen2["agree_ab"] == gen1["agree_ab"] and gen2["bound"] == gen1["bound"]
    # The held-out episodes are the same rows in every generation: a child never trains on them.
    m1 = read_json(out / "gen_001" / "manifest.json")
    assert m1["split"]["held_out_rows"] == m2["split"]["held_out_rows"] and gen1["split"] == gen2["split"]
    assert (m2["split"]["n_eval"], m2["split"]["n_finetune"]) == (60, 240)
    # The baseline rows are the founders', and the leaderboard says so rather than call them this run's parents.
    board = (out / "gen_002" / "leaderboard.md").read_text()
    assert "the baseline rows parent_a and parent_b are the reference's" in board
    assert "gen_001/" in board.split("this session's parents (")[1]
    assert "reference" not in (out / "gen_001" / "leaderboard.md").read_text()
    vs = gen2["vs_previous"]
    assert vs["lo"] <= vs["gap"] <= vs["hi"]


def test_the_reference_moves_the_scoring_not_the_teachers(evolved: dict[str, Any],
                                                          search_files: dict[str, Path]) -> None:
    """In the library: two gen-1 children as parents score against the founders; their teachers stay themselves."""
    out, gen1 = evolved["out"], evolved["state"]["generations"][0]
    a, b = (str(out / gen1["next_parents"][s]) for s in lineage.SLOTS)
    inputs = load_inputs(a, b, search_files["states"], episodes=0)
    assert inputs.ref_a is not None and inputs.ref_b is not None
    assert inputs.provenance["lineage"]["parent_a"]["child_id"] == Path(a).name
    ctx = Context.build(inputs.sd_a, inputs.sd_b, inputs.buffer, reference=(inputs.ref_a, inputs.ref_b))
    moment = Context.build(inputs.sd_a, inputs.sd_b, inputs.buffer)
    assert ctx.agree_ab == pytest.approx(gen1["agree_ab"], abs=1e-12)
    assert moment.agree_ab != ctx.agree_ab
    assert torch.equal(ctx.probs_a, moment.probs_a) and torch.equal(ctx.probs_b, moment.probs_b)
    # Parent A (top2: the best gen-1 child) scores in this context exactly as its own session scored it.
    assert Path(a).name == gen1["best"]["child"]
    assert ctx.evaluate(load_child(Path(a)))["primary"] == pytest.approx(gen1["best"]["primary"], abs=1e-12)


def test_children_as_parents_play_the_environment_their_runs_played(tmp_path: Path) -> None:
    from harness.inputs.load import _sources

    folders = []
    for name, env in (("x", "LunarLander-v3"), ("y", "LunarLander-v3"), ("z", "CartPole-v1")):
        (tmp_path / name).mkdir()
        (tmp_path / name / "child.pt").write_bytes(b"")
        (tmp_path / name / "run_config.json").write_text(json.dumps({"child_id": name, "env_id": env}))
        folders.append(tmp_path / name)
    x, y, z = folders
    assert _sources(x, y, None, None, None, None).env_id == "LunarLander-v3"
    assert _sources(x, y, None, None, None, None).episodes > 0
    assert _sources(x, z, None, None, None, None).env_id is None  # they disagree: nothing is guessed
    assert _sources(x, y, None, None, "Acrobot-v1", 3).env_id == "Acrobot-v1"  # what the user says wins


def test_int8_child_is_refused_as_a_parent(tmp_path: Path) -> None:
    folder = tmp_path / "000_random_a0p50_s0_short_qat"
    folder.mkdir()
    (folder / "run_config.json").write_text(json.dumps({"child_id": folder.name}))
    (folder / "eval.json").write_text(json.dumps({"ranked_model": "int8"}))
    with pytest.raises(HarnessError, match="int8 .QAT. child") as err:
        load_inputs(folder, folder)
    assert err.value.field == "parent_a" and "\n" not in str(err.value)


def test_the_picture(evolved: dict[str, Any]) -> None:
    pytest.importorskip("matplotlib")
    from harness.pictures.evolution import draw_evolution

    path = draw_evolution(evolved["state"], evolved["out"])
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and path.stat().st_size > 10_000


def test_a_given_reference_is_recorded_and_half_a_reference_is_refused(evolved: dict[str, Any],
                                                                       search_files: dict[str, Path],
                                                                       pytester: pytest.Pytester) -> None:
    child = evolved["out"] / evolved["state"]["generations"][0]["next_parents"]["a"]
    inputs = load_inputs(search_files["parent_a"], search_files["parent_b"], search_files["states"], episodes=0,
                         reference_a=child, reference_b=search_files["parent_b"])
    ref = inputs.provenance["reference"]
    assert ref["source"] == "given" and ref["reference_a"]["path"] == str(child / "child.pt")
    assert ref["reference_a"]["sha256"] == lineage.files(lineage.node(child, ref["reference_a"]["sha256"]))[0][1]
    assert inputs.provenance["lineage"]["parent_a"]["kind"] == "file"
    with pytest.raises(HarnessError) as err:
        load_inputs(reference_a=child)
    assert err.value.field == "reference_b"
    pytester.makepyfile(test_search=CLIENT)
    result = pytester.runpytest_inprocess(*base_args(search_files), f"--crossover-reference-a={child}")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["ERROR: --crossover-reference-a: goes with --crossover-reference-b; give both or "
                                 "neither*"])


def test_selection_and_early_stop(evolved: dict[str, Any], search_files: dict[str, Path]) -> None:
    out, state = evolved["out"], evolved["state"]
    gen1, gen2 = state["generations"]
    m1 = read_json(out / "gen_001" / "manifest.json")
    ranked = candidates(m1)
    assert [r["recipe"] for r in ranked] == [r["recipe"] for r in gen1["recipes"]]
    assert ranked[0]["primary"] >= ranked[1]["primary"] >= ranked[-1]["primary"]
    founders = (str(search_files["parent_a"]), str(search_files["parent_b"]))
    assert SELECTIONS["best+founder"](ranked, out / "gen_001", founders) == (str(out / gen1["next_parents"]["a"]),
                                                                             founders[1])
    with pytest.raises(HarnessError, match="top2 needs two"):
        SELECTIONS["top2"](ranked[:1], out / "gen_001", founders)
    # Stopped early exactly when generation 2's gain over generation 1 has an interval reaching 0.
    assert (state["stopped"] is not None) == (gen2["vs_previous"]["lo"] <= 0)
    if state["stopped"]:  # asking for more generations of a stopped evolution runs nothing ...
        ran: list[list[str]] = []
        more = dataclasses.replace(_config(search_files, out), generations=3)
        assert evolve(more, runner=lambda c, log: ran.append(c) or 0, progress=lambda _: None) == state
        assert ran == []
