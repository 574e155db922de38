"""Nothing lost, nothing silently wrong: hostile inputs and faults that used to lose a file or give a wrong answer.

Every test drives real pytest sessions in subprocesses (pytester) on the small synthetic parents of conftest.py.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from tests.plugin.conftest import base_args, make_parent, run_search

SMOKE = ["000_random_a0p50_s0_short", "001_layer_a0p50_sNone_short", "002_weighted_a0p50_sNone_short"]


def _one_error(result: pytest.RunResult) -> str:
    assert result.ret == pytest.ExitCode.USAGE_ERROR, result.stdout.str() + result.stderr.str()
    lines = [line for line in result.stderr.lines if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("ERROR: "), result.stderr.str()
    return lines[0]


def test_a_misspelt_ini_key_is_an_error_with_a_suggestion(pytester, search_files):
    pytester.makeini("[pytest]\ncrossover_degenrate_threshold = 0.9\n")
    line = _one_error(run_search(pytester, search_files, "--crossover-space=smoke"))
    assert line == ("ERROR: crossover_degenrate_threshold (ini): not a pytest-crossover setting (did you mean "
                    "'crossover_degenerate_threshold'?); fix its name, or remove it")
    assert not (pytester.path / "runs").exists()
    pytester.makeini("[pytest]\ncrossover_compare_fial = primary:0.02\n")  # a history key too
    assert "(did you mean 'crossover_compare_fail'?)" in _one_error(run_search(pytester, search_files))


def test_degenerate_buffers_and_integer_weights_are_refused_in_one_line(pytester, search_files):
    args = [a for a in base_args(search_files) if not a.startswith("--crossover-states")]
    pytester.makepyfile(test_search="def test_child(crossover_child):\n    crossover_child.run()\n")
    same = pytester.path / "same.npy"
    np.save(same, np.tile(np.linspace(-1, 1, 8, dtype=np.float32), (300, 1)))
    line = _one_error(pytester.runpytest_subprocess(*args, f"--crossover-states={same}"))
    assert line.startswith(f"ERROR: --crossover-states: states file '{same}' holds one state repeated in all 300 rows")
    flags = pytester.path / "flags.npy"
    np.save(flags, np.random.default_rng(0).random((300, 8)) > 0.5)
    assert "has dtype bool, which is not numeric" in _one_error(
        pytester.runpytest_subprocess(*args, f"--crossover-states={flags}"))
    # Integer weights in both parents (so the layouts agree): never crossed as if they were floats.
    ints = {k: (v * 10).round().to(torch.int64) for k, v in make_parent(1).items()}
    for name in ("a", "b"):
        torch.save(ints, pytester.path / f"int_{name}.pt")
    own = [a for a in base_args(search_files) if "parent-" not in a]
    line = _one_error(pytester.runpytest_subprocess(*own, f"--crossover-parent-a={pytester.path / 'int_a.pt'}",
                                                    f"--crossover-parent-b={pytester.path / 'int_b.pt'}"))
    assert "parent A's network.0.weight holds integers (torch.int64), not floating-point weights" in line, line


def test_a_holdout_too_small_for_an_interval_is_refused(pytester, search_files):
    states = pytester.path / "few.npy"
    np.save(states, np.random.default_rng(1).standard_normal((40, 8)).astype(np.float32))
    args = [a for a in base_args(search_files) if not a.startswith("--crossover-states")]
    pytester.makepyfile(test_search="def test_child(crossover_child):\n    crossover_child.run()\n")
    line = _one_error(pytester.runpytest_subprocess(*args, f"--crossover-states={states}"))
    assert line == (f"ERROR: --crossover-holdout: evaluation on 8 states of '{states}' (need at least 10 for an "
                    "interval); use a larger holdout or more states")
    pytester.runpytest_subprocess(*args, f"--crossover-states={states}", "--crossover-holdout=0.25",
                                  "--crossover-space=smoke", "--crossover-max-runs=1").assert_outcomes(passed=1)


def test_a_session_that_runs_nothing_keeps_the_previous_journal(pytester, search_files):
    run_search(pytester, search_files, "--crossover-space=smoke").assert_outcomes(passed=3)
    run_dir = pytester.path / "runs"
    journal = (run_dir / "children.jsonl").read_bytes()
    assert journal.count(b"\n") == 3
    selected_nothing = pytester.runpytest_subprocess(*base_args(search_files), "--crossover-space=smoke",
                                                     "-k", "no_such_child")
    assert selected_nothing.ret == pytest.ExitCode.NO_TESTS_COLLECTED
    pytester.path.joinpath("test_search.py").write_text("")  # collects nothing
    collected_nothing = pytester.runpytest_subprocess(*base_args(search_files), "--crossover-space=smoke")
    assert collected_nothing.ret == pytest.ExitCode.NO_TESTS_COLLECTED
    assert (run_dir / "children.jsonl").read_bytes() == journal
    assert json.loads((run_dir / "manifest.json").read_text())["complete"] is True


def test_a_folder_the_harness_did_not_write_is_never_replaced(pytester, search_files):
    mine = pytester.path / "runs" / SMOKE[1]
    mine.mkdir(parents=True)
    (mine / "notes.txt").write_text("my own work")
    line = _one_error(run_search(pytester, search_files, "--crossover-space=smoke"))
    assert line == (f"ERROR: --crossover-run-dir: 'runs/{SMOKE[1]}' is not a child folder written by a crossover "
                    f"session (child {SMOKE[1]} would replace it); move it away, or pass another run directory")
    assert (mine / "notes.txt").read_text() == "my own work"
    assert sorted(p.name for p in (pytester.path / "runs").iterdir()) == [".lock", SMOKE[1]]
    # A folder of the same name holding a child.pt but no run_config.json naming the child is not ours either.
    (mine / "notes.txt").unlink()
    (mine / "child.pt").write_bytes(b"a user's model")
    assert "is not a child folder written by a crossover session" in _one_error(
        pytester.runpytest_subprocess(*base_args(search_files), "--crossover-space=smoke"))
    assert (mine / "child.pt").read_bytes() == b"a user's model"
    # A child folder a session wrote is replaced as before.
    (mine / "child.pt").unlink()
    mine.rmdir()
    pytester.runpytest_subprocess(*base_args(search_files), "--crossover-space=smoke").assert_outcomes(passed=3)
    pytester.runpytest_subprocess(*base_args(search_files), "--crossover-space=smoke").assert_outcomes(passed=3)


def test_sigterm_ends_the_session_like_ctrl_c(pytester, search_files):
    started = pytester.path / "started"
    pytester.makepyfile(test_search=f"""
import os, time
from pathlib import Path


def test_child(crossover_child):
    if crossover_child.child_id.startswith("001_"):
        Path({str(started)!r}).write_text("")
        time.sleep(60)
    crossover_child.run()
""")
    argv = [sys.executable, "-m", "pytest", *base_args(search_files), "--crossover-space=smoke"]
    session = pytester.popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    try:
        for _ in range(1200):
            if started.exists() or session.poll() is not None:
                break
            time.sleep(0.05)
        assert started.exists()
        session.send_signal(signal.SIGTERM)
        out = session.communicate(timeout=60)[0].decode()
    finally:
        if session.poll() is None:
            session.kill()
    assert session.returncode == pytest.ExitCode.INTERRUPTED, out
    assert "KeyboardInterrupt" in out and "crossover leaderboard" in out
    run_dir = pytester.path / "runs"
    manifest = json.loads((run_dir / "manifest.json").read_text())
    assert manifest["complete"] is False and manifest["missing_children"] == SMOKE[1:]
    assert (run_dir / "leaderboard.md").read_text().startswith("# Crossover leaderboard (INCOMPLETE: 1 of 3 children)")
    assert [json.loads(line)["child_id"] for line in (run_dir / "children.jsonl").read_text().splitlines()] == \
        [SMOKE[0]]


def test_a_gate_that_could_not_read_its_baseline_fails(pytester, search_files):
    run_search(pytester, search_files, "--crossover-space=smoke", "--crossover-max-runs=1").assert_outcomes(passed=1)
    (record,) = (pytester.path / ".crossover").rglob("*.json")
    record.write_text('{"schema": "pytest-crossover-history", "children": [')  # a torn write, a bad merge
    gated = pytester.runpytest_subprocess(*base_args(search_files), "--crossover-space=smoke",
                                          "--crossover-max-runs=1", "--crossover-compare-fail=primary:0.02")
    assert gated.ret == pytest.ExitCode.TESTS_FAILED
    gated.stdout.fnmatch_lines([f"warning: skipped {record}: unreadable or corrupt JSON*",
                                "--crossover-compare-fail could not run: no readable baseline, and 1 file(s) of the "
                                "history store * could not be read (listed above); fix or remove them; exit status 1"])
    assert "this run starts its history" not in gated.stdout.str()


def test_an_empty_store_still_starts_its_history(pytester, search_files):
    first = run_search(pytester, search_files, "--crossover-space=smoke", "--crossover-max-runs=1",
                       "--crossover-compare-fail=primary:0.02")
    first.assert_outcomes(passed=1)
    assert first.ret == pytest.ExitCode.OK and "this run starts its history" in first.stdout.str()


def test_a_record_is_not_complete_when_a_write_failed(pytester, search_files):
    """A child's folder cannot be written (a full disk): the session stops, and neither the manifest nor the
    history says complete."""
    client = ("import harness.search.rundir\n\n\ndef test_child(crossover_child):\n"
              "    if crossover_child.child_id.startswith('001_'):\n"
              "        def full(*args, **kwargs):\n"
              "            raise OSError(28, 'No space left on device')\n"
              "        harness.search.rundir.RunDir.write_child = full  # the controller's next write fails\n"
              "    crossover_child.run()\n")
    result = run_search(pytester, search_files, "--crossover-space=smoke", client=client)
    assert result.ret == pytest.ExitCode.TESTS_FAILED
    result.stdout.fnmatch_lines(["*cannot write to the run directory*(No space left on device)*"])
    manifest = json.loads((pytester.path / "runs" / "manifest.json").read_text())
    assert manifest["complete"] is False
    assert not list((pytester.path / ".crossover").rglob("*.json"))  # an incomplete session saves no record
    assert "record not saved: the session is incomplete" in result.stdout.str()


def test_the_store_lock_wait_is_bounded(tmp_path, monkeypatch):
    import fcntl

    from harness.core.errors import HarnessError
    from harness.records import store as store_module

    monkeypatch.setattr(store_module, "LOCK_WAIT_S", 0.5)
    tmp_path.joinpath(".lock").write_text("")
    holder = subprocess.Popen([sys.executable, "-c", "import fcntl, sys, time\n"
                               f"f = open({str(tmp_path / '.lock')!r}, 'a'); fcntl.flock(f, fcntl.LOCK_EX)\n"
                               "print('held', flush=True); time.sleep(30)"], stdout=subprocess.PIPE)
    try:
        assert holder.stdout is not None and holder.stdout.readline() == b"held\n"
        started = time.monotonic()
        with pytest.raises(HarnessError, match=r"has been locked by another process for 0.5 s \(its .lock\); end "
                                               "that process, or pass another --crossover-storage"):
            store_module.HistoryStore(tmp_path).save({"children": []})
        assert time.monotonic() - started < 5
    finally:
        holder.kill()
        holder.wait()
    with open(tmp_path / ".lock", "a") as free:
        fcntl.flock(free, fcntl.LOCK_EX | fcntl.LOCK_NB)  # released with its holder


def test_history_records_are_not_read_whole_when_too_large(tmp_path, monkeypatch):
    from harness.records import store as store_module

    monkeypatch.setattr(store_module, "RECORD_MAX_BYTES", 100)
    folder = tmp_path / "Linux-CPython-3.11-torch2.13.0"
    folder.mkdir()
    (folder / "0001_abc.json").write_text(json.dumps({"schema": "pytest-crossover-history", "children": [],
                                                      "pad": "x" * 200}))
    records, warnings = store_module.HistoryStore(tmp_path).load()
    assert records == [] and len(warnings) == 1 and "more than any record (100)" in warnings[0]
    assert Path(folder / "0001_abc.json").stat().st_size > 100


SLOW_WRITES = """
import time
from pathlib import Path

import harness.search.rundir as rundir

write_child, write_outputs = rundir.RunDir.write_child, rundir.RunDir.write_outputs


def slow_child(self, child_id, files):  # the controller writes a child's folder: the first interrupt lands here
    Path(self.path.parent, "writing_child").write_text("")
    time.sleep(0.3)
    return write_child(self, child_id, files)


def slow_outputs(self, outputs, *, final):
    if final and "manifest.json" in outputs:  # the controller's final files: the second interrupt lands here
        Path(self.path.parent, "writing").write_text("")
        time.sleep(0.3)
    return write_outputs(self, outputs, final=final)


rundir.RunDir.write_child, rundir.RunDir.write_outputs = slow_child, slow_outputs
"""


def test_sigterm_then_ctrl_c_under_xdist_keeps_every_finished_child_everywhere(pytester, search_files):
    """-n 2: SIGTERM to the controller while it writes the first finished child's folder, then Ctrl-C while it
    writes the final files. Each interrupt waits for the write under way (one line says so); every summarised
    child is in the journal and on disk, and the journal, manifest, leaderboard and terminal summary agree."""
    pytester.makeconftest(SLOW_WRITES)
    pytester.makepyfile(test_search=f"""
import time
from pathlib import Path


def test_child(crossover_child):
    if not crossover_child.child_id.startswith("000_"):
        writing = Path({str(pytester.path / "writing")!r})
        for _ in range(1200):  # running until the controller writes its final files; then out of the way
            if writing.exists():
                return
            time.sleep(0.05)
    crossover_child.run()
""")
    run_dir = pytester.path / "runs"
    argv = [sys.executable, "-m", "pytest", *base_args(search_files), "--crossover-space=smoke", "-n", "2"]
    session = pytester.popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)

    def wait_for(name: str) -> None:
        for _ in range(1200):
            if (pytester.path / name).exists() or session.poll() is not None:
                break
            time.sleep(0.02)
        assert (pytester.path / name).exists()

    try:
        wait_for("writing_child")
        session.send_signal(signal.SIGTERM)
        wait_for("writing")
        session.send_signal(signal.SIGINT)
        out = session.communicate(timeout=60)[0].decode()
    finally:
        if session.poll() is None:
            session.kill()
    assert session.returncode == pytest.ExitCode.INTERRUPTED, out
    assert f"crossover: writing {SMOKE[0]}'s files first; interrupt again to abandon them" in out
    assert "crossover: writing the finished children's summary files first; interrupt again to abandon them" in out
    assert "Traceback" not in out and "INTERNALERROR" not in out
    journal = [json.loads(line)["child_id"] for line in (run_dir / "children.jsonl").read_text().splitlines()]
    manifest = json.loads((run_dir / "manifest.json").read_text())
    assert journal == [c["child_id"] for c in manifest["children"]] == [SMOKE[0]]
    assert manifest["complete"] is False and manifest["missing_children"] == SMOKE[1:]
    assert [r["child_id"] for r in json.loads((run_dir / "leaderboard.json").read_text())] == journal
    assert json.loads((run_dir / SMOKE[0] / "eval.json").read_text())["child_id"] == SMOKE[0]
    summary = out.split("crossover leaderboard")[1]
    assert SMOKE[0] in summary and not any(cid in summary for cid in SMOKE[1:])


def test_a_gate_whose_record_cannot_be_saved_fails_instead_of_staying_off(pytester, search_files):
    """The store cannot take the record (a full disk after the probe): with --crossover-compare-fail every later
    session would again find no baseline, so the gate would never run; the session says so and fails."""
    pytester.makeconftest("from harness.core.errors import HarnessError\nfrom harness.records import store\n\n\n"
                          "def full(self, record):\n"
                          "    raise HarnessError(f'cannot write the history store {str(self.root)!r} (No space left "
                          "on device)')\n\n\nstore.HistoryStore.save = full\n")
    gated = run_search(pytester, search_files, "--crossover-space=smoke", "--crossover-max-runs=1",
                       "--crossover-compare-fail=primary:0.02")
    assert gated.ret == pytest.ExitCode.TESTS_FAILED
    gated.stdout.fnmatch_lines(["record not saved: cannot write the history store * (No space left on device)",
                                "--crossover-compare-fail cannot gate later sessions: this session's record could not "
                                "be saved (above); exit status 1"])
    assert "starts its history" not in gated.stdout.str() and "saved as a subset" not in gated.stdout.str()
