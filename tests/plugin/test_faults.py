"""Faults during a run, durability of the outputs, determinism and security (issue 7).

Every test drives real pytest sessions in subprocesses (pytester) on the tiny synthetic parents of conftest.py.
"""

from __future__ import annotations

import csv
import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from harness.search.rundir import load_journal
from tests.plugin.conftest import base_args, run_search

SMOKE = ["000_random_a0p50_s0_short", "001_layer_a0p50_sNone_short", "002_weighted_a0p50_sNone_short"]
OUTPUTS = ("manifest.json", "leaderboard.json", "leaderboard.csv", "leaderboard.md", "recommendation.txt")


def _strict_json(path: Path) -> Any:
    """Parse as a strict reader would: NaN/Infinity in a file is a bug, not a value."""
    def refuse(name: str) -> Any:
        raise ValueError(f"{path}: non-standard JSON constant {name}")

    return json.loads(Path(path).read_text(), parse_constant=refuse)


def _client(body: str) -> str:
    """A client test module whose test body runs ``body`` (indented) with ``cid`` = the child id."""
    lines = "\n".join("    " + line for line in body.strip().splitlines())
    return ("import os, signal, time\nfrom pathlib import Path\nimport harness.search.child\n\n\n"
            "def test_child(crossover_child, monkeypatch):\n    cid = crossover_child.child_id\n" + lines + "\n")


def _rows(run_dir: Path) -> dict[str, dict[str, Any]]:
    return {r["child_id"]: r for r in _strict_json(run_dir / "leaderboard.json")}


# -- faults during a run ------------------------------------------------------------------------------------------

DIVERGE = ["--crossover-space=custom", "--crossover-modes=weighted", "--crossover-alphas=0.5",
           "--crossover-regimes=boom,short", "--crossover-define-regime=boom:epochs=2,lr=1e12"]


def test_diverging_child_fails_is_ranked_last_and_every_output_stays_valid(pytester, search_files):
    result = run_search(pytester, search_files, *DIVERGE)
    assert result.ret == pytest.ExitCode.TESTS_FAILED
    result.assert_outcomes(passed=1, failed=1)
    result.stdout.fnmatch_lines(["000_weighted_a0p50_sNone_boom: fine-tuning diverged (non-finite loss) in regime "
                                 "'boom' (lr=1000000000000.0); lower the learning rate"])
    run_dir = pytester.path / "runs"
    for path in [*run_dir.glob("*.json"), *run_dir.glob("*/*.json")]:
        _strict_json(path)  # every JSON file parses without NaN/Infinity
    manifest = _strict_json(run_dir / "manifest.json")
    assert manifest["complete"] is True
    child = {c["child_id"]: c for c in manifest["children"]}["000_weighted_a0p50_sNone_boom"]
    assert child["status"] == "diverged" and child["primary"] is None
    assert child["finetune_regime"] == {"name": "boom", "epochs": 2, "lr": 1e12, "batch_size": 32,
                                        "val_fraction": 0.1, "seed": 42, "quantization_applied": "none",
                                        "patience": 0}
    assert child["finetune"]["diverged"] is True and None in child["finetune"]["train_losses"]
    rows = _strict_json(run_dir / "leaderboard.json")
    assert [(r["rank"], r["child_id"], r["status"]) for r in rows[:2]] == [
        (1, "001_weighted_a0p50_sNone_short", "ok"), (2, "000_weighted_a0p50_sNone_boom", "diverged")]
    assert rows[1]["primary_metric"] is None and rows[1]["child_vs_parent_a_agreement"] is None
    assert rows[1]["pareto"] is False
    csv_rows = list(csv.DictReader((run_dir / "leaderboard.csv").open()))
    assert (csv_rows[1]["child_id"], csv_rows[1]["status"], csv_rows[1]["primary_metric"]) == \
        ("000_weighted_a0p50_sNone_boom", "diverged", "")
    md = (run_dir / "leaderboard.md").read_text()
    line = next(x for x in md.splitlines() if "000_weighted_a0p50_sNone_boom" in x)
    assert line.startswith("| 2 ") and "| —  " in line and "| diverged " in line
    rec = (run_dir / "recommendation.txt").read_text()
    assert "did not finish (their tests failed): 000_weighted_a0p50_sNone_boom (diverged)" in rec
    assert "000_weighted_a0p50_sNone_boom" not in rec.split("did not finish")[0]  # never recommended


def test_defined_regime_from_ini(pytester, search_files):
    pytester.makeini("[pytest]\ncrossover_define_regime =\n    slow:epochs=1,lr=1e-4,batch_size=8\n"
                     "    fast:epochs=1,lr=1e-2\n")
    result = run_search(pytester, search_files, "--crossover-space=custom", "--crossover-modes=layer",
                        "--crossover-regimes=slow,fast")
    result.assert_outcomes(passed=2)
    regimes = [c["finetune_regime"] for c in _strict_json(pytester.path / "runs" / "manifest.json")["children"]]
    assert [(r["name"], r["epochs"], r["lr"], r["batch_size"]) for r in regimes] == [
        ("slow", 1, 1e-4, 8), ("fast", 1, 1e-2, 32)]


def test_child_that_raises_is_marked_error_and_others_go_on(pytester, search_files):
    client = _client("""
if cid.startswith("001_"):
    def boom(*args, **kwargs):
        raise RuntimeError("injected fault in evaluation")
    monkeypatch.setattr(harness.search.child, "evaluate_model", boom)
crossover_child.run()
""")
    result = run_search(pytester, search_files, "--crossover-space=smoke", client=client)
    result.assert_outcomes(passed=2, failed=1)
    result.stdout.fnmatch_lines(["*raise RuntimeError(\"injected fault in evaluation\")*",
                                 "E*RuntimeError: injected fault in evaluation"])  # the traceback, as usual
    rows = _rows(pytester.path / "runs")
    assert rows[SMOKE[1]]["status"] == "error" and rows[SMOKE[1]]["rank"] == 3
    assert rows[SMOKE[1]]["primary_metric"] is None
    assert rows[SMOKE[0]]["status"] == rows[SMOKE[2]]["status"] == "ok"
    child = {c["child_id"]: c for c in _strict_json(pytester.path / "runs" / "manifest.json")["children"]}
    assert child[SMOKE[1]]["message"] == "call: RuntimeError: injected fault in evaluation"


@pytest.mark.slow
def test_xdist_worker_killed_mid_run_is_marked_lost(pytester, search_files):
    # A real SIGKILL of the worker after the child ran: its files may exist but its record never arrives.
    client = _client("""
crossover_child.run()
if cid.startswith("001_"):
    os.kill(os.getpid(), signal.SIGKILL)
""")
    result = run_search(pytester, search_files, "--crossover-space=smoke", "-n", "2", client=client)
    result.assert_outcomes(passed=2, failed=1)
    result.stdout.fnmatch_lines(["*worker 'gw*' crashed while running*001_layer_a0p50_sNone_short*"])
    run_dir = pytester.path / "runs"
    manifest = _strict_json(run_dir / "manifest.json")
    assert [(c["child_id"], c["status"]) for c in manifest["children"]] == [
        (SMOKE[0], "ok"), (SMOKE[1], "lost"), (SMOKE[2], "ok")]
    assert manifest["missing_children"] == []
    rows = _rows(run_dir)
    assert rows[SMOKE[1]]["rank"] == 3 and rows[SMOKE[1]]["primary_metric"] is None
    assert rows[SMOKE[0]]["primary_metric"] > 0 and rows[SMOKE[2]]["primary_metric"] > 0
    assert "001_layer_a0p50_sNone_short (lost)" in (run_dir / "recommendation.txt").read_text()
    # The dead worker never sent its share of the parents' rows (xdist workeroutput); the controller filled it in.
    parents = manifest["parents"]
    assert parents["agree_ab"] > 0 and set(parents["latency_ms"]) == {"parent_a", "parent_b"}


def test_interrupted_session_writes_a_leaderboard_marked_incomplete(pytester, search_files):
    # A real SIGINT to the session process (serial: the test runs in it) during the second child.
    client = _client("""
if cid.startswith("001_"):
    os.kill(os.getpid(), signal.SIGINT)
    time.sleep(5)  # the signal arrives before this ends
crossover_child.run()
""")
    result = run_search(pytester, search_files, "--crossover-space=smoke", "--crossover-report=on", client=client)
    assert result.ret == pytest.ExitCode.INTERRUPTED
    run_dir = pytester.path / "runs"
    manifest = _strict_json(run_dir / "manifest.json")
    assert manifest["complete"] is False
    assert [c["child_id"] for c in manifest["children"]] == [SMOKE[0]]
    assert manifest["missing_children"] == SMOKE[1:]
    assert (run_dir / "leaderboard.md").read_text().startswith(
        "# Crossover leaderboard (INCOMPLETE: 1 of 3 children)")
    assert _rows(run_dir)[SMOKE[0]]["primary_metric"] > 0
    report = (run_dir / "report.html").read_text()
    assert "<b>INCOMPLETE</b>: 1 of 3 children finished" in report and f"Missing: {', '.join(SMOKE[1:])}" in report


def test_session_killed_mid_run_keeps_every_finished_child(pytester, search_files):
    """SIGKILL of the whole session: no hook runs, yet the journal already holds every finished child, and
    manifest.json (rewritten at most once a second) is a complete file marked incomplete."""
    client = _client("""
if cid.startswith("002_"):
    os.kill(os.getpid(), signal.SIGKILL)
crossover_child.run()
""")
    result = run_search(pytester, search_files, "--crossover-space=smoke", client=client)
    assert result.ret == -signal.SIGKILL
    run_dir = pytester.path / "runs"
    manifest = _strict_json(run_dir / "manifest.json")
    assert manifest["complete"] is False and manifest["journal"] == "children.jsonl"
    assert [c["child_id"] for c in manifest["children"]] in ([SMOKE[0]], SMOKE[:2])
    assert [(c["child_id"], c["status"]) for c in load_journal(run_dir)] == [(SMOKE[0], "ok"), (SMOKE[1], "ok")]
    for cid in SMOKE[:2]:
        assert _strict_json(run_dir / cid / "eval.json")["child_id"] == cid
    # The derived views (leaderboard.*) are rewritten at most once a second; they are complete files either way.
    assert (run_dir / "leaderboard.md").read_text().startswith("# Crossover leaderboard (INCOMPLETE: ")
    _strict_json(run_dir / "leaderboard.json")
    assert not [p.name for p in run_dir.iterdir() if p.name.endswith(".tmp")]  # no half-written file left
    # The dead session's lock is gone with its process: the next session on the directory runs.
    rerun = pytester.runpytest_subprocess(*base_args(search_files), "--crossover-space=smoke",
                                          "--crossover-max-runs=1")
    rerun.assert_outcomes(passed=1)


def test_previous_outputs_survive_until_the_new_session_has_results(pytester, search_files):
    first = run_search(pytester, search_files, "--crossover-space=smoke", "--crossover-max-runs=2")
    first.assert_outcomes(passed=2)
    run_dir = pytester.path / "runs"
    before = {name: (run_dir / name).read_bytes() for name in OUTPUTS}
    child_before = (run_dir / SMOKE[0] / "child.pt").read_bytes()
    # The next session is interrupted before its first child finishes: nothing of the previous one is touched.
    pytester.makepyfile(test_search=_client("os.kill(os.getpid(), signal.SIGINT)\ntime.sleep(5)"))
    second = pytester.runpytest_subprocess(*base_args(search_files), "--crossover-space=smoke")
    assert second.ret == pytest.ExitCode.INTERRUPTED
    assert {name: (run_dir / name).read_bytes() for name in OUTPUTS} == before
    assert (run_dir / SMOKE[0] / "child.pt").read_bytes() == child_before
    assert _strict_json(run_dir / "manifest.json")["complete"] is True


def test_second_concurrent_session_on_the_same_run_dir_is_refused(pytester, search_files):
    """Two real processes: the first holds the run directory while its child waits; the second is refused."""
    started, go = pytester.path / "started", pytester.path / "go"
    pytester.makepyfile(test_search=_client(f"""
Path({str(started)!r}).write_text("1")
for _ in range(600):  # at most a minute, so a broken test cannot hang the suite
    if Path({str(go)!r}).exists():
        break
    time.sleep(0.1)
crossover_child.run()
"""))
    argv = [sys.executable, "-m", "pytest", *base_args(search_files), "--crossover-space=smoke",
            "--crossover-max-runs=1"]
    first = pytester.popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    try:
        for _ in range(1200):
            if started.exists() or first.poll() is not None:
                break
            time.sleep(0.05)
        assert started.exists(), first.communicate()[0].decode()
        second = pytester.runpytest_subprocess(*base_args(search_files), "--crossover-space=smoke",
                                               "--crossover-max-runs=1")
        assert second.ret == pytest.ExitCode.USAGE_ERROR
        assert "--crossover-run-dir: 'runs' is in use by another crossover session; wait for it or pass another " \
               "run directory" in second.stderr.str()
        assert (pytester.path / "runs" / ".lock").read_text() == str(first.pid)  # not clobbered by the second
    finally:
        go.write_text("1")
        out = first.communicate(timeout=120)[0].decode()
    assert first.returncode == 0, out
    manifest = _strict_json(pytester.path / "runs" / "manifest.json")
    assert [c["child_id"] for c in manifest["children"]] == [SMOKE[0]] and manifest["complete"] is True


# -- determinism ----------------------------------------------------------------------------------------------------

_VOLATILE = {"latency_ms", "timings_s", "wall_s", "started_unix", "run_dir"}


def _scrub(value: Any) -> Any:
    """Everything but wall-clock measurements (latency, timings) and the run directory's name."""
    if isinstance(value, dict):
        return {k: _scrub(v) for k, v in value.items() if k not in _VOLATILE}
    if isinstance(value, list):
        return [_scrub(v) for v in value]
    return value


def test_two_serial_runs_give_bitwise_identical_manifests(pytester, search_files):
    args = ("--crossover-space=minimal-qat", "--crossover-max-runs=2")
    run_search(pytester, search_files, *args, "--crossover-run-dir=one").assert_outcomes(passed=2)
    pytester.runpytest_subprocess(*base_args(search_files, "two"), *args).assert_outcomes(passed=2)
    one, two = (_strict_json(pytester.path / d / "manifest.json") for d in ("one", "two"))
    assert _scrub(one) == _scrub(two)
    assert one["children"][1]["int8"]["primary"] is not None  # the QAT child's int8 metrics are compared too
    for cid in (c["child_id"] for c in one["children"]):
        assert _scrub(_strict_json(pytester.path / "one" / cid / "eval.json")) == \
            _scrub(_strict_json(pytester.path / "two" / cid / "eval.json"))
        assert (pytester.path / "one" / cid / "child.pt").read_bytes() == \
            (pytester.path / "two" / cid / "child.pt").read_bytes()


# -- security -------------------------------------------------------------------------------------------------------

class _Evil:
    """Unpickling this creates a file: proof that code from the file ran."""

    def __init__(self, marker: Path) -> None:
        self.marker = str(marker)

    def __reduce__(self) -> tuple[Any, ...]:
        return (open, (self.marker, "w"))


def test_malicious_checkpoint_is_never_unpickled(pytester, search_files):
    marker = pytester.path / "PWNED"
    evil = pytester.path / "evil.pt"
    torch.save({"network.0.weight": _Evil(marker)}, evil)
    result = pytester.runpytest_subprocess(*[a for a in base_args(search_files) if "parent-a" not in a],
                                           f"--crossover-parent-a={evil}")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    assert "is a full pickle" in result.stderr.str() and "--crossover-allow-unsafe-unpickle" in result.stderr.str()
    assert not marker.exists()


def test_malicious_states_file_is_never_unpickled(pytester, search_files):
    marker = pytester.path / "PWNED"
    evil = pytester.path / "evil.npy"
    np.save(evil, np.array([_Evil(marker)], dtype=object), allow_pickle=True)
    for extra in ([], ["--crossover-allow-unsafe-unpickle"]):  # the checkpoint opt-in never covers states
        # In this process: the check refuses the file before any child, so nothing of the session outlives it.
        result = pytester.runpytest_inprocess(*[a for a in base_args(search_files) if "states" not in a],
                                              f"--crossover-states={evil}", *extra)
        assert result.ret == pytest.ExitCode.USAGE_ERROR
        assert "holds Python objects (pickled data), which are never loaded" in result.stderr.str()
        assert not marker.exists()


def _tree(root: Path, skip: set[str]) -> dict[str, bytes]:
    def skipped(rel: Path) -> bool:
        # pytester's own files: the subprocess's captured stdout/stderr and its basetemp.
        return bool(set(rel.parts) & skip) or rel.parts[0] in ("stdout", "stderr") or \
            rel.parts[0].startswith("runpytest-")

    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*"))
            if p.is_file() and not skipped(p.relative_to(root))}


def test_outputs_hold_no_absolute_run_dir_and_nothing_is_written_outside_it(pytester, search_files):
    run_dir = pytester.path / "out" / "abs_runs"
    pytester.makepyfile(test_search=_client("crossover_child.run()"))
    # __pycache__ is pytest's assertion rewriting; .crossover is the history store.
    before, inputs = _tree(pytester.path, {"__pycache__", ".crossover"}), _tree(search_files["dir"], set())
    result = pytester.runpytest_subprocess(*base_args(search_files, run_dir), "--crossover-space=minimal-qat",
                                           "--crossover-max-runs=2")
    result.assert_outcomes(passed=2)
    after = _tree(pytester.path, {"__pycache__", ".crossover"})
    assert {k: v for k, v in after.items() if not k.startswith("out/abs_runs/")} == before
    assert _tree(search_files["dir"], set()) == inputs
    written = [p for p in run_dir.rglob("*") if p.is_file() and p.suffix in (".json", ".csv", ".md", ".txt")]
    # manifest, leaderboard .json/.csv/.md, recommendation .json/.txt, barrier; per child run_config and eval
    assert len(written) == 7 + 2 * 2
    for path in written:
        text = path.read_text()
        assert str(run_dir) not in text and str(run_dir.resolve()) not in text, path
    manifest = _strict_json(run_dir / "manifest.json")
    assert manifest["options"]["run_dir"] == "out/abs_runs"
    files = manifest["children"][1]["files"]
    assert files == {"crossover": "001_random_a0p50_s0_short_qat/crossover.pt",
                     "child": "001_random_a0p50_s0_short_qat/child.pt",
                     "eval": "001_random_a0p50_s0_short_qat/eval.json",
                     "run_config": "001_random_a0p50_s0_short_qat/run_config.json",
                     "int8": "001_random_a0p50_s0_short_qat/child_int8.pt"}
    assert all((run_dir / f).is_file() for f in files.values())
    # Inputs are recorded as given (they are the user's paths, not outputs).
    assert manifest["provenance"]["parent_a"]["path"] == str(search_files["parent_a"])


def test_all_writes_go_through_the_atomic_module():
    """Outputs are written to a temporary name and renamed: no direct writes in the plugin or the pipeline."""
    root = Path(__file__).resolve().parents[2]
    offenders = []
    for path in [*root.glob("pytest_crossover/*.py"), *(root / "harness" / f"{m}.py" for m in (
            "search/child", "answer/leaderboard", "history", "search/rundir", "search/parents", "search/populations",
            "records/store"))]:
        for line in path.read_text().splitlines():
            code = line.split("#")[0]
            if any(s in code for s in ('.write_text(', '.write_bytes(', 'torch.save(', 'np.save(', 'open(')):
                offenders.append(f"{path.relative_to(root)}: {line.strip()}")
    # The only direct writes: the run-dir probe and the lock file (neither is an output), and the journal.
    assert offenders == [
        # A remote worker's input cache, streamed in chunks to a ".part" name and renamed once complete and its
        # sha256 checked (standard library only: it runs before the host's versions are checked).
        'pytest_crossover/host_side.py: with open(final + ".part", "wb") as fh:',
        # into memory: a child's files travel as bytes to the controller
        'harness/search/rundir.py: torch.save(obj, buf)',
        'harness/search/rundir.py: probe.write_text("ok")',
        'harness/search/rundir.py: lock = open(self.path / ".lock", "a")  # noqa: SIM115  (held open for the session)',
        # The journal is append-only by design: one os.write of whole lines per finished child.
        'harness/search/rundir.py: fd = os.open(self.path / JOURNAL, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)',
        'harness/records/store.py: probe.write_text("ok")',
        'harness/records/store.py: with open(self.root / ".lock", "a") as lock:  # held while the number is '
        'taken and the '
        'record written',
    ], offenders


def test_stale_staging_folder_of_a_dead_process_is_removed(tmp_path):
    from harness.core.atomic import remove_stale_staging

    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    stale = tmp_path / f".000_random_a0p50_s0_short.{int(dead.stdout)}.tmp"
    live = tmp_path / f".001_layer_a0p50_sNone_short.{os.getpid()}.tmp"
    for d in (stale, live):
        d.mkdir()
        (d / "child.pt").write_bytes(b"x")
    assert remove_stale_staging(tmp_path) == [stale]
    assert live.is_dir() and not stale.exists()


# -- faults of the machine ------------------------------------------------------------------------------------
def _can_mount() -> bool:
    probe = subprocess.run(["unshare", "-m", "sh", "-c", "mount -t tmpfs -o size=64k tmpfs /mnt"],
                           capture_output=True)
    return os.geteuid() == 0 and probe.returncode == 0


@pytest.mark.skipif(sys.platform != "linux" or not _can_mount(), reason="needs root and a private mount namespace")
def test_a_full_disk_ends_the_session_cleanly_and_keeps_what_finished(pytester, search_files):
    """The run directory on a 320 KiB tmpfs: the first children fit, then writes fail with ENOSPC."""
    pytester.makepyfile(test_search=_client("crossover_child.run()"))
    run_dir = pytester.path / "tiny"
    run_dir.mkdir()
    args = " ".join(f"'{a}'" for a in [*base_args(search_files, run_dir), "--crossover-space=minimal-qat",
                                        "--crossover-no-save", "-p", "no:randomly"])
    script = (f"mount -t tmpfs -o size=320k tmpfs {run_dir} && cd {pytester.path} && "
              f"{sys.executable} -m pytest test_search.py {args}; echo EXIT=$?; ls -a {run_dir}")
    out = subprocess.run(["unshare", "-m", "sh", "-c", script], capture_output=True, text=True, timeout=120)
    text = out.stdout + out.stderr
    assert "INTERNALERROR" not in text and "Traceback" not in text, text
    exit_code = int(text.split("EXIT=")[1].split()[0])
    assert exit_code == 1, text
    assert "crossover: cannot write to the run directory" in text and "No space left on device" in text
    assert "the session stopped after" in text and "its records are in the leaderboard below" in text
    listing = text.split("EXIT=")[1].split()[1:]
    assert not [n for n in listing if n.endswith((".tmp", ".old"))], listing  # no staging leftovers
    assert "crossover leaderboard" in text  # the finished children are still listed


def test_a_double_ctrl_c_leaves_no_worker_running(pytester, search_files):
    """Ctrl-C twice to the controller of ``-n 2`` once a child finished and both workers are busy: no worker
    outlives the session, and the finished child is on disk, in the journal and in the summary files alike."""
    pids = pytester.path / "pids"
    pids.mkdir()
    pytester.makepyfile(test_search=_client(f"""
if not cid.startswith("000_"):
    Path({str(pids)!r}, str(os.getpid())).write_text("")
    time.sleep(30)
crossover_child.run()
"""))
    run_dir = pytester.path / "runs"
    argv = [sys.executable, "-m", "pytest", *base_args(search_files), "--crossover-space=smoke", "-n", "2"]
    session = pytester.popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    try:
        for _ in range(600):
            if len(list(pids.iterdir())) == 2 and (run_dir / "children.jsonl").exists() or session.poll() is not None:
                break
            time.sleep(0.05)
        workers = [int(p.name) for p in pids.iterdir()]
        assert len(workers) == 2
        session.send_signal(signal.SIGINT)
        time.sleep(0.3)
        session.send_signal(signal.SIGINT)
        out = session.communicate(timeout=30)[0].decode()
    finally:
        if session.poll() is None:
            session.kill()
    # Where the second Ctrl-C lands decides how pytest ends (exit 2 with one line, or pytest's own traceback when it
    # interrupts pytest's report of the first); what finished is on disk either way.
    assert session.returncode in (pytest.ExitCode.INTERRUPTED, -signal.SIGINT), out
    journal = [r["child_id"] for r in load_journal(run_dir)]
    assert journal == [c["child_id"] for c in _strict_json(run_dir / "manifest.json")["children"]] == [SMOKE[0]]
    # (The parents' baseline rows join the children's once the workers' shares arrived: timing, not a loss.)
    children = [c for c, r in _rows(run_dir).items() if not r["is_parent_baseline"]]
    assert children == journal and (run_dir / SMOKE[0] / "child.pt").is_file()
    deadline = time.monotonic() + 10
    alive = workers
    while alive and time.monotonic() < deadline:
        alive = [p for p in workers if os.path.exists(f"/proc/{p}") and
                 "zombie" not in Path(f"/proc/{p}/status").read_text().lower()]
        time.sleep(0.1)
    assert alive == [], "a worker outlived its session"


def test_a_states_file_overwritten_during_the_session_does_not_change_what_is_used(pytester, search_files):
    states = pytester.path / "states.npy"
    states.write_bytes(search_files["states"].read_bytes())
    sha = hashlib.sha256(states.read_bytes()).hexdigest()
    pytester.makepyfile(test_search=_client(f"""
Path({str(states)!r}).write_bytes(b"\\x93NUMPY garbage: the file was replaced mid-run")
crossover_child.run()
"""))
    argv = [a for a in base_args(search_files) if not a.startswith("--crossover-states")]
    result = pytester.runpytest_subprocess(*argv, f"--crossover-states={states}", "--crossover-space=smoke")
    result.assert_outcomes(passed=3)  # read once, into memory: no bus error, the same buffer throughout
    manifest = _strict_json(pytester.path / "runs" / "manifest.json")
    assert manifest["provenance"]["states_file"]["sha256"] == sha  # names the bytes the children used


def test_last_failed_reruns_say_they_are_a_subset(pytester, search_files):
    pytester.makepyfile(test_search=_client(f"""
if cid.startswith("001_") and not Path({str(pytester.path / 'fixed')!r}).exists():
    raise RuntimeError("flaky")
crossover_child.run()
"""))
    argv = base_args(search_files)
    at = argv.index("no:cacheprovider")
    argv = argv[:at - 1] + argv[at + 1:]  # --lf needs the cache
    first = pytester.runpytest_subprocess(*argv, "--crossover-space=smoke")
    first.assert_outcomes(passed=2, failed=1)
    (pytester.path / "fixed").write_text("")
    again = pytester.runpytest_subprocess(*argv, "--crossover-space=smoke", "--lf")
    again.assert_outcomes(passed=1)
    again.stdout.fnmatch_lines(["NOTE: this session ran a subset: 1 of the 3 children of space 'smoke' (--lf)*"])
    rec = (pytester.path / "runs" / "recommendation.txt").read_text()
    assert "NOTE: this session ran a subset" in rec
    stored = sorted((pytester.path / ".crossover").rglob("*.json"))
    assert [_strict_json(p)["subset"] for p in stored] == [False, True]
