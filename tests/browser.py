"""A headless Chromium driven over the DevTools protocol, for tests that look at a page as a person would.

The protocol runs over ``--remote-debugging-pipe`` (JSON messages ending in NUL, commands on the browser's fd 3,
replies and events on its fd 4): the standard library is enough, no websocket client and no browser download.
The browser is Debian's ``chromium`` package; :func:`find_chromium` says where it is, or None.
"""

from __future__ import annotations

import base64
import contextlib
import fcntl
import json
import os
import select
import shutil
import signal
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

WIDTH = 1200  # the window the report is laid out for


def find_chromium() -> str | None:
    return shutil.which("chromium") or shutil.which("chromium-browser")


@dataclass
class Loaded:
    """What a page did while it loaded: its console errors and exceptions, its images, a full-page screenshot."""

    url: str
    errors: list[str] = field(default_factory=list)
    images: list[dict[str, Any]] = field(default_factory=list)
    screenshot: bytes = b""


class Chromium:
    """One headless browser; ``load(path)`` opens a file in a fresh tab and reports on it."""

    def __init__(self, binary: str, timeout: float = 30.0) -> None:
        self.timeout = timeout
        self.profile = tempfile.TemporaryDirectory(prefix="crossover-chromium-")
        cmd_r, self._cmd_w = os.pipe()
        self._out_r, out_w = os.pipe()
        # Above fd 10 first, so placing them at 3 and 4 never overwrites one with the other.
        high = [fcntl.fcntl(fd, fcntl.F_DUPFD_CLOEXEC, 10) for fd in (cmd_r, out_w)]
        os.close(cmd_r)
        os.close(out_w)
        self.log = Path(self.profile.name) / "chromium.log"
        args = [binary, "--headless=new", "--remote-debugging-pipe", f"--user-data-dir={self.profile.name}",
                "--no-sandbox",  # CI runs as root, where Chromium's sandbox refuses to start
                "--disable-gpu", "--disable-dev-shm-usage", "--no-first-run", "--no-default-browser-check",
                "--disable-extensions", "--hide-scrollbars", "--mute-audio", "about:blank"]
        actions = [(os.POSIX_SPAWN_DUP2, high[0], 3), (os.POSIX_SPAWN_DUP2, high[1], 4),
                   (os.POSIX_SPAWN_OPEN, 1, str(self.log), os.O_WRONLY | os.O_CREAT, 0o600),
                   (os.POSIX_SPAWN_DUP2, 1, 2)]
        self.pid = os.posix_spawn(binary, args, dict(os.environ), file_actions=actions, setsid=True)
        for fd in high:
            os.close(fd)
        self._next = 0
        self._buffer = b""
        self.events: list[dict[str, Any]] = []

    # -- protocol ---------------------------------------------------------------------------------------------------
    def _read(self, deadline: float) -> dict[str, Any]:
        while b"\0" not in self._buffer:
            left = deadline - time.monotonic()
            ready, _, _ = select.select([self._out_r], [], [], max(0.0, left))
            if not ready:
                raise TimeoutError(f"chromium did not answer in {self.timeout:.0f} s; its log: {self._log_tail()}")
            chunk = os.read(self._out_r, 1 << 20)
            if not chunk:
                raise ConnectionError(f"chromium closed the pipe; its log: {self._log_tail()}")
            self._buffer += chunk
        message, _, self._buffer = self._buffer.partition(b"\0")
        return dict(json.loads(message))

    def send(self, method: str, params: dict[str, Any] | None = None, session: str | None = None) -> Any:
        """One command; its result (events that arrive meanwhile are kept in ``events``)."""
        self._next += 1
        msg: dict[str, Any] = {"id": self._next, "method": method, "params": params or {}}
        if session:
            msg["sessionId"] = session
        os.write(self._cmd_w, json.dumps(msg).encode() + b"\0")
        deadline = time.monotonic() + self.timeout
        while True:
            reply = self._read(deadline)
            if reply.get("id") == self._next:
                if "error" in reply:
                    raise RuntimeError(f"{method}: {reply['error']}")
                return reply.get("result", {})
            self.events.append(reply)

    def wait_for(self, method: str, session: str) -> dict[str, Any]:
        deadline = time.monotonic() + self.timeout
        while True:
            for i, ev in enumerate(self.events):
                if ev.get("method") == method and ev.get("sessionId") == session:
                    return self.events.pop(i)
            self.events.append(self._read(deadline))

    def _log_tail(self) -> str:
        try:
            return " | ".join(self.log.read_text(errors="replace").splitlines()[-5:])
        except OSError:
            return "(none)"

    # -- pages ------------------------------------------------------------------------------------------------------
    def load(self, path: Path, height: int = 900) -> tuple[Loaded, str]:
        """Open ``path`` at 1200 px wide; wait for its load event; return what happened and the tab's session."""
        url = Path(path).resolve().as_uri()
        target = self.send("Target.createTarget", {"url": "about:blank"})["targetId"]
        session = self.send("Target.attachToTarget", {"targetId": target, "flatten": True})["sessionId"]
        for domain in ("Page", "Runtime", "Log"):
            self.send(f"{domain}.enable", session=session)
        self.send("Emulation.setDeviceMetricsOverride", {"width": WIDTH, "height": height, "deviceScaleFactor": 1,
                                                         "mobile": False}, session=session)
        self.events.clear()
        self.send("Page.navigate", {"url": url}, session=session)
        self.wait_for("Page.loadEventFired", session)
        images = self.evaluate(session, """Promise.all(Array.from(document.images).map(img => img.decode().then(
            () => ({src: img.src.slice(0, 60), width: img.naturalWidth, height: img.naturalHeight, ok: true}),
            e => ({src: img.src.slice(0, 60), width: img.naturalWidth, height: img.naturalHeight, ok: false,
                   error: String(e)}))))""")
        size = self.send("Page.getLayoutMetrics", session=session)["cssContentSize"]
        shot = self.send("Page.captureScreenshot", {"format": "png", "captureBeyondViewport": True, "clip": {
            "x": 0, "y": 0, "width": WIDTH, "height": size["height"], "scale": 1}}, session=session)
        loaded = Loaded(url, _errors(self.events, session), list(images), base64.b64decode(shot["data"]))
        return loaded, session

    def capture(self, session: str, height: int) -> bytes:
        """A PNG of the page's top ``height`` px at 1200 px wide: what a person sees first."""
        shot = self.send("Page.captureScreenshot", {"format": "png", "clip": {
            "x": 0, "y": 0, "width": WIDTH, "height": height, "scale": 1}}, session=session)
        return base64.b64decode(shot["data"])

    def evaluate(self, session: str, expression: str) -> Any:
        result = self.send("Runtime.evaluate", {"expression": expression, "awaitPromise": True,
                                                "returnByValue": True}, session=session)
        if "exceptionDetails" in result:
            raise RuntimeError(f"page script failed: {result['exceptionDetails']}")
        return result["result"].get("value")

    def close(self) -> None:
        with contextlib.suppress(OSError, RuntimeError, TimeoutError, ConnectionError):  # gone already: killed below
            self.send("Browser.close")
        if not self._exited(within=10.0):
            os.killpg(self.pid, signal.SIGKILL)  # its own process group (setsid): the browser and its helpers
            os.waitpid(self.pid, 0)
        os.close(self._cmd_w)
        os.close(self._out_r)
        self.profile.cleanup()

    def _exited(self, within: float) -> bool:
        deadline = time.monotonic() + within
        while time.monotonic() < deadline:
            if os.waitpid(self.pid, os.WNOHANG)[0]:
                return True
            time.sleep(0.05)
        return False

    def __enter__(self) -> Chromium:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _errors(events: list[dict[str, Any]], session: str) -> list[str]:
    """Console errors, uncaught exceptions and failed loads (a missing image is a Log entry of level error)."""
    out = []
    for ev in events:
        if ev.get("sessionId") != session:
            continue
        p = ev.get("params") or {}
        if ev.get("method") == "Runtime.consoleAPICalled" and p.get("type") in ("error", "assert"):
            out.append("console: " + " ".join(str(a.get("value", a.get("description"))) for a in p.get("args", [])))
        elif ev.get("method") == "Runtime.exceptionThrown":
            out.append(f"exception: {(p.get('exceptionDetails') or {}).get('text')}")
        elif ev.get("method") == "Log.entryAdded" and (p.get("entry") or {}).get("level") == "error":
            out.append(f"log: {p['entry'].get('text')} {p['entry'].get('url', '')}")
    return out


def main(argv: list[str]) -> int:
    """``python -m tests.browser PAGE.html OUT.png``: a full-page screenshot at 1200 px, as the docs' one was made."""
    binary = find_chromium()
    if len(argv) != 2 or binary is None:
        print("usage: python -m tests.browser PAGE.html OUT.png (needs chromium on PATH)")
        return 2
    with Chromium(binary) as browser:
        page, _ = browser.load(Path(argv[0]))
    Path(argv[1]).write_bytes(page.screenshot)
    print("\n".join(page.errors) or f"{argv[1]}: {len(page.images)} images, no console errors")
    return 1 if page.errors else 0


if __name__ == "__main__":
    import sys

    sys.exit(main(sys.argv[1:]))
