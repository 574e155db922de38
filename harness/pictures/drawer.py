"""A process that draws the report's pictures: started while the last children run, it has matplotlib imported and
warm by the time the session ends, so the report costs the session only the drawing, on a core the session leaves
free (a serial session trains on one thread).

The drawer gets the pictures' inputs (builtins: the leaderboard rows, the records, the parents' rows, the barrier)
and which pictures to draw, and sends back the :class:`harness.pictures.report.Drawn` pictures; it draws them with the
same code and style as the session's own process would, so the PNGs are byte for byte the same. Whatever goes
wrong with it (it could not start, died, or sent nothing), the caller draws in its own process instead: a drawer
only ever saves time.
"""

from __future__ import annotations

import os
import pickle
import subprocess
import sys
import threading
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from harness.pictures.report import Drawn

ROOT = Path(__file__).resolve().parents[1]  # where this harness is imported from: the drawer imports the same one
BOOT = "import sys; sys.path.insert(0, sys.argv[1]); from harness.pictures.drawer import serve; serve()"
TIMEOUT_S = 120.0  # a drawer that has not answered by then is stopped and the pictures are drawn in-process


def start() -> list[Drawer]:
    """Drawers for a session about to end: one per core beyond the session's own, at most two (five pictures
    split in two take ~0.4 s each once warm); none on a single core, where a drawer would only add its start-up."""
    try:
        cores = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # not Linux
        cores = os.cpu_count() or 1
    return [Drawer() for _ in range(min(2, cores - 1))]


class Drawer:
    """One drawing process, started now; :meth:`send` one request, :meth:`receive` its pictures, then it exits."""

    def __init__(self) -> None:
        self.proc: subprocess.Popen[bytes] | None = None
        self.names: list[str] = []
        try:
            self.proc = subprocess.Popen([sys.executable, "-c", BOOT, str(ROOT)], stdin=subprocess.PIPE,
                                         stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
        except OSError:
            self.proc = None

    def send(self, inputs: Mapping[str, Any], names: Sequence[str]) -> None:
        """Ask for the named pictures of ``inputs`` (:func:`harness.pictures.plots.session_pictures`'s arguments)."""
        self.names = list(names)
        if self.proc is None or self.proc.stdin is None:
            return
        try:
            self.proc.stdin.write(pickle.dumps((dict(inputs), self.names)))
            self.proc.stdin.close()
        except OSError:  # it died: receive() says so
            pass

    def receive(self) -> list[Drawn] | None:
        """The pictures asked for, in their order; None when the drawer could not draw them."""
        proc, self.proc = self.proc, None
        if proc is None or proc.stdout is None:
            return None
        # Its answer is read until it closes its output: a drawer that hangs (a font cache's lock) is stopped at
        # the deadline, which ends the read, and the pictures are drawn in-process.
        deadline = threading.Timer(TIMEOUT_S, proc.kill)
        deadline.start()
        try:
            out = proc.stdout.read()
            proc.wait(timeout=TIMEOUT_S)
            drawn = pickle.loads(out) if proc.returncode == 0 else None
        except (OSError, subprocess.SubprocessError, pickle.UnpicklingError, EOFError, ValueError):
            drawn = None
        finally:
            deadline.cancel()
            _stop(proc)
        return drawn if isinstance(drawn, list) and len(drawn) == len(self.names) else None

    def close(self) -> None:
        """Stop the drawer unused (a session that ends without a report)."""
        proc, self.proc = self.proc, None
        if proc is not None:
            _stop(proc)


def _stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.kill()
    proc.wait()
    for pipe in (proc.stdin, proc.stdout):
        if pipe is not None:
            pipe.close()


def serve() -> None:
    """The drawer's side: warm matplotlib up, read one request from stdin, write the pictures to stdout."""
    from harness.pictures import figure, plots, report

    _warm_up(figure)
    try:
        inputs, names = pickle.load(sys.stdin.buffer)
    except EOFError:  # the session ended without asking
        return
    pictures = {p.name: p for p in plots.session_pictures(**inputs)}
    drawn = report.draw([pictures[n] for n in names])
    sys.stdout.buffer.write(pickle.dumps(drawn))
    sys.stdout.buffer.flush()


def _warm_up(figure: Any) -> None:
    """Import and exercise what every picture uses (the Agg canvas, the font, text layout, PNG encoding) while
    the session still runs; drawing a picture then costs what drawing it costs."""
    with figure.style():
        fig = figure.new_figure(1.0)
        ax = fig.subplots()
        ax.plot([0, 1], [0, 1], marker="o", label="warm-up")
        ax.set_xlabel("warm-up")
        figure.side_legend(fig, [figure.handle("warm-up", marker="o")])
        figure.png(fig)
