"""An execnet socket server for remote xdist workers: ``python -m pytest_crossover.gateway_server HOST:PORT``.

execnet's own server (``python -m execnet.script.socketserver HOST:PORT``) runs a worker inside its own process:
a worker that is killed (out of memory, a crashed CUDA kernel) takes the server with it; xdist's replacement worker
then finds no server and xdist stops the session (``ConnectionRefusedError``). This server runs execnet's same code
(``exec_from_one_connection``: accept one connection, run the gateway it sends) in a forked process per connection,
so the listening socket outlives every worker: xdist replaces a lost worker through the same ``--tx`` spec, and the
session goes on. ``--workers N`` processes accept at once, for ``--tx N*socket=HOST:PORT``. Every worker starts in a
fresh process (nothing a previous session imported stays loaded), and the input cache of a worker that died is
removed here (a worker that ends normally removes its own).

It refuses an address that is not loopback or private, and 0.0.0.0: it runs any code it receives.
"""

from __future__ import annotations

import argparse
import contextlib
import glob
import ipaddress
import os
import shutil
import signal
import socket
import sys
import tempfile
from typing import Any

from pytest_crossover.host_side import CACHE_PREFIX


def address_problem(host: str) -> str | None:
    """Why the server must not listen on ``host`` (``None``: loopback or private only)."""
    try:
        addresses = {str(info[4][0]) for info in socket.getaddrinfo(host or None, None, proto=socket.IPPROTO_TCP)}
    except OSError as exc:
        return f"cannot resolve {host!r} ({exc})"
    for text in sorted(addresses):
        ip = ipaddress.ip_address(text.split("%", 1)[0])
        if not host or ip.is_unspecified or not (ip.is_loopback or ip.is_private):
            return (f"{host or '(all interfaces)'} is {text}, not a loopback or private address; the server runs "
                    "any code it receives: bind it to 127.0.0.1 or to a private interface")
    return None


def _worker(listener: Any, execmodel: Any) -> None:
    """One worker's process: execnet's own accept-and-run, then exit (never returns)."""
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    code = 0
    try:
        from execnet.script import socketserver

        socketserver.execmodel = execmodel  # the global its own ``__main__`` block sets
        socketserver.exec_from_one_connection(listener)
    except BaseException as exc:  # a dropped connection: this worker ends, the server goes on
        print(f"worker {os.getpid()} ended: {exc!r}", flush=True)
        code = 1
    finally:
        sys.stdout.flush()
        os._exit(code)


def _remove_cache_of(pid: int) -> None:
    for path in glob.glob(os.path.join(tempfile.gettempdir(), f"{CACHE_PREFIX}{pid}-*")):
        shutil.rmtree(path, ignore_errors=True)


def serve(hostport: str, workers: int) -> None:
    from execnet.gateway_base import get_execmodel
    from execnet.script.socketserver import bind_and_listen

    execmodel = get_execmodel("thread")
    listener = bind_and_listen(hostport, execmodel)
    print(f"pytest-crossover gateway server on {hostport}: {workers} worker(s) at a time", flush=True)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))  # so that the workers are stopped below
    children: set[int] = set()
    try:
        while True:
            while len(children) < workers:
                pid = os.fork()
                if pid == 0:
                    _worker(listener, execmodel)
                children.add(pid)
            pid, _ = os.wait()  # a worker ended (its session ended, it crashed or was killed): start another
            children.discard(pid)
            _remove_cache_of(pid)
    finally:
        for pid in children:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGTERM)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m pytest_crossover.gateway_server", description=__doc__.split(
        "\n")[0])
    parser.add_argument("hostport", metavar="HOST:PORT", help="a loopback or private address, e.g. 10.0.0.5:8888")
    parser.add_argument("--workers", type=int, default=1, metavar="N",
                        help="workers at a time (default 1); give N*socket=HOST:PORT to --tx")
    args = parser.parse_args(argv)
    host, sep, port = args.hostport.rpartition(":")
    if not sep or not port.isdigit():
        parser.error(f"{args.hostport!r} is not HOST:PORT")
    problem = address_problem(host)
    if problem is not None:
        parser.error(problem)
    if args.workers < 1:
        parser.error("--workers must be at least 1")
    serve(args.hostport, args.workers)
    return 0


if __name__ == "__main__":
    sys.exit(main())
