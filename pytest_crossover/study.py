"""``--crossover-search optuna``: the controller's study (asked at collection, told as each child finishes).

Only the controller opens the storage. It asks this session's trials where the session builds its children
(pytest_configure), turns each into a child (harness.search.suggest) and sends every worker the children, not the
study (``workerinput[TRIALS_KEY]``), so every process collects the same ids and no worker imports optuna. Each
record that reaches the controller is told to the study there; a trial asked but never run (Ctrl-C, a child
deselected) is failed when the session ends, and one whose session was killed is failed by the next session.
"""

from __future__ import annotations

import os
import time
import uuid
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import pytest

from harness.core.errors import HarnessError
from harness.search.space import ChildSpec
from harness.search.suggest import (
    Range,
    study_space,
    suggest,
    trial_spec,
)
from harness.train.regimes import Regime

TRIALS_KEY = "crossover_trials"  # the asked children, in each worker's workerinput
CONFIRM_LEVEL = 1_000_000  # a confirmation's replicate key: apart from every trial's own (0 or its number)


# -- the controller's study ------------------------------------------------------------------------------------
def study_name(options: Any, space: Mapping[str, Any]) -> str:
    """``<space>-<hash of what the study searches, its inputs and the settings that change numbers>``: the same on
    every machine of a study (a host's device and threads are its own, so they are not in it)."""
    import hashlib
    import json

    from harness.core.version import __version__
    from harness.records.store import COMPARABLE_OPTIONS

    h = hashlib.sha256()
    h.update(json.dumps([space, {k: str(getattr(options, k, None)) for k in COMPARABLE_OPTIONS
                          if k not in ("modes", "device", "threads")},
                         options.episodes, options.env], sort_keys=True, default=str).encode())
    for path in (options.parent_a, options.parent_b, options.states, options.eval_states):
        h.update(Path(path).read_bytes() if path and os.path.isfile(path) else f"embedded {__version__}".encode())
    return f"{options.space}-{h.hexdigest()[:12]}"


class StudySession:
    """The study as the controller holds it: the asked trials by child id, told as their records arrive."""

    def __init__(self, config: pytest.Config, options: Any) -> None:
        from harness.search import study as lib

        s = options.study
        self.objectives: list[str] = list(s["objectives"])
        self.session = uuid.uuid4().hex[:12]
        self.host = lib.host()
        grid = options.space_specs(controls=False, max_runs=None)
        ranges = {k: Range(v[0], v[1], v[2], int if v[3] == "int" else float) for k, v in s["ranges"].items()}
        given = {**options.grids, **{k: tuple(v) for k, v in s["regime_values"].items()}}
        self.space = study_space(grid, given=given, ranges=ranges, controls=options.controls != "off",
                                 layers=_layers(options, grid))
        self.name = study_name(options, self.space.describe())
        if s["storage"]:
            self.where = s["storage"]
        else:
            from pytest_crossover.history import resolve_history

            self.where = str(resolve_history(config).storage / ".studies" / f"{self.name}.log")
        self.storage = lib.open_storage(self.where)
        self.study = lib.open_study(self.storage, self.name, self.objectives, lib.make_sampler(s["sampler"], 0, 1))
        self.failed_dead = lib.fail_unfinished(self.study, self.storage, self.host)
        before = len(self.study.get_trials(deepcopy=False))
        self.study.sampler = lib.make_sampler(s["sampler"], lib.session_seed(s["sampler_seed"], before),
                                              len(self.objectives))
        self.previous = lib.finished_records(self.study)
        self.pending: dict[str, Any] = {}  # child id -> the asked trial, or the Confirmation it re-runs
        self.asked: list[int] = []
        self.told_errors: list[str] = []
        self.specs = self._ask(int(s["trials"])) + self._confirmations(*s["confirm"])
        self.heartbeat = lib.Heartbeat(self.storage)
        self.heartbeat.start([t._trial_id for t in self.pending.values() if hasattr(t, "_trial_id")])

    def _attrs(self) -> dict[str, Any]:
        return {"host": self.host, "pid": os.getpid(), "session": self.session, "asked_unix": round(time.time(), 3)}

    def _ask(self, n: int) -> list[ChildSpec]:
        from harness.search import study as lib

        units = {str(r.get("unit")) for r in self.previous}
        specs = []
        for _ in range(n):
            trial = lib.ask(self.study)
            try:
                choice = suggest(trial, self.space)
                spec = trial_spec(choice, self.space.regimes, index=trial.number, prefix=f"t{trial.number:04d}",
                                  searched=self.space.searched)
            except HarnessError as exc:  # a sampled regime that is no regime: the trial fails, the user is told
                lib.fail(self.study, trial, "error", str(exc))
                for asked in self.pending.values():
                    lib.fail(self.study, asked, "lost", f"the session stopped before this trial ran: {exc}")
                raise
            if spec.unit_id in units:  # the same choices again: another replicate of them, not a copy
                spec = trial_spec(choice, self.space.regimes, index=trial.number, prefix=f"t{trial.number:04d}",
                                  replicate=trial.number, searched=self.space.searched)
            units.add(spec.unit_id)
            for k, v in {**self._attrs(), "choice": choice, "child_id": spec.child_id}.items():
                trial.set_user_attr(k, v)
            self.pending[spec.child_id] = trial
            self.asked.append(trial.number)
            specs.append(spec)
        return specs

    def _confirmations(self, top: int, replicates: int) -> list[ChildSpec]:
        from harness.search.study import to_confirm

        specs = []
        for c in to_confirm(self.study, top, replicates):
            choice = c.base.user_attrs.get("choice")
            if not choice or choice.get("levels", {}).get("regime") not in self.space.regimes:
                continue  # a trial of an earlier release or another regime set: not rebuilt
            spec = trial_spec(choice, self.space.regimes, index=c.base.number, prefix=f"t{c.base.number:04d}_r"
                              f"{c.replicate}", replicate=CONFIRM_LEVEL * c.replicate + c.base.number,
                              searched=self.space.searched)
            self.pending[spec.child_id] = c
            specs.append(spec)
        return specs

    def wire(self) -> dict[str, Any]:
        """What a worker needs to collect the same children: each one's choices, never the study."""
        children = []
        for spec in self.specs:
            labels = spec.levels.labels()
            regime = spec.levels["regime"]
            children.append({"index": spec.index, "prefix": spec.prefix, "operator": spec.recipe.operator,
                             "params": dict(spec.recipe.params), "levels": labels,
                             "regime": regime.to_dict(), "replicate": spec.levels.get("replicate", 0)})
        return {"children": children, "searched": sorted(self.space.searched)}

    def tell(self, record: Mapping[str, Any]) -> None:
        """Tell the study one finished (or failed) child; a storage that fails is a line of the summary, never a
        lost session (the record is in the run directory either way)."""
        from harness.search import study as lib

        entry = self.pending.pop(str(record.get("child_id")), None)
        if entry is None:
            return
        try:
            if isinstance(entry, lib.Confirmation):
                lib.add_confirmation(self.study, entry.base, record, self.objectives, self._attrs())
            else:
                self.heartbeat.done(entry._trial_id)
                lib.tell(self.study, entry, record, self.objectives)
        except Exception as exc:
            self.told_errors.append(f"{record.get('child_id')}: {type(exc).__name__}: {exc}"[:300])

    def finish(self, why: str) -> None:
        """The session ends: every trial asked but never told is failed (it is never counted as complete), and so
        is any trial a session on this host left running when it died meanwhile."""
        self.heartbeat.stop()
        from harness.search.study import fail, fail_unfinished

        for child_id in list(self.pending):
            entry = self.pending.pop(child_id)
            if hasattr(entry, "_trial_id"):
                try:
                    fail(self.study, entry, "lost", why)
                except Exception as exc:
                    self.told_errors.append(f"{child_id}: {type(exc).__name__}: {exc}"[:300])
        try:
            self.failed_dead += fail_unfinished(self.study, self.storage, self.host)
        except Exception as exc:
            self.told_errors.append(f"failing dead sessions' trials: {type(exc).__name__}: {exc}"[:300])

    def header(self) -> str:
        """The terminal's line: which study, where, and what this session asked of it."""
        from harness.search.study import redacted

        confirm = len(self.specs) - len(self.asked)
        dead = f", {len(self.failed_dead)} left running by a dead session failed" if self.failed_dead else ""
        return (f"crossover study: {self.name} in {redacted(self.where)}: {len(self.previous)} earlier results, "
                f"{len(self.asked)} trials asked now + {confirm} confirmation runs{dead}")

    def previous_results(self, run_dir: Path) -> dict[str, Any]:
        """The study's records from before this session, as results; a child's files only where they are here (a
        trial of another machine has its files there)."""
        from harness.search.result import ChildResult

        out = {}
        for record in self.previous:
            result = ChildResult.from_dict(record)
            if result.files and not (run_dir / result.child_id).is_dir():
                result = result.with_(files=None)
            out[result.child_id] = result
        return out

    def summary(self) -> dict[str, Any]:
        from harness.search.study import redacted
        from harness.search.study_summary import summarize

        return summarize(self.study, self.objectives, name=self.name, storage=redacted(self.where),
                         session=self.session, asked=self.asked, failed_dead=self.failed_dead,
                         errors=self.told_errors)


def _layers(options: Any, grid: Sequence[ChildSpec]) -> int | None:
    """The parents' layer count, read from their metadata without torch, when a per-layer parameter needs it."""
    if not any(p.per_layer for s in grid for p in s.recipe.op.params):
        return None
    from harness.crossing.operators import layer_count
    from harness.inputs import embedded, lineage
    from harness.inputs.checkpoints import peek_parent

    path = lineage.parent_file(options.parent_a) if options.parent_a else embedded.parent_paths()[0]
    meta = peek_parent(path)
    return None if meta is None else layer_count(meta)


def worker_specs(wire: Mapping[str, Any]) -> list[ChildSpec]:
    """The controller's asked children, rebuilt on a worker (no optuna, no storage)."""
    searched = frozenset(wire["searched"])
    specs = []
    for c in wire["children"]:
        regime = Regime(**c["regime"])
        choice = {"operator": c["operator"], "params": c["params"], "levels": {**c["levels"], "regime": regime.name}}
        specs.append(trial_spec(choice, {regime.name: regime}, index=c["index"], prefix=c["prefix"],
                                replicate=c["replicate"], searched=searched))
    return specs


def session_specs(config: pytest.Config, options: Any) -> tuple[StudySession | None, list[ChildSpec]]:
    """This process's children with a study: asked here on the controller, received on a worker."""
    workerinput = getattr(config, "workerinput", None)
    if workerinput is not None:
        wire = workerinput.get(TRIALS_KEY)
        return None, worker_specs(wire) if wire else []
    if config.option.help:
        return None, []
    from pytest_crossover.options import naming

    with naming(options.sources, "study"):
        study = StudySession(config, options)
    return study, study.specs
