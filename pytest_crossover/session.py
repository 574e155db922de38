"""The controller's state of one search session: the expected children, the records as they arrive, the outputs.

Workers send each child's record (and its files' bytes) on ``report.user_properties``; only the controller (no
``workerinput``) owns the run directory and writes to it (harness.rundir), after every child, so an interrupted or
crashed session keeps what finished.
"""

from __future__ import annotations

import os
import time
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from harness.rundir import RunDir
from pytest_crossover.options import CrossoverOptions, naming
from pytest_crossover.runtime import Runtime

if TYPE_CHECKING:
    from pytest_crossover.transfer import InputTransfer

RESULT_KEY = "crossover_result"
FILES_KEY = "crossover_files"  # a child's files, {name: bytes}; taken off the report before anyone else sees it
PARENTS_KEY = "crossover_parents"  # a worker's share of the parent baselines, in its workeroutput
OPTIONS_KEY = "crossover_options"  # the controller's options, in each worker's workerinput
GATEWAY_KEY = "crossover_gateway"  # one worker's own settings from its gateway spec, in its workerinput
SCHEMA_VERSION = "1.1"


class CrossoverSession:
    """The options, the space, the expected children, and the records as they arrive (controller side)."""

    def __init__(self, config: pytest.Config, options: CrossoverOptions) -> None:
        self.config = config
        self.options = options
        self.specs = options.space_specs()
        self.ids = {s.child_id: s for s in self.specs}
        workerinput = getattr(config, "workerinput", None)
        self.is_worker = workerinput is not None
        self.distributed = self.is_worker or _uses_xdist(config)
        self.runtime = Runtime(options, rootpath=config.rootpath, workerinput=workerinput)
        self.run_dir = RunDir(options.run_dir)
        self.records: dict[str, dict[str, Any]] = {}
        self.expected: list[str] | None = None
        self.parents: dict[str, Any] | None = None
        self.worker_parents: list[Mapping[str, Any]] = []  # shares of the parent baselines sent by xdist workers
        self.lost: set[str] = set()  # children whose worker died while running them
        self.written: list[Path] = []
        self.complete = False
        self.started = time.time()
        self._checked: dict[str, Any] | None = None
        self.transfer: InputTransfer | None = None  # built at the first xdist worker's start-up

    # -- inputs ---------------------------------------------------------------------------------------------------
    def check_inputs(self) -> dict[str, Any]:
        """Check the explicit settings' device and inputs once, before any child runs; the inputs' provenance."""
        if self._checked is None:
            from harness.settings import Settings
            from harness.states import holdout_split

            with naming(self.options.sources):
                if self.options.device != "cpu":
                    Settings(device=self.options.device).check_device()
                provenance = self.runtime.check_inputs(load=not self.distributed)
                holdout_split(provenance["states_file"]["shape"][0], self.options.holdout, 0)
            self._checked = provenance
        return self._checked

    def input_transfer(self) -> InputTransfer:
        """The inputs as every xdist worker gets them (checked first): built at the first worker's start-up."""
        if self.transfer is None:
            from pytest_crossover.transfer import InputTransfer

            self.transfer = InputTransfer(self.options, self.check_inputs())
        return self.transfer

    # -- run directory ------------------------------------------------------------------------------------
    def acquire_run_dir(self) -> None:
        if self.run_dir.owned or self.is_worker:
            return
        with naming(self.options.sources):
            self.run_dir.acquire()
        self.run_dir.start_journal()

    def release_run_dir(self) -> None:
        self.run_dir.release()

    # -- records --------------------------------------------------------------------------------------------
    def add(self, record: dict[str, Any], files: Mapping[str, bytes] | None = None) -> None:
        """A finished child: its folder written whole, its record journaled; the derived files at most every
        second (rewriting all of them after every child is quadratic in the children)."""
        if files:
            record["files"] = self.run_dir.write_child(record["child_id"], files)
        self.records[record["child_id"]] = record
        self.run_dir.append(record)
        if self.run_dir.due():
            self.write_outputs(final=False)

    def add_failure(self, child_id: str, status: str, message: str) -> None:
        spec = self.ids.get(child_id)
        if spec is None or child_id in self.records and self.records[child_id].get("status") != "error":
            return
        self.add({"child_id": child_id, "index": spec.index, "crossover": spec.recipe.to_dict(),
                  "finetune_regime": spec.regime.to_dict(), "status": status, "primary": None, "message": message})

    def ordered_records(self) -> list[dict[str, Any]]:
        return sorted(self.records.values(), key=lambda r: r["index"])

    def finalize_parents(self) -> None:
        """The parent baselines: computed here in a serial session; under xdist, merged from the workers' shares,
        and only a share a worker could not deliver (it crashed) is computed here, which imports torch."""
        from harness.parents import merge, missing, parent_baselines

        if not self.distributed:
            self.parents = parent_baselines(self.runtime.context())
            return
        merged = merge(self.worker_parents)
        prov = self.runtime.provenance or {}
        names, agreement = missing(merged, bool(prov.get("env_id") and prov.get("episodes")))
        if (names or agreement) and self.complete:
            merged = merge([*self.worker_parents, parent_baselines(self.runtime.context(), names,
                                                                    agreement=agreement)])
        self.parents = merged or None

    # -- outputs ----------------------------------------------------------------------------------------------
    def manifest(self) -> dict[str, Any]:
        from harness import __version__
        from harness.rundir import JOURNAL

        expected = self.expected if self.expected is not None else list(self.ids)
        missing = [c for c in expected if c not in self.records]
        return {
            "schema_version": SCHEMA_VERSION,
            "harness_version": __version__,
            "complete": self.complete and not missing,
            "space": self.options.space,
            "options": {**self.options.to_dict(), "run_dir": self._relative_run_dir()},
            "expected_children": expected,
            "missing_children": missing,
            "latency_mode": self.latency_mode(),
            "parents": self.parents,
            "provenance": self.runtime.provenance,
            "journal": JOURNAL,
            "wall_s": round(time.time() - self.started, 3),
            "children": self.ordered_records(),
        }

    def _relative_run_dir(self) -> str:
        """The run directory relative to the rootdir: outputs never hold an absolute path of the run dir."""
        return os.path.relpath(self.run_dir.path.resolve(), self.config.rootpath.resolve())

    def latency_mode(self) -> str:
        if self.distributed:
            return "harness.timing in the xdist worker right after each child (3 warm-up, 20 timed, median)"
        if self.config.pluginmanager.hasplugin("benchmark") and not self.config.getoption("benchmark_disable", False):
            return "pytest-benchmark pedantic in the test (3 warm-up, 20 rounds, median)"
        return "harness.timing in the test (3 warm-up, 20 timed, median)"

    def write_outputs(self, *, final: bool = True) -> list[Path]:
        from harness.leaderboard import outputs

        self.written = self.run_dir.write_outputs(outputs(self.manifest()), final=final)
        return self.written


def _uses_xdist(config: pytest.Config) -> bool:
    """As xdist decides (``-n N`` sets ``--tx`` N times ``popen``; ``-d --tx ...`` names the gateways itself)."""
    return getattr(config.option, "dist", "no") != "no" and bool(getattr(config.option, "tx", None))
