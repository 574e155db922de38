"""The session's input files on every xdist worker, local or remote, with no shared filesystem.

On the controller, once per worker, in ``pytest_configure_node`` (before xdist starts pytest on the worker), one
exchange on a channel of the worker's own execnet gateway runs :mod:`pytest_crossover.host_side` there:

- **versions**: the worker's host reports its harness and torch versions and the sha256 of its embedded files;
  unequal ones are a one-line usage error naming the host, before any child runs (exit code 4);
- **bytes**: a remote worker (any gateway but a plain ``popen``: socket, ssh) is sent each input file's bytes,
  read once on the controller and checked against the sha256 the controller's input check recorded, in 1 MiB
  chunks (one 32 MB execnet message costs ~7x more: execnet's socket reader grows its buffer by concatenation;
  measured in docs/machines.md); it caches them by sha256 in its own temporary directory;
- **manifest**: every worker gets, in ``node.workerinput``, each input's option, path as given, sha256 and
  where it reads it: the cache (remote), the controller's path (popen: the same host), or its own installed
  embedded default (never sent).

On the worker, :func:`load_paths` gives ``harness.inputs.load.load_inputs`` the paths to read (a remote worker never
opens a path of the controller), :func:`verify` checks the loaded files' sha256 against the manifest (a file
changed since the controller checked it is a one-line error) and records the controller's paths in the
provenance, so a child's files are the same bytes whichever worker ran it; :func:`remove_cache` removes the
directory at the worker's ``pytest_unconfigure``.

A session's input files are listed once, in :data:`INPUTS`: an input added there is checked, sent and verified.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from harness.core.errors import HarnessError
from pytest_crossover import host_side
from pytest_crossover.options import usage_error

KEY = "crossover_inputs"  # node.workerinput key of the manifest
CHUNK = 1 << 20  # bytes per channel message
ANSWER_S = 120.0  # the longest wait for one answer from a worker's host (connect, import, write a chunk)


@dataclass(frozen=True, slots=True)
class Input:
    """One input file of a session: its option, and its entry in the inputs' provenance (harness.inputs.load)."""

    option: str  # --crossover-<option>
    provenance: str

    @property
    def field(self) -> str:
        """Its CrossoverOptions attribute and harness.inputs.load.load_inputs keyword."""
        return self.option.replace("-", "_")


# Every input file of a session, the one place to add another (it is then checked, sent and verified).
INPUTS = (Input("parent-a", "parent_a"), Input("parent-b", "parent_b"), Input("states", "states_file"),
          Input("eval-states", "eval_states_file"))


def gateway_text(spec: Any) -> str:
    """A gateway spec as the user wrote it after ``--tx`` (without the execmodel xdist prepends)."""
    return "//".join(p for p in str(spec).split("//") if not p.startswith("execmodel="))


def is_local(spec: Any) -> bool:
    """A ``popen`` worker runs on the controller's host and may read the controller's files."""
    return bool(spec.popen) and not spec.via


def manifest(options: Any, provenance: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    """Each input file the check recorded: ``{option: {path, local, sha256, size, suffix, embedded, package}}``."""
    import harness

    package = Path(harness.__file__).resolve().parent
    files = {}
    for inp in INPUTS:
        entry = provenance.get(inp.provenance)
        if not entry:
            continue  # an optional input not given
        local = Path(entry["path"]).resolve()
        embedded = getattr(options, inp.field) is None  # not given: the installed default was read
        files[inp.option] = {
            "path": entry["path"], "local": str(local), "sha256": entry["sha256"], "size": local.stat().st_size,
            "suffix": local.suffix, "embedded": embedded,
            "package": str(local.relative_to(package)) if embedded else None,
        }
    return files


class InputTransfer:
    """The controller's side: the manifest, each file's bytes read once (for remote workers only), and one
    exchange per worker (its replacement after a crash included)."""

    def __init__(self, options: Any, provenance: Mapping[str, Any]) -> None:
        self.sources = options.sources
        self.files = manifest(options, provenance)
        self.reference = provenance.get("reference")  # a child as a parent, or a reference (harness.inputs.lineage)
        self.here = host_side.describe([f["package"] for f in self.files.values() if f["embedded"]])
        self._payload: dict[str, bytes] | None = None
        self.sent: dict[str, tuple[int, float]] = {}  # worker id -> (bytes sent, seconds of its exchange)

    def _sent(self) -> list[dict[str, Any]]:
        """The files a remote worker receives: the non-embedded ones, once each by sha256."""
        unique = {f["sha256"]: f for f in self.files.values() if not f["embedded"]}
        return list(unique.values())

    def payload(self) -> dict[str, bytes]:
        """Each sent file's bytes, read once; they must be the bytes the controller checked."""
        if self._payload is None:
            payload = {}
            for option, f in self.files.items():
                if f["embedded"] or f["sha256"] in payload:
                    continue
                data = Path(f["local"]).read_bytes()
                if hashlib.sha256(data).hexdigest() != f["sha256"]:
                    raise usage_error(HarnessError(_changed(f, hashlib.sha256(data).hexdigest()),
                                                   field=option.replace("-", "_")), self.sources)
                payload[f["sha256"]] = data
            self._payload = payload
        return self._payload

    def configure(self, node: Any) -> dict[str, Any]:
        """Check the worker's versions, send a remote worker the files; its ``node.workerinput`` entry."""
        spec, gateway = node.gateway.spec, node.gateway
        if is_local(spec) and not spec.python and not spec.env:
            # The controller's own interpreter and environment on its host: the same versions by construction, and
            # the files are read where they are (verified at load); no exchange, so ``-n N`` starts as before.
            return {"files": self.files, "cache": None, "host": self.here["host"]}
        where = f"--tx {gateway_text(spec)} (worker {gateway.id})"
        if self.reference and not is_local(spec):
            # Its lineage and reference are read from the run folders, which a remote host does not have.
            raise pytest.UsageError(f"{where}: a child as a parent, or --crossover-reference-a/-b, needs the run "
                                    "folders on the worker's host; use -n N (local workers) or a serial session")
        sent = [] if is_local(spec) else self._sent()
        started = time.perf_counter()
        payload = self.payload() if sent else {}
        import execnet

        try:
            channel = gateway.remote_exec(host_side)
            channel.send({"embedded": [f["package"] for f in self.files.values() if f["embedded"]],
                          "files": [(f["sha256"], f["suffix"], f["size"]) for f in sent]})
            host = channel.receive(ANSWER_S)
            problem = self.compare(host)
            channel.send(problem is None)
            if problem is not None:
                channel.waitclose(ANSWER_S)
                raise pytest.UsageError(f"{where} on host {host['host']}: {problem}")
            for f in sent:
                data = payload[f["sha256"]]
                for start in range(0, len(data), CHUNK):
                    channel.send(data[start:start + CHUNK])
                channel.send(b"")
            cache = channel.receive(ANSWER_S)
            channel.waitclose(ANSWER_S)  # the exchange ends before xdist's own remote_exec (main_thread_only)
        except (execnet.RemoteError, execnet.TimeoutError, OSError, EOFError) as exc:
            raise pytest.UsageError(f"{where}: the start-up exchange with the worker failed: {_remote_line(exc)}; "
                                    "is pytest-crossover installed there (see docs/machines.md)?") from None
        self.sent[gateway.id] = (sum(f["size"] for f in sent), time.perf_counter() - started)
        return {"files": self.files, "cache": cache, "host": host["host"]}

    def summary(self) -> str | None:
        """One line for the terminal: each worker's start-up exchange, what it was sent and how long it took."""
        if not self.sent:
            return None  # plain popen workers only
        each = ", ".join(f"{gw} {_size(n)} in {t:.2f} s" for gw, (n, t) in sorted(self.sent.items()))
        return f"worker start-up (versions checked, input files sent to remote workers): {each}"

    def compare(self, host: Mapping[str, Any]) -> str | None:
        """What differs between the worker's host and the controller: ``None`` when nothing does."""
        mine, theirs = self.here, host
        if theirs["harness"] != mine["harness"] or _release(theirs["torch"]) != _release(mine["torch"]):
            return (f"harness {theirs['harness'] or '(not installed)'} and torch {theirs['torch'] or '(not installed)'}"
                    f" ({theirs['python']}), the controller harness {mine['harness']} and torch {mine['torch']}; "
                    "install the same versions on every host")
        for option, f in self.files.items():
            if f["embedded"] and theirs["embedded"].get(f["package"]) != mine["embedded"].get(f["package"]):
                return (f"its embedded default of --crossover-{option} ({f['package']}) differs from the controller's "
                        f"(sha256 {str(theirs['embedded'].get(f['package']))[:12]}, {f['sha256'][:12]}); reinstall "
                        "the same pytest-crossover on every host")
        return None


def _size(n: int) -> str:
    return f"{n / 1e6:.1f} MB" if n >= 1e5 else f"{n / 1e3:.1f} kB"


def _release(version: str | None) -> str | None:
    """A version without its local build label: ``2.13.0+cpu`` and ``2.13.0+cu128`` run the same release (a GPU host
    has a CUDA build where the controller may have the CPU one)."""
    return version.split("+", 1)[0] if version else version


def _remote_line(exc: BaseException) -> str:
    text = getattr(exc, "formatted", None) or str(exc) or type(exc).__name__
    lines = [line.strip() for line in str(text).strip().splitlines() if line.strip()]
    return lines[-1][:300] if lines else type(exc).__name__


def _changed(f: Mapping[str, Any], now: str) -> str:
    return (f"{f['path']!r} changed since the session checked it (sha256 {f['sha256'][:12]}… then, {now[:12]}… "
            "now); leave the input files unchanged while a search runs")


# -- the worker's side ----------------------------------------------------------------------------------------------

def _info(workerinput: Mapping[str, Any] | None) -> Mapping[str, Any] | None:
    return (workerinput or {}).get(KEY)


def load_paths(options: Any, workerinput: Mapping[str, Any] | None) -> dict[str, str | None]:
    """The path each input is read from in this process, by ``load_inputs`` keyword (``None``: the default)."""
    paths: dict[str, str | None] = {inp.field: getattr(options, inp.field) for inp in INPUTS}
    info = _info(workerinput)
    if info is None:
        return paths  # a serial session, or a worker of a session without crossover settings: as given
    for option, f in info["files"].items():
        field = option.replace("-", "_")
        if f["embedded"]:
            paths[field] = None  # this host's installed default, checked below against the controller's sha256
        elif info["cache"]:
            paths[field] = os.path.join(info["cache"], f["sha256"] + f["suffix"])
        else:
            paths[field] = f["local"]  # popen: the controller's file, by its absolute path (cwd may differ)
    return paths


def verify(provenance: dict[str, Any], workerinput: Mapping[str, Any] | None) -> None:
    """The loaded files are the ones the controller checked; the provenance names them as the controller does."""
    info = _info(workerinput)
    if info is None:
        return
    for inp in INPUTS:
        f, entry = info["files"].get(inp.option), provenance.get(inp.provenance)
        if f is None or entry is None:
            continue
        if entry["sha256"] != f["sha256"]:
            if f["embedded"]:
                raise HarnessError(f"the embedded default on host {info['host']} differs from the controller's "
                                   f"(sha256 {entry['sha256'][:12]}…, {f['sha256'][:12]}…); install the same "
                                   "pytest-crossover on every host", field=inp.field)
            raise HarnessError(_changed(f, entry["sha256"]), field=inp.field)
        entry["path"] = f["path"]
        node = (provenance.get("lineage") or {}).get(inp.provenance)
        if node is not None:  # a child as a parent: named as the controller names it (its ancestors are recorded)
            node["path"] = f["path"]


@contextmanager
def controller_names(workerinput: Mapping[str, Any] | None) -> Iterator[None]:
    """An error about a cached file names the file as the user gave it, not as it is cached."""
    info = _info(workerinput)
    try:
        yield
    except HarnessError as exc:
        if info is not None and info["cache"]:
            text = str(exc)
            for f in info["files"].values():
                text = text.replace(os.path.join(info["cache"], f["sha256"] + f["suffix"]), f["path"])
            exc.args = (text, *exc.args[1:])
        raise


def remove_cache(workerinput: Mapping[str, Any] | None) -> None:
    """The worker's cache directory, removed at its end (only a directory this plugin made)."""
    info = _info(workerinput)
    cache = info.get("cache") if info is not None else None
    if cache and os.path.basename(cache).startswith(host_side.CACHE_PREFIX):
        shutil.rmtree(cache, ignore_errors=True)

