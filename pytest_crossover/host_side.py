"""What runs on a worker's host, through the worker's execnet gateway, before xdist starts pytest there.

The controller (:mod:`pytest_crossover.transfer`) sends this module's source with ``gateway.remote_exec``; it runs
as ``__channelexec__`` in the process that then becomes the xdist worker. It imports only the standard library
and reads no file of the controller, so it answers even from a host with another version installed, or none.

The exchange on its channel:

1. the controller sends ``{"embedded": [path relative to the harness package, ...], "files": [(sha256, suffix,
   size), ...]}``; this side answers with the host: its name, the harness and torch versions installed, and the
   sha256 of each embedded file (the embedded default is not sent: it is in the installed package);
2. the controller answers ``True`` (versions equal: receive the files) or ``False`` (stop here);
3. for each file, the controller sends its bytes in chunks and an empty chunk; this side writes them to its own
   temporary directory as ``<sha256><suffix>`` (the loaders dispatch on the suffix), checks the sha256 and the
   size, and finally answers the directory (or no directory when there was nothing to receive).

A file is written under a ``.part`` name and renamed once complete, so the cache never holds half a file; on any
error the directory is removed and the error goes back to the controller as the channel's remote error.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import importlib.util
import os
import shutil
import socket
import sys
import tempfile
from pathlib import Path
from typing import Any

CACHE_PREFIX = "pytest-crossover-inputs-"


def _version(dist: str) -> str | None:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return None


def _file_sha256(path: str) -> str | None:
    try:
        return hashlib.sha256(Path(path).read_bytes()).hexdigest()  # the embedded files: a few hundred kB
    except OSError:
        return None


def describe(embedded: list[str]) -> dict[str, Any]:
    """This host: its name, the versions that would run here, and the sha256 of the embedded files it has."""
    spec = importlib.util.find_spec("harness")
    harness_version, package = None, None
    if spec is not None and spec.submodule_search_locations:
        import harness  # only its __init__: the version, nothing heavy

        harness_version = getattr(harness, "__version__", None)
        package = list(spec.submodule_search_locations)[0]
    return {
        "host": socket.gethostname(),
        "python": sys.executable,
        "harness": harness_version,
        "torch": _version("torch"),  # the installed distribution's version: torch itself is not imported here
        "embedded": {rel: _file_sha256(os.path.join(package, rel)) if package else None for rel in embedded},
    }


def receive(channel: Any, files: list[tuple[str, str, int]]) -> str:
    """Write each file the controller streams into a new temporary directory; return the directory."""
    # Mode 0700: this user's only. Named with this process's id, so that a server whose worker died can remove it.
    directory = tempfile.mkdtemp(prefix=f"{CACHE_PREFIX}{os.getpid()}-")
    try:
        for sha256, suffix, size in files:
            final = os.path.join(directory, sha256 + suffix)
            digest, written = hashlib.sha256(), 0
            with open(final + ".part", "wb") as fh:
                while True:
                    chunk = channel.receive()
                    if not chunk:
                        break
                    fh.write(chunk)
                    digest.update(chunk)
                    written += len(chunk)
            if digest.hexdigest() != sha256 or written != size:
                raise ValueError(f"received {written} of {size} bytes with sha256 {digest.hexdigest()[:12]}, "
                                 f"expected {sha256[:12]}: the transfer was corrupted")
            os.replace(final + ".part", final)
    except BaseException:
        shutil.rmtree(directory, ignore_errors=True)
        raise
    return directory


def serve(channel: Any) -> None:
    request = channel.receive()
    channel.send(describe(list(request["embedded"])))
    if not channel.receive():
        return
    files = [(str(sha256), str(suffix), int(size)) for sha256, suffix, size in request["files"]]
    channel.send(receive(channel, files) if files else None)


if __name__ == "__channelexec__":
    serve(globals()["channel"])
