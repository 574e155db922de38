"""A freed big temporary leaves the process's memory, even after a bigger one was freed (glibc's mmap threshold)."""

from __future__ import annotations

import ctypes
import subprocess
import sys

import pytest

FRAGMENTS = """
import sys
import numpy as np
from harness.core.memory import release_big_blocks

def rss_mb():
    return int(next(l for l in open('/proc/self/status') if l.startswith('VmRSS')).split()[1]) / 1024

if sys.argv[1] == 'on':
    assert release_big_blocks()
big = np.ones(30 << 20, np.uint8)
del big  # a freed 30 MB block: glibc raises its threshold to 30 MB
before = rss_mb()
keep, temp = [], []
for _ in range(20):
    temp.append(np.ones(2 << 20, np.uint8))  # 2 MB temporaries, each followed by a small block that stays
    keep.append(np.ones(1000, np.uint8))
del temp
print(round(rss_mb() - before))
"""


def _glibc() -> bool:
    try:
        return bool(ctypes.CDLL(None).gnu_get_libc_version)
    except (OSError, AttributeError, TypeError):
        return False


@pytest.mark.skipif(not sys.platform.startswith("linux") or not _glibc(), reason="glibc's allocator on Linux")
def test_freed_chunks_return_to_the_system_once_the_threshold_is_fixed():
    kept = {mode: int(subprocess.run([sys.executable, "-c", FRAGMENTS, mode], capture_output=True, text=True,
                                     check=True).stdout) for mode in ("off", "on")}
    assert kept["off"] >= 30  # glibc's own behaviour: 40 MB of freed 2 MB blocks stay resident
    assert kept["on"] <= 4, kept


def test_elsewhere_it_changes_nothing_and_says_so(monkeypatch):
    from harness.core import memory

    class NoGlibc:
        def __init__(self, name):
            raise OSError("no such library")

    monkeypatch.setattr(memory.ctypes, "CDLL", NoGlibc)
    assert memory.release_big_blocks() is False
