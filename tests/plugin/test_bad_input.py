"""Every bad input stops the session before any child: exit code 4, one line naming the value and the fix."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from harness.networks.qnetwork import QNetwork
from tests.plugin.conftest import CLIENT, base_args, make_parent


def _run(pytester: pytest.Pytester, files: dict[str, Path], *args: str, **overrides: str) -> pytest.RunResult:
    """A session in this process (a usage error ends it before any child), in a subprocess only under xdist."""
    pytester.makepyfile(test_search=CLIENT)
    given = tuple(f"--crossover-{k.replace('_', '-')}=" for k in overrides)
    argv = [a for a in base_args(files) if not a.startswith(given)]
    argv += [f"--crossover-{k.replace('_', '-')}={v}" for k, v in overrides.items()]
    if "-n" in args:
        return pytester.runpytest_subprocess(*argv, *args)
    return pytester.runpytest_inprocess(*argv, *args)


def _assert_usage_error(result: pytest.RunResult, *fragments: str) -> None:
    assert result.ret == pytest.ExitCode.USAGE_ERROR, result.stdout.str() + result.stderr.str()
    err = result.stderr.str()
    assert "Traceback" not in err
    line = next(line for line in err.splitlines() if line.startswith("ERROR:"))
    for fragment in fragments:
        assert fragment in line, (fragment, line)
    assert "PASSED" not in result.stdout.str() and "passed" not in result.stdout.str()


@pytest.mark.parametrize(
    ("args", "fragments"),
    [
        (["--crossover-space=minimall"], ["--crossover-space", "'minimall'", "did you mean 'minimal'"]),
        (["--crossover-space=custom", "--crossover-modes=random,blend"], ["'blend'", "random, layer, weighted"]),
        (["--crossover-space=custom", "--crossover-regimes=shrot"], ["'shrot'", "did you mean 'short'"]),
        (["--crossover-space=custom", "--crossover-alphas=0.5,1.5"], ["1.5", "[0, 1]"]),
        (["--crossover-max-runs=0"], ["--crossover-max-runs", "0", ">= 1"]),
        (["--crossover-max-runs=two"], ["--crossover-max-runs", "'two'"]),
        (["--crossover-modes=random"], ["--crossover-modes", "--crossover-space custom"]),
        (["--crossover-holdout=1.0"], ["--crossover-holdout", "1.0"]),
        (["--crossover-teacher=c"], ["--crossover-teacher", "'c'", "a, b, both"]),
        (["--crossover-space=custom", "--crossover-alphas=-0.1"], ["-0.1", "[0, 1]"]),
        (["--crossover-alphas=0.5"], ["--crossover-alphas", "--crossover-space custom"]),
        (["--crossover-seeds=1"], ["--crossover-seeds", "--crossover-space custom"]),
        (["--crossover-regimes=short"], ["--crossover-regimes", "--crossover-space custom"]),
        (["--crossover-define-regime=x:epochs=1,lr=1"], ["--crossover-define-regime", "--crossover-space custom"]),
        (["--crossover-space=custom", "--crossover-define-regime=epochs=1,lr=1"], ["no NAME: prefix"]),
        (["--crossover-space=custom", "--crossover-define-regime=x:epochs=1,lr=1,momentum=0.9"],
         ["'momentum=0.9'", "epochs=, lr="]),
        (["--crossover-space=custom", "--crossover-define-regime=x:epochs=1"], ["lacks lr"]),
        (["--crossover-space=custom", "--crossover-define-regime=x:epochs=1,lr=-1"], ["lr=-1.0", "0 < lr"]),
        (["--crossover-space=custom", "--crossover-define-regime=x:epochs=two,lr=1"], ["'two' is not a valid epochs"]),
        (["--crossover-space=custom", "--crossover-define-regime=short:epochs=1,lr=1"], ["'short' is a built-in"]),
        (["--crossover-space=custom", "--crossover-define-regime=fast:epochs=1,lr=1", "--crossover-regimes=fsat"],
         ["'fsat'", "did you mean 'fast'"]),
        (["--crossover-report=maybe"], ["--crossover-report", "'maybe' is neither on nor off"]),
        (["--crossover-space=custom", "--crossover-align=activatons"], ["--crossover-align", "'activatons'",
                                                                       "did you mean 'activations'"]),
        (["--crossover-align=weights"], ["--crossover-align", "--crossover-space custom"]),
        (["--crossover-space=custom", "--crossover-align=none,none"], ["--crossover-align", "'none' is given twice"]),
        (["--crossover-space=custom", "--crossover-teachers=both,balnced"], ["--crossover-teachers", "'balnced'",
                                                                            "did you mean 'balanced'"]),
        (["--crossover-space=custom", "--crossover-teachers=both", "--crossover-teacher=a"],
         ["--crossover-teacher:", "ignored with --crossover-teachers"]),
        (["--crossover-barrier=maybe"], ["--crossover-barrier", "'maybe'", "on, returns, off"]),
    ],
    ids=["space", "mode", "regime", "alpha", "max-runs-0", "max-runs-nan", "knob-without-custom", "holdout",
         "teacher", "alpha-negative", "alphas-without-custom", "seeds-without-custom", "regimes-without-custom",
         "define-without-custom", "define-no-name", "define-unknown-field", "define-no-lr", "define-bad-lr",
         "define-bad-int", "define-builtin", "defined-regime-typo", "report", "align", "align-without-custom",
         "align-twice", "teachers", "teacher-and-teachers", "barrier"],
)
def test_bad_option(pytester, search_files, args, fragments):
    _assert_usage_error(_run(pytester, search_files, *args), *fragments)


def _write(path: Path, obj: object) -> Path:
    torch.save(obj, path)
    return path


def test_missing_parent(pytester, search_files):
    _assert_usage_error(_run(pytester, search_files, parent_a="nope.pt"), "nope.pt")


def test_directory_as_parent(pytester, search_files):
    _assert_usage_error(_run(pytester, search_files, parent_a=str(search_files["dir"])), str(search_files["dir"]))


def test_truncated_checkpoint(pytester, search_files):
    bad = pytester.path / "trunc.pt"
    bad.write_bytes(search_files["parent_a"].read_bytes()[:100])
    _assert_usage_error(_run(pytester, search_files, parent_a=str(bad)), "trunc.pt")


def test_pickled_module_needs_opt_in(pytester, search_files):
    path = pytester.path / "full.pt"
    torch.save(QNetwork(8, 4, 16), path)
    _assert_usage_error(_run(pytester, search_files, parent_a=str(path)), "full.pt",
                        "--crossover-allow-unsafe-unpickle")


def test_pickled_module_runs_with_opt_in(pytester, search_files):
    path = pytester.path / "full.pt"
    module = QNetwork(8, 4, 16)
    module.load_state_dict(torch.load(search_files["parent_a"], weights_only=True))
    torch.save(module, path)
    pytester.makepyfile(test_search=CLIENT)
    argv = [a for a in base_args(search_files) if not a.startswith("--crossover-parent-a=")]
    result = pytester.runpytest_subprocess(*argv, f"--crossover-parent-a={path}", "--crossover-allow-unsafe-unpickle",
                                           "--crossover-space=smoke", "--crossover-max-runs=1")
    result.assert_outcomes(passed=1)


def test_parents_with_different_keys(pytester, search_files):
    sd = make_parent(3)
    sd["extra.weight"] = torch.zeros(2)
    path = _write(pytester.path / "keys.pt", sd)
    result = _run(pytester, search_files, parent_b=str(path))
    _assert_usage_error(result, "parents cannot be crossed", "same architecture")
    assert "only in B: 'extra.weight'" in result.stderr.str()


def test_parents_with_different_shapes(pytester, search_files):
    path = _write(pytester.path / "wide.pt", make_parent(3, hidden=32))
    result = _run(pytester, search_files, parent_b=str(path))
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    assert "network.0.weight" in result.stderr.str() and "(16, 8)" in result.stderr.str()


@pytest.mark.parametrize(
    ("name", "array", "fragment"),
    [
        ("states.txt", None, "states.txt"),
        ("objects.npy", np.array([{"a": 1}], dtype=object), "objects.npy"),
        ("flat.npy", np.zeros(8, np.float32), "flat.npy"),
        ("cube.npy", np.zeros((4, 8, 2), np.float32), "cube.npy"),
        ("narrow.npy", np.zeros((10, 5), np.float32), "narrow.npy"),
        ("empty.npy", np.zeros((0, 8), np.float32), "empty.npy"),
        ("nocols.npy", np.zeros((10, 0), np.float32), "nocols.npy"),
        ("ints.npy", np.zeros((10, 8), np.complex64), "ints.npy"),
        ("nan.npy", np.full((10, 8), np.nan, np.float32), "nan.npy"),
        ("inf.npy", np.full((10, 8), np.inf, np.float32), "inf.npy"),
    ],
    ids=["not-npy", "object", "1-d", "3-d", "width", "empty", "no-columns", "complex", "nan", "inf"],
)
def test_bad_states(pytester, search_files, name, array, fragment):
    path = pytester.path / name
    if array is None:
        path.write_text("1 2 3\n")
    elif array.dtype == object:
        np.save(path, array, allow_pickle=True)
    else:
        np.save(path, array)
    _assert_usage_error(_run(pytester, search_files, states=str(path)), fragment)


def test_holdout_leaving_no_finetune_states(pytester, search_files):
    path = pytester.path / "two.npy"
    np.save(path, np.arange(16, dtype=np.float32).reshape(2, 8))
    _assert_usage_error(_run(pytester, search_files, states=str(path), holdout="0.5"),
                        "leaves 1 fine-tune and 1 evaluation states")


def test_holdout_leaving_no_evaluation_states(pytester, search_files):
    path = pytester.path / "three.npy"
    np.save(path, np.arange(24, dtype=np.float32).reshape(3, 8))
    _assert_usage_error(_run(pytester, search_files, states=str(path), holdout="0.1"),
                        "leaves 3 fine-tune and 0 evaluation states")


def test_unwritable_run_dir(pytester, search_files):
    blocker = pytester.path / "file"
    blocker.write_text("not a directory")
    _assert_usage_error(_run(pytester, search_files, run_dir=str(blocker / "sub")), "--crossover-run-dir")


def test_unknown_environment(pytester, search_files):
    _assert_usage_error(_run(pytester, search_files, "--crossover-env=NoSuchEnv-v9", "--crossover-episodes=1"),
                        "NoSuchEnv-v9")


def test_environment_width_mismatch(pytester, search_files):
    _assert_usage_error(_run(pytester, search_files, "--crossover-env=CartPole-v1", "--crossover-episodes=1"),
                        "CartPole-v1")


def test_second_session_on_same_run_dir_is_refused(pytester, search_files):
    import fcntl

    run_dir = pytester.path / "runs"
    run_dir.mkdir()
    with open(run_dir / ".lock", "w") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        result = _run(pytester, search_files)
    _assert_usage_error(result, "in use by another crossover session")


@pytest.mark.parametrize("case", ["shapes", "truncated", "full-pickle", "nan-states"])
def test_under_xdist_the_controller_stops_bad_input_without_torch(pytester, search_files, case):
    """Under -n the controller checks from the checkpoints' index (torch-free) or, for what only torch.load can
    judge (a damaged file, a full pickle), with torch.load: the same one line either way, before any child."""
    if case == "shapes":
        override, fragments = {"parent_b": str(_write(pytester.path / "wide.pt", make_parent(3, hidden=32)))}, \
            ["parents cannot be crossed", "same architecture"]
    elif case == "truncated":
        bad = pytester.path / "trunc.pt"
        bad.write_bytes(search_files["parent_a"].read_bytes()[:100])
        override, fragments = {"parent_a": str(bad)}, ["trunc.pt", "is truncated or not a torch checkpoint"]
    elif case == "full-pickle":
        path = pytester.path / "full.pt"
        torch.save(QNetwork(8, 4, 16), path)
        override, fragments = {"parent_a": str(path)}, ["full.pt", "--crossover-allow-unsafe-unpickle"]
    else:
        states = np.zeros((50, 8), np.float32)
        states[7, 3] = np.nan
        np.save(pytester.path / "nan.npy", states)
        override, fragments = {"states": str(pytester.path / "nan.npy")}, ["nan.npy", "NaN or inf value in row 7"]
    result = _run(pytester, search_files, "-n", "2", **override)
    _assert_usage_error(result, *fragments)
    if case == "shapes":  # every mismatch listed under the line, as in a serial session
        assert "'network.0.weight': A=(16, 8), B=(32, 8)" in result.stderr.str()
