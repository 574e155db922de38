"""The run directory: its lock, and every file a search writes there.

- A session locks the directory (``.lock``, ``flock``); a second session on it is refused.
- A child's files are built where the child ran (:func:`child_files`, bytes) and written by the directory's
  owner: staged in a hidden folder, then renamed into place, so a child folder never mixes two sessions.
- Each finished child's record is appended to ``children.jsonl`` (the journal: writes grow linearly with the
  children, and a killed session loses no finished child); ``manifest.json`` and the leaderboard files are
  rewritten at most every :data:`REWRITE_INTERVAL_S` during the session and once, fsynced, at its end.
- Every write is atomic (temporary file + rename, :mod:`harness.core.atomic`).
"""

from __future__ import annotations

import errno
import fcntl
import io
import json
import os
import shutil
import stat
import time
from collections.abc import Collection, Mapping
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

from harness.core.atomic import json_safe, publish_dir, remove_stale_staging, write_bytes, write_json, write_text
from harness.core.errors import HarnessError

if TYPE_CHECKING:
    from harness.search.child import ChildOutcome, Context
    from harness.search.result import ChildResult

JOURNAL = "children.jsonl"
REWRITE_INTERVAL_S = 1.0
_CONFIG_MAX_BYTES = 1 << 20  # a child's run_config.json is a few kB: anything larger is not one
CHILD_FILES = {"crossover": "crossover.pt", "child": "child.pt", "int8": "child_int8.pt", "eval": "eval.json",
               "run_config": "run_config.json"}
_EVAL_KEYS = ("child_id", "status", "primary", "ranked_model", "before_finetune", "after_finetune", "int8",
              "return", "returns", "latency_ms", "finetune", "timings_s")


def eval_report(record: Mapping[str, Any]) -> dict[str, Any]:
    """A child's ``eval.json``: its metrics before and after fine-tuning (and int8), returns, latency, history."""
    return {k: record.get(k) for k in _EVAL_KEYS}


def _json_bytes(obj: Any) -> bytes:
    return (json.dumps(json_safe(obj), indent=2, allow_nan=False, default=str) + "\n").encode()


def child_files(outcome: ChildOutcome, ctx: Context, result: ChildResult | None = None) -> dict[str, bytes]:
    """The bytes of a child's files, by file name (built where the child ran; written by the directory's owner);
    ``result``: the outcome's result with what was learned since (latency)."""
    import torch

    from harness.search.child import run_config

    def pt(obj: Any) -> bytes:
        buf = io.BytesIO()
        torch.save(obj, buf)
        return buf.getvalue()

    files = {CHILD_FILES["crossover"]: pt(dict(outcome.crossed)), CHILD_FILES["child"]: pt(outcome.model.state_dict())}
    if outcome.int8_model is not None:
        files[CHILD_FILES["int8"]] = pt(outcome.int8_model.state_dict())
    cfg = run_config(outcome.spec, ctx)
    cfg["finetune_metrics"] = outcome.result.finetune
    files[CHILD_FILES["run_config"]] = _json_bytes(cfg)
    files[CHILD_FILES["eval"]] = _json_bytes(eval_report((result or outcome.result).to_dict()))
    return files


def file_keys(names: Mapping[str, bytes] | list[str], child_id: str) -> dict[str, str]:
    """``{"child": "<id>/child.pt", ...}``: the record's paths of a child's files, relative to the run directory."""
    by_name = {v: k for k, v in CHILD_FILES.items()}
    return {by_name[n]: f"{child_id}/{n}" for n in CHILD_FILES.values() if n in names}


class RunDir:
    """A search's output folder. Only its owner (the session that holds the lock) writes to it."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        self._lock: IO[str] | None = None
        self._created: list[Path] = []  # the directories acquire() created, deepest first
        self._last_rewrite = -float("inf")
        self._journal_started = True  # until start_journal: append to the journal as it is

    @property
    def owned(self) -> bool:
        return self._lock is not None

    def acquire(self) -> None:
        """Create and lock the directory; raises a one-line HarnessError (field ``run_dir``) when it is not
        writable or another session holds it."""
        missing = [d for d in (self.path, *self.path.parents) if not os.path.lexists(d)]
        try:
            self.path.mkdir(parents=True, exist_ok=True)
            self._created = missing
            probe = self.path / f".write-test-{os.getpid()}"
            probe.write_text("ok")
            probe.unlink()
            # "a": a refused second session must not truncate the pid the holder wrote.
            lock = open(self.path / ".lock", "a")  # noqa: SIM115  (held open for the session)
        except OSError as exc:
            why = exc.strerror
            if os.path.islink(self.path) and not self.path.exists():
                why = f"a symbolic link to {os.readlink(self.path)!r}, which does not resolve"
            elif os.path.lexists(self.path) and not self.path.is_dir():
                why = "a file, not a directory"
            raise HarnessError(f"cannot write to {str(self.path)!r} ({why}); pass a writable directory",
                               field="run_dir") from None
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            lock.close()
            raise HarnessError(f"{str(self.path)!r} is in use by another crossover session; wait for it or pass "
                               "another run directory", field="run_dir") from None
        lock.truncate(0)
        lock.write(str(os.getpid()))
        lock.flush()
        self._lock = lock
        remove_stale_staging(self.path)  # child folders half-staged by a crashed session

    def release(self) -> None:
        """Unlock; a directory this session created and wrote nothing to (no child ran: ``--collect-only``, an
        interrupt or an error before the first) is removed, so such a session leaves the disk as it found it."""
        if self._lock is not None:
            fcntl.flock(self._lock, fcntl.LOCK_UN)
            self._lock.close()
            self._lock = None
            if self._created and [p.name for p in self.path.iterdir()] == [".lock"]:
                (self.path / ".lock").unlink(missing_ok=True)
                for d in self._created:  # the run directory, then the parents it needed
                    try:
                        d.rmdir()
                    except OSError:
                        break
            self._created = []

    def start_journal(self) -> None:
        """A new journal for this session, begun at its first record: a session that selects, collects or runs
        nothing leaves the previous session's journal (and files) as they were."""
        self._journal_started = False

    def append(self, record: Mapping[str, Any]) -> None:
        """Append one finished child's record to the journal, in one ``write`` (whole lines only)."""
        if not self._journal_started:
            write_bytes(self.path / JOURNAL, b"", durable=False)  # the previous session's journal is replaced
            self._journal_started = True
        line = (json.dumps(json_safe(record), allow_nan=False, default=str, separators=(",", ":")) + "\n").encode()
        fd = os.open(self.path / JOURNAL, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            os.write(fd, line)
        finally:
            os.close(fd)

    def write_child(self, child_id: str, files: Mapping[str, bytes]) -> dict[str, str]:
        """Write a child's folder whole (staged, then renamed over any older one); its files' record paths."""
        final = self.path / child_id
        if not self.ours(child_id):  # written since the session checked: still never replaced
            raise FileExistsError(errno.EEXIST, f"{child_id!r} there was not written by a crossover session")
        staged = self.path / f".{child_id}.{os.getpid()}.tmp"
        shutil.rmtree(staged, ignore_errors=True)
        try:
            for name, data in files.items():
                # No fsync per file: the folder rename is what makes the child appear whole (~2-3 ms per file).
                write_bytes(staged / name, data, durable=False)
            publish_dir(staged, final)
        except BaseException:
            shutil.rmtree(staged, ignore_errors=True)
            raise
        return file_keys(list(files), child_id)

    def ours(self, child_id: str) -> bool:
        """Whether ``<run dir>/<child_id>`` is absent or a child folder a crossover session wrote (only its files,
        and a run_config.json naming this child): only such a folder may be replaced."""
        folder = self.path / child_id
        if not os.path.lexists(folder):
            return True
        if folder.is_symlink() or not folder.is_dir():
            return False
        try:
            names = {p.name for p in folder.iterdir()}
            config = folder / CHILD_FILES["run_config"]
            info = config.stat()
            # Its size first, and only a regular file: a FIFO named run_config.json would block the read for ever.
            if not names <= set(CHILD_FILES.values()) or not stat.S_ISREG(info.st_mode) \
                    or info.st_size > _CONFIG_MAX_BYTES:
                return False
            return bool(json.loads(config.read_text(encoding="utf-8")).get("child_id") == child_id)
        except (OSError, ValueError, AttributeError):
            return False

    def check_children(self, child_ids: Collection[str]) -> None:
        """Refuse, before any child runs, a folder named like a child that a crossover session did not write."""
        foreign = [c for c in child_ids if not self.ours(c)]
        if foreign:
            raise HarnessError(f"{str(self.path / foreign[0])!r} is not a child folder written by a crossover session "
                               f"(child {foreign[0]} would replace it); move it away, or pass another run directory",
                               field="run_dir")

    def due(self) -> bool:
        """Whether the derived files may be rewritten now (at most every REWRITE_INTERVAL_S mid-session)."""
        return time.monotonic() - self._last_rewrite >= REWRITE_INTERVAL_S

    def write_outputs(self, outputs: Mapping[str, Any], *, final: bool) -> list[Path]:
        """Write every output file: ``.json`` names take an object, bytes are written as they are, the others
        are text. Mid-session writes are compact and not fsynced (they guard against a dead process, not a dead
        machine: an fsync per child cost as much as evaluating it); the final ones are indented and fsynced."""
        self._last_rewrite = time.monotonic()
        written = []
        for name, content in outputs.items():
            path = self.path / name
            if isinstance(content, bytes):
                written.append(write_bytes(path, content, durable=final))
            elif name.endswith(".json"):
                written.append(write_json(path, content, durable=final, compact=not final))
            else:
                written.append(write_text(path, content, durable=final))
        return written

    def remove_outputs(self, pattern: str, keep: Collection[Path] = ()) -> None:
        """Remove outputs of an earlier session matching ``pattern`` that this one did not write (a report's
        pictures that no longer apply), so the folder never mixes two sessions' files."""
        for path in self.path.glob(pattern):
            if path not in keep and path.is_file():
                path.unlink(missing_ok=True)


def load_journal(run_dir: str | os.PathLike[str]) -> list[dict[str, Any]]:
    """Every record in a run directory's journal (a torn last line, from a machine that died mid-write, is
    skipped)."""
    path = Path(run_dir) / JOURNAL
    if not path.is_file():
        return []
    records = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            records.append(json.loads(line))
        except ValueError:
            continue
    return records


def load_child(child_dir: str | os.PathLike[str]) -> Any:
    """The model the leaderboard ranked for a child, from its folder: a ``torch.nn.Module`` in eval mode.

    For a QAT child that is its int8 model (:class:`harness.networks.quantize.Int8Linear` layers, rebuilt from
    ``child_int8.pt``), otherwise the fine-tuned float model (``child.pt``): what a user deploys after reading the
    leaderboard. The architecture comes from the folder's ``run_config.json``; tensors load ``weights_only``.
    """
    import torch

    from harness.networks.architecture import Architecture
    from harness.networks.family import build_network, family_of

    folder = Path(child_dir)
    try:
        config = json.loads((folder / CHILD_FILES["run_config"]).read_text(encoding="utf-8"))
        ranked = json.loads((folder / CHILD_FILES["eval"]).read_text(encoding="utf-8")).get("ranked_model")
        arch = Architecture.from_dict(config["architecture"])
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise HarnessError(f"{str(folder)!r} is not a child folder of a crossover run ({type(exc).__name__}: "
                           f"{exc}); pass <run-dir>/<child_id>") from None
    net = build_network(arch)
    name = CHILD_FILES["int8"] if ranked == "int8" else CHILD_FILES["child"]
    model: torch.nn.Module = family_of(arch).int8(net) if ranked == "int8" else net
    model.load_state_dict(torch.load(folder / name, map_location="cpu", weights_only=True), strict=True)
    return model.eval()
