"""The hostile round's classes (docs/reliability.md): ini files, environment variables, locale, the plugin loaded
twice, long ids, large spaces, unusual paths. Each case ends as a user should see it: one line naming the option
as it was written, exit 4, no traceback, nothing written; or, where the input is fine, the session goes on.

Most end before any child, in process (the usage error comes before any input is read); the locale case needs its
own interpreter.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from harness.core.errors import HarnessError, SpaceError
from harness.search.rundir import RunDir
from harness.search.space import build_space
from harness.train.regimes import Regime
from tests.plugin.conftest import CLIENT, base_args

SMOKE_GUESS = "ERROR: --crossover-space: unknown search space 'SMOKE'; known: "
CUSTOM = ["--crossover-space=custom", "--crossover-modes=weighted"]

# (id, files written in the project, environment, arguments, the start of the one ERROR line)
ENDINGS = [
    ("ini-bool", {"tox.ini": "[pytest]\ncrossover_no_save = maybe\n"}, {}, [],
     "ERROR: crossover_no_save (ini): invalid truth value 'maybe'; write true or false, or remove it"),
    ("setup-cfg", {"setup.cfg": "[tool:pytest]\ncrossover_holdout = 2\n"}, {}, [],
     "ERROR: crossover_holdout (ini): holdout 2.0 is outside [0, 1)"),
    ("pyproject-list", {"pyproject.toml": "[tool.pytest.ini_options]\ncrossover_alphas = [0.5, 0.3]\n"}, {},
     CUSTOM, "ERROR: crossover_alphas (ini): '[0.5' is not a number"),
    ("addopts", {}, {"PYTEST_ADDOPTS": "--crossover-space=nosuch"}, [],
     "ERROR: --crossover-space: unknown search space 'nosuch'"),
    ("plugins-env-twice", {}, {"PYTEST_PLUGINS": "pytest_crossover.plugin"}, ["--crossover-space=SMOKE"],
     SMOKE_GUESS),
    ("plugin-p-twice", {}, {}, ["-p", "pytest_crossover.plugin", "--crossover-space=SMOKE"], SMOKE_GUESS),
    ("plugin-conftest-twice", {"conftest.py": "pytest_plugins = ['pytest_crossover.plugin']\n"}, {},
     ["--crossover-space=SMOKE"], SMOKE_GUESS),
    ("long-regime", {}, {}, [*CUSTOM, f"--crossover-define-regime={'q' * 300}:epochs=1,lr=1e-3",
                             f"--crossover-regimes={'q' * 300}"],
     f"ERROR: --crossover-define-regime: regime name '{'q' * 40}…' (300 characters) must be 1 to 64 ASCII"),
    ("slash-regime", {}, {}, [*CUSTOM, "--crossover-define-regime=a/b:epochs=1,lr=1e-3", "--crossover-regimes=a/b"],
     "ERROR: --crossover-define-regime: regime name 'a/b' (3 characters) must be 1 to 64 ASCII"),
    ("root-run-dir", {}, {}, ["--crossover-run-dir=/"],
     "ERROR: --crossover-run-dir: '/' is the file system's root (an unset variable before a '/'?)"),
    ("tilde-run-dir", {"pytest.ini": "[pytest]\ncrossover_run_dir = ~\n"}, {"HOME": "/"}, [],
     "ERROR: crossover_run_dir (ini): '/' is the file system's root"),
]


@pytest.mark.parametrize(("files", "env", "args", "line"), [c[1:] for c in ENDINGS], ids=[c[0] for c in ENDINGS])
def test_each_hostile_case_ends_in_one_line(pytester, search_files, monkeypatch, files, env, args, line):
    for name, text in files.items():
        pytester.path.joinpath(name).write_text(text)
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    pytester.makepyfile(test_search=CLIENT)
    given = " ".join([*args, *files.values(), *env.values()]).replace("_", "-")
    # The case's own setting rules: the base flag it also sets (in its args, ini or environment) is left out.
    base = [a for a in base_args(search_files) if a.split("=")[0].lstrip("-") not in given]
    result = pytester.runpytest_inprocess(*base, *args)
    out, err = result.stdout.str(), result.stderr.str()
    assert result.ret == pytest.ExitCode.USAGE_ERROR, out + err
    assert "Traceback" not in out + err and "INTERNALERROR" not in out + err
    errors = [ln for ln in err.splitlines() if ln.startswith("ERROR:")]
    assert len(errors) == 1 and errors[0].startswith(line), err
    assert not (pytester.path / "runs").exists()


def test_a_c_locale_reads_a_non_ascii_regime_name_and_refuses_it_in_one_line(pytester, search_files, monkeypatch):
    """LC_ALL=C without UTF-8 mode: the argument arrives with surrogate escapes; named, never a traceback."""
    for key, value in {"LC_ALL": "C", "LANG": "C", "PYTHONUTF8": "0", "PYTHONCOERCECLOCALE": "0"}.items():
        monkeypatch.setenv(key, value)
    pytester.makepyfile(test_search=CLIENT)
    result = pytester.runpytest_subprocess(*base_args(search_files), *CUSTOM, "--crossover-regimes=kısa",
                                           "--crossover-define-regime=kısa:epochs=1,lr=1e-3")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    err = result.stderr.str()
    assert "Traceback" not in err and "must be 1 to 64 ASCII letters, digits, _ or -; rename it" in err, err


def test_collect_only_on_a_space_of_1188_children_leaves_the_disk_as_it_was(pytester, search_files):
    alphas = ",".join(f"{a / 100:.2f}" for a in range(1, 100))
    pytester.makepyfile(test_search=CLIENT)
    result = pytester.runpytest_inprocess(*base_args(search_files), *CUSTOM[:1],
                                          "--crossover-modes=weighted,slerp,random", f"--crossover-alphas={alphas}",
                                          "--crossover-seeds=0,1,2,3", "--collect-only", "-q")
    assert result.ret == pytest.ExitCode.OK
    result.stdout.fnmatch_lines(["1188 tests collected*"])
    assert "test_child[1187_random_a0p99_s3_long]" in result.stdout.str()
    # Neither the run directory nor the history store (pytest-benchmark makes its own .benchmarks in any session).
    assert sorted(p.name for p in pytester.path.iterdir() if p.name != ".benchmarks") == ["test_search.py"]


def test_child_ids_are_checked_for_length_and_collisions_past_index_999():
    long = {"x" * 230: Regime(name="x" * 230, epochs=1, lr=1e-3)}  # a library-registered name, unchecked there
    with pytest.raises(SpaceError, match=r"child id '000_weighted_a0p30_sNone_x+…' is 255 bytes, more than the 200"):
        build_space("custom", modes=("weighted",), levels={"regime": tuple(long)}, extra_regimes=long)
    # alpha 0.301 reads a0p30 as 0.30 does; its children (index 1089 on) collide with those at 319 on.
    regimes = {f"r{i}": Regime(name=f"r{i}", epochs=1, lr=1e-3) for i in range(11)}
    alphas = (*(a / 100 for a in range(1, 100)), 0.301)
    with pytest.raises(SpaceError, match=r"give the same child id \(weighted_a0p30_sNone_r0\)"):
        build_space("custom", modes=("weighted",), grids={"alpha": alphas}, levels={"regime": tuple(regimes)},
                    extra_regimes=regimes)


@pytest.mark.parametrize(("make", "why"), [
    (lambda p: os.symlink(p.parent / "nowhere", p), "a symbolic link to '.*nowhere', which does not resolve"),
    (lambda p: os.symlink(p, p), "a symbolic link to '.*runs', which does not resolve"),  # a loop
    (lambda p: p.write_text("x"), "a file, not a directory"),
])
def test_a_run_dir_that_cannot_be_a_folder_says_why(tmp_path: Path, make, why):
    make(tmp_path / "runs")
    with pytest.raises(HarnessError, match=f"cannot write to '.*runs' \\({why}\\); pass a writable directory"):
        RunDir(tmp_path / "runs").acquire()


def test_a_run_dir_a_session_created_and_wrote_nothing_to_is_removed(tmp_path: Path):
    run_dir = RunDir(tmp_path / "a" / "b" / "runs")
    run_dir.acquire()
    run_dir.release()
    assert list(tmp_path.iterdir()) == []
    (tmp_path / "kept").mkdir()
    kept = RunDir(tmp_path / "kept")
    kept.acquire()
    kept.release()  # it existed before: left, with its lock file
    assert (tmp_path / "kept").is_dir()


def test_a_child_folder_holding_a_fifo_is_not_ours_and_is_never_read(tmp_path: Path):
    """A folder named like a child whose run_config.json is a FIFO: reading it would block for ever."""
    folder = tmp_path / "000_random_a0p50_s0_short"
    folder.mkdir()
    os.mkfifo(folder / "run_config.json")
    run_dir = RunDir(tmp_path)
    assert run_dir.ours("000_random_a0p50_s0_short") is False
    with pytest.raises(HarnessError, match="is not a child folder written by a crossover session"):
        run_dir.check_children(["000_random_a0p50_s0_short"])
