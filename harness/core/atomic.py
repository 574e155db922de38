"""Atomic writes: a file goes to a temporary file in the same folder (fsync, then rename), a folder is staged
and renamed into place, so no reader ever sees half of either. Files get the mode a plain ``open`` would give them
(0666 less the user's umask: 0644 under umask 022, 0600 under 077), folders 0777 less the umask, so a web server or
an artifact uploader reads what the user can."""

from __future__ import annotations

import json
import math
import os
import shutil
import tempfile
import threading
from collections.abc import Callable, Mapping
from numbers import Integral, Real
from pathlib import Path
from typing import IO, Any

_UMASK: int | None = None
_UMASK_LOCK = threading.Lock()


def umask() -> int:
    """The process's umask, read once: from /proc where the kernel shows it (Linux), else by setting it and
    putting it back at once, under a lock (the strict 077 meanwhile: a file created in between by another thread
    is at worst too private, never too open)."""
    global _UMASK
    if _UMASK is None:
        with _UMASK_LOCK:
            if _UMASK is None:
                _UMASK = _proc_umask()
                if _UMASK is None:
                    current = os.umask(0o077)
                    os.umask(current)
                    _UMASK = current
    return _UMASK


def _proc_umask() -> int | None:
    try:
        with open("/proc/self/status", encoding="ascii", errors="replace") as fh:
            for line in fh:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    return None


def file_mode() -> int:
    return 0o666 & ~umask()


def _write(path: Path, writer: Callable[[IO[bytes]], object], durable: bool = True) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        os.fchmod(fd, file_mode())  # mkstemp creates 0600; readable as a plain open() would make it
        with os.fdopen(fd, "wb") as fh:
            writer(fh)
            fh.flush()
            if durable:  # rename alone is atomic against a crashed process; fsync also survives power loss
                os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def write_bytes(path: Path | str, data: bytes, *, durable: bool = True) -> Path:
    return _write(Path(path), lambda fh: fh.write(data), durable)


def write_text(path: Path | str, text: str, *, durable: bool = True) -> Path:
    return write_bytes(path, text.encode("utf-8"), durable=durable)


def json_safe(value: Any) -> Any:
    """Builtins only, NaN/inf as None, recursively: valid strict JSON, and what execnet (xdist) can send.

    Numpy scalars become Python numbers; mappings get string keys; tuples become lists.
    """
    if value is None or isinstance(value, (bool, str)):
        return value
    if isinstance(value, Integral):
        return int(value)
    if isinstance(value, Real):
        f = float(value)
        return f if math.isfinite(f) else None
    if isinstance(value, Mapping):
        return {str(k): json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    return value


def write_json(path: Path | str, obj: Any, *, durable: bool = True, compact: bool = False) -> Path:
    """Indented JSON; ``compact`` writes one line, ~4x faster (only then does json use its C encoder)."""
    text = json.dumps(json_safe(obj), indent=None if compact else 2, allow_nan=False, default=str)
    return write_text(path, text + "\n", durable=durable)


def publish_dir(staged: Path, final: Path) -> None:
    """Move a fully written folder into place; an older folder of that name is set aside, then removed."""
    old = None
    if final.exists():
        old = final.with_name(f".{final.name}.{os.getpid()}.old")
        shutil.rmtree(old, ignore_errors=True)
        os.replace(final, old)
    os.replace(staged, final)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def remove_stale_staging(run_dir: Path) -> list[Path]:
    """Remove staging folders left by processes that no longer exist (a crash mid-write); returns them."""
    removed = []
    for p in Path(run_dir).glob(".*.*.*"):
        pid = p.name.rsplit(".", 2)[-2] if p.name.endswith((".tmp", ".old")) else ""
        if not p.is_dir() or not pid.isdigit() or pid_alive(int(pid)):
            continue
        shutil.rmtree(p, ignore_errors=True)
        removed.append(p)
    return removed


def pid_alive(pid: int) -> bool:
    """Whether process ``pid`` exists on this host (one of another user's counts as alive)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
