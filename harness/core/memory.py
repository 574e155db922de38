"""Big temporary blocks go back to the operating system when they are freed.

glibc's malloc gives a block of at least its mmap threshold (128 KiB at first) a mapping of its own, unmapped when
freed; but it raises the threshold to the largest such block freed so far (up to 32 MiB), so once a session has
freed one 16 MB temporary, its later per-chunk arrays (a chunk of rows, a block of bootstrap resamples: 1-16 MB)
come from the heap, whose holes stay resident between the small blocks that outlive them. A 1,000,000-state session
held ~200 MB it no longer used that way (peak RSS 812 MB; 620 MB with the threshold fixed, measured). Setting the
threshold turns the adjustment off; a block under it is served from the heap as before. Elsewhere than glibc
(macOS, musl, Windows) nothing is changed.
"""

from __future__ import annotations

import ctypes

M_MMAP_THRESHOLD = -3  # glibc's mallopt parameter
THRESHOLD = 1 << 20  # bytes: a training step's tensors stay below it (0.15 MB at 18 children, hidden 64)


def release_big_blocks(threshold: int = THRESHOLD) -> bool:
    """Fix glibc's mmap threshold at ``threshold`` bytes for this process; False where there is no glibc."""
    try:
        libc = ctypes.CDLL(None)
    except (OSError, TypeError):
        return False
    # glibc's own symbol: musl has a mallopt that does nothing, macOS none
    if not hasattr(libc, "gnu_get_libc_version") or not hasattr(libc, "mallopt"):
        return False
    return bool(libc.mallopt(M_MMAP_THRESHOLD, threshold))
