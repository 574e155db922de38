"""Atomic file writes: a temporary file in the same folder, fsync, then rename, so no reader ever sees half a file."""

from __future__ import annotations

import json
import math
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any


def _write(path: Path, writer: Callable[[IO[bytes]], object], durable: bool = True) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
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
    """Replace NaN/inf by None recursively, so the JSON stays valid (strict parsers reject NaN)."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {str(k): json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    return value


def write_json(path: Path | str, obj: Any, *, durable: bool = True) -> Path:
    text = json.dumps(json_safe(obj), indent=2, allow_nan=False, default=str)
    return write_text(path, text + "\n", durable=durable)


def torch_save(path: Path | str, obj: Any, *, durable: bool = True) -> Path:
    import torch  # local: keeps this module importable without torch for the plugin's light paths

    return _write(Path(path), lambda fh: torch.save(obj, fh), durable)
