"""Serving `wb review`: the address (loopback unless the user asked otherwise), the socket, and uvicorn kept quiet.

The socket is bound here, before uvicorn starts, so port 0 gives a free port whose number is known when the address
is printed, and a port in use is one line (exit 2) instead of uvicorn's log and exit. uvicorn's loggers get a null
handler and no propagation: none of its lines reaches the user (requests, startup, shutdown); the app answers errors
itself.
"""

from __future__ import annotations

import contextlib
import getpass
import ipaddress
import logging
import socket
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from workbench.errors import WbError
from workbench.evaluate.verdicts import check_reviewer
from workbench.review import items
from workbench.review.app import Session, create_app

LOOPBACK = "127.0.0.1"
_UVICORN_LOGGERS = ("uvicorn", "uvicorn.error", "uvicorn.access", "uvicorn.asgi")


def is_loopback(host: str) -> bool:
    """Whether every address `host` names is a loopback address (localhost, 127.0.0.0/8, ::1)."""
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        pass
    try:
        found = socket.getaddrinfo(host, None)
    except OSError:
        raise WbError(f"--host {host}: not an address or a name this machine resolves") from None
    return bool(found) and all(ipaddress.ip_address(str(info[4][0]).split("%")[0]).is_loopback for info in found)


def check_host(host: str | None) -> tuple[str, str | None]:
    """(address to bind, warning or None). No host: loopback. A non-loopback host only when given (`--host`), with
    a warning that anyone who reaches it and holds the token can read the answers and post verdicts."""
    if host is None:
        return LOOPBACK, None
    if is_loopback(host):
        return host, None
    return host, (
        f"serving on {host}, not only this machine: anyone who can reach it and holds the address's token can read "
        "every answer and post verdicts"
    )


def bind(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host.strip("[]") else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host.strip("[]"), port))
    except OSError as e:
        sock.close()
        raise WbError(
            f"cannot listen on {host}:{port} ({e.strerror}); choose another --port (0: any free one)"
        ) from None
    sock.listen(128)
    sock.set_inheritable(True)
    return sock


def quiet_uvicorn() -> None:
    for name in _UVICORN_LOGGERS:
        log = logging.getLogger(name)
        log.handlers = [logging.NullHandler()]
        log.propagate = False


@dataclass
class ReviewServer:
    """A bound, not yet running server: its URL (with the session token) is known before `run`."""

    session: Session
    sock: socket.socket
    host: str
    warning: str | None

    @property
    def port(self) -> int:
        return int(self.sock.getsockname()[1])

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host and not self.host.startswith("[") else self.host
        return f"http://{host}:{self.port}/?token={self.session.token}"

    def _server(self) -> Any:
        import uvicorn

        quiet_uvicorn()
        config = uvicorn.Config(
            create_app(self.session),
            log_config=None,
            log_level="critical",
            access_log=False,
            lifespan="off",
            server_header=False,
        )
        return uvicorn.Server(config)

    def run(self) -> None:
        """Serve until interrupted: Ctrl-C (or SIGTERM) is how a review session ends, so it ends normally here
        (uvicorn raises the signal again once it has closed the connections)."""
        with contextlib.suppress(KeyboardInterrupt):
            self._server().run(sockets=[self.sock])

    def start_thread(self) -> tuple[threading.Thread, Any]:
        """Serve from a thread (tests, notebooks); stop with `server.should_exit = True`, then join the thread."""
        server = self._server()
        thread = threading.Thread(target=server.run, kwargs={"sockets": [self.sock]}, daemon=True)
        thread.start()
        return thread, server


def default_reviewer() -> str:
    """The login name when it can name a reviewer's file, else `reviewer`."""
    try:
        return check_reviewer(getpass.getuser())
    except (WbError, OSError, KeyError):
        return "reviewer"


def prepare(
    runs: list[Path], predictions: Path | None, reviewer: str | None, host: str | None = None, port: int = 0
) -> ReviewServer:
    """Load the run, check the reviewer and the address, bind the socket: everything but serving. `host` None: the
    loopback address; a non-loopback one is served only when named here (`--host`), with a warning."""
    address, warning = check_host(host)
    session = Session(items.load(runs, predictions), check_reviewer(reviewer or default_reviewer()))
    return ReviewServer(session, bind(address, port), address, warning)
