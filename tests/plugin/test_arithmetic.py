"""The same numbers on every x86-64 CPU: the CPU kernels are pinned in every process that computes.

Another CPU is simulated by what it would make torch choose: ``ATEN_CPU_CAPABILITY`` (ATen's kernels) and
``MKL_ENABLE_INSTRUCTIONS`` (the widest instructions MKL may use), each only up to what this CPU has.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from harness.core.arithmetic import PIN, session
from harness.records.store import comparable_on, differences, fingerprint

CLIENT = "def test_child(crossover_child):\n    crossover_child.run()\n"
# The embedded parents and states (whose numbers do differ between kernels), without returns, report or barrier.
ARGS = ("--crossover-space=smoke", "--crossover-episodes=0", "--crossover-report=off", "--crossover-barrier=off",
        "--crossover-no-save", "-p", "no:cacheprovider", "-p", "no:randomly")
_VOLATILE = {"latency_ms", "timings_s", "started_unix"}


def _flags() -> set[str]:
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return set()
    return set(next((line.split(":", 1)[1].split() for line in text.splitlines() if line.startswith("flags")), []))


# The CPUs this machine can stand in for: (ATen capability, MKL's widest instructions). The portable arithmetic
# needs AVX2 (MKL's AVX2 branch): every CPU stood in for has it.
# None: MKL's own choice for this CPU; "AVX512" set by a user would override MKL_CBWR if the pin did not hold it.
CPUS = [*((("default", "AVX2"), ("avx2", "AVX2")) if "avx2" in _flags() else ()),
        *((("avx512", None), ("avx512", "AVX512")) if {"avx512f", "avx512bw", "avx512vl", "avx512dq"} <= _flags()
          else ())]


def _as_cpu(monkeypatch: pytest.MonkeyPatch, cpu: tuple[str, str | None]) -> None:
    for name in PIN:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("ATEN_CPU_CAPABILITY", cpu[0])
    if cpu[1] is not None:
        monkeypatch.setenv("MKL_ENABLE_INSTRUCTIONS", cpu[1])


def _metrics(run_dir: Path) -> list[dict[str, Any]]:
    children = json.loads((run_dir / "manifest.json").read_text())["children"]
    return [{k: v for k, v in c.items() if k not in _VOLATILE} for c in children]


# Runs a torch operation at import: each session below also proves that a crossover setting on the command line pins
# the kernels before conftests are imported, in the session's process and in an xdist worker.
TORCH_AT_IMPORT = "import torch\ntorch.ones(4).sum()\n"


def _session(pytester: pytest.Pytester, run_dir: str, *extra: str) -> Any:
    pytester.makepyfile(test_search=CLIENT)
    return pytester.runpytest_subprocess(*ARGS, f"--crossover-run-dir={run_dir}", *extra)


def _observed(run_dir: Path) -> dict[str, Any]:
    config = json.loads((run_dir / "000_random_a0p50_s0_short" / "run_config.json").read_text())
    observed: dict[str, Any] = config["arithmetic"]["observed"]
    return observed


# How each CPU stood in for runs its session, in turn: in one process; in an xdist worker (which pins its own
# kernels); with another thread count (the children's messages say so, their numbers must not). One session per CPU:
# each CPU and each way is run, not every pair of them.
WAYS: list[tuple[str, ...]] = [(), ("-n", "1", "--crossover-workers=asked"), ("--crossover-threads=2",), ()]


@pytest.mark.skipif(len(CPUS) < 2, reason="needs an x86-64 CPU with AVX2 (the portable arithmetic's)")
def test_smoke_gives_bitwise_identical_children_whatever_the_cpu(pytester, monkeypatch):
    pytester.makeconftest(TORCH_AT_IMPORT)
    # Two threads on a machine whose cores are busy (the suite's other worker): OpenMP's default is to spin while it
    # waits, which costs a core's time at every barrier; passive waiting changes when threads run, never the numbers.
    monkeypatch.setenv("OMP_WAIT_POLICY", "passive")
    # Two CPUs (no AVX-512): the second runs in a worker and with two threads.
    sessions = list(zip(CPUS, WAYS)) if len(CPUS) == len(WAYS) else [(CPUS[0], ()), *((CPUS[1], w) for w in WAYS[1:3])]
    runs = []
    for i, (cpu, way) in enumerate(sessions):
        _as_cpu(monkeypatch, cpu)
        result = _session(pytester, f"port_{i}", *way)
        result.assert_outcomes(passed=3)
        if "-n" in way:
            result.stdout.fnmatch_lines(["1 worker [[]3 items[]]"])  # a real worker, not a serial fallback
        metrics = _metrics(pytester.path / f"port_{i}")
        threads = "--crossover-threads=2" in way
        runs.append([{k: v for k, v in c.items() if k != "message"} for c in metrics] if threads else metrics)
        observed = _observed(pytester.path / f"port_{i}")
        assert observed["aten"] == "AVX2"  # whatever the environment asked for
        assert observed["mkl"] in ("AVX2,STRICT", None)  # None: a torch without MKL
    first = runs[0]
    assert all(m == first for m in runs)  # every metric of every child, bit for bit
    assert "message" not in first[0] and first[0]["primary"] > 0.5
    if len(CPUS) < 4:
        return  # no AVX-512 here: nothing faster to compare the native kernels with
    # The test can fail: a session that escaped the pin computes with its CPU's own kernels (native), which give
    # other numbers than the pinned ones, from the first child on.
    _as_cpu(monkeypatch, CPUS[-2])
    _session(pytester, "native", "--crossover-arithmetic=native", "--crossover-max-runs=1").assert_outcomes(passed=1)
    native = _metrics(pytester.path / "native")
    assert _observed(pytester.path / "native")["aten"] == "AVX512"
    assert native[0]["child_id"] == first[0]["child_id"]
    assert native[0]["finetune"]["train_losses"] != first[0]["finetune"]["train_losses"]  # computed, not labelled


def test_the_arithmetic_is_in_the_provenance_and_in_the_history_fingerprint(pytester, monkeypatch):
    """What the records say, not what torch computes with: in-process sessions (the suite's own process is pinned,
    tests/conftest.py); each starts from an environment without the pin, as a fresh process would."""
    pytester.makepyfile(test_search=CLIENT)
    args = [a for a in ARGS if a != "--crossover-no-save"] + ["--crossover-max-runs=1"]
    for extra in ((), ("--crossover-arithmetic=native", "--crossover-compare")):
        for name in PIN:
            monkeypatch.delenv(name, raising=False)  # the portable session pins this process's environment
        pytester.runpytest_inprocess(*args, *extra).assert_outcomes(passed=1)
    manifest = json.loads((pytester.path / "runs" / "crossover_search" / "manifest.json").read_text())
    assert manifest["provenance"]["arithmetic"]["mode"] == "native"
    records = sorted((pytester.path / ".crossover").rglob("*.json"))
    portable, native = (json.loads(p.read_text()) for p in records)
    assert portable["comparable_on"]["arithmetic"] == {"mode": "portable", "requested": {
        "ATEN_CPU_CAPABILITY": "AVX2", "MKL_CBWR": "AVX2,STRICT", "MKL_ENABLE_INSTRUCTIONS": "AVX2",
        "FBGEMM_ENABLE_INSTRUCTIONS": "AVX2",
        "ONEDNN_MAX_CPU_ISA": "AVX2"}}
    assert native["comparable_on"]["arithmetic"]["mode"] == "native"
    assert native["comparable_on"]["arithmetic"]["requested"]["ATEN_CPU_CAPABILITY"] is None
    assert "cpu" in native["comparable_on"]["arithmetic"]  # native numbers are this CPU model's
    assert portable["fingerprint"] != native["fingerprint"]


def test_records_without_or_with_other_arithmetic_are_never_alike():
    prov = {"parent_a": {"sha256": "a" * 64}}
    old = comparable_on("smoke", {}, prov)  # a record made before the arithmetic was recorded
    portable = comparable_on("smoke", {}, {**prov, "arithmetic": session("portable", dict(PIN))})
    native = comparable_on("smoke", {}, {**prov, "arithmetic": session("native", {})})
    assert len({fingerprint(old), fingerprint(portable), fingerprint(native)}) == 3
    assert [d.split()[0] for d in differences(old, portable)] == ["arithmetic"]


def test_torch_run_before_the_pin_is_refused_in_one_line(pytester, monkeypatch):
    """A conftest that runs a torch operation at import chooses the kernels before a session without crossover
    settings can pin them: refused before any child, naming the fix (with a crossover setting the pin comes first:
    every session of the first test has such a conftest)."""
    for name in PIN:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("ATEN_CPU_CAPABILITY", "default")  # a user's own choice (this CPU would choose avx2 or more)
    pytester.makeconftest(TORCH_AT_IMPORT)
    pytester.makepyfile(test_search=CLIENT)
    pytester.makeini("[pytest]\n")
    bare = pytester.runpytest_subprocess("-p", "no:cacheprovider")
    assert bare.ret == pytest.ExitCode.USAGE_ERROR
    err = [line for line in bare.stderr.lines if line.strip()]
    assert len(err) == 1 and err[0].startswith("ERROR: --crossover-arithmetic: torch chose its CPU kernels before "
                                               "pytest-crossover could pin them (ATen's kernels are DEFAULT, not AVX2)")
    assert "ATEN_CPU_CAPABILITY=avx2 MKL_CBWR=AVX2,STRICT" in err[0]
    assert not (pytester.path / "runs").exists()
