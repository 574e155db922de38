"""How many local workers ``-n N`` starts: no more than the cores, none when the search cannot pay for them."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from harness.search.space import build_space
from pytest_crossover import scheduling
from pytest_crossover.scheduling import PAYBACK, WORKER_START_S, fit_workers, serial_work_s, workers_that_pay
from tests.plugin.conftest import CLIENT, base_args

PAYS = PAYBACK * WORKER_START_S  # the work one worker must take over


def test_workers_are_capped_to_the_cores_and_must_pay_for_their_start_up() -> None:
    assert workers_that_pay(4, 2, 100 * PAYS) == 2  # capped to the cores
    assert workers_that_pay(8, 8, 3 * PAYS) == 3  # each of 3 workers gets one start-up's payback
    assert workers_that_pay(8, 8, 3 * PAYS - 0.1) == 2
    assert workers_that_pay(4, 2, 2 * PAYS - 0.1) == 0  # two would not pay: serial
    assert workers_that_pay(4, 1, 100 * PAYS) == 0  # one core: a worker only adds its start-up
    assert workers_that_pay(4, 2, None) == 2  # size unknown: capped only
    assert workers_that_pay(1, 2, 0.1) == 1  # -n 1 stays (a worker of its own isolates a crashing child)


def test_the_estimate_grows_with_states_width_and_episodes() -> None:
    specs = build_space("minimal")
    small = serial_work_s(specs, rows=1000, holdout=0.2, n_params=5000, episodes=0)
    assert serial_work_s(specs, rows=10_000, holdout=0.2, n_params=5000, episodes=0) > 4 * small
    assert serial_work_s(specs, rows=1000, holdout=0.2, n_params=1_000_000, episodes=0) > 10 * small
    assert serial_work_s(specs, rows=1000, holdout=0.2, n_params=5000, episodes=10) > small + 9 * 10 * 0.01


def _options(states: Path, files: dict[str, Path], space: str = "minimal") -> SimpleNamespace:
    return SimpleNamespace(parent_a=str(files["parent_a"]), states=str(states), episodes=0, env=None, holdout=0.2,
                           eval_states=None, space_specs=lambda: build_space(space))


def _config(n: int) -> SimpleNamespace:
    return SimpleNamespace(option=SimpleNamespace(numprocesses=n, dist="load", tx=["popen"] * n))


def test_fit_workers_sets_the_gateways_xdist_starts(search_files, tmp_path, monkeypatch) -> None:
    big = tmp_path / "big.npy"
    np.save(big, np.zeros((400_000, 8), dtype=np.float32))  # ~100 s of serial work at hidden 16
    monkeypatch.setattr(scheduling, "usable_cores", lambda: 3)
    config = _config(8)
    line = fit_workers(config, _options(big, search_files))  # type: ignore[arg-type]
    assert config.option.tx == ["popen"] * 3 and config.option.numprocesses == 3
    assert line == "crossover: -n 8 uses 3 workers (this process may use 3 cores); --crossover-workers=asked starts 8"

    config = _config(2)
    line = fit_workers(config, _options(search_files["states"], search_files))  # type: ignore[arg-type]
    assert (config.option.numprocesses, config.option.dist, config.option.tx) == (0, "no", [])
    assert line is not None and line.startswith("crossover: -n 2 runs serially: ~0.")  # seconds, never "~0 s"
    assert line.split(" s of work, ")[1].startswith("under 4x the start-up of two workers (2.5 s each)")

    config = _config(2)
    assert fit_workers(config, _options(big, search_files)) is None  # 2 cores' worth of work: as asked
    assert config.option.tx == ["popen"] * 2


def test_one_core_runs_serially_and_says_why(search_files, tmp_path, monkeypatch) -> None:
    big = tmp_path / "big.npy"
    np.save(big, np.zeros((400_000, 8), dtype=np.float32))  # work enough for many workers: the core is the limit
    monkeypatch.setattr(scheduling, "usable_cores", lambda: 1)
    config = _config(4)
    line = fit_workers(config, _options(big, search_files))  # type: ignore[arg-type]
    assert (config.option.numprocesses, config.option.tx) == (0, [])
    assert line == "crossover: -n 4 runs serially: this process may use 1 core; --crossover-workers=asked starts them"


def _argv(files: dict[str, Path], *args: str) -> list[str]:
    return [a for a in base_args(files) if not a.startswith("--crossover-workers")] + list(args)


@pytest.mark.slow
def test_a_small_search_under_n4_runs_serially_and_says_so(pytester, search_files) -> None:
    pytester.makepyfile(test_search=CLIENT)
    result = pytester.runpytest_inprocess(*_argv(search_files, "--crossover-space=smoke", "-n", "4"))
    assert result.ret == 0, result.stdout.str()
    out = result.stdout.str()
    assert "crossover: -n 4 runs serially: ~" in out and "s of work, under 4x the start-up of two workers" in out
    assert "created:" not in out and "bringing up nodes" not in out  # xdist started no worker
    manifest = json.loads((pytester.path / "runs" / "manifest.json").read_text())
    assert manifest["latency_mode"].endswith("in the test (3 warm-up, 20 rounds, median)")


def test_asked_starts_exactly_the_workers_and_a_bad_value_names_the_option(pytester, search_files) -> None:
    pytester.makepyfile(test_search=CLIENT)
    result = pytester.runpytest_inprocess(*_argv(search_files, "--crossover-workers=many", "-n", "2"))
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    assert "ERROR: --crossover-workers: 'many' is neither fit nor asked; fit lets the plugin choose the workers of " \
           "-n N, asked starts exactly N" in result.stderr.str()
    result = pytester.runpytest_inprocess(*_argv(search_files, "--crossover-workers=asked", "-n", "2", "--co"))
    assert result.ret == 0
    assert "crossover: -n" not in result.stdout.str()
