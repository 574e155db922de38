"""One exception family, so callers (the plugin) can turn any of them into a one-line usage error."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


class HarnessError(ValueError):
    """Bad input to the harness; the message names the value and the fix.

    ``field`` names the setting at fault (``"holdout"``, ``"alpha"``, ``"parent_a"``), so a front end can name it
    as its user wrote it (the plugin: the flag or the ini key) without parsing the message.
    """

    def __init__(self, message: str, *, field: str | None = None) -> None:
        super().__init__(message)
        self.field = field


class CheckpointError(HarnessError):
    """A parent checkpoint cannot be loaded or does not fit."""


class StatesError(HarnessError):
    """A states buffer cannot be loaded or does not fit the parents."""


class CrossoverError(HarnessError):
    """Parents that cannot be crossed (keys, shapes, types) or a bad mode/alpha."""


class SpaceError(HarnessError):
    """An unknown space, mode or regime name, or a bad knob value."""


def existing_file(path: str | os.PathLike[str], error: type[HarnessError], what: str, fix: str) -> Path:
    """``path`` as a Path if it is an existing file; else ``error`` naming it as ``what`` and the ``fix``."""
    if str(path).strip() == "":
        raise error(f"{what} path is empty; {fix}")
    p = Path(path)
    if not p.exists():
        raise error(f"{what} {str(p)!r} does not exist; {fix}")
    if p.is_dir():
        raise error(f"{what} {str(p)!r} is a directory, not a file; {fix}")
    if not p.is_file():
        # A FIFO, socket or device: reading it could block forever or never end.
        raise error(f"{what} {str(p)!r} is not a regular file (a pipe, socket or device); {fix}")
    return p


def first_line(exc: BaseException) -> str:
    """An exception's first message line, capped: enough to name the cause inside a one-line error."""
    text = str(exc).strip()
    return text.splitlines()[0][:160] if text else "no message"


@contextmanager
def as_field(field: str) -> Iterator[None]:
    """Errors raised inside name ``field`` (unless they already name a setting)."""
    try:
        yield
    except HarnessError as exc:
        if exc.field is None:
            exc.field = field
        raise
