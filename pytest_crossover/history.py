"""History options and hooks: save one record per session, compare with a baseline, fail on a regression.

Only the controller (no ``workerinput``) saves and compares, and only when the crossover session ran children.
The work happens after the crossover session wrote its files (a ``trylast`` sessionfinish wrapper, inside the
terminal reporter's, so the terminal summary that follows can print it).
"""

from __future__ import annotations

import os
from collections.abc import Generator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from harness.core.errors import HarnessError
from harness.records.compare import FailCheck, parse_fail
from harness.records.store import DEFAULT_STORAGE

_HELP = {
    "storage": f"History folder: one record per session, per commit (default {DEFAULT_STORAGE})",
    "no-save": "Do not save this session's record in the history folder",
    "compare": "Compare with a stored record: no value = the newest of the same space and parents/states; "
               "or a record number / file-name prefix (e.g. 3 or 0003_ab12)",
    "compare-fail": "Fail the session when a child regresses against the compared record: EXPR[,EXPR...] with "
                    "EXPR = primary:0.02 (absolute drop), primary:5% (relative drop), return:10, latency:20% "
                    "(relative increase); implies --crossover-compare",
}

HISTORY_KEYS = tuple(f"crossover_{name.replace('-', '_')}" for name in _HELP)  # their ini keys


def add_history_options(parser: pytest.Parser) -> None:
    """The history options, in the ``crossover`` group, each also an ini key ``crossover_*``."""
    group = parser.getgroup("crossover", "crossover search harness")
    group.addoption("--crossover-storage", action="store", default=None, dest="crossover_storage", metavar="DIR",
                    help=_HELP["storage"])
    parser.addini("crossover_storage", _HELP["storage"], type="string", default="")
    group.addoption("--crossover-no-save", action="store_true", default=None, dest="crossover_no_save",
                    help=_HELP["no-save"])
    parser.addini("crossover_no_save", _HELP["no-save"], type="bool", default=False)
    # nargs="?" as in pytest-benchmark: a bare flag means "latest"; write --crossover-compare=ID to name one.
    group.addoption("--crossover-compare", action="store", nargs="?", const="latest", default=None,
                    dest="crossover_compare", metavar="ID", help=_HELP["compare"])
    parser.addini("crossover_compare", _HELP["compare"] + " ('latest' for the newest)", type="string", default="")
    group.addoption("--crossover-compare-fail", action="append", default=None, dest="crossover_compare_fail",
                    metavar="EXPR", help=_HELP["compare-fail"].replace("%", "%%"))  # argparse %-formats help
    parser.addini("crossover_compare_fail", _HELP["compare-fail"], type="string", default="")


@dataclass(frozen=True)
class HistoryOptions:
    storage: Path
    save: bool
    compare: str | None  # None = off, "latest", or a record number / prefix
    checks: tuple[FailCheck, ...]


def _name(config: pytest.Config, dest: str) -> str:
    """An option as the user wrote it: the flag, or the ini key when it came from the ini file."""
    if config.getoption(dest, None) is None and config.getini(dest):
        return f"{dest} (ini)"
    return "--" + dest.replace("_", "-")


def resolve_history(config: pytest.Config) -> HistoryOptions:
    """Command line over ini over default; a bad value raises a one-line UsageError."""
    cli_storage, ini_storage = config.getoption("crossover_storage", None), config.getini("crossover_storage")
    storage = os.path.expanduser(cli_storage if cli_storage is not None else ini_storage or DEFAULT_STORAGE)
    if not str(storage).strip():
        raise pytest.UsageError(f"{_name(config, 'crossover_storage')}: {storage!r} is an empty path; pass a folder, "
                                "or leave it out for .crossover")
    # A relative path in the ini file is relative to that file, as pytest's own ini paths are.
    from_ini = cli_storage is None and bool(ini_storage)
    base = config.inipath.parent if from_ini and config.inipath else Path(config.invocation_params.dir)
    no_save = config.getoption("crossover_no_save", None)
    save = not (no_save if no_save is not None else bool(config.getini("crossover_no_save")))
    # An empty value (``--crossover-compare=``, an unset CI variable) is an error below, never "compare nothing".
    compare = config.getoption("crossover_compare", None)
    if compare is None:
        compare = config.getini("crossover_compare") or None
    fail = config.getoption("crossover_compare_fail", None) or (
        [config.getini("crossover_compare_fail")] if config.getini("crossover_compare_fail") else [])
    checks: list[FailCheck] = []
    for text in fail:
        try:
            checks += parse_fail(text)
        except HarnessError as exc:
            raise pytest.UsageError(f"{_name(config, 'crossover_compare_fail')}: {exc}") from None
    if checks and compare is None:
        compare = "latest"
    compare = None if compare is None else str(compare).strip()
    if compare == "":
        raise pytest.UsageError(f"{_name(config, 'crossover_compare')}: empty record id; pass a number, a file-name "
                                "prefix or no value")
    return HistoryOptions(base / storage, save, compare, tuple(checks))


def register_history(config: pytest.Config, session: Any) -> None:
    """Check the options; on the controller, register the hooks that save and compare."""
    opts = resolve_history(config)
    if hasattr(config, "workerinput") or config.option.help:
        return
    if opts.save and session.options.explicit:
        _probe(opts.storage, _name(config, "crossover_storage"))
    if opts.compare not in (None, "latest"):
        from harness.records.compare import find_record
        from harness.records.store import HistoryStore

        try:
            find_record(HistoryStore(opts.storage).load()[0], opts.compare)
        except HarnessError as exc:
            raise pytest.UsageError(
                f"--crossover-compare: {exc} (a bare --crossover-compare before a test path takes the path as "
                "its value: write --crossover-compare=latest)") from None
    config.pluginmanager.register(HistoryHooks(session, opts), "crossover-history")


def _probe(storage: Path, name: str) -> None:
    """An unwritable store is found now, not after every child has run."""
    from harness.records.store import HistoryStore

    try:
        HistoryStore(storage).check_writable()
    except HarnessError as exc:
        raise pytest.UsageError(f"{name}: {exc}") from None


class HistoryHooks:
    """Save, compare and report; state for one session."""

    def __init__(self, session: Any, opts: HistoryOptions) -> None:
        self.cs = session
        self.opts = opts
        self.saved: Path | None = None
        self.baseline: str | None = None
        self.table: str | None = None
        self.notes: list[str] = []
        self.regressed: list[str] = []
        self.unrun: str | None = None  # why a requested gate could not run (the session then fails)
        self.active = False

    @pytest.hookimpl(wrapper=True)
    def pytest_sessionstart(self, session: pytest.Session) -> Generator[None, Any, Any]:
        """A record named with ``--crossover-compare=ID`` must be comparable: checked once the inputs are (after
        every other sessionstart), before any child runs."""
        result = yield
        if self.opts.compare not in (None, "latest"):
            self._check_named()
        return result

    def _check_named(self) -> None:
        from harness.records.compare import select_baseline
        from harness.records.store import HistoryStore, comparable_on, fingerprint

        cs = self.cs
        provenance = cs.runtime.provenance or cs.runtime.check_inputs(load=not cs.distributed).provenance
        mine = comparable_on(cs.options.space, cs.options.to_dict(), provenance)
        current = {"comparable_on": mine, "fingerprint": fingerprint(mine)}
        try:
            select_baseline(HistoryStore(self.opts.storage).load()[0], current, str(self.opts.compare))
        except HarnessError as exc:
            raise pytest.UsageError(f"--crossover-compare: {exc}") from None

    @pytest.hookimpl(wrapper=True, trylast=True)
    def pytest_sessionfinish(self, session: pytest.Session, exitstatus: int) -> Generator[None, Any, Any]:
        result = yield
        if self.cs.records and not self.cs.is_worker:
            self.active = True
            self._run(session)
        return result

    def _run(self, session: pytest.Session) -> None:
        from harness.records.compare import compare, comparison_table, regressions, select_baseline
        from harness.records.store import HistoryStore, build_record, git_info

        manifest = self.cs.manifest()
        record = build_record(manifest, git=git_info(session.config.invocation_params.dir))
        store = HistoryStore(self.opts.storage)
        records, warnings = store.load()
        self.notes += [f"warning: {w}" for w in warnings]
        if self.opts.compare is not None:
            try:
                base, notes = select_baseline(records, record, self.opts.compare)
            except HarnessError as exc:
                base, notes = None, [f"warning: {exc}"]
            unreadable = [w for w in warnings if "record name" not in w]  # files named as records, not read
            if unreadable:  # the store is not empty: its history started, and may be in those files
                notes = [n for n in notes if "starts its history" not in n]
            self.notes += notes
            if base is None and self.opts.checks and unreadable:
                # Unreadable records may hold the baseline: a gate that could not look is not a pass.
                self.unrun = (f"--crossover-compare-fail could not run: no readable baseline, and "
                              f"{len(unreadable)} file(s) of the history store {str(self.opts.storage)!r} could not "
                              "be read (listed above); fix or remove them")
            if base is not None:
                cmp = compare(base, record)
                self.baseline, self.table = base.name, comparison_table(cmp, self.opts.checks)
                self.notes += cmp.notes
                if cmp.added:
                    self.notes.append(f"children added since {base.name}: {', '.join(cmp.added)}")
                if cmp.removed:
                    self.notes.append(f"children removed since {base.name}: {', '.join(cmp.removed)}")
                self.regressed, noisy = regressions(cmp, self.opts.checks)
                self.notes += noisy
        if not self.opts.save:
            pass
        elif manifest["complete"]:
            try:
                self.saved = store.save(record)
            except HarnessError as exc:
                self.notes = [n for n in self.notes if "starts its history" not in n]
                self.notes.append(f"record not saved: {exc}")
                if self.opts.checks and not self.unrun:  # the gate would stay off for every later session
                    self.unrun = ("--crossover-compare-fail cannot gate later sessions: this session's record could "
                                  "not be saved (above)")
            if record["subset"] and self.saved:
                self.notes.append("saved as a subset record: it is never the baseline of a whole-space session")
        else:
            self.notes.append("record not saved: the session is incomplete (interrupted or children missing)")
        if (self.regressed or self.unrun) and session.exitstatus == pytest.ExitCode.OK:
            session.exitstatus = pytest.ExitCode.TESTS_FAILED

    @pytest.hookimpl(trylast=True)  # after the crossover leaderboard
    def pytest_terminal_summary(self, terminalreporter: Any) -> None:
        if not self.active or not (self.table or self.notes or self.regressed or self.saved or self.baseline
                                   or self.unrun):
            return
        tr = terminalreporter
        title = f"crossover history: compared with {self.baseline}" if self.baseline else "crossover history"
        tr.write_sep("-", title)
        if self.table:
            tr.write_line(self.table)
        for note in self.notes:
            tr.write_line(note, yellow=True)
        if self.unrun:
            tr.write_line(f"{self.unrun}; exit status 1", red=True, bold=True)
        if self.regressed:
            # pytest's last line counts them ("9 passed, 1 regressed in 6.2s"), as pytest-rerunfailures counts its
            # reruns: exit status 1 as for a failed test (CI treats both alike), the last line tells them apart.
            tr.stats.setdefault("regressed", []).extend(self.regressed)
            checks = ",".join(str(c) for c in self.opts.checks)
            tr.write_line(f"regressed against {self.baseline} ({len(self.regressed)} breach(es) of "
                          f"--crossover-compare-fail={checks}); exit status 1:", red=True, bold=True)
            for line in self.regressed:
                tr.write_line(f"  regressed: {line}", red=True)
        elif self.opts.checks and self.baseline:
            tr.write_line(f"no regression against {self.baseline} ({', '.join(str(c) for c in self.opts.checks)})",
                          green=True)
        if self.saved:
            tr.write_line(f"saved: {self.saved}")
