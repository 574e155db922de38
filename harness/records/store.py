"""The history store: one JSON record per search session, with what makes it reproducible (commit, machine,
versions, options, fingerprints of the inputs) and every child's metrics.

Layout follows pytest-benchmark's: ``<storage>/<machine-id>/NNNN_<short-commit>[_dirty].json``, where the
machine id names the system, the Python and the torch version (``Linux-CPython-3.11-torch2.13.0``). Numbers are
unique across the whole store, so ``--crossover-compare=3`` names one record even with several machine folders.
"""

from __future__ import annotations

import datetime as _dt
import fcntl
import hashlib
import json
import math
import os
import platform
import re
import subprocess
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from harness.core.atomic import json_safe, write_json
from harness.core.errors import HarnessError
from harness.evaluate.metrics import METRICS
from harness.search import axes

DEFAULT_STORAGE = ".crossover"
SCHEMA = "pytest-crossover-history"
SCHEMA_VERSION = 1
# Machine fields that change latency; a difference in any of them makes a latency comparison unreliable.
MACHINE_KEYS = ("node", "system", "machine", "processor", "cpu_count", "python_implementation", "python_version")
LOCK_WAIT_S = 30.0  # the longest wait for the store's lock
RECORD_MAX_BYTES = 256 << 20  # a record of 10^5 children is ~100 MB; a larger file is not read
_NAME = re.compile(r"^(?P<number>\d{4,})_(?P<commit>[0-9A-Za-z]+)(?P<dirty>_dirty)?\.json$")

# -- environment --------------------------------------------------------------------------------------------
def _git(args: Sequence[str], cwd: Path) -> str | None:
    try:
        out = subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True, timeout=30, check=False)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() if out.returncode == 0 else None


def git_info(cwd: str | Path | None = None) -> dict[str, Any]:
    """Commit, branch and dirty flag of the repository around ``cwd``; commit "nogit" outside a repository.

    Untracked files do not make a tree dirty (the store and run folders are usually untracked).
    """
    where = Path(cwd or os.getcwd())
    commit = _git(["rev-parse", "HEAD"], where)
    if not commit:
        return {"commit": "nogit", "short": "nogit", "branch": None, "dirty": False}
    branch = _git(["rev-parse", "--abbrev-ref", "HEAD"], where)
    status = _git(["status", "--porcelain", "--untracked-files=no"], where)
    return {"commit": commit, "short": commit[:10], "branch": None if branch in (None, "HEAD") else branch,
            "dirty": bool(status)}


def versions() -> dict[str, str | None]:
    """Versions that change results; read from package metadata so torch is not imported here."""
    from importlib import metadata  # here: the plugin imports this module in every pytest run

    from harness.core.version import __version__

    out: dict[str, str | None] = {"python": platform.python_version(), "harness": __version__}
    for dist in ("torch", "numpy", "gymnasium", "pytest", "pytest-crossover"):
        try:
            out[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            out[dist] = None
    return out


def machine_info() -> dict[str, Any]:
    return {"node": platform.node(), "system": platform.system(), "release": platform.release(),
            "machine": platform.machine(), "processor": platform.processor(), "cpu_count": os.cpu_count(),
            "python_implementation": platform.python_implementation(), "python_version": platform.python_version()}


def machine_id(machine: Mapping[str, Any] | None = None, vers: Mapping[str, Any] | None = None) -> str:
    """Sub-folder name, e.g. ``Linux-CPython-3.11-torch2.13.0``."""
    m, v = machine or machine_info(), vers or versions()
    py = ".".join(str(m.get("python_version", "")).split(".")[:2])
    raw = f"{m.get('system')}-{m.get('python_implementation')}-{py}-torch{v.get('torch') or 'none'}"
    return re.sub(r"[^A-Za-z0-9._+-]", "_", raw)


# -- records ----------------------------------------------------------------------------------------------------
def num(v: Any) -> float | None:
    return float(v) if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) else None


def child_metrics(row: Mapping[str, Any]) -> dict[str, Any]:
    """One child's stored metrics, from a ``harness.answer.leaderboard`` row: every metric under its name."""
    return {
        "child_id": row["child_id"], "rank": row.get("rank"), "status": row.get("status"),
        "degenerate": bool(row.get("degenerate")), **{m.name: row.get(m.column) for m in METRICS.values()},
        **{f"{m.name}_{end}": row.get(f"{m.column}_{end}") for m in METRICS.values() if m.interval
           for end in ("lo", "hi")}, "return_se": row.get("return_se"),
        "ranked_model": row.get("ranked_model"), "pareto": bool(row.get("pareto")),
        "crossover_mode": row.get("crossover_mode"), "crossover_alpha": row.get("crossover_alpha"),
        "crossover_seed": row.get("crossover_seed"), "finetune_regime": row.get("finetune_regime"),
        **{c: row.get(c) for c in axes.columns()},
    }


def fingerprints(provenance: Mapping[str, Any] | None) -> dict[str, str | None]:
    p = provenance or {}
    return {k: (p.get(src) or {}).get("sha256") for k, src in
            (("parent_a", "parent_a"), ("parent_b", "parent_b"), ("states", "states_file"),
             ("eval_states", "eval_states_file"))}


# The settings that change a session's numbers; -k, -n, --crossover-max-runs and the run directory do not (a
# subset is marked as one instead).
COMPARABLE_OPTIONS = ("modes", "grids", "regimes", "align", "teachers", "define_regime", "teacher", "holdout",
                      "split_seed", "eval_states", "device", "threads")


def comparable_on(space: Any, options: Mapping[str, Any] | None,
                  provenance: Mapping[str, Any] | None) -> dict[str, Any]:
    """Everything a comparison must hold equal: the space and its knobs, the settings that change numbers, the
    inputs' sha256, the environment and episodes of the returns, and the CPU arithmetic (harness.core.arithmetic:
    records of unlike kernels, or of no recorded kernels, are never alike)."""
    o, p = options or {}, provenance or {}
    out: dict[str, Any] = json_safe({"space": space, **{k: o.get(k) for k in COMPARABLE_OPTIONS}, **fingerprints(p),
                                     "env": p.get("env_id"), "episodes": p.get("episodes"),
                                     "arithmetic": p.get("arithmetic")})
    reference = p.get("reference")
    if reference:  # scored against another reference: other numbers (absent otherwise: fingerprints unchanged)
        out["reference"] = [(reference.get(f"reference_{s}") or {}).get("sha256") for s in "ab"]
    return out  # as JSON holds it (lists, not tuples), so a stored record and a live session compare equal


def fingerprint(comparable: Mapping[str, Any]) -> str:
    """A short hash of :func:`comparable_on`: records with equal fingerprints are comparable."""
    text = json.dumps(json_safe(comparable), sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def differences(a: Mapping[str, Any], b: Mapping[str, Any]) -> list[str]:
    """``key old -> new`` for every setting in which two :func:`comparable_on` dicts differ."""
    def short(v: Any) -> str:
        return str(v)[:12] if isinstance(v, str) and len(v) == 64 else json.dumps(v, default=str)

    return [f"{k} {short(a.get(k))} -> {short(b.get(k))}" for k in sorted(set(a) | set(b)) if a.get(k) != b.get(k)]


def build_record(manifest: Mapping[str, Any], *, git: Mapping[str, Any] | None = None,
                 machine: Mapping[str, Any] | None = None, vers: Mapping[str, Any] | None = None,
                 timestamp: str | None = None) -> dict[str, Any]:
    """A history record from a session manifest (``CrossoverSession.manifest()``)."""
    from harness.answer.leaderboard import manifest_rows

    rows = manifest_rows(manifest)
    parents = manifest.get("parents") or {}
    comparable = comparable_on(manifest.get("space"), manifest.get("options"), manifest.get("provenance"))
    return {
        "schema": SCHEMA, "schema_version": SCHEMA_VERSION,
        "datetime": timestamp or _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
        "commit_info": dict(git or git_info()), "machine_info": dict(machine or machine_info()),
        "versions": dict(vers or versions()), "space": manifest.get("space"), "options": manifest.get("options"),
        "complete": manifest.get("complete"), "subset": bool((manifest.get("selection") or {}).get("subset")),
        "selection": manifest.get("selection"), "fingerprints": fingerprints(manifest.get("provenance")),
        "comparable_on": comparable, "fingerprint": fingerprint(comparable),
        "latency_mode": manifest.get("latency_mode"),
        "parents": {"agree_ab": parents.get("agree_ab"), "latency_ms": parents.get("latency_ms"),
                    "returns": {k: (v or {}).get("mean") for k, v in (parents.get("returns") or {}).items()}},
        "children": [child_metrics(r) for r in rows if not r["is_parent_baseline"]],
    }


@dataclass
class Stored:
    """One record in the store."""

    path: Path
    number: int
    data: dict[str, Any]

    @property
    def name(self) -> str:
        return self.path.stem

    def commit(self) -> str:
        return str((self.data.get("commit_info") or {}).get("commit", "nogit"))

    @property
    def fingerprint(self) -> str | None:
        return self.data.get("fingerprint")

    @property
    def baseline_worthy(self) -> bool:
        """Complete and of the whole space: only such a record is a baseline for another session."""
        return bool(self.data.get("complete")) and not self.data.get("subset")

    def children(self) -> dict[str, dict[str, Any]]:
        return {c["child_id"]: c for c in self.data.get("children") or [] if isinstance(c, dict) and "child_id" in c}


class HistoryStore:
    """The folder of records; loading reports and skips anything that is not a readable record of ours."""

    def __init__(self, root: str | Path = DEFAULT_STORAGE) -> None:
        self.root = Path(root)

    def load(self) -> tuple[list[Stored], list[str]]:
        """All records, oldest first, and one warning line per skipped file."""
        records: list[Stored] = []
        warnings: list[str] = []
        if not self.root.is_dir():
            return records, warnings
        for path in sorted(p for p in self.root.glob("*/*") if p.is_file() and not p.name.startswith(".")
                           and not p.parent.name.startswith(".")):  # .eval: cached evaluation buffers
            m = _NAME.match(path.name)
            if not m:
                warnings.append(f"skipped {path}: not a pytest-crossover record name (NNNN_<commit>[_dirty].json)")
                continue
            try:
                if path.stat().st_size > RECORD_MAX_BYTES:
                    raise ValueError(f"{path.stat().st_size} bytes, more than any record ({RECORD_MAX_BYTES})")
                data = json.loads(path.read_text(encoding="utf-8"))
            except (OSError, UnicodeDecodeError, ValueError) as exc:
                warnings.append(f"skipped {path}: unreadable or corrupt JSON ({str(exc).splitlines()[0][:80]})")
                continue
            if not isinstance(data, dict) or data.get("schema") != SCHEMA or not isinstance(data.get("children"), list):
                warnings.append(f"skipped {path}: not a pytest-crossover record (schema {SCHEMA!r} missing)")
                continue
            records.append(Stored(path, int(m["number"]), data))
        records.sort(key=lambda r: (r.number, str(r.data.get("datetime", ""))))
        return records, warnings

    def check_writable(self) -> None:
        """A one-line HarnessError (field ``storage``) unless a record can be written here. The folders it creates
        to find out are removed again: the store appears with its first record."""
        missing = [d for d in (self.root, *self.root.parents) if not os.path.lexists(d)]
        try:
            self.root.mkdir(parents=True, exist_ok=True)
            probe = self.root / f".write-test-{os.getpid()}"
            probe.write_text("ok")
            probe.unlink()
        except OSError as exc:
            raise HarnessError(f"cannot write to {str(self.root)!r} ({exc.strerror}); pass a writable folder, or "
                               "--crossover-no-save", field="storage") from None
        finally:
            for d in missing:  # deepest first
                try:
                    d.rmdir()
                except OSError:
                    break

    def next_number(self) -> int:
        numbers = [int(m["number"]) for p in self.root.glob("*/*.json") if (m := _NAME.match(p.name))]
        return max(numbers, default=0) + 1

    def _lock(self, lock: Any) -> None:
        """Take the store's lock, waiting at most :data:`LOCK_WAIT_S` (a session saves in milliseconds: a longer
        hold is a stuck process, and waiting for it would hang the session)."""
        deadline = time.monotonic() + LOCK_WAIT_S
        while True:
            try:
                fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
                return
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    raise HarnessError(f"the history store {str(self.root)!r} has been locked by another process for "
                                       f"{LOCK_WAIT_S:g} s (its .lock); end that process, or pass another "
                                       "--crossover-storage or --crossover-no-save", field="storage") from None
                time.sleep(0.05)

    def save(self, record: Mapping[str, Any]) -> Path:
        """Write ``record`` atomically as the next number under its machine folder; return the path.

        The store is locked while the number is picked and the file written, so sessions that finish together
        never take the same number (nor overwrite each other's records).
        """
        git = record.get("commit_info") or {}
        folder = self.root / machine_id(record.get("machine_info"), record.get("versions"))
        try:
            self.root.mkdir(parents=True, exist_ok=True)
            with open(self.root / ".lock", "a") as lock:  # held while the number is taken and the record written
                self._lock(lock)
                name = f"{self.next_number():04d}_{git.get('short') or 'nogit'}{'_dirty' if git.get('dirty') else ''}"
                return write_json(folder / f"{name}.json", record)
        except OSError as exc:
            raise HarnessError(f"cannot write the history store {str(self.root)!r} ({exc.strerror}); pass a writable "
                               "directory or --crossover-no-save", field="storage") from None
