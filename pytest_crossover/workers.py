"""An xdist worker never outlives its controller.

A controller killed hard (a second Ctrl-C, SIGKILL, an OOM kill) cannot tell its workers to stop; a worker that
went on would keep a core busy for a session whose results nobody collects. Each worker watches for its parent
process to go away and exits at once.
"""

from __future__ import annotations

import os
import threading
import time

POLL_S = 0.5


def exit_with_controller() -> None:
    """Start a daemon thread that ends this process when its parent (the controller) is gone."""
    parent = os.getppid()

    def watch() -> None:
        while True:
            time.sleep(POLL_S)
            # An orphan is re-parented (to init or a subreaper): its parent pid changes.
            if os.getppid() != parent:
                os._exit(70)  # EX_SOFTWARE: no cleanup could reach the controller anyway

    threading.Thread(target=watch, name="crossover-controller-watch", daemon=True).start()
