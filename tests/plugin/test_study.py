"""``--crossover-search optuna``: real sessions on a real study, interrupted, resumed, and two at once on PostgreSQL.

Each assertion compares what the sessions' run directories journaled (every child that finished) with what the
study holds: a finished child is a complete trial exactly once, a trial whose child never finished is failed and
never complete, none is lost and none told twice.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.plugin.conftest import base_args

optuna = pytest.importorskip("optuna")

# Holds a child (mid-trial) once the run directory has journaled CROSSOVER_TEST_HOLD children, so the test can
# interrupt or kill the session while a trial runs.
CLIENT = """
import os
import time
from pathlib import Path


def test_child(crossover_child):
    release = os.environ.get("CROSSOVER_TEST_WAIT_FOR")
    deadline = time.monotonic() + 60
    while release and not os.path.exists(release) and time.monotonic() < deadline:
        time.sleep(0.02)
    crossover_child.run()
    mark = os.environ.get("CROSSOVER_TEST_WORKER_MARK")
    if mark and hasattr(crossover_child.session.config, "workerinput"):
        import sys
        Path(mark).write_text("optuna imported" if "optuna" in sys.modules else "no optuna")
    hold = int(os.environ.get("CROSSOVER_TEST_HOLD", "0"))
    journal = Path(crossover_child.session.options.run_dir) / "children.jsonl"
    if hold and journal.is_file() and len(journal.read_text().splitlines()) >= hold:
        time.sleep(60)
"""
STUDY = ["--crossover-search=optuna", "--crossover-space=custom", "--crossover-regimes=short",
         "--crossover-confirm=off", "--crossover-no-save"]


def _args(files: dict[str, Path], run_dir: Path, storage: str, *extra: str) -> list[str]:
    return [sys.executable, "-m", "pytest", "-q", "test_search.py", *base_args(files, run_dir), *STUDY,
            f"--crossover-study={storage}", f"--crossover-storage={run_dir.parent / 'history'}", *extra]


def _start(cwd: Path, args: list[str], hold: int = 0, **env: str) -> subprocess.Popen[str]:
    return subprocess.Popen(args, cwd=cwd, env={**os.environ, "CROSSOVER_TEST_HOLD": str(hold), **env},
                            start_new_session=True, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def _journal(run_dir: Path) -> list[dict[str, Any]]:
    path = run_dir / "children.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()] if path.is_file() else []


def _stop_mid_trial(proc: subprocess.Popen[str], run_dir: Path, finished: int, sig: int) -> str:
    """Wait until ``finished`` children are journaled (the next one then holds), and signal the whole session."""
    deadline = time.monotonic() + 60
    while proc.poll() is None and len(_journal(run_dir)) < finished and time.monotonic() < deadline:
        time.sleep(0.02)
    assert proc.poll() is None, "the session ended before it could be interrupted"
    time.sleep(0.2)
    os.killpg(proc.pid, sig)
    out, _ = proc.communicate(timeout=60)
    return out


def _study(storage: Any) -> Any:
    return optuna.load_study(study_name=optuna.get_all_study_names(storage)[0], storage=storage)


def _check(study: Any, finished: list[dict[str, Any]]) -> list[Any]:
    """Every journaled child is exactly one trial, complete with its primary; no trial is complete without a
    journaled child; nothing is left running. Returns the complete trials."""
    trials = study.get_trials(deepcopy=False)
    by_child: dict[str, list[Any]] = {}
    for t in trials:
        by_child.setdefault(t.user_attrs["child_id"], []).append(t)
    assert all(len(v) == 1 for v in by_child.values()), "a child id was asked twice"
    assert len({t.number for t in trials}) == len(trials)
    done = {r["child_id"]: r for r in finished}
    assert len(done) == len(finished), "a child was journaled twice"
    for child_id, record in done.items():
        (trial,) = by_child[child_id]
        assert trial.state.name == "COMPLETE" and trial.values == [record["primary"]]
        assert trial.user_attrs["record"]["child_id"] == child_id
    complete = [t for t in trials if t.state.name == "COMPLETE"]
    assert {t.user_attrs["child_id"] for t in complete} == set(done)
    assert not [t for t in trials if t.state.name == "RUNNING"]
    return complete


def _journal_file(tmp: Path) -> tuple[Any, str]:
    from optuna.storages import JournalStorage
    from optuna.storages.journal import JournalFileBackend

    path = str(tmp / "study.log")
    return (lambda: JournalStorage(JournalFileBackend(path))), path


def test_interrupted_study_resumes_without_loss(pytester: pytest.Pytester, search_files: dict[str, Path]) -> None:
    """A study of 16 trials stopped by Ctrl-C (SIGINT to the session's process group) after about half, then
    resumed by the same command under -n 2 and stopped again: each child that finished is one complete trial, the
    others failed; the workers never import optuna; the resumed session's outputs cover the whole study."""
    pytester.makepyfile(test_search=CLIENT)
    storage, path = _journal_file(pytester.path)
    mark = pytester.path / "worker-mark"
    finished: list[dict[str, Any]] = []
    for n, extra in enumerate(([], ["-n", "2"])):
        run_dir = pytester.path / f"run{n}"
        proc = _start(pytester.path, _args(search_files, run_dir, path, "--crossover-trials=16", *extra), hold=7,
                      CROSSOVER_TEST_WORKER_MARK=str(mark))
        out = _stop_mid_trial(proc, run_dir, 7, signal.SIGINT)
        assert proc.returncode == 2, out[-2000:]  # interrupted
        journaled = _journal(run_dir)
        assert 7 <= len(journaled) < 16 and all(r["status"] in ("ok", "control") for r in journaled)
        finished += journaled
        study = _study(storage())
        complete = _check(study, finished)
        session = [t for t in study.get_trials() if t.number >= 16 * n]
        assert len(session) == 16 and sum(t.state.name == "FAIL" for t in session) == 16 - len(journaled)
        manifest = json.loads((run_dir / "manifest.json").read_text())
        assert manifest["complete"] is False
        assert manifest["study"]["asked_this_session"] == list(range(16 * n, 16 * n + 16))
        # The outputs cover the whole study: every complete trial, of this session or an earlier one.
        assert {c["child_id"] for c in manifest["children"]} == {t.user_attrs["child_id"] for t in complete}
    assert mark.read_text() == "no optuna"  # a worker ran children and never imported optuna
    text = (pytester.path / "run1" / "recommendation.txt").read_text()
    assert "32 trials:" in text and "this session asked 16 (t0016..t0031)" in text
    assert "this session asked 16 (t0016..t0031)" in (pytester.path / "run1" / "leaderboard.md").read_text()


# -- several machines: one PostgreSQL study ---------------------------------------------------------------------
def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _postgres_bin() -> Path | None:
    found = sorted(Path("/usr/lib/postgresql").glob("*/bin/initdb"), key=lambda p: int(p.parts[-3]))
    if found:
        return found[-1].parent
    which = shutil.which("initdb")
    return Path(which).parent if which else None


@pytest.fixture(scope="module")
def postgres_url() -> Iterator[str]:
    """A PostgreSQL server of this test's own (a data folder in /tmp, a free loopback port, stopped at the end), or
    the one ``CROSSOVER_TEST_POSTGRES`` names; skipped, saying why, when neither can be had."""
    given = os.environ.get("CROSSOVER_TEST_POSTGRES")
    if given:
        yield given
        return
    pytest.importorskip("psycopg", reason="psycopg is not installed (pip install 'pytest-crossover[study]')")
    bindir = _postgres_bin()
    if bindir is None:
        pytest.skip("PostgreSQL is not installed (Debian: apt-get install postgresql); set CROSSOVER_TEST_POSTGRES "
                    "to a server's URL to run this test against it")
    root = os.geteuid() == 0
    as_user = ["runuser", "-u", "postgres", "--"] if root else []
    data = Path(tempfile.mkdtemp(prefix="crossover-pg-"))
    if root:
        shutil.chown(data, "postgres")
    port = _free_port()
    try:
        subprocess.run([*as_user, str(bindir / "initdb"), "-D", str(data / "db"), "-U", "crossover", "--auth=trust",
                        "--no-sync", "-E", "UTF8"], check=True, capture_output=True, timeout=120)
        subprocess.run([*as_user, str(bindir / "pg_ctl"), "-D", str(data / "db"), "-w", "-l", str(data / "log"),
                        "-o", f"-p {port} -k {data} -c listen_addresses=127.0.0.1 -c fsync=off", "start"],
                       check=True, capture_output=True, timeout=120)
    except (OSError, subprocess.SubprocessError) as exc:
        shutil.rmtree(data, ignore_errors=True)
        pytest.skip(f"PostgreSQL could not be started here ({type(exc).__name__}: {exc})")
    try:
        yield f"postgresql://crossover@127.0.0.1:{port}/postgres"
    finally:
        subprocess.run([*as_user, str(bindir / "pg_ctl"), "-D", str(data / "db"), "-m", "immediate", "stop"],
                       capture_output=True, timeout=60)
        shutil.rmtree(data, ignore_errors=True)


def _rdb(url: str) -> Any:
    from harness.search.study import storage_url

    return optuna.storages.RDBStorage(storage_url(url))


def test_two_sessions_one_postgres_study(pytester: pytest.Pytester, search_files: dict[str, Path],
                                         postgres_url: str) -> None:
    """Three sessions of 8 trials each ask from one PostgreSQL study at once; one is killed mid-trial (SIGKILL to
    its process group) while the other two run. The two give 16 complete trials, none twice, none lost; the killed
    session's finished children are complete trials, and its unfinished trials are failed by the sessions that
    outlive it (never complete)."""
    pytester.makepyfile(test_search=CLIENT)
    url, release = postgres_url, pytester.path / "release"
    killed = pytester.path / "killed"
    dirs = [pytester.path / f"machine{i}" for i in range(2)]
    victim = _start(pytester.path, _args(search_files, killed, url, "--crossover-trials=8"), hold=2)
    procs = [_start(pytester.path, _args(search_files, d, url, "--crossover-trials=8"),
                    CROSSOVER_TEST_WAIT_FOR=str(release)) for d in dirs]
    _stop_mid_trial(victim, killed, 2, signal.SIGKILL)
    left = [t.number for t in _study(_rdb(url)).get_trials() if t.state.name == "RUNNING"
            and t.user_attrs["child_id"] not in {r["child_id"] for r in _journal(killed)}
            and t.user_attrs.get("pid") == victim.pid]
    assert len(left) == 8 - len(_journal(killed)) > 0  # SIGKILL: nobody told the study
    release.write_text("go")
    outs = [p.communicate(timeout=120)[0] for p in procs]
    assert [p.returncode for p in procs] == [0, 0], [o[-1500:] for o in outs]
    finished = _journal(killed) + [r for d in dirs for r in _journal(d)]
    study = _study(_rdb(url))
    _check(study, finished)
    by_number = {t.number: t for t in study.get_trials()}
    assert len(by_number) == 24
    assert all(by_number[n].state.name == "FAIL" and by_number[n].user_attrs["status"] == "lost" for n in left)
    sessions = {_session_of(d) for d in dirs}
    ours = [t for t in by_number.values() if t.user_attrs.get("session") in sessions]
    assert len(ours) == 16 and all(t.state.name == "COMPLETE" for t in ours)
    # Each session's outputs cover the study as it stood when it ended, with the host each trial ran on.
    summaries = [json.loads((d / "manifest.json").read_text())["study"] for d in dirs]
    assert max(s["counts"]["complete"] for s in summaries) == 16 + len(_journal(killed))
    assert all(s["hosts"] and all(t["host"] for t in s["trials"]) for s in summaries)
    assert sorted(set(summaries[0]["failed_dead"]) | set(summaries[1]["failed_dead"])) == sorted(left)
    assert "trials by host: " in (dirs[0] / "recommendation.txt").read_text()


def _session_of(run_dir: Path) -> str:
    return str(json.loads((run_dir / "manifest.json").read_text())["study"]["session"])


# -- options ----------------------------------------------------------------------------------------------------
@pytest.mark.parametrize(("args", "fragments"), [
    (["--crossover-trials=4"], ["--crossover-trials", "only applies to --crossover-search optuna"]),
    (["--crossover-search=bayes"], ["--crossover-search", "'bayes'", "grid, optuna"]),
    (["--crossover-space=custom", "--crossover-param=alpha=0.2..0.8"],
     ["--crossover-param", "alpha", "searched by a study only"]),
    (["--crossover-search=optuna", "--crossover-sampler=tpee"], ["--crossover-sampler", "did you mean 'tpe'"]),
    (["--crossover-search=optuna", "--crossover-objectives=return"], ["--crossover-objectives", "primary,return"]),
    (["--crossover-search=optuna", "--crossover-objectives=primary,return"],
     ["--crossover-objectives", "return needs greedy episodes"]),
    (["--crossover-search=optuna", "--crossover-confirm=3by2"], ["--crossover-confirm", "TOPxREPLICATES"]),
    (["--crossover-search=optuna", "--crossover-max-runs=3"], ["--crossover-max-runs", "--crossover-trials"]),
    (["--crossover-search=optuna", "--crossover-study=postgresql://u:secret@127.0.0.1:1/db"],
     ["--crossover-study", "cannot open the study storage 'postgresql://u@127.0.0.1:1/db'", "refused"]),
    (["--crossover-search=optuna", "--crossover-space=custom", "--crossover-regimes=xlong",
      "--crossover-param=regime.epochs=1..3"], ["--crossover-param", "a sampled regime is invalid", "patience"]),
    (["--crossover-search=optuna", "--crossover-space=custom", "--crossover-param=alpha=0.8..0.2"],
     ["--crossover-param", "LOW < HIGH"]),
    (["--crossover-search=optuna", "--crossover-space=custom", "--crossover-param=alpha=0.5..1.5"],
     ["--crossover-param", "alpha=0.5..1.5", "must be in [0, 1], got 1.5"]),
])
def test_bad_study_options_are_one_line(pytester: pytest.Pytester, search_files: dict[str, Path], args: list[str],
                                        fragments: list[str]) -> None:
    pytester.makepyfile(test_search=CLIENT)
    result = pytester.runpytest_inprocess(*base_args(search_files), "--crossover-no-save", *args,
                                          f"--crossover-storage={pytester.path / 'history'}")
    assert result.ret == pytest.ExitCode.USAGE_ERROR, result.stdout.str() + result.stderr.str()
    line = next(line for line in result.stderr.str().splitlines() if line.startswith("ERROR:"))
    assert all(f in line for f in fragments) and "secret" not in line, line
    for journal in (pytester.path / "history" / ".studies").glob("*.log"):  # a study opened: nothing left running
        storage = optuna.storages.JournalStorage(optuna.storages.journal.JournalFileBackend(str(journal)))
        assert {t.state.name for t in _study(storage).get_trials()} <= {"FAIL"}


def test_help_lists_the_study_options(pytester: pytest.Pytester) -> None:
    out = pytester.runpytest_inprocess("--help").stdout.str()
    for flag in ("--crossover-search=grid|optuna", "--crossover-study=PATH|URL", "--crossover-trials=N",
                 "--crossover-sampler=tpe|cmaes|nsga2|random", "--crossover-sampler-seed=N",
                 "--crossover-objectives=primary[,return]", "--crossover-confirm=TOPxREPS"):
        assert flag in out, flag


def test_the_grid_stays_the_default(pytester: pytest.Pytester, search_files: dict[str, Path]) -> None:
    """Without --crossover-search the session collects the grid's children, as before, and opens no study."""
    pytester.makepyfile(test_search=CLIENT)
    result = pytester.runpytest_inprocess(*base_args(search_files), "--crossover-space=smoke", "--collect-only", "-q",
                                          f"--crossover-storage={pytester.path / 'history'}")
    assert result.ret == 0
    assert [line.split("[")[1][:-1] for line in result.stdout.lines if "test_child[" in line] == [
        "000_random_a0p50_s0_short", "001_layer_a0p50_sNone_short", "002_weighted_a0p50_sNone_short"]
    assert not (pytester.path / "history" / ".studies").exists()


def test_a_session_refused_at_its_start_fails_the_trials_it_asked(pytester: pytest.Pytester,
                                                                  search_files: dict[str, Path]) -> None:
    """Another session holds the run directory: this one stops with exit 4, and the trials it had asked are failed
    (never left running, never complete)."""
    import fcntl

    pytester.makepyfile(test_search=CLIENT)
    run_dir = pytester.path / "busy"
    run_dir.mkdir()
    storage, path = _journal_file(pytester.path)
    with open(run_dir / ".lock", "a") as held:
        fcntl.flock(held, fcntl.LOCK_EX | fcntl.LOCK_NB)
        result = pytester.runpytest_inprocess(*_args(search_files, run_dir, path, "--crossover-trials=3")[4:])
    assert result.ret == pytest.ExitCode.USAGE_ERROR and "is in use by another crossover session" in result.stderr.str()
    trials = _study(storage()).get_trials()
    assert [(t.state.name, t.user_attrs["status"]) for t in trials] == [("FAIL", "lost")] * 3
