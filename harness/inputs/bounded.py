"""Reading an input file whole, only after its size says it can be held: every input read is bounded.

A states file or a parent checkpoint is read into memory once (its sha256 is taken of those bytes). One larger
than the machine's memory would be read until the process is killed, with no line saying why; it is refused from
its size, before a byte of it is read, in one line naming the file.
"""

from __future__ import annotations

import os
from pathlib import Path

from harness.core.errors import HarnessError

# The most bytes one input file may have; None: the machine's physical memory (os.sysconf), or 1 TiB if unknown.
INPUT_MAX_BYTES: int | None = None


def input_limit() -> int:
    if INPUT_MAX_BYTES is not None:
        return INPUT_MAX_BYTES
    try:
        return int(os.sysconf("SC_PHYS_PAGES")) * int(os.sysconf("SC_PAGE_SIZE"))
    except (AttributeError, ValueError, OSError):
        return 1 << 40


def _size(n: int) -> str:
    return f"{n / (1 << 30):.1f} GiB" if n >= 1 << 30 else f"{n:,} bytes"


_FIX = "pass a smaller file (fewer rows, or a sample of them)"


def check_size(p: Path, size: int, what: str, error: type[HarnessError], fix: str = _FIX) -> None:
    """``error`` naming ``p`` when ``size`` bytes (the file's, or what its header declares) exceed the bound."""
    limit = input_limit()
    if size > limit:
        raise error(f"{what} {str(p)!r} holds {_size(size)}, more than this machine's memory ({_size(limit)}) "
                    f"can hold; {fix}")


def read_bounded(p: Path, what: str, error: type[HarnessError], fix: str = _FIX) -> bytes:
    """The bytes of ``p``, read once, after its size is checked; ``error`` when it cannot be read or is too large."""
    try:
        with p.open("rb") as fh:
            size = os.fstat(fh.fileno()).st_size
            check_size(p, size, what, error, fix)
            return fh.read(size)  # a file that grows meanwhile is read to its checked size
    except OSError as exc:
        raise error(f"{what} {str(p)!r} cannot be read ({exc.strerror}); check its permissions") from None
