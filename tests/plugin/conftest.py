"""Small synthetic parents and states on disk, and a helper that runs a crossover session in a subprocess."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from harness.networks.qnetwork import QNetwork

CLIENT = "def test_child(crossover_child):\n    crossover_child.run()\n"


def make_parent(seed: int, hidden: int = 16, inputs: int = 8, outputs: int = 4) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    template = QNetwork(inputs, outputs, hidden).state_dict()
    return {k: (torch.randn(v.shape, generator=g) * 0.5 if k.endswith("weight") and v.dim() == 2 else v.clone())
            for k, v in template.items()}


@pytest.fixture(scope="session")
def search_files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("search_files")
    sd_a = make_parent(1)
    # B is A plus noise, so the parents agree on part of the states, as real parents of one task do.
    g = torch.Generator().manual_seed(2)
    sd_b = {k: v + 0.4 * torch.randn(v.shape, generator=g) * (v.dim() == 2) for k, v in sd_a.items()}
    torch.save(sd_a, d / "parent_a.pt")
    torch.save(sd_b, d / "parent_b.pt")
    states = np.random.default_rng(0).standard_normal((300, 8)).astype(np.float32)
    np.save(d / "states.npy", states)
    return {"parent_a": d / "parent_a.pt", "parent_b": d / "parent_b.pt", "states": d / "states.npy", "dir": d}


def base_args(files: dict[str, Path], run_dir: Path | str = "runs") -> list[str]:
    return [
        f"--crossover-parent-a={files['parent_a']}", f"--crossover-parent-b={files['parent_b']}",
        f"--crossover-states={files['states']}", f"--crossover-run-dir={run_dir}", "--crossover-episodes=0",
        # The report costs ~0.8 s a session; the tests about it (test_report.py) turn it on. Controls double a
        # 9-child session; the tests about them turn them on.
        "--crossover-report=off", "--crossover-controls=off", "-p", "no:cacheprovider", "-p", "no:randomly",
        # The tests' searches are far too small for workers to pay for themselves; those that say -n N test the
        # workers, so they get exactly N (test_scheduling.py tests the plugin's own choice).
        "--crossover-workers=asked",
    ]


def run_search(pytester: pytest.Pytester, files: dict[str, Path], *args: str, client: str = CLIENT) -> Any:
    pytester.makepyfile(test_search=client)
    return pytester.runpytest_subprocess(*base_args(files), *args)


def run_search_inprocess(pytester: pytest.Pytester, files: dict[str, Path], *args: str,
                         client: str = CLIENT) -> Any:
    """``run_search`` in this process, for tests of a session's outputs rather than of its process: torch is imported
    once, and the suite's process computes as a session's does (it is pinned, tests/conftest.py)."""
    pytester.makepyfile(test_search=client)
    return pytester.runpytest_inprocess(*base_args(files), *args)


def read_json(path: Path) -> Any:
    return json.loads(Path(path).read_text())
