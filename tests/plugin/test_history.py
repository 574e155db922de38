"""History across commits, end to end in temporary git repositories: records, baselines, fail thresholds, trend."""

from __future__ import annotations

import hashlib
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from harness.records.store import machine_id
from tests.plugin.conftest import CLIENT, base_args, read_json

SMOKE2 = ["000_layer_a0p50_sNone_short", "001_weighted_a0p50_sNone_short"]
SPACE = ["--crossover-space=custom", "--crossover-modes=layer,weighted", "--crossover-alphas=0.5",
         "--crossover-regimes=short"]  # two children, the whole space (a --crossover-max-runs cut is a subset)


def _git(path: Path, *args: str) -> str:
    return subprocess.run(["git", *args], cwd=path, check=True, capture_output=True, text=True).stdout.strip()


@pytest.fixture
def repo(pytester: pytest.Pytester) -> Path:
    pytester.makepyfile(test_search=CLIENT)
    _git(pytester.path, "init", "-q", "-b", "main")
    _git(pytester.path, "config", "user.email", "ci@example.com")
    _git(pytester.path, "config", "user.name", "ci")
    _git(pytester.path, "add", "test_search.py")
    _git(pytester.path, "commit", "-qm", "first")
    return pytester.path


def _run(pytester: pytest.Pytester, files: dict, *args: str, subprocess_: bool = False) -> pytest.RunResult:
    # In-process keeps torch imported once; the exit-status test runs one real process.
    argv = [*base_args(files), *SPACE, "-p", "no:benchmark", *args]
    return pytester.runpytest_subprocess(*argv) if subprocess_ else pytester.runpytest_inprocess(*argv)


def _store(root: Path, name: str = ".crossover") -> Path:
    return root / name / machine_id()


def _edit(path: Path, fn) -> None:
    data = json.loads(path.read_text())
    fn(data)
    path.write_text(json.dumps(data))


def test_records_follow_commits_and_compare_picks_the_newest_match(pytester, search_files, repo):
    sha1 = _git(repo, "rev-parse", "HEAD")
    _run(pytester, search_files).assert_outcomes(passed=2)
    first = _store(repo) / f"0001_{sha1[:10]}.json"
    rec = read_json(first)
    assert rec["commit_info"] == {"commit": sha1, "short": sha1[:10], "branch": "main", "dirty": False}
    assert rec["space"] == "custom" and rec["complete"] is True and rec["subset"] is False
    assert rec["fingerprints"] == {**{k: hashlib.sha256(search_files[f].read_bytes()).hexdigest()
                                      for k, f in (("parent_a", "parent_a"), ("parent_b", "parent_b"),
                                                   ("states", "states"))}, "eval_states": None}
    manifest = {c["child_id"]: c for c in read_json(repo / "runs" / "manifest.json")["children"]}
    assert sorted(c["child_id"] for c in rec["children"]) == SMOKE2
    for child in rec["children"]:
        m = manifest[child["child_id"]]
        assert child["primary"] == m["primary"] and child["status"] == "ok" and child["degenerate"] is False
        assert child["agree_a"] == m["after_finetune"]["vs_parent_a"]["top1"]
        assert child["kl_b"] == m["after_finetune"]["vs_parent_b"]["kl"]
        assert child["latency"] == m["latency_ms"]["ranked"] > 0 and child["return"] is None

    (repo / "test_search.py").write_text(CLIENT + "# a change not yet committed\n")
    _run(pytester, search_files).assert_outcomes(passed=2)
    dirty = _store(repo) / f"0002_{sha1[:10]}_dirty.json"
    assert read_json(dirty)["commit_info"]["dirty"] is True

    _git(repo, "commit", "-qam", "second")
    sha2 = _git(repo, "rev-parse", "HEAD")
    result = _run(pytester, search_files, "--crossover-compare")
    assert result.ret == 0
    result.stdout.fnmatch_lines([
        f"*crossover history: compared with 0002_{sha1[:10]}_dirty*",
        "| child_id *| primary old *| primary new *| primary delta *| return old *| latency_ms delta *|",
        (f"| {SMOKE2[0]} *| {manifest[SMOKE2[0]]['primary']:.4f} *| {manifest[SMOKE2[0]]['primary']:.4f} "
        "*| +0.0000 *|*"),
        f"saved: {_store(repo) / f'0003_{sha2[:10]}.json'}",
    ])
    assert "not comparable" not in result.stdout.str()

    # An explicit id wins over "newest"; --crossover-no-save keeps the store as it is.
    result = _run(pytester, search_files, "--crossover-compare=1", "--crossover-no-save")
    result.stdout.fnmatch_lines([f"*crossover history: compared with 0001_{sha1[:10]} *"])
    assert sorted(p.name for p in _store(repo).iterdir()) == [
        f"0001_{sha1[:10]}.json", f"0002_{sha1[:10]}_dirty.json", f"0003_{sha2[:10]}.json"]
    # A subset (here: a -k selection) is saved, marked, and never the baseline of a whole-space session.
    subset = _run(pytester, search_files, "-k", "layer")
    subset.stdout.fnmatch_lines(["NOTE: this session ran a subset: 1 of the 2 children of space 'custom' (-k "
                                 "layer)*", "saved as a subset record*"])
    assert read_json(_store(repo) / f"0004_{sha2[:10]}.json")["subset"] is True
    whole = _run(pytester, search_files, "--crossover-compare", "--crossover-no-save")
    whole.stdout.fnmatch_lines([f"*crossover history: compared with 0003_{sha2[:10]}*"])

    # Trend: one line per record, with the best child, and a plot.
    trend = pytester.run(sys.executable, "-m", "harness.history", "--storage", ".crossover", "--plot", "t/trend.png")
    assert trend.ret == 0
    best = max(manifest.values(), key=lambda c: c["primary"])
    trend.stdout.fnmatch_lines([
        (f"| 0001_{sha1[:10]} *| {sha1[:10]} *| main *| *| custom *| 2 *| {best['child_id']} *| "
        f"{best['primary']:.4f} *| — *| 0 *|"),
        f"| 0002_{sha1[:10]}_dirty *| {sha1[:10]} *| main *| yes *|*",
        f"| 0003_{sha2[:10]} *| {sha2[:10]} *|*",
        "plot: t/trend.png",
    ])
    assert (repo / "t" / "trend.png").read_bytes()[:4] == b"\x89PNG"


def test_fail_expressions_trigger_exactly_at_their_thresholds(pytester, search_files, repo):
    _run(pytester, search_files).assert_outcomes(passed=2)
    (stored,) = _store(repo).iterdir()
    original = read_json(stored)
    p0, p1 = (next(c["primary"] for c in original["children"] if c["child_id"] == cid) for cid in SMOKE2)

    def baseline(primary0: float, primary1: float, latency: float) -> None:
        data = json.loads(json.dumps(original))
        for c in data["children"]:
            c["primary"] = primary0 if c["child_id"] == SMOKE2[0] else primary1
            c["primary_lo"] = c["primary_hi"] = c["primary"]  # a stored value with no noise of its own
            c["latency"], c["return"] = latency, 200.0  # returns were measured then, not now
        stored.write_text(json.dumps(data))

    def check(expr: str, **kw) -> pytest.RunResult:
        return _run(pytester, search_files, "--crossover-no-save", f"--crossover-compare-fail={expr}", **kw)

    def regressed(result: pytest.RunResult) -> list[str]:
        return [ln.strip() for ln in result.stdout.lines if ln.strip().startswith("regressed: ")]

    # Absolute drop: child 0 lost exactly 0.3, far beyond the noise of 60 held-out states -> passes at 0.3,
    # breaches at 0.29 (a real process: exit 1).
    baseline(p0 + 0.3, p1, 1e6)
    ok = check("primary:0.3,return:10,latency:20%")
    assert ok.ret == 0 and regressed(ok) == []
    ok.stdout.fnmatch_lines([f"no regression against {stored.stem} (primary:0.3, return:10, latency:20%)"])
    bad = check("primary:0.29", subprocess_=True)
    assert bad.ret == 1  # the process exit status, although every test passed
    bad.assert_outcomes(passed=2)
    assert regressed(bad) == [(f"regressed: {SMOKE2[0]}: primary {p0 + 0.3:.4f} -> {p0:.4f} "
                              "(worse by 0.3 > 0.29) [primary:0.29]")]
    bad.stdout.fnmatch_lines([(f"regressed against {stored.stem} (1 breach(es) of --crossover-compare-fail="
                              "primary:0.29); exit status 1:")])
    # The last line says so (a degenerate child's says "failed" instead; both exit 1).
    assert re.fullmatch(r"=* 2 passed, 1 regressed in [0-9.]+s( \([0-9:]+\))? =*", bad.stdout.lines[-1]), \
        bad.stdout.lines[-1]

    # A drop past the threshold but inside the noise of this session's 60 held-out states: reported, not failed.
    baseline(p0 + 0.03, p1, 1e6)
    noisy = check("primary:0.02")
    assert noisy.ret == 0 and regressed(noisy) == []
    noisy.stdout.fnmatch_lines([f"{SMOKE2[0]}: primary * (worse by 0.03 > 0.02) ?primary:0.02?: within the noise *"])

    # Latency: a relative increase; a record timed at 1 ns makes every child slower.
    baseline(p0, p1, 1e-6)
    bad = _run(pytester, search_files, "--crossover-no-save", "--crossover-compare-fail=primary:0",
               "--crossover-compare-fail=latency:20%")
    assert bad.ret == 1
    assert [ln.split()[1] + ln.split()[-1] for ln in regressed(bad)] == [
        f"{SMOKE2[1]}:[latency:20%]", f"{SMOKE2[0]}:[latency:20%]"]  # rank order: child 1 leads


def test_unlike_runs_are_never_compared_and_corrupt_records_are_reported(pytester, search_files, repo):
    """Teacher both saved, teacher a compared with a fail gate: nothing readable is comparable, and a corrupt
    record might have been the baseline: the gate says it could not run, and fails."""
    _run(pytester, search_files, "--crossover-teacher=both").assert_outcomes(passed=2)
    (stored,) = _store(repo).iterdir()
    (_store(repo) / "0002_bad.json").write_text('{"schema": "pytest-crossover-history", "chil')
    (_store(repo) / "foreign.json").write_text("{}")
    result = _run(pytester, search_files, "--crossover-compare", "--crossover-compare-fail=primary:0.01")
    assert result.ret == 1 and "regressed" not in result.stdout.str()
    result.stdout.fnmatch_lines([
        "warning: skipped *0002_bad.json: unreadable or corrupt JSON*",
        "warning: skipped *foreign.json: not a pytest-crossover record name*",
        (f"no stored record is comparable with this session; the newest, {stored.stem}, differs in teacher \"both\" "
         "-> \"a\"; nothing compared or gated"),
        "--crossover-compare-fail could not run: no readable baseline, and 1 file(s) of the history store * could not "
        "be read (listed above); fix or remove them; exit status 1",
        f"saved: *0003_{stored.stem[5:]}.json",
    ])
    # Named explicitly, an incomparable record is an error before any child runs.
    bad = _run(pytester, search_files, "--crossover-compare=1")
    assert bad.ret == pytest.ExitCode.USAGE_ERROR and "passed" not in bad.stdout.str()
    bad.stderr.fnmatch_lines([f"ERROR: --crossover-compare: record {stored.stem} is not comparable with this "
                              "session: teacher \"both\" -> \"a\"; *"])


def test_ini_storage_outside_git_and_usage_errors(pytester, search_files):
    pytester.makepyfile(test_search=CLIENT)
    pytester.makeini("[pytest]\ncrossover_storage = hist\n")
    _run(pytester, search_files).assert_outcomes(passed=2)
    (saved,) = _store(pytester.path, "hist").iterdir()
    assert saved.name == "0001_nogit.json" and read_json(saved)["commit_info"]["commit"] == "nogit"

    bad = _run(pytester, search_files, "--crossover-compare-fail=primary:abc")
    assert bad.ret == pytest.ExitCode.USAGE_ERROR
    bad.stderr.fnmatch_lines([("ERROR: --crossover-compare-fail: cannot parse 'primary:abc'; use METRIC:AMOUNT* "
                              "with METRIC one of primary, return, latency *")])
    bad = _run(pytester, search_files, "--crossover-compare=7")
    assert bad.ret == pytest.ExitCode.USAGE_ERROR
    bad.stderr.fnmatch_lines(["ERROR: --crossover-compare: no stored record matches '7' (newest: 0001_nogit); *"])
    assert [p.name for p in _store(pytester.path, "hist").iterdir()] == ["0001_nogit.json"]


def test_help_lists_the_history_options(pytester):
    result = pytester.runpytest_inprocess("--help")
    assert result.ret == 0
    result.stdout.fnmatch_lines(["*--crossover-storage=DIR*", "*--crossover-no-save*", "*--crossover-compare=[[]ID[]]*",
                                 "*--crossover-compare-fail=EXPR*", "*primary:5% (relative drop)*",
                                 "*crossover_compare_fail (string)*"])
