"""The dashboard's listening sockets: systemd's (gpusched-web.socket), or its own where systemd holds none.

Why systemd's: while gpusched-web is down (an upgrade's restart, a crash, the seconds before its restart) a
port it binds itself is free, and any local user could bind it first and serve a look-alike page to the
people who come through `ssh -L`. gpusched-web.socket is bound by systemd at boot and held across the
service's restarts, so the port is never free; a connection that arrives while the service is down waits in
the queue and starts it.

The config stays the one place that says where to listen: a generator (gpusched-web-generator) writes
[web] listen and port into the socket unit at boot and at every `systemctl daemon-reload`. An address in
[web] that systemd does not hold (the config changed since) is bound here, with a warning that says how to
let systemd hold it; a socket systemd passes that [web] no longer names is not served.
"""

from __future__ import annotations

import asyncio
import ipaddress
import os
import socket
from typing import Any

from aiohttp import web

from gpusched.web.peer import normal

LISTEN_FDS_START = 3


def inherited(environ: dict[str, str] = os.environ, pid: int | None = None) -> list[socket.socket]:
    """The listening TCP sockets systemd passed (sd_listen_fds): none unless LISTEN_PID is this process.
    The variables are removed so nothing this process starts sees them."""
    if environ.get("LISTEN_PID") != str(os.getpid() if pid is None else pid):
        return []
    try:
        n = int(environ.get("LISTEN_FDS", "0"))
    except ValueError:
        n = 0
    for key in ("LISTEN_PID", "LISTEN_FDS", "LISTEN_FDNAMES"):
        environ.pop(key, None)
    out = []
    for fd in range(LISTEN_FDS_START, LISTEN_FDS_START + max(0, min(n, 64))):
        try:
            s = socket.socket(fileno=fd)
        except OSError:
            continue
        if s.type == socket.SOCK_STREAM and s.family in (socket.AF_INET, socket.AF_INET6):
            os.set_inheritable(fd, False)
            out.append(s)
        else:
            s.detach()
    return out


def address_of(sock: socket.socket) -> tuple[str, int]:
    host, port = sock.getsockname()[:2]
    return normal(host), port


def plan(wanted: list[tuple[str, int]], held: list[socket.socket]) -> tuple[list[socket.socket], list[tuple[str, int]],
                                                                             list[socket.socket]]:
    """Which of systemd's sockets to serve (those [web] names), which [web] addresses to bind here (those
    systemd does not hold) and which of systemd's sockets [web] no longer names."""
    by_address = {address_of(s): s for s in held}
    use, bind = [], []
    for host, port in wanted:
        s = by_address.pop((normal(host), port), None)
        if s is None:
            bind.append((host, port))
        else:
            use.append(s)
    return use, bind, list(by_address.values())


def bind(host: str, port: int) -> socket.socket:
    """A listening socket of our own (IPv6 ones IPv6 only, as gpusched-web.socket's BindIPv6Only= says)."""
    family = socket.AF_INET6 if ipaddress.ip_address(host).version == 6 else socket.AF_INET
    s = socket.socket(family, socket.SOCK_STREAM)
    try:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if family == socket.AF_INET6:
            s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        s.bind((host, port))
        s.listen(128)
    except OSError:
        s.close()
        raise
    return s


def is_far(sock: socket.socket) -> bool:
    """Whether a listener is beyond loopback (the unspecified address too: it takes connections from anywhere)."""
    return not ipaddress.ip_address(address_of(sock)[0]).is_loopback


class GatedSite(web.BaseSite):
    """aiohttp's site on a socket we hold, with its protocol (and TLS, with a short handshake) behind a
    gate.Gate."""

    __slots__ = ("_sock", "_gate")

    def __init__(self, runner: web.BaseRunner, sock: socket.socket, gate: Any, ssl_context: Any = None):
        super().__init__(runner, ssl_context=ssl_context)
        self._sock = sock
        self._gate = gate

    @property
    def name(self) -> str:
        host, port = address_of(self._sock)
        return f"{'https' if self._ssl_context else 'http'}://{host}:{port}"

    async def start(self) -> None:
        await super().start()
        loop = asyncio.get_running_loop()
        server = self._runner.server
        assert server is not None
        # TLS is the gate's, after it has counted the connection in (gate.py says why)
        self._server = await loop.create_server(
            self._gate.protocol(server, self._ssl_context), sock=self._sock, backlog=self._backlog)
