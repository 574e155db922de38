"""History store: naming, loading past corrupt files, fail expressions at their thresholds, baseline choice."""

from __future__ import annotations

import copy
import json
import subprocess
import sys

import pytest

from harness import history
from harness.core.errors import HarnessError
from harness.pictures import trend as ht
from harness.records import compare as hc
from harness.records import store as hs

GIT = {"commit": "abcdef0123456789", "short": "abcdef0123", "branch": "main", "dirty": False}
MACHINE = {"node": "box", "system": "Linux", "release": "6", "machine": "x86_64", "processor": "x86_64",
           "cpu_count": 2, "python_implementation": "CPython", "python_version": "3.11.9"}
VERS = {"python": "3.11.9", "harness": "0.1", "torch": "2.13.0+cpu", "numpy": "2.0"}
FP = {"parent_a": {"sha256": "a" * 64}, "parent_b": {"sha256": "b" * 64}, "states_file": {"sha256": "c" * 64}}


def _child(index: int, primary: float | None, status: str = "ok", ret: float | None = 100.0,
           latency: float | None = 1.0) -> dict:
    metrics = {"vs_parent_a": {"top1": primary, "kl": 0.1, "mse": 0.2, "cosine": 0.9},
               "vs_parent_b": {"top1": primary, "kl": 0.3, "mse": 0.4, "cosine": 0.8},
               "oracle": 0.95, "bound_ratio": 0.9}
    return {"child_id": f"00{index}_c", "index": index, "status": status, "primary": primary,
            "crossover": {"mode": "layer", "alpha": 0.5, "seed": None}, "finetune_regime": {"name": "short"},
            "after_finetune": metrics, "return": None if ret is None else {"mean": ret, "std": 1.0},
            "latency_ms": None if latency is None else {"ranked": latency}, "finetune_steps": 10}


def _manifest(children: list[dict], space: str = "smoke", provenance: dict = FP, options: dict | None = None,
              selection: dict | None = None) -> dict:
    return {"space": space, "options": {"space": space, "modes": None, "alphas": None, "seeds": None,
                                        "regimes": None, "max_runs": 2, **(options or {})},
            "complete": True, "provenance": provenance, "parents": {"agree_ab": 0.7}, "children": children,
            "selection": selection}


def _record(children: list[dict], git: dict = GIT, **kw) -> dict:
    return hs.build_record(_manifest(children, **kw), git=git, machine=MACHINE, vers=VERS,
                          timestamp="2025-01-01T00:00:00+00:00")


def test_record_holds_every_metric_and_fingerprints():
    rec = _record([_child(0, 0.8), _child(1, 0.6, status="degenerate")])
    assert rec["fingerprints"] == {"parent_a": "a" * 64, "parent_b": "b" * 64, "states": "c" * 64,
                                   "eval_states": None}
    assert rec["comparable_on"]["space"] == "smoke" and len(rec["fingerprint"]) == 16 and rec["subset"] is False
    best = rec["children"][0]
    assert best["child_id"] == "000_c" and best["rank"] == 1
    assert {k: best[k] for k in ("primary", "agree_a", "agree_b", "bound_ratio", "kl_a", "kl_b", "mse_a", "mse_b",
                                 "cosine_a", "cosine_b", "return", "latency", "degenerate", "status")} == {
        "primary": 0.8, "agree_a": 0.8, "agree_b": 0.8, "bound_ratio": 0.9, "kl_a": 0.1, "kl_b": 0.3, "mse_a": 0.2,
        "mse_b": 0.4, "cosine_a": 0.9, "cosine_b": 0.8, "return": 100.0, "latency": 1.0, "degenerate": False,
        "status": "ok"}
    assert rec["children"][1]["degenerate"] is True


def test_store_names_records_like_pytest_benchmark(tmp_path):
    store = hs.HistoryStore(tmp_path)
    p1 = store.save(_record([_child(0, 0.8)]))
    p2 = store.save(_record([_child(0, 0.8)], git={**GIT, "dirty": True}))
    p3 = store.save(_record([_child(0, 0.8)], git={"commit": "nogit", "short": "nogit", "branch": None,
                                                   "dirty": False}))
    folder = tmp_path / "Linux-CPython-3.11-torch2.13.0+cpu"
    assert [p1, p2, p3] == [folder / "0001_abcdef0123.json", folder / "0002_abcdef0123_dirty.json",
                            folder / "0003_nogit.json"]
    # Numbers run across machine folders, so a number names one record.
    p4 = store.save(_record([_child(0, 0.8)], git=GIT) | {"versions": {**VERS, "torch": "2.14.0"}})
    assert p4 == tmp_path / "Linux-CPython-3.11-torch2.14.0" / "0004_abcdef0123.json"
    records, warnings = store.load()
    assert [r.number for r in records] == [1, 2, 3, 4] and warnings == []
    assert json.loads(p1.read_text())["commit_info"]["commit"] == GIT["commit"]
    assert not list(folder.glob(".*"))  # no temporary file left behind by the atomic write


def test_corrupt_and_foreign_files_are_skipped_with_a_warning(tmp_path):
    store = hs.HistoryStore(tmp_path)
    good = store.save(_record([_child(0, 0.8)]))
    folder = good.parent
    (folder / "0002_deadbeef.json").write_text('{"schema": "pytest-crossover-hist')  # truncated
    (folder / "0003_deadbeef.json").write_text(json.dumps({"machine_info": {}, "benchmarks": []}))  # foreign
    (folder / "notes.txt").write_text("hello")
    (folder / ".gitkeep").write_text("")
    records, warnings = store.load()
    assert [r.name for r in records] == ["0001_abcdef0123"]
    assert len(warnings) == 3
    assert "0002_deadbeef.json: unreadable or corrupt JSON" in warnings[0]
    assert "0003_deadbeef.json: not a pytest-crossover record" in warnings[1]
    assert "notes.txt: not a pytest-crossover record name" in warnings[2]
    assert store.save(_record([_child(0, 0.8)])).name == "0004_abcdef0123.json"  # never reuses a number
    assert hs.HistoryStore(tmp_path / "missing").load() == ([], [])


@pytest.mark.parametrize("text, expected", [
    ("primary:0.02", [hc.FailCheck("primary", 0.02, False)]),
    ("primary:5%", [hc.FailCheck("primary", 5.0, True)]),
    ("return:10, latency:20%", [hc.FailCheck("return", 10.0, False), hc.FailCheck("latency", 20.0, True)]),
    ("latency:1e-3", [hc.FailCheck("latency", 0.001, False)]),
])
def test_fail_expressions_parse(text, expected):
    assert hc.parse_fail(text) == expected


@pytest.mark.parametrize("text", ["primary", "primary:", "agree_a:0.1", "primary:-0.1", "primary:5%%", "",
                                  "primary:0.02,", "return:ten"])
def test_bad_fail_expression_is_one_line_error(text):
    with pytest.raises(HarnessError) as exc:
        hc.parse_fail(text)
    msg = str(exc.value)
    assert "\n" not in msg and "cannot parse" in msg and "METRIC:AMOUNT[%]" in msg


# (check, old, new at the threshold, new just past it)
@pytest.mark.parametrize("expr, old, at, past", [
    ("primary:0.02", 0.80, 0.78, 0.7799),
    ("primary:5%", 0.80, 0.76, 0.7599),
    ("return:10", 120.0, 110.0, 109.99),
    ("return:10%", -200.0, -220.0, -220.1),  # a negative return: relative to its size
    ("latency:20%", 1.0, 1.2, 1.2001),
    ("latency:0.5", 2.0, 2.5, 2.5001),
])
def test_fail_checks_trigger_exactly_past_the_threshold(expr, old, at, past):
    (chk,) = hc.parse_fail(expr)
    assert not chk.breached(old, at)
    assert chk.breached(old, past)
    assert not chk.breached(old, old)


def test_latency_is_worse_when_it_grows_and_primary_when_it_drops():
    (lat,) = hc.parse_fail("latency:20%")
    (prim,) = hc.parse_fail("primary:0.02")
    assert not lat.breached(1.0, 0.1) and lat.breached(1.0, 1.3)
    assert not prim.breached(0.5, 0.9) and prim.breached(0.5, 0.4)
    assert hc.parse_fail("primary:5%")[0].breached(0.0, -0.1)  # no relative base: any drop breaches


def test_compare_and_regression_lines(tmp_path):
    store = hs.HistoryStore(tmp_path)
    store.save(_record([_child(0, 0.80, ret=120.0, latency=1.0), _child(1, 0.70), _child(2, 0.60)]))
    (base,) = store.load()[0]
    new = _record([_child(0, 0.77, ret=105.0, latency=1.5), _child(1, None, status="diverged", ret=None,
                                                                   latency=None), _child(3, 0.9)])
    cmp = hc.compare(base, new)
    assert cmp.added == ["003_c"] and cmp.removed == ["002_c"]
    row = next(r for r in cmp.rows if r["child_id"] == "000_c")
    assert row["primary"][0] == 0.80 and row["primary"][1] == 0.77 and row["primary"][2] == pytest.approx(-0.03)
    assert row["return"] == (120.0, 105.0, -15.0) and row["latency"] == (1.0, 1.5, 0.5)
    assert cmp.same_machine and cmp.notes == ["0001_abcdef0123 is from the same commit"]
    lines, noisy = hc.regressions(cmp, hc.parse_fail("primary:0.02,return:10,latency:20%"))
    assert noisy == [] and lines == [
        "000_c: primary 0.8000 -> 0.7700 (worse by 0.03 > 0.02) [primary:0.02]",
        "000_c: return 120.0000 -> 105.0000 (worse by 15 > 10) [return:10]",
        "000_c: latency 1.0000 -> 1.5000 (worse by 50% > 20%) [latency:20%]",
        "001_c: primary 0.7000 -> missing (status diverged) [primary:0.02]",
        "001_c: return 100.0000 -> missing (status diverged) [return:10]",
        "001_c: latency 1.0000 -> missing (status diverged) [latency:20%]",
    ]
    assert hc.regressions(cmp, hc.parse_fail("primary:0.03")) == (
        ["001_c: primary 0.7000 -> missing (status diverged) [primary:0.03]"], [])
    table = hc.comparison_table(cmp)
    assert "| 000_c " in table and "-0.0300" in table and "+0.500" in table
    # Status and flag columns: what each child's status became, and which check it breaches.
    flagged = hc.comparison_table(cmp, hc.parse_fail("primary:0.02,latency:60%"))
    head, _, *body = flagged.splitlines()
    cells = [[c.strip() for c in line.strip("|").split("|")] for line in body]
    assert [c.strip() for c in head.strip("|").split("|")][:2] == ["child_id", "status"] and head.rstrip("| ").endswith(
        "flag")
    assert [(c[0], c[1], c[-1]) for c in cells] == [
        ("000_c", "ok", "regressed primary:0.02"),
        ("001_c", "ok -> diverged", "regressed primary:0.02, regressed latency:60%")]


def test_a_metric_not_measured_now_is_not_a_regression(tmp_path):
    store = hs.HistoryStore(tmp_path)
    store.save(_record([_child(0, 0.8, ret=100.0)]))
    (base,) = store.load()[0]
    cmp = hc.compare(base, _record([_child(0, 0.8, ret=None)]))
    assert hc.regressions(cmp, hc.parse_fail("return:1")) == ([], [])


def test_a_drop_inside_the_noise_is_reported_not_failed(tmp_path):
    store = hs.HistoryStore(tmp_path)
    noisy = dict(_child(0, 0.80), rows=None)
    store.save(_record([noisy]))
    (base,) = store.load()[0]
    base.data["children"][0].update(primary_lo=0.76, primary_hi=0.84)  # ±0.04: a drop of 0.03 is noise
    new = _record([_child(0, 0.77)])
    new["children"][0].update(primary_lo=0.73, primary_hi=0.81)
    failed, within = hc.regressions(hc.compare(base, new), hc.parse_fail("primary:0.02"))
    assert failed == [] and within == ["000_c: primary 0.8000 -> 0.7700 (worse by 0.03 > 0.02) [primary:0.02]: "
                                       "within the noise (±0.05657), not failed"]
    assert "| within noise primary:0.02 |" in hc.comparison_table(hc.compare(base, new), hc.parse_fail("primary:0.02"))
    new["children"][0].update(primary=0.60, primary_lo=0.56, primary_hi=0.64)
    failed, within = hc.regressions(hc.compare(base, new), hc.parse_fail("primary:0.02"))
    assert len(failed) == 1 and within == []


def test_latency_on_another_machine_is_flagged(tmp_path):
    store = hs.HistoryStore(tmp_path)
    store.save(_record([_child(0, 0.8)]))
    (base,) = store.load()[0]
    new = _record([_child(0, 0.8)]) | {"machine_info": {**MACHINE, "node": "ci-runner", "cpu_count": 4}}
    cmp = hc.compare(base, new)
    assert not cmp.same_machine
    assert cmp.notes[0].startswith("machine info differs from 0001_abcdef0123 (node, cpu_count): latency deltas")


def test_baseline_is_the_newest_comparable_whole_record(tmp_path):
    store = hs.HistoryStore(tmp_path)
    other_fp = copy.deepcopy(FP)
    other_fp["states_file"]["sha256"] = "d" * 64
    store.save(_record([_child(0, 0.8)]))                       # 1: comparable
    store.save(_record([_child(0, 0.8)]))                       # 2: comparable, newer
    store.save(_record([_child(0, 0.8)], provenance=other_fp))  # 3: other states
    store.save(_record([_child(0, 0.8)], space="minimal"))      # 4: other space
    store.save(_record([_child(0, 0.8)], selection={"subset": True}))  # 5: comparable settings, but a subset
    records, _ = store.load()
    current = _record([_child(0, 0.8)])
    base, notes = hc.select_baseline(records, current)
    assert base.number == 2 and notes == []  # never the subset record 5
    # Nothing comparable: no baseline, nothing gated, and the note names what differs in the newest record.
    teacher_both = _record([_child(0, 0.8)], options={"teacher": "both"})
    base, notes = hc.select_baseline(records, teacher_both)
    assert base is None and notes[0].startswith("no stored record is comparable with this session; the newest, "
                                                "0005_abcdef0123, differs in teacher null -> \"both\"")
    assert notes[0].endswith("nothing compared or gated")
    # Explicit: by number or file-name prefix, and only when comparable.
    assert hc.select_baseline(records, current, "1")[0].number == 1
    assert hc.select_baseline(records, current, "0002_abc")[0].number == 2
    with pytest.raises(HarnessError, match=r"^record 0003_abcdef0123 is not comparable with this session: states "
                                           r"dddddddddddd -> cccccccccccc; name a record"):
        hc.select_baseline(records, current, "3")
    with pytest.raises(HarnessError, match=r"^no stored record matches '9' \(newest: 0001_"):
        hc.select_baseline(records, current, "9")
    # Two stores merged (say, two CI caches) can hold the same number twice: ambiguous, and said so.
    copy_path = tmp_path / "Other-CPython-3.11-torch2.13.0" / "0002_abcdef0123.json"
    copy_path.parent.mkdir()
    copy_path.write_text(records[1].path.read_text())
    merged, _ = store.load()
    ambiguous = r"^'2' matches 2 records \(Linux-CPython-3.11-torch2.13.0\+cpu/0002_abcdef0123, Other-"
    with pytest.raises(HarnessError, match=ambiguous):
        hc.find_record(merged, "2")


def test_git_info_reads_commit_branch_and_dirty(tmp_path):
    assert hs.git_info(tmp_path) == {"commit": "nogit", "short": "nogit", "branch": None, "dirty": False}
    def run(*a: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(["git", *a], cwd=tmp_path, check=True, capture_output=True, text=True)

    run("init", "-q", "-b", "trunk")
    run("config", "user.email", "t@example.com")
    run("config", "user.name", "t")
    (tmp_path / "f.txt").write_text("1")
    run("add", "f.txt")
    run("commit", "-qm", "one")
    sha = run("rev-parse", "HEAD").stdout.strip()
    (tmp_path / "untracked.txt").write_text("u")
    assert hs.git_info(tmp_path) == {"commit": sha, "short": sha[:10], "branch": "trunk", "dirty": False}
    (tmp_path / "f.txt").write_text("2")
    assert hs.git_info(tmp_path)["dirty"] is True


def test_trend_rows_and_cli(tmp_path, capsys):
    store = hs.HistoryStore(tmp_path)
    store.save(_record([_child(0, 0.8, ret=100.0), _child(1, 0.9, ret=150.0, status="degenerate")]))
    store.save(_record([_child(0, 0.85, ret=110.0), _child(1, 0.5, status="degenerate")],
                       git={**GIT, "commit": "1234567890ab", "short": "1234567890"}))
    rows = ht.trend_rows(store.load()[0])
    assert [(r["commit"], r["best"], r["primary"], r["return"], r["degenerate"]) for r in rows] == [
        ("abcdef0123", "001_c", 0.9, 150.0, 1), ("1234567890", "000_c", 0.85, 110.0, 1)]
    (tmp_path / "x" / "0099_bad.json").parent.mkdir()
    (tmp_path / "x" / "0099_bad.json").write_text("{")
    assert history.main(["--storage", str(tmp_path), "--plot", str(tmp_path / "out" / "trend.png")]) == 0
    out, err = capsys.readouterr()
    assert "| 0002_1234567890 | 1234567890 | main" in out and "0.8500" in out and "110.0" in out
    assert (tmp_path / "out" / "trend.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "warning: skipped" in err and "0099_bad.json" in err
    assert history.main(["--storage", str(tmp_path / "none")]) == 0
    assert "no crossover records in" in capsys.readouterr().out


def test_concurrent_sessions_on_one_store_never_lose_a_record(tmp_path):
    record = json.dumps(_record([_child(0, 0.8)]))
    code = ("import json, sys; from harness.records.store import HistoryStore; "
            f"HistoryStore(sys.argv[1]).save(json.loads({record!r}))")
    procs = [subprocess.Popen([sys.executable, "-c", code, str(tmp_path)]) for _ in range(8)]
    assert [p.wait(timeout=60) for p in procs] == [0] * 8
    records, warnings = hs.HistoryStore(tmp_path).load()
    assert warnings == [] and sorted(r.number for r in records) == list(range(1, 9))
