"""The controller's state of one search session: the expected children, the records as they arrive, the outputs.

Workers send each child's record (and its files' bytes) on ``report.user_properties``; only the controller (no
``workerinput``) owns the run directory and writes to it (harness.search.rundir), after every child, so an
interrupted or crashed session keeps what finished.
"""

from __future__ import annotations

import dataclasses
import os
import time
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from harness.search.result import SCHEMA_VERSION, ChildResult
from harness.search.rundir import RunDir
from pytest_crossover.options import CrossoverOptions, naming
from pytest_crossover.runtime import Runtime

if TYPE_CHECKING:
    from harness.inputs.load import SearchInputs
    from harness.pictures.drawer import Drawer
    from pytest_crossover.study import StudySession
    from pytest_crossover.transfer import InputTransfer

RESULT_KEY = "crossover_result"
FILES_KEY = "crossover_files"  # a child's files, {name: bytes}; taken off the report before anyone else sees it
PARENTS_KEY = "crossover_parents"  # a worker's share of the parent baselines, in its workeroutput
BARRIER_KEY = "crossover_barrier"  # the interpolation barrier, from the worker that computes it
OPTIONS_KEY = "crossover_options"  # the controller's options, in each worker's workerinput
GATEWAY_KEY = "crossover_gateway"  # one worker's own settings from its gateway spec, in its workerinput


class CrossoverSession:
    """The options, the space, the expected children, and the records as they arrive (controller side)."""

    def __init__(self, config: pytest.Config, options: CrossoverOptions) -> None:
        self.config = config
        self.options = options
        self.study: StudySession | None = None  # --crossover-search optuna, on the controller
        if options.study is not None:
            from pytest_crossover.study import session_specs

            self.study, self.specs = session_specs(config, options)
        else:
            self.specs = options.space_specs()
        self.ids = {s.child_id: s for s in self.specs}
        workerinput = getattr(config, "workerinput", None)
        self.is_worker = workerinput is not None
        self.distributed = self.is_worker or _uses_xdist(config)
        self.runtime = Runtime(options, rootpath=config.rootpath, workerinput=workerinput)
        self.run_dir = RunDir(options.run_dir)
        self.records: dict[str, ChildResult] = {}
        self.expected: list[str] | None = None
        self.parents: dict[str, Any] | None = None
        self.barrier: dict[str, Any] | None = None  # the interpolation barrier between the parents
        self.worker_parents: list[Mapping[str, Any]] = []  # shares of the parent baselines sent by xdist workers
        self.lost: set[str] = set()  # children whose worker died while running them
        self.report_failures: list[str] = []  # "picture: why" for each picture the report could not draw
        self.written: list[Path] = []
        self.complete = False
        self.started = time.time()
        self.write_error: str | None = None  # set when the run directory could not be written (a full disk)
        self.abandon_report = False  # interrupted again while the final files were written
        self.pytest_session: pytest.Session | None = None
        self.transfer: InputTransfer | None = None  # built at the first xdist worker's start-up
        self._next_rewrite = 0.0  # monotonic time before which the derived files are not rewritten mid-session
        self.drawers: list[Drawer] | None = None  # the report's drawing processes, started with the run folder
        if self.study is not None:  # the whole study's records: its leaderboard and answer cover every trial
            self.records.update(self.study.previous_results(self.run_dir.path))

    # -- inputs ---------------------------------------------------------------------------------------------------
    def check_inputs(self) -> SearchInputs:
        """Check the explicit settings' device and inputs once, before any child runs (harness.inputs.load)."""
        from harness.search.settings import Settings

        with naming(self.options.sources):
            if self.options.device != "cpu":
                Settings(device=self.options.device).check_device()
            self.collect_eval_buffer()
        checked = self.runtime.check_inputs(load=not self.distributed)
        with naming(self.options.sources):  # a per-layer parameter's length, once the parents' layers are known
            for spec in self.specs:
                spec.recipe.op.check_layers(spec.recipe.kwargs, checked.sd_a)
        if not self.distributed:
            self.runtime.arithmetic()  # this process computes the children: its kernels, checked before any
        return checked

    def collect_eval_buffer(self) -> None:
        """``--crossover-eval-episodes N`` (or a space's own): play the evaluation episodes once, here on the
        controller, before any worker starts (cached in the history folder), and score every child on them as on
        ``--crossover-eval-states``."""
        o = self.options
        episodes = o.planned_eval_episodes()
        if not episodes or self.is_worker or o.eval_states is not None:
            return
        from pytest_crossover.evaluation import collect_for

        path = collect_for(o, episodes, self.config)
        self.options = dataclasses.replace(o, eval_states=str(path), holdout=0.0 if "holdout" not in o.explicit
                                           else o.holdout)
        self.runtime = Runtime(self.options, rootpath=self.config.rootpath, workerinput=None)

    def input_transfer(self) -> InputTransfer:
        """The inputs as every xdist worker gets them (checked first): built at the first worker's start-up."""
        if self.transfer is None:
            from pytest_crossover.transfer import InputTransfer

            provenance = self.check_inputs().provenance  # first: it may change the options (the evaluation buffer)
            self.transfer = InputTransfer(self.options, provenance)
        return self.transfer

    # -- run directory ------------------------------------------------------------------------------------
    def acquire_run_dir(self) -> None:
        if self.run_dir.owned or self.is_worker:
            return
        with naming(self.options.sources):
            self.run_dir.acquire()
            try:
                self.run_dir.check_children(self.expected if self.expected is not None else list(self.ids))
            except BaseException:
                self.run_dir.release()
                raise
        self.run_dir.start_journal()
        self.start_drawers()

    def start_drawers(self) -> None:
        """The report's drawers, started as the session starts: they import matplotlib while this process imports
        torch and trains, so at the end the report costs only the drawing (a session that ends without a report
        stops them unused; one that dies closes their input, and they exit)."""
        if self.drawers is None and self.options.report == "on" and not self.is_worker:
            from harness.pictures import drawer

            self.drawers = drawer.start()

    def close_drawers(self) -> None:
        for d in self.drawers or ():
            d.close()  # one the report did not use (an interrupted session, a refused start)
        self.drawers = []

    def release_run_dir(self) -> None:
        self.close_drawers()
        self.run_dir.release()

    # -- records --------------------------------------------------------------------------------------------
    def add(self, result: ChildResult, files: Mapping[str, bytes] | None = None) -> None:
        """A finished child: its folder written whole, its record journaled; the derived files at most every
        second (rewriting all of them after every child is quadratic in the children)."""
        if self.study is not None:  # the study holds the record too: told whatever becomes of the files
            self.study.tell(result.to_dict())
        self.start_drawers()  # a session whose run folder was not acquired here (a resumed controller)
        if self.write_error is not None:
            self.records[result.child_id] = result  # the disk is full: keep the record, write nothing more
            return
        from pytest_crossover.interrupts import deferred

        try:
            # A record counts (in the summary files, the terminal) only once its folder and journal line are
            # written: an interrupt meanwhile waits for both.
            with deferred(f"writing {result.child_id}'s files"):
                if files:
                    result = result.with_(files=self.run_dir.write_child(result.child_id, files))
                self.run_dir.append(result.to_dict())
                self.records[result.child_id] = result
        except OSError as exc:
            self.records[result.child_id] = result
            self.failed_write(exc)
            return
        if self.run_dir.due() and time.monotonic() >= self._next_rewrite:
            start = time.monotonic()
            self.write_outputs(final=False)
            # The derived files (the leaderboard's bootstrap: ~5 s at 100,000 per-row units) may take no more than
            # a tenth of the session mid-way; the journal already keeps every finished child.
            self._next_rewrite = time.monotonic() + 9 * (time.monotonic() - start)

    def add_failure(self, child_id: str, status: str, message: str) -> None:
        spec = self.ids.get(child_id)
        if spec is None or child_id in self.records and self.records[child_id].status != "error":
            return
        self.add(ChildResult.failure(spec, status, message))

    def ordered_records(self) -> list[dict[str, Any]]:
        return [r.to_dict() for r in sorted(self.records.values(), key=lambda r: r.index)]

    def finalize_parents(self) -> None:
        """The parent baselines and the interpolation barrier: computed here in a serial session; under xdist,
        merged from the workers' shares, and only what a worker could not deliver (it crashed) is computed here,
        which imports torch."""
        from harness.search.parents import merge, missing, parent_baselines

        if not self.distributed:
            self.parents = parent_baselines(self.runtime.context())
            self.barrier = self.compute_barrier()
            self.runtime.release()
            return
        merged = merge(self.worker_parents)
        prov = self.runtime.provenance or {}
        names, agreement = missing(merged, bool(prov.get("env_id") and prov.get("episodes")))
        if (names or agreement) and self.complete:
            merged = merge([*self.worker_parents, parent_baselines(self.runtime.context(), names,
                                                                   agreement=agreement)])
        self.parents = merged or None
        if self.barrier is None and self.complete:
            self.barrier = self.compute_barrier()

    def compute_barrier(self) -> dict[str, Any] | None:
        """The interpolation barrier between the parents (harness.search.barrier), unless it is off."""
        request = self.barrier_request()
        if request is None:
            return None
        from harness.search.barrier import interpolation

        return interpolation(self.runtime.context(), ("none", *request[0]), returns=request[1])

    def barrier_request(self) -> tuple[tuple[str, ...], bool] | None:
        """(the space's alignments, with returns) for the interpolation barrier, or None (``--crossover-barrier
        off``)."""
        mode = self.options.barrier
        if mode == "off":
            return None
        return tuple(dict.fromkeys(s.align for s in self.specs)), mode == "returns"

    def write_report(self) -> None:
        """``report.html`` and its pictures, at the end of the session, after every other file (``--crossover-report
        on``); with ``off``, an earlier session's report in the folder is removed rather than left beside this
        session's files. Whatever goes wrong in the report (each picture already reports its own failure) is a line
        of the summary, never a lost session."""
        from harness.pictures.files import PICTURE_PREFIX, REPORT

        written: list[Path] = []
        if self.options.report == "on" and not self.abandon_report:
            from harness.pictures.report import report_outputs

            try:
                files, self.report_failures = report_outputs(self.manifest(), self.run_dir.path, self.drawers or ())
                written = self.run_dir.write_outputs(files, final=True)
            except Exception as exc:  # the other outputs are written; the report must not take the session down
                self.report_failures = [f"{REPORT}: {type(exc).__name__}: {exc}"]
            self.written += written
        self.run_dir.remove_outputs(REPORT, keep=written)
        self.run_dir.remove_outputs(f"{PICTURE_PREFIX}*.png", keep=written)

    # -- outputs ----------------------------------------------------------------------------------------------
    def manifest(self) -> dict[str, Any]:
        from harness.core.version import __version__
        from harness.search.rundir import JOURNAL

        expected = self.expected if self.expected is not None else list(self.ids)
        missing = [c for c in expected if c not in self.records]
        return {
            "schema_version": SCHEMA_VERSION,
            "harness_version": __version__,
            # Complete: every expected child finished and its files are on disk (none after a failed write).
            "complete": self.complete and not missing and self.write_error is None,
            "space": self.options.space,
            "options": {**self.options.to_dict(), "run_dir": self._relative_run_dir()},
            "expected_children": expected,
            "missing_children": missing,
            "latency_mode": self.latency_mode(),
            "parents": self.parents,
            "barrier": self.barrier,
            "provenance": self.runtime.provenance,
            "split": self._split(),
            "selection": self.selection(expected),
            "journal": JOURNAL,
            "wall_s": round(time.time() - self.started, 3),
            "children": self.ordered_records(),
            **({"study": self.study.summary()} if self.study is not None else {}),
        }

    def _split(self) -> dict[str, Any] | None:
        from harness.core.errors import HarnessError

        try:
            return self.runtime.split().describe()
        except HarnessError:  # inputs that cannot be read now (changed mid-session): the children's records say more
            return None

    def selection(self, expected: list[str]) -> dict[str, Any]:
        """Whether this session ran all of its space: ``-k``, ``-m``, ``--lf``, ``--crossover-max-runs`` or any other
        deselection make it a subset, which every output says and history never compares against a whole run."""
        o, opt = self.options, self.config.option
        space_children = len(self.specs) if self.study is not None else len(o.space_specs(max_runs=None))
        how = [f"{flag} {value}" for flag, value in (("-k", getattr(opt, "keyword", "")),
                                                      ("-m", getattr(opt, "markexpr", ""))) if value]
        if getattr(opt, "lf", False):
            how.append("--lf")
        if o.max_runs is not None and o.max_runs < space_children:
            how.append(f"--crossover-max-runs {o.max_runs}")
        subset = len(expected) < space_children
        if subset and not how:
            how.append("deselected at collection")
        return {"space_children": space_children, "selected": len(expected), "subset": subset, "how": how}

    def _relative_run_dir(self) -> str:
        """The run directory relative to the rootdir: outputs never hold an absolute path of the run dir."""
        return os.path.relpath(self.run_dir.path.resolve(), self.config.rootpath.resolve())

    def uses_benchmark(self) -> bool:
        """Whether children are timed by pytest-benchmark: serial sessions, unless it is off or would skip them
        (``--benchmark-skip`` skips every test that requests its fixture: the gate would never run)."""
        c = self.config
        return (not self.distributed and c.pluginmanager.hasplugin("benchmark")
                and not c.getoption("benchmark_disable", False) and not c.getoption("benchmark_skip", False))

    def latency_mode(self) -> str:
        if self.distributed:
            return "harness.evaluate.timing in the xdist worker right after each child (3 warm-up, 20 timed, median)"
        if self.uses_benchmark():
            return "pytest-benchmark pedantic in the test (3 warm-up, 20 rounds, median)"
        return "harness.evaluate.timing in the test (3 warm-up, 20 timed, median)"

    def write_outputs(self, *, final: bool = True) -> list[Path]:
        from harness.answer.leaderboard import outputs

        try:
            self.written = self.run_dir.write_outputs(outputs(self.manifest()), final=final)
        except OSError as exc:
            self.failed_write(exc)
        return self.written

    def failed_write(self, exc: OSError) -> None:
        """A write to the run directory failed (a full disk, a read-only mount): remember it once; the plugin
        stops the session cleanly, keeps every finished child's record in memory and says so in one line."""
        if self.write_error is None:
            why = exc.strerror or str(exc)
            self.write_error = (f"cannot write to the run directory {str(self.run_dir.path)!r} ({why}); the session "
                                f"stopped after {len(self.records)} finished children")


def _uses_xdist(config: pytest.Config) -> bool:
    """As xdist decides (``-n N`` sets ``--tx`` N times ``popen``; ``-d --tx ...`` names the gateways itself)."""
    return getattr(config.option, "dist", "no") != "no" and bool(getattr(config.option, "tx", None))
