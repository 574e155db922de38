"""Hostile but realistic input, one class per test: each ends in one line naming the option as the user wrote it,
exit code 4, no traceback, before any child, nothing written; or, where the input is fine after all, it runs."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import torch

from harness.networks.qnetwork import QNetwork
from tests.plugin.conftest import CLIENT, base_args, make_parent, read_json


def _argv(files: dict[str, Path], *args: str) -> list[str]:
    names = {a.split("=", 1)[0] for a in args if a.startswith("--crossover-")}
    return [*(a for a in base_args(files) if a.split("=", 1)[0] not in names), "--crossover-space=smoke",
            "--crossover-max-runs=1", *args]


def _error(pytester: pytest.Pytester, files: dict[str, Path], *args: str, subprocess_: bool = False) -> str:
    """Run a session that must stop before any child; its one ERROR line."""
    pytester.makepyfile(test_search=CLIENT)
    run = pytester.runpytest_subprocess if subprocess_ else pytester.runpytest_inprocess
    result = run(*_argv(files, *args), timeout=60) if subprocess_ else run(*_argv(files, *args))
    err = result.stderr.str()
    assert result.ret == pytest.ExitCode.USAGE_ERROR, result.stdout.str() + err
    assert "Traceback" not in err and "INTERNALERROR" not in result.stdout.str() + err
    lines = [ln for ln in err.splitlines() if ln.startswith("ERROR:")]
    assert len(lines) == 1, err
    assert not (pytester.path / "runs" / "manifest.json").exists()  # nothing written
    return lines[0]


def _save(path: Path, sd: dict[str, torch.Tensor]) -> str:
    torch.save(sd, path)
    return str(path)


# -- flags that would switch the gate off ---------------------------------------------------------------------
def test_benchmark_skip_still_runs_every_child_and_its_gate(pytester, search_files):
    pytester.makepyfile(test_search=CLIENT)
    result = pytester.runpytest_inprocess(*_argv(search_files, "--crossover-max-runs=2",
                                                 "--crossover-degenerate-threshold=bound:0.99"), "--benchmark-skip")
    result.assert_outcomes(failed=2)  # both children ran, and the gate failed them
    manifest = read_json(pytester.path / "runs" / "manifest.json")
    assert manifest["latency_mode"].startswith("harness.evaluate.timing in the test")


def test_benchmark_only_is_refused_rather_than_skipping_the_search(pytester, search_files):
    line = _error(pytester, search_files, "--benchmark-only")
    assert line.startswith("ERROR: --benchmark-only: it would skip every crossover child")


# -- empty and special paths ----------------------------------------------------------------------------------
@pytest.mark.parametrize("option", ["run-dir", "parent-a", "states", "eval-states"])
def test_an_empty_path_is_named_not_taken_for_the_current_directory(pytester, search_files, option):
    extra = ["--crossover-parent-b=" + str(search_files["parent_b"])] if option == "parent-a" else []
    line = _error(pytester, search_files, f"--crossover-{option}=", *extra)
    assert line.startswith(f"ERROR: --crossover-{option}: '' is an empty path")
    assert not (pytester.path / ".lock").exists() and not list(pytester.path.glob("0*"))


@pytest.mark.parametrize("workers", [0, 2])
@pytest.mark.parametrize("role", ["states", "parent-a"])
def test_a_fifo_is_refused_instead_of_hanging(pytester, search_files, role, workers):
    fifo = pytester.path / ("fifo.npy" if role == "states" else "fifo.pt")
    os.mkfifo(fifo)
    line = _error(pytester, search_files, f"--crossover-{role}={fifo}", *(["-n", "2"] if workers else []),
                  subprocess_=bool(workers))
    assert line.startswith(f"ERROR: --crossover-{role}: ")
    assert "is not a regular file (a pipe, socket or device)" in line


# -- structurally wrong parents ---------------------------------------------------------------------------------
@pytest.mark.parametrize(("change", "fragment"), [
    (lambda sd: {**sd, "extra.weight": torch.zeros(2)}, "unexpected extra.weight"),
    (lambda sd: {**sd, "network.1.weight": torch.ones(15)}, "network.1.weight has shape (15,), expected (16,)"),
    (lambda sd: {k: v for k, v in sd.items() if k != "network.5.bias"}, "missing network.5.bias"),
])
@pytest.mark.parametrize("workers", [0, 2])
def test_parents_that_do_not_fit_the_layout_are_refused_up_front(pytester, search_files, change, fragment, workers):
    a, b = (_save(pytester.path / f"{n}.pt", change(make_parent(s))) for n, s in (("a", 1), ("b", 2)))
    line = _error(pytester, search_files, f"--crossover-parent-a={a}", f"--crossover-parent-b={b}",
                  *(["-n", "2"] if workers else []), subprocess_=bool(workers))
    assert line.startswith("ERROR: --crossover-parent-a: state dict does not fit the Q-network layout 8-16-16-4")
    assert fragment in line


def test_parents_with_three_hidden_layers_run(pytester, search_files):
    def deep(seed: int) -> dict[str, torch.Tensor]:
        g = torch.Generator().manual_seed(seed)
        return {k: torch.randn(v.shape, generator=g) * 0.5 if v.dim() == 2 else v.clone()
                for k, v in QNetwork(8, 4, hidden=(16, 12, 16)).state_dict().items()}

    a, b = _save(pytester.path / "a.pt", deep(1)), _save(pytester.path / "b.pt", deep(2))
    pytester.makepyfile(test_search=CLIENT)
    result = pytester.runpytest_inprocess(*_argv(search_files, f"--crossover-parent-a={a}",
                                                 f"--crossover-parent-b={b}", "--crossover-space=minimal-qat",
                                                 "--crossover-max-runs=6"))
    result.assert_outcomes(passed=6)
    children = read_json(pytester.path / "runs" / "manifest.json")["children"]
    assert all(c["status"] == "ok" for c in children)
    config = read_json(pytester.path / "runs" / children[1]["child_id"] / "run_config.json")
    assert config["architecture"]["hidden"] == [16, 12, 16]


# -- numbers that cannot work ---------------------------------------------------------------------------------
@pytest.mark.parametrize("workers", [0, 2])
@pytest.mark.parametrize(("case", "fragment"), [
    ("nan", "parent B's network.4.weight holds 1 NaN or inf value(s)"),
    ("huge", "parent B's Q-values are not finite on states row 0"),
    ("states", "parent A's Q-values are not finite on states row 0 (its largest |value| is"),
])
def test_non_finite_and_overflowing_numbers_are_refused_up_front(pytester, search_files, case, fragment, workers):
    args = []
    if case in ("nan", "huge"):
        sd = make_parent(2)
        sd = {k: v * 1e30 for k, v in sd.items()} if case == "huge" else sd
        if case == "nan":
            sd["network.4.weight"][3, 3] = float("nan")
        args = [f"--crossover-parent-b={_save(pytester.path / 'b.pt', sd)}"]
    else:
        path = pytester.path / "big.npy"
        big = np.full((50, 8), 3e37, np.float32)
        big[:, 0] += np.arange(50, dtype=np.float32) * 1e33  # distinct rows (one repeated state is refused first)
        np.save(path, big)
        args = [f"--crossover-states={path}"]
    line = _error(pytester, search_files, *args, *(["-n", "2"] if workers else []), subprocess_=bool(workers))
    assert fragment in line and line.startswith("ERROR: --crossover-")


# -- crafted or corrupt files -----------------------------------------------------------------------------------
@pytest.mark.parametrize("header", [b"{'descr': '<f4', 'fortran_order': False, 'shape': (-3, 8), }",
                                    b"{'descr': '<f4', 'fortran_order': False, 'shape': (3, 8), 'x': ((( }"])
def test_a_crafted_npy_header_is_one_line_not_an_internal_error(pytester, search_files, header):
    body = header.ljust(118) + b"\n"
    path = pytester.path / "crafted.npy"
    path.write_bytes(b"\x93NUMPY\x01\x00" + len(body).to_bytes(2, "little") + body + b"\x00" * 96)
    line = _error(pytester, search_files, f"--crossover-states={path}")
    assert line.startswith("ERROR: --crossover-states: states file") and "crafted.npy" in line


# -- checks that must come first ------------------------------------------------------------------------------
def test_an_unwritable_history_store_is_found_before_any_child(pytester, search_files):
    blocker = pytester.path / "file"
    blocker.write_text("not a folder")
    line = _error(pytester, search_files, f"--crossover-storage={blocker / 'store'}")
    assert line.startswith("ERROR: --crossover-storage: cannot write to")


@pytest.mark.parametrize(("args", "start", "fragment"), [
    (["--crossover-space=custom", "--crossover-seeds=-1"], "--crossover-seeds", "must be in [0, inf], got -1"),
    (["--crossover-space=custom", "--crossover-define-regime=x:epochs=1,lr=1e-3,seed=-5",
      "--crossover-regimes=x"], "--crossover-define-regime", "seed=-5"),
])
def test_negative_seeds_are_refused_at_parse_time(pytester, search_files, args, start, fragment):
    line = _error(pytester, search_files, *args)
    assert line.startswith(f"ERROR: {start}: ") and fragment in line


# -- options that would be ignored or could never fire ------------------------------------------------------------
@pytest.mark.parametrize(("args", "start", "fragment"), [
    (["--crossover-episodes=5"], "--crossover-episodes", "need an environment for your parents"),
    (["--crossover-env=CartPole-v1", "--crossover-episodes=0"], "--crossover-env", "is never stepped"),
    (["--crossover-holdout=0", "--crossover-split-seed=3"], "--crossover-split-seed", "is ignored without a holdout"),
    (["--crossover-space=custom", "--crossover-alphas=0.5,0.5"], "--crossover-alphas", "alpha 0.5 is given twice"),
    (["--crossover-space=custom", "--crossover-modes=weighted", "--crossover-alphas=0.301,0.299"],
     "--crossover-alphas", "give the same child id (weighted_a0p30_sNone_short)"),
    (["--crossover-compare-fail=primary:1.5"], "--crossover-compare-fail", "'primary:1.5' can never fire"),
    (["--crossover-compare-fail=primary:100%"], "--crossover-compare-fail", "can never fire"),
])
def test_options_that_would_do_nothing_are_errors(pytester, search_files, args, start, fragment):
    line = _error(pytester, search_files, *args)
    assert line.startswith(f"ERROR: {start}: ") and fragment in line


def test_allow_unsafe_unpickle_with_the_embedded_parents_is_an_error(pytester):
    pytester.makepyfile(test_search=CLIENT)
    result = pytester.runpytest_inprocess("--crossover-allow-unsafe-unpickle", "--crossover-space=smoke")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["ERROR: --crossover-allow-unsafe-unpickle: is ignored with the embedded parents*"])


def test_ini_errors_name_the_ini_key_and_ini_paths_are_relative_to_the_ini_file(pytester, search_files):
    sub = pytester.mkdir("sub")
    np.save(sub / "mine.npy", np.load(search_files["states"]))
    (sub / "pytest.ini").write_text("[pytest]\ncrossover_holdout = 1.5\n")
    (sub / "test_search.py").write_text(CLIENT)
    argv = [a for a in base_args(search_files) if not a.startswith("--crossover-states")]
    bad = pytester.runpytest_inprocess(*argv, "-c", str(sub / "pytest.ini"), str(sub))
    assert bad.ret == pytest.ExitCode.USAGE_ERROR
    bad.stderr.fnmatch_lines(["ERROR: crossover_holdout (ini): holdout 1.5 is outside ?0, 1)*"])
    (sub / "pytest.ini").write_text("[pytest]\ncrossover_states = mine.npy\ncrossover_space = smoke\n"
                                    "crossover_max_runs = 1\n")
    good = pytester.runpytest_inprocess(*argv, "-c", str(sub / "pytest.ini"), str(sub))
    good.assert_outcomes(passed=1)  # found next to the ini file, although the session runs elsewhere
    manifest = read_json(pytester.path / "runs" / "manifest.json")
    assert manifest["provenance"]["states_file"]["path"] == str(sub / "mine.npy")
