"""End-to-end sessions: ids, outputs and their schema, the degenerate gate, xdist and -k equivalence."""

from __future__ import annotations

import csv

import pytest

from tests.plugin.conftest import read_json
from tests.plugin.conftest import run_search_inprocess as run_search

SMOKE_IDS = ["000_random_a0p50_s0_short", "001_layer_a0p50_sNone_short", "002_weighted_a0p50_sNone_short"]
METRIC_KEYS = {"top1", "top_k", "kl", "mse", "mae", "cosine"}


def _metrics(run_dir):
    manifest = read_json(run_dir / "manifest.json")
    return {c["child_id"]: (c["primary"], c["after_finetune"], c["before_finetune"], c["int8"], c["finetune"])
            for c in manifest["children"]}


def test_smoke_space_writes_every_output(pytester, search_files):
    result = run_search(pytester, search_files, "--crossover-space=smoke", "-v")
    result.assert_outcomes(passed=3)
    result.stdout.fnmatch_lines([f"*test_child[[]{cid}[]] PASSED primary=0.*" for cid in SMOKE_IDS])
    result.stdout.fnmatch_lines(["*crossover leaderboard (3 children, space smoke)*", "*parent_a*", "*parent_b*"])
    run_dir = pytester.path / "runs"
    for name in ("leaderboard.md", "leaderboard.csv", "leaderboard.json", "manifest.json", "recommendation.txt"):
        assert (run_dir / name).is_file(), name
    manifest = read_json(run_dir / "manifest.json")
    assert manifest["complete"] is True
    assert [c["child_id"] for c in manifest["children"]] == SMOKE_IDS
    for cid in SMOKE_IDS:
        child_dir = run_dir / cid
        assert {p.name for p in child_dir.iterdir()} >= {"run_config.json", "crossover.pt", "child.pt", "eval.json"}
        ev = read_json(child_dir / "eval.json")
        for phase in ("before_finetune", "after_finetune"):
            m = ev[phase]
            assert set(m["vs_parent_a"]) >= METRIC_KEYS and set(m["vs_parent_a"]["top_k"]) == {"1", "2", "3"}
            assert m["primary"] == min(m["vs_parent_a"]["top1"], m["vs_parent_b"]["top1"])
            assert 0.0 <= m["oracle"] <= 1.0 and m["oracle"] >= max(m["vs_parent_a"]["top1"], m["vs_parent_b"]["top1"])
        assert ev["int8"] is None
        assert ev["latency_ms"]["ranked"] > 0
        assert len(ev["finetune"]["train_losses"]) == 5
        cfg = read_json(child_dir / "run_config.json")
        assert cfg["child_id"] == cid and cfg["teacher"] == "a" and cfg["holdout"] == 0.2
        assert cfg["finetune"]["epochs"] == 5 and cfg["finetune"]["lr"] == 0.001 and cfg["finetune"]["seed"] == 42
        assert len(cfg["parent_a"]["sha256"]) == 64 and cfg["states_file"]["shape"] == [300, 8]
        assert cfg["git"]["commit"] == "nogit"  # pytester's directory is not a repository
    rows = list(csv.DictReader((run_dir / "leaderboard.csv").open()))
    assert [r["child_id"] for r in rows[-2:]] == ["parent_a", "parent_b"]
    children = rows[:-2]
    assert [int(r["rank"]) for r in children] == [1, 2, 3]
    primaries = [float(r["primary_metric"]) for r in children]
    assert primaries == sorted(primaries, reverse=True)
    assert any(r["pareto"] == "True" for r in children)
    rec = (run_dir / "recommendation.txt").read_text()
    assert (rec.count("Use child") + rec.count("(a parent)")) == 1 and rows[0]["child_id"] in rec
    # The terminal ends with the decision block: the same lines as recommendation.txt's, after every other summary.
    from harness.answer.recommend import decision_lines

    block = decision_lines(read_json(run_dir / "recommendation.json"))
    out = result.stdout.lines
    start = out.index(next(ln for ln in out if "crossover decision" in ln))
    assert [ln.strip() for ln in out[start + 1:start + 1 + len(block)]] == block
    labels = ["why", "which parent", "how sure", "next"] if "(a parent)" in block[0] else ["why", "how sure", "next"]
    assert out[start + 1].startswith("Use ") and [ln.split(":")[0] for ln in block[1:]] == labels
    assert out[start + 1 + len(block)].startswith("====") and "3 passed" in out[start + 1 + len(block)]
    assert all(f"  {line}" in rec for line in block[1:])  # one source: the file says the same


def test_degenerate_threshold_fails_the_session(pytester, search_files):
    """A threshold relative to the parents (99.9 % of their blend bound) fails both children, each in one line
    with the resolved value and the form given; pytest's last line says "failed" (a regression's says
    "regressed")."""
    result = run_search(pytester, search_files, "--crossover-space=smoke", "--crossover-max-runs=2",
                        "--crossover-degenerate-threshold=bound:0.999")
    assert result.ret == 1
    result.assert_outcomes(failed=2)
    bound = read_json(pytester.path / "runs" / "manifest.json")["parents"]["bound"]
    result.stdout.fnmatch_lines([f"000_random_a0p50_s0_short: degenerate child: primary 0.* < threshold "
                                 f"{0.999 * bound:.4f} (bound:0.999)"])
    # pytest's own shape: FAILED <nodeid> - <reason>
    assert any(ln.startswith("FAILED test_search.py::test_child[000_random_a0p50_s0_short] - Failed: ")
               for ln in result.stdout.lines)
    assert "2 failed" in result.stdout.lines[-1] and "regressed" not in result.stdout.lines[-1]
    rows = read_json(pytester.path / "runs" / "leaderboard.json")
    assert [r["status"] for r in rows[:2]] == ["degenerate", "degenerate"]
    # The same children pass a gate at the parents' own agreement minus a margin.
    lenient = run_search(pytester, search_files, "--crossover-space=smoke", "--crossover-max-runs=2",
                         "--crossover-degenerate-threshold=parents:-0.5")
    lenient.assert_outcomes(passed=2)


def test_an_absolute_threshold_above_the_bound_is_refused_naming_it(pytester, search_files):
    pytester.makeini("[pytest]\ncrossover_degenerate_threshold = 0.99\n")
    result = run_search(pytester, search_files, "--crossover-space=smoke", "--crossover-max-runs=2")
    assert result.ret == 1
    result.assert_outcomes(failed=2)  # each child says why, before any work on it
    bound = read_json(pytester.path / "runs" / "manifest.json")["parents"]["bound"]
    result.stdout.fnmatch_lines([f"crossover_degenerate_threshold (ini): degenerate threshold 0.99 is above the blend "
                                 f"bound {bound:.4f} of these parents (*): no child can reach it; give at most "
                                 f"{bound:.4f}, or a relative form such as bound:0.8"])
    assert any(ln.startswith("FAILED test_search.py::test_child[000_random_a0p50_s0_short] - Failed: ")
               for ln in result.stdout.lines)


@pytest.mark.slow
def test_xdist_and_selection_give_identical_metrics(pytester, search_files):
    serial = run_search(pytester, search_files, "--crossover-space=minimal-qat", "--crossover-max-runs=4",
                        "--crossover-run-dir=serial", "-n", "0")
    serial.assert_outcomes(passed=4)
    # The controller never imports torch under xdist: it checks inputs from the checkpoints' pickled index and
    # the workers time the children and the parents (see the parents' rows below).
    conftest = pytester.makeconftest("""
import sys
def pytest_unconfigure(config):
    if not hasattr(config, "workerinput"):
        open("controller_torch.txt", "w").write(str("torch" in sys.modules))
""")
    parallel = pytester.runpytest_subprocess(*_args(search_files, "par"), "--crossover-space=minimal-qat",
                                             "--crossover-max-runs=4", "-n", "2")
    parallel.assert_outcomes(passed=4)
    conftest.unlink()
    selected = pytester.runpytest_inprocess(*_args(search_files, "sel"), "--crossover-space=minimal-qat",
                                            "--crossover-max-runs=4", "-k", "short_qat")
    selected.assert_outcomes(passed=1, deselected=3)
    a, b, c = (_metrics(pytester.path / d) for d in ("serial", "par", "sel"))
    assert a == b
    assert c["001_random_a0p50_s0_short_qat"] == a["001_random_a0p50_s0_short_qat"]
    assert a["001_random_a0p50_s0_short_qat"][3]["vs_float"] > 0.5  # the int8 model was evaluated
    cfg = read_json(pytester.path / "par" / "001_random_a0p50_s0_short_qat" / "run_config.json")
    assert cfg["git"] == {"commit": "nogit", "short": "nogit", "branch": None, "dirty": False}
    par = read_json(pytester.path / "par" / "manifest.json")
    assert "xdist worker" in par["latency_mode"]
    assert {c["latency_ms"]["mode"] for c in par["children"]} == {"in-worker"}
    assert (pytester.path / "controller_torch.txt").read_text() == "False"
    ser = read_json(pytester.path / "serial" / "manifest.json")
    assert par["parents"]["vs"] == ser["parents"]["vs"] and par["parents"]["agree_ab"] == ser["parents"]["agree_ab"]
    assert set(par["parents"]["latency_ms"]) == {"parent_a", "parent_b"}
    assert all(v > 0 for v in par["parents"]["latency_ms"].values())
    assert par["provenance"] == ser["provenance"]


def _args(files, run_dir):
    from tests.plugin.conftest import base_args

    return base_args(files, run_dir)


def test_client_repository_with_ini_options(pytester, search_files):
    """Another repository: one test module and its own pyproject pins, none of our files."""
    pytester.makepyprojecttoml(f"""
[tool.pytest.ini_options]
crossover_space = "custom"
crossover_modes = "weighted"
crossover_alphas = "0.5"
crossover_regimes = "short"
crossover_parent_a = "{search_files['parent_a']}"
crossover_parent_b = "{search_files['parent_b']}"
crossover_states = "{search_files['states']}"
crossover_episodes = "0"
crossover_run_dir = "out"
""")
    pytester.makepyfile(test_gate="def test_blend(crossover_child):\n    assert crossover_child.run()['primary'] > 0\n")
    result = pytester.runpytest_inprocess("-p", "no:cacheprovider")
    result.assert_outcomes(passed=1)
    assert read_json(pytester.path / "out" / "manifest.json")["children"][0]["child_id"] == \
        "000_weighted_a0p50_sNone_short"


def test_plugin_is_inert_without_its_fixture(pytester):
    pytester.makeconftest(
        "import sys\n"
        "def pytest_sessionfinish(session):\n"
        "    assert 'torch' not in sys.modules, 'the plugin imported torch'\n"
        "def pytest_unconfigure(config):\n"  # after the terminal summary: numpy costs an unrelated run ~0.1 s
        "    open('imported.txt', 'w').write(' '.join(m for m in ('torch', 'numpy') if m in sys.modules))\n"
    )
    pytester.makepyfile(test_plain="def test_one():\n    assert 1 + 1 == 2\n")
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider")
    result.assert_outcomes(passed=1)
    assert (pytester.path / "imported.txt").read_text() == ""
    assert "crossover leaderboard" not in result.stdout.str()
    assert not (pytester.path / "runs").exists()


def test_regime_costs_put_the_longest_population_first():
    from harness.search.space import build_space
    from pytest_crossover.scheduling import regime_costs

    costs = regime_costs(build_space("extended"))
    assert sorted(costs, key=lambda r: -costs[r])[:2] == ["long", "medium"]
    assert costs["short"] == costs["lr_high"] and costs["long"] == 4 * costs["short"]
    qat = regime_costs(build_space("default-qat"))
    assert sorted(qat, key=lambda r: -qat[r]) == ["long", "short_qat", "short"]


def test_work_units_give_every_worker_an_equal_share_mixing_the_regimes():
    from harness.search.space import build_space
    from pytest_crossover.scheduling import regime_costs, work_units

    specs = build_space("default-qat")  # 7 recipes x (short, long, short_qat); short_qat trains on other batches
    by_unit = lambda units: sorted({u for u, _ in units.values()})  # noqa: E731
    one = work_units(specs, 1)
    assert by_unit(one) == ["short+long", "short_qat"]  # what a serial session trains together
    two = work_units(specs, 2)
    assert by_unit(two) == ["short+long/1", "short+long/2", "short_qat/1", "short_qat/2"]
    members = {u: [s for s in specs if two[s.child_id][0] == u] for u in by_unit(two)}
    # long costs 4 short children: 7 long + 7 short dealt the long first, 4 + 3 then 2 + 5 short, 4.5 longs each
    assert sorted(s.regime.name for s in members["short+long/1"]) == ["long"] * 4 + ["short"] * 2
    assert sorted(s.regime.name for s in members["short+long/2"]) == ["long"] * 3 + ["short"] * 5
    costs = regime_costs(specs)
    unit_cost = {u: c for u, c in two.values()}
    assert unit_cost["short+long/1"] + unit_cost["short+long/2"] == pytest.approx(costs["short"] + costs["long"])
    assert unit_cost["short+long/1"] / unit_cost["short+long/2"] == pytest.approx(18 / 17)
    minimal = work_units(build_space("minimal"), 2)  # 3 recipes x (short, medium, long): each worker every regime
    for unit in ("short+medium+long/1", "short+medium+long/2"):
        assert {s.regime.name for s in build_space("minimal") if minimal[s.child_id][0] == unit} == {
            "short", "medium", "long"}
    assert len(by_unit(minimal)) == 2
    smoke = work_units(build_space("smoke"), 8)  # 3 children of one regime: at most one child per unit
    assert len(by_unit(smoke)) == 3


def test_one_regime_is_split_over_two_workers_with_the_serial_results(pytester, search_files, monkeypatch):
    """smoke has one regime: under -n 2 its children are cut into two work units, one per worker, and each worker
    trains only its unit's children (xdist sets a worker's --dist to "no": it learns of its units from the
    controller), so no child is trained twice."""
    serial = run_search(pytester, search_files, "--crossover-space=smoke", "--crossover-run-dir=serial")
    serial.assert_outcomes(passed=3)
    log = pytester.mkdir("populations")
    pytester.makeconftest("""
import os
import harness.search.populations as populations

_train = populations.train

def _logged(ctx, members):
    with open(os.path.join(os.environ["POPULATION_LOG"], f"{os.getpid()}.txt"), "a") as f:
        f.write(",".join(s.child_id for s in members) + "\\n")
    return _train(ctx, members)

populations.train = _logged
""")
    monkeypatch.setenv("POPULATION_LOG", str(log))
    parallel = pytester.runpytest_subprocess(*_args(search_files, "par"), "--crossover-space=smoke", "-n", "2", "-v")
    parallel.assert_outcomes(passed=3)
    out = parallel.stdout.str()
    assert "[gw0] " in out and "[gw1] " in out
    assert _metrics(pytester.path / "serial") == _metrics(pytester.path / "par")
    trained = [line.split(",") for f in log.iterdir() for line in f.read_text().splitlines()]
    assert sorted(len(p) for p in trained) == [1, 2]  # one population a worker, each child in one of them
    assert sorted(c for p in trained for c in p) == sorted(SMOKE_IDS)


def test_levers_as_axes_of_a_custom_space(pytester, search_files):
    """Alignment and teachers searched in one session: ids, columns, the barrier and the levers' verdicts."""
    result = run_search(pytester, search_files, "--crossover-space=custom", "--crossover-modes=weighted,slerp",
                        "--crossover-alphas=0.5", "--crossover-regimes=short", "--crossover-align=none,activations",
                        "--crossover-teachers=both,balanced")
    result.assert_outcomes(passed=8)
    run_dir = pytester.path / "runs"
    manifest = read_json(run_dir / "manifest.json")
    ids = [c["child_id"] for c in manifest["children"]]
    assert ids == ["000_weighted_a0p50_sNone_short_tboth", "001_weighted_a0p50_sNone_short_tbalanced",
                   "002_weighted_a0p50_sNone_short_aam_tboth", "003_weighted_a0p50_sNone_short_aam_tbalanced",
                   "004_slerp_a0p50_sNone_short_tboth", "005_slerp_a0p50_sNone_short_tbalanced",
                   "006_slerp_a0p50_sNone_short_aam_tboth", "007_slerp_a0p50_sNone_short_aam_tbalanced"]
    rows = {r["child_id"]: r for r in read_json(run_dir / "leaderboard.json")}
    assert rows[ids[3]]["align"] == "activations" and rows[ids[3]]["teacher"] == "balanced"
    assert rows[ids[0]]["align"] == "none" and rows[ids[0]]["teacher"] == "both"
    for cid in ids:
        cfg = read_json(run_dir / cid / "run_config.json")
        assert cfg["teacher"] == cid.rsplit("_t", 1)[1]
        history = read_json(run_dir / cid / "eval.json")["finetune"]
        assert ("teacher_weights" in history) == cid.endswith("balanced")
    barrier = read_json(run_dir / "barrier.json")
    assert set(barrier["curves"]) == {"none", "activations"} and len(barrier["alphas"]) == 11
    assert barrier == manifest["barrier"]
    # B aligned to A is still B: the curve's B end is B's own actions
    assert barrier["curves"]["activations"]["agree_b"][0] == 1.0
    rec = (run_dir / "recommendation.txt").read_text()
    assert "alignment: the best child per value is" in rec and "teacher: the best child per value is" in rec
    assert "interpolation barrier with alignment activations" in rec


def test_barrier_off_writes_no_barrier(pytester, search_files):
    result = run_search(pytester, search_files, "--crossover-space=smoke", "--crossover-barrier=off")
    result.assert_outcomes(passed=3)
    assert not (pytester.path / "runs" / "barrier.json").exists()
    assert read_json(pytester.path / "runs" / "manifest.json")["barrier"] is None
