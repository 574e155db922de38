"""Controller-side state of one pytest session: the records, the run directory, and every file written.

Workers send each child's record on ``report.user_properties``; only the controller (no ``workerinput``)
writes the leaderboard files, after every child (so an interrupted or crashed session keeps what finished).
"""

from __future__ import annotations

import fcntl
import math
import os
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest

from pytest_crossover.options import CrossoverOptions

RESULT_KEY = "crossover_result"
PARENTS_KEY = "crossover_parents"  # a worker's share of the parent baselines, in its workeroutput
PARENTS = ("parent_a", "parent_b")
WRITE_INTERVAL_S = 1.0  # partial leaderboard files are at most this stale
SCHEMA_VERSION = "1.0"


class CrossoverSession:
    """Holds the options, the expected children, and the records as they arrive."""

    def __init__(self, config: pytest.Config, options: CrossoverOptions) -> None:
        self.config = config
        self.options = options
        self.specs = options.space_specs()
        self.ids = {s.child_id: s for s in self.specs}
        self.records: dict[str, dict[str, Any]] = {}
        self.expected: list[str] | None = None
        self.run_dir = Path(options.run_dir)
        self.is_worker = hasattr(config, "workerinput")
        self.distributed = self.is_worker or _uses_xdist(config)
        self._lock_fh: Any = None
        self._ctx: Any = None
        self._inputs: Any = None
        self._git: dict[str, Any] | None = None
        self.started = time.time()
        self.parents: dict[str, Any] | None = None
        self._provenance: dict[str, Any] | None = None
        self._from_workers: dict[str, Any] = {}  # parent baselines computed by xdist workers (see finalize)
        self.written: list[Path] = []
        self.complete = False
        self._last_write = -math.inf

    # -- inputs, built lazily so a session that runs no child never imports torch -----------------------
    def inputs(self) -> Any:
        if self._inputs is None:
            from harness.inputs import load_inputs

            o = self.options
            self._inputs = load_inputs(o.parent_a, o.parent_b, o.states, allow_unsafe_unpickle=o.allow_unsafe_unpickle,
                                       env_id=o.env, episodes=o.episodes, check_environment=not self.is_worker)
            _freeze_long_lived()
        return self._inputs

    def check_inputs(self) -> dict[str, Any]:
        """Check the inputs before any child runs and return their provenance.

        A serial session loads them (its children need them loaded anyway). An xdist controller never trains,
        so it checks them without importing torch (harness.inputs.check_inputs), leaving the cores to the
        workers; it loads them only for a checkpoint that just ``torch.load`` can judge.
        """
        if self.distributed and self._inputs is None:
            from harness.inputs import check_inputs

            o = self.options
            self._provenance = check_inputs(o.parent_a, o.parent_b, o.states, env_id=o.env, episodes=o.episodes)
        return self.provenance if self.provenance is not None else self.inputs().provenance

    @property
    def provenance(self) -> dict[str, Any] | None:
        return self._inputs.provenance if self._inputs is not None else self._provenance

    def context(self) -> Any:
        if self._ctx is None:
            import torch

            from harness.pipeline import Context, Settings

            torch.set_num_threads(self.options.threads)
            inp = self.inputs()
            o = self.options
            settings = Settings(holdout=o.holdout, teacher=o.teacher, degenerate_threshold=o.degenerate_threshold,
                                env_id=inp.env_id, episodes=inp.episodes, device=o.device)
            provenance = {**inp.provenance, "git": self.git()}
            self._ctx = Context(inp.sd_a, inp.sd_b, inp.states, settings, provenance=provenance)
            _freeze_long_lived()
        return self._ctx

    def population_key(self, specs: list[Any]) -> Any:
        """Which of ``specs`` train together in this process: ``None`` in a serial session (the context merges
        regimes that share their batches); under xdist a worker collects every child but is sent one work unit at
        a time, so only the children of one unit (``--dist load``) or, under other modes, of one regime."""
        if not self.is_worker:
            return None
        if self.config.getvalue("dist") == "load":
            from pytest_crossover.scheduling import work_units

            units = work_units(specs, int(self.config.workerinput.get("workercount", 1)))  # type: ignore[attr-defined]
            return lambda s: units[s.child_id][0] if s.child_id in units else s.regime.name
        return lambda s: s.regime.name

    def git(self) -> dict[str, Any]:
        """Commit, branch and dirty flag of the rootdir's repository; computed once, on the controller (workers
        receive it through ``workerinput``, see xdist_hooks)."""
        workerinput = getattr(self.config, "workerinput", {})
        if "crossover_git" in workerinput:
            return dict(workerinput["crossover_git"])
        if self._git is None:
            from harness.history import git_info

            self._git = git_info(self.config.rootpath)
        return self._git

    # -- run directory ------------------------------------------------------------------------------------
    def acquire_run_dir(self) -> None:
        """Create and lock the run directory; a second session on the same directory is refused."""
        try:
            self.run_dir.mkdir(parents=True, exist_ok=True)
            probe = self.run_dir / f".write-test-{os.getpid()}"
            probe.write_text("ok")
            probe.unlink()
            # "a": a refused second session must not truncate the pid the holder wrote.
            self._lock_fh = open(self.run_dir / ".lock", "a")
        except OSError as exc:
            raise pytest.UsageError(
                f"--crossover-run-dir: cannot write to {str(self.run_dir)!r} ({exc.strerror}); "
                "pass a writable directory") from None
        try:
            fcntl.flock(self._lock_fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            raise pytest.UsageError(
                f"--crossover-run-dir: {str(self.run_dir)!r} is in use by another crossover session; "
                "wait for it or pass another --crossover-run-dir") from None
        self._lock_fh.truncate(0)
        self._lock_fh.write(str(os.getpid()))
        self._lock_fh.flush()
        from harness.atomic import remove_stale_staging

        remove_stale_staging(self.run_dir)  # child folders half-staged by a crashed session

    def release_run_dir(self) -> None:
        if self._lock_fh is not None:
            fcntl.flock(self._lock_fh, fcntl.LOCK_UN)
            self._lock_fh.close()
            self._lock_fh = None

    # -- records --------------------------------------------------------------------------------------------
    def add(self, record: Mapping[str, Any]) -> None:
        self.records[record["child_id"]] = dict(record)
        # Rewriting every file after every child is quadratic in the children (profiled: ~70 ms per child at 21
        # children, as much as fine-tuning them); so at most every WRITE_INTERVAL_S, plus always at session end.
        # manifest.json, the record of truth, is rewritten after EVERY child, so a crash or SIGKILL of the session
        # loses no finished child (issue 7); only the derived views are throttled. These mid-session writes are
        # atomic (rename) but not fsynced, which guards against a dead process, not a dead machine; an fsync per
        # child cost ~5 ms each, as much as evaluating it. They are also compact JSON: indenting makes json use
        # its pure-Python encoder, ~25 ms per write at 100 children. The finished session's files are indented
        # and fsynced.
        if time.monotonic() - self._last_write >= WRITE_INTERVAL_S:
            self.write_outputs(final=False)
        else:
            self.write_manifest()

    def write_manifest(self) -> Path:
        from harness.atomic import write_json

        return write_json(self.run_dir / "manifest.json", self.manifest(), durable=False, compact=True)

    def add_failure(self, child_id: str, status: str, message: str) -> None:
        spec = self.ids.get(child_id)
        if spec is None or child_id in self.records and self.records[child_id].get("status") != "error":
            return
        self.records[child_id] = {
            "child_id": child_id, "index": spec.index, "crossover": spec.recipe.to_dict(),
            "finetune_regime": spec.regime.to_dict(), "status": status, "primary": None, "message": message,
        }
        self.write_outputs()

    def ordered_records(self) -> list[dict[str, Any]]:
        return sorted(self.records.values(), key=lambda r: r["index"])

    def parent_baselines(self, names: tuple[str, ...] = PARENTS, *, agreement: bool = True) -> dict[str, Any]:
        """The parents' rows of the leaderboard: their mutual agreement, and each named parent's latency and
        (when episodes are on) return. Under xdist each worker computes its share (``worker_share``)."""
        from harness.timing import measure_latency

        ctx = self.context()
        nets = {"parent_a": ctx.parent_a, "parent_b": ctx.parent_b}
        out: dict[str, Any] = ctx.parent_rows() if agreement else {}
        out["latency_ms"] = {n: measure_latency(nets[n], ctx.latency_input)["median_ms"] for n in names}
        s = ctx.settings
        if s.env_id and s.episodes > 0:
            from harness.rollout import episode_returns

            out["returns"] = {n: episode_returns(nets[n], s.env_id, s.episodes, seed=s.episode_seed) for n in names}
        from pytest_crossover.child import builtins_only

        return dict(builtins_only(out))

    def worker_share(self) -> dict[str, Any] | None:
        """An xdist worker's share of the parent baselines, sent to the controller in its ``workeroutput``:
        parent j is timed (and rolled out) by worker j mod N, and worker 0 adds the parents' agreement; so the
        controller imports no torch, and with two or more workers the two parents' episodes run in parallel."""
        info = getattr(self.config, "workerinput", {})
        index = int("".join(c for c in str(info.get("workerid", "gw0")) if c.isdigit()) or 0)
        count = int(info.get("workercount", 1))
        names = tuple(n for j, n in enumerate(PARENTS) if j % count == index)
        if not names and index != 0:
            return None
        return self.parent_baselines(names, agreement=index == 0)

    def add_worker_parents(self, part: Mapping[str, Any]) -> None:
        for key, value in part.items():
            if key in ("latency_ms", "returns"):
                self._from_workers.setdefault(key, {}).update(value)
            else:
                self._from_workers[key] = value

    def finalize(self) -> None:
        """The parent baselines: computed here in a serial session; under xdist, merged from the workers' shares,
        and only a share a worker could not deliver (it crashed) is computed here, which imports torch."""
        if not self.distributed:
            self.parents = self.parent_baselines()
            return
        parents = self._from_workers
        prov = self.provenance or {}
        parts = ("latency_ms", "returns") if prov.get("env_id") and prov.get("episodes") else ("latency_ms",)
        missing = tuple(n for n in PARENTS if any(n not in parents.get(p, {}) for p in parts))
        if (missing or "agree_ab" not in parents) and self.complete:
            self.add_worker_parents(self.parent_baselines(missing, agreement="agree_ab" not in parents))
        # Workers report in any order: lay the rows out as a serial session does, so manifests diff cleanly.
        merged = {k: v for k, v in parents.items() if k not in ("latency_ms", "returns")}
        for part in ("latency_ms", "returns"):
            if part in parents:
                merged[part] = {n: parents[part][n] for n in PARENTS if n in parents[part]}
        self.parents = merged or None

    # -- outputs ----------------------------------------------------------------------------------------------
    def manifest(self) -> dict[str, Any]:
        from harness import __version__

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
            "provenance": self.provenance,
            "wall_s": round(time.time() - self.started, 3),
            "children": self.ordered_records(),
        }

    def _relative_run_dir(self) -> str:
        """The run directory relative to the rootdir: outputs never hold an absolute path of the run dir."""
        return os.path.relpath(self.run_dir.resolve(), self.config.rootpath.resolve())

    def latency_mode(self) -> str:
        if self.distributed:
            return "harness.timing in the xdist worker right after each child (3 warm-up, 20 timed, median)"
        if self.config.pluginmanager.hasplugin("benchmark") and not self.config.getoption("benchmark_disable", False):
            return "pytest-benchmark pedantic in the test (3 warm-up, 20 rounds, median)"
        return "harness.timing in the test (3 warm-up, 20 timed, median)"

    def write_outputs(self, *, final: bool = True) -> list[Path]:
        from harness.atomic import write_json, write_text
        from harness.leaderboard import build_rows, recommendation, table, to_csv

        self._last_write = time.monotonic()
        manifest = self.manifest()
        rows = build_rows(manifest["children"], self.parents)
        status = "complete" if manifest["complete"] else (
            f"INCOMPLETE: {len(manifest['children'])} of {len(manifest['expected_children'])} children")
        md = (f"# Crossover leaderboard ({status})\n\nSpace `{self.options.space}`; latency: {manifest['latency_mode']}."
              f"\n\n{table(rows)}\n")
        d = self.run_dir
        durable, compact = final, not final
        self.written = [
            write_json(d / "manifest.json", manifest, durable=durable, compact=compact),
            # A plain list of rows, as the established tool writes it; completeness lives in manifest.json.
            write_json(d / "leaderboard.json", rows, durable=durable, compact=compact),
            write_text(d / "leaderboard.csv", to_csv(rows), durable=durable),
            write_text(d / "leaderboard.md", md, durable=durable),
            write_text(d / "recommendation.txt", recommendation(rows, self.parents) + "\n", durable=durable),
        ]
        return self.written

    def summary(self, tr: Any) -> None:
        from harness.leaderboard import build_rows, table

        rows = build_rows(self.ordered_records(), self.parents)
        done = len(self.records)
        tr.write_sep("=", f"crossover leaderboard ({done} children, space {self.options.space})")
        tr.write_line(table(rows, limit=None if tr.config.get_verbosity() > 0 else 20))
        tr.write_line(f"latency: {self.latency_mode()}")
        if not self.complete:
            tr.write_line("session incomplete: the files hold the children that finished", red=True)
        for p in self.written:
            tr.write_line(f"written: {p}")


def _freeze_long_lived() -> None:
    """Move every object alive now (torch's and harness's modules, the loaded inputs, the context) out of the
    cyclic collector's way: ~10^5 objects that are never garbage, which every later full collection would walk
    (pytest runs one at unconfigure, the interpreter more at exit: ~0.2 s a process, profiled)."""
    import gc

    gc.freeze()


def _uses_xdist(config: pytest.Config) -> bool:
    return bool(getattr(config.option, "numprocesses", None)) and getattr(config.option, "dist", "no") != "no"


def child_id_of(nodeid: str) -> str | None:
    """The child id inside a test id's brackets: ``test_search.py::test_child[000_random_a0p50_s0_short]``."""
    if "@" in nodeid and "]@" in nodeid:
        nodeid = nodeid.rsplit("@", 1)[0]  # xdist's --dist loadgroup appends "@<group>"
    if nodeid.endswith("]") and "[" in nodeid:
        return nodeid[nodeid.rindex("[") + 1:-1]
    return None
