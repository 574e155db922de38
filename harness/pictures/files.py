"""What a session's report is called, and its on/off switch: read when options are checked, so light (no numpy)."""

from __future__ import annotations

from harness.core.errors import HarnessError

REPORT = "report.html"
PICTURE_PREFIX = "report_"
BARRIER = "barrier.json"
SWITCH = ("on", "off")


def check_switch(value: str) -> str:
    """``value`` if it is ``on`` or ``off``; a HarnessError naming the ``report`` setting otherwise."""
    if value not in SWITCH:
        raise HarnessError(f"{value!r} is neither on nor off; on writes report.html at the end of the session, "
                           "off skips it", field="report")
    return value
