"""benchmarks/device.py and benchmarks/established.py: the GPU path's check, run on the CPU, and the established
tool's runner (a stand-in script with AgentFarm's command line: what is timed, stopped and never started)."""

from __future__ import annotations

from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture()
def benchmarks(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.syspath_prepend(str(ROOT / "benchmarks"))


def test_compare_flags_children_outside_the_tolerance_and_other_steps(benchmarks: None) -> None:
    import device

    ref = {"a": {"primary": 0.50, "agree_a": 0.60, "agree_b": 0.70, "steps": 10},
           "b": {"primary": 0.40, "agree_a": 0.50, "agree_b": 0.45, "steps": 10}}
    near = {"a": {"primary": 0.51, "agree_a": 0.60, "agree_b": 0.70, "steps": 10},
            "b": {"primary": 0.40, "agree_a": 0.50, "agree_b": 0.45, "steps": 10}}
    problems, mean = device.compare(ref, near)
    assert problems == [] and mean == pytest.approx(0.01 / 6)
    far = {"a": {**near["a"], "primary": 0.53, "steps": 9}}
    problems, _ = device.compare(ref, far)
    assert problems == ["a: 9 fine-tune steps, 10 on the CPU", "a: primary 0.5300 vs 0.5000 on the CPU",
                        "b: missing on the device"]
    assert device.compare(ref, near, 0.0)[0] == ["a: primary 0.5100 vs 0.5000 on the CPU"]


def test_the_device_script_on_the_cpu_finds_every_child_bit_identical(benchmarks: None, tmp_path: Path) -> None:
    """What the prepared GPU check does, run where there is no GPU: the same sessions twice, every child compared."""
    import device

    out = tmp_path / "device.md"
    assert device.main(["--quick", "--device", "cpu", "--out", str(out)]) == 0
    row = out.read_text().splitlines()[2].split(" | ")
    assert row[0] == "| hidden 64, 1,000 states" and row[6] == "18/18" and row[7] == "0.00000" and row[8] == "0 |"
    assert "OK: every child within 0.0 of the CPU run's" in out.read_text()


STAND_IN = """import sys, time
args = sys.argv[1:]
assert args[:2] == ["--search-space", "minimal"] and "--states-file" in args and "--run-dir" in args, args
time.sleep(float(open(args[args.index("--states-file") + 1]).read()))
"""


def test_the_established_tool_is_timed_stopped_or_not_started(benchmarks: None, tmp_path: Path,
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    import established

    (tmp_path / "scripts").mkdir()
    (tmp_path / "scripts" / "run_crossover_search.py").write_text(STAND_IN)
    tool = established.Established(tmp_path)
    monkeypatch.setattr(established, "LIMIT_S", 1.0)
    states = tmp_path / "sleep.txt"
    files = {"parent_a": tmp_path / "a.pt", "parent_b": tmp_path / "b.pt", "states": states}
    states.write_text("0.2")
    how, took = tool.run(files, 1_000, 64, tmp_path / "run")
    assert how == "finished" and took is not None and 0.2 <= took < 1.0
    assert established.cell((how, took)) == f"{took:.1f}"
    # scaled linearly in the states, the next row would pass the limit: not started
    how, guess = tool.run(files, 100_000, 64, tmp_path / "run")
    assert (how, established.cell((how, guess))) == ("not started", f"not run: ~{guess:,.0f} predicted")
    states.write_text("5")
    assert tool.run(files, 1_000, 256, tmp_path / "run") == ("stopped", 1.0)  # another width: run, and stopped
    assert established.cell(("stopped", 1.0)) == "> 1 (stopped)"
    with pytest.raises(SystemExit, match="not found; pass the root of an AgentFarm checkout"):
        established.Established(tmp_path / "nowhere")


def test_a_cached_outcome_is_reused_and_not_run_again(benchmarks: None, tmp_path: Path) -> None:
    import established

    (tmp_path / "scripts").mkdir()
    script = tmp_path / "scripts" / "run_crossover_search.py"
    script.write_text(STAND_IN)
    states = tmp_path / "sleep.txt"
    states.write_text("0.1")
    files = {"parent_a": tmp_path / "a.pt", "parent_b": tmp_path / "b.pt", "states": states}
    for f in ("a.pt", "b.pt"):
        (tmp_path / f).write_bytes(f.encode())
    cache = tmp_path / "af.json"
    first = established.Established(tmp_path, cache=cache).run(files, 1_000, 64, tmp_path / "run")
    assert first[0] == "finished" and cache.is_file()
    script.write_text("raise SystemExit(3)\n")  # were it run again, the row would fail
    again = established.Established(tmp_path, cache=cache)
    assert again.run(files, 1_000, 64, tmp_path / "run") == first and again.reused == 1
    states.write_text("0.2")  # other input files: another row, run
    with pytest.raises(RuntimeError, match="exited 3"):
        again.run(files, 1_000, 64, tmp_path / "run")
