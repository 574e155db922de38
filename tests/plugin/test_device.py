"""--crossover-device: cpu by default, cuda when available (skipped otherwise), a clear error when it is not."""

from __future__ import annotations

import pytest
import torch

from harness.core.errors import HarnessError
from harness.search.settings import Settings
from harness.train.finetune import finetune_population
from harness.train.regimes import Regime
from tests.harness.test_finetune import _same, _setup
from tests.plugin.conftest import read_json, run_search, run_search_inprocess

needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="torch.cuda.is_available() is False")


def test_settings_default_to_cpu_and_refuse_unknown_device():
    assert Settings().device == "cpu"
    with pytest.raises(HarnessError, match="device 'tpu' is not one of cpu, cuda") as info:
        Settings(device="tpu")
    assert info.value.field == "device"


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message shown when CUDA is missing")
def test_cuda_without_cuda_is_a_usage_error(pytester, search_files):
    with pytest.raises(HarnessError, match="torch.cuda.is_available\\(\\) is False"):
        Settings(device="cuda").check_device()
    result = run_search_inprocess(pytester, search_files, "--crossover-space=smoke", "--crossover-device=cuda")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(
        ["*--crossover-device: device 'cuda' was asked for but torch.cuda.is_available() is False*"])


def test_unknown_device_option_is_a_usage_error(pytester, search_files):
    result = run_search_inprocess(pytester, search_files, "--crossover-space=smoke", "--crossover-device=tpu")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*--crossover-device: device 'tpu' is not one of cpu, cuda*"])


@needs_cuda
def test_population_on_cuda_is_independent_and_close_to_cpu():
    kids, x, p = _setup(16, 203)
    reg = Regime("t", epochs=3, lr=1e-3)
    gpu = finetune_population(kids, x.cuda(), p.cuda(), reg)
    gpu_part = finetune_population([kids[3], kids[1]], x.cuda(), p.cuda(), reg)
    cpu = finetune_population(kids, x, p, reg)
    assert _same(gpu_part[0], gpu[3]) and _same(gpu_part[1], gpu[1])
    for g, c in zip(gpu, cpu):
        assert next(g.model.parameters()).device.type == "cpu"
        assert g.history["steps"] == c.history["steps"]
        assert g.history["val_losses"] == pytest.approx(c.history["val_losses"], rel=1e-3)


@needs_cuda
def test_cuda_search_runs_end_to_end(pytester, search_files):
    result = run_search(pytester, search_files, "--crossover-space=custom", "--crossover-modes=layer,weighted",
                        "--crossover-alphas=0.5", "--crossover-regimes=short,short_qat", "--crossover-device=cuda",
                        "-p", "no:xdist")
    result.assert_outcomes(passed=4)
    manifest = read_json(pytester.path / "runs" / "manifest.json")
    assert manifest["options"]["device"] == "cuda"
    assert all(c["status"] == "ok" and c["primary"] > 0 for c in manifest["children"])
