"""Ctrl-C and SIGTERM on the controller: SIGTERM (a CI job's timeout) ends a session as Ctrl-C does, and an
interrupt that arrives while the controller writes what finished (a child's folder and its journal line, the final
files) waits until they are whole, so the journal, the child folders and the summary files always agree.

A second interrupt during such a write abandons it at once (the files already on disk are whole: every write is
atomic), so nothing can keep a user from stopping a session that is stuck writing.
"""

from __future__ import annotations

import signal
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any


def interrupt(signum: int, frame: Any) -> None:
    """SIGTERM's handler on the controller: raised where Ctrl-C's KeyboardInterrupt would be."""
    raise KeyboardInterrupt(f"signal {signal.Signals(signum).name}")


def terminate_like_interrupt() -> Any:
    """Install :func:`interrupt` for SIGTERM where nobody else handles it, in the main thread (where Python runs
    signal handlers); the previous handler, or None where nothing was installed."""
    if threading.current_thread() is not threading.main_thread():
        return None
    if signal.getsignal(signal.SIGTERM) is not signal.SIG_DFL:
        return None
    return signal.signal(signal.SIGTERM, interrupt)


def _ours(signum: int) -> bool:
    handler = signal.getsignal(signum)
    return handler is signal.default_int_handler or handler is interrupt


@contextmanager
def deferred(what: str, *, reraise: bool = True) -> Iterator[list[int]]:
    """Hold the first Ctrl-C (or SIGTERM turned into one) until the block ends, then raise it (``reraise``: else
    the yielded list holds it, for a session already ending); a second one is raised at once. Only the handlers
    that raise KeyboardInterrupt are held; another one a user installed is left as it is."""
    pending: list[int] = []
    if threading.current_thread() is not threading.main_thread():
        yield pending
        return

    def hold(signum: int, frame: Any) -> None:
        if pending:
            raise KeyboardInterrupt(f"signal {signal.Signals(signum).name} (again)")
        pending.append(signum)
        sys.stderr.write(f"\ncrossover: {what} first; interrupt again to abandon them\n")
        sys.stderr.flush()

    previous = {s: signal.signal(s, hold) for s in (signal.SIGINT, signal.SIGTERM) if _ours(s)}
    try:
        yield pending
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
    if pending and reraise:
        raise KeyboardInterrupt(f"signal {signal.Signals(pending[0]).name}")
