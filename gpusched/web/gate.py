"""The dashboard's door: how many connections each owner may hold open, and how long one may sit idle.

Why: aiohttp 3.8 (Debian 12) sets no deadline on a request's headers, so a connection that sends nothing, or
a header a byte a minute, would hold a socket and a file descriptor for ever; one user opening thousands of
them would leave none for anyone else. So, at accept, before aiohttp sees a byte:
- each connection is counted against its owner: on loopback the uid that made it (the kernel's word,
  peer.py, the same that names the viewer), beyond loopback its remote address (an IPv6 one by its /64: one
  host is given a /64 and picks any address in it, so counting addresses would let it open 2^64 "owners").
  Past PER_OWNER open at once, a new one gets a 503 that says why and is closed; past TOTAL for everyone
  (under the unit's LimitNOFILE) the same, so the process never runs out of descriptors. Connections from
  beyond loopback together get at most FAR_TOTAL of those: the network (a few hosts, or many addresses) can
  fill its share but never lock out the people on the server and behind `ssh -L`;
- a connection that is not inside a request (no complete headers yet, or kept alive between requests) for
  IDLE seconds is closed. One inside a request is the handler's business: a followed log is meant to last
  (server.py bounds those per uid), a request body must arrive within BODY_SECONDS (server.py);
- a response its reader does not take: when the idle deadline comes with part of the answer still unsent and
  none of it taken since the last deadline, the connection is cut (aborted) rather than closed, because
  closing waits for the unsent part to go and a reader with a zero window would hold the socket, its
  descriptor and the answer in memory for ever;
- a connection beyond loopback is counted when its TCP connection is accepted, before its TLS handshake
  (HANDSHAKE seconds at most), not after: otherwise connections that never finish a handshake would be
  counted by no one, and the network could take every descriptor the process has, loopback's too;
- requests sent ahead (HTTP pipelining): aiohttp parses every request it is sent and queues them, unbounded,
  while it answers the first; 50 MB of pipelined `GET /` from one connection grew the process by 2 GB. So
  what a connection sends is handed to aiohttp CHUNK bytes at a time, and a connection with more than
  PIPELINE requests waiting is cut. Browsers do not pipeline; a client that does gets its first ones.

The owner function and the clock are parameters, so the policy is tested with real sockets and a fake owner.
"""

from __future__ import annotations

import asyncio
import fcntl
import ipaddress
import ssl
import struct
import termios
from typing import Any, Callable, Hashable

from gpusched.web.peer import normal

FAR = "address"       # the kind of owner of a connection from beyond loopback (far_owner)
LOOPBACK = "uid"      # the kind of owner of a loopback connection: (LOOPBACK, the uid the kernel names, or None)
PER_OWNER = 64        # a browser opens about 6 per site, plus the followed logs (8 at most per uid)
TOTAL = 4096          # everyone together; gpusched-web.service's LimitNOFILE is twice that
FAR_TOTAL = TOTAL // 2  # of those, everything from beyond loopback together
IDLE = 15.0           # seconds a connection may wait for its next request's headers
PIPELINE = 8          # requests a connection may send ahead of the one being answered
HANDSHAKE = 10.0      # seconds a TLS handshake may take
CHUNK = 16384         # bytes handed to aiohttp's parser at a time (so a burst is checked as it is parsed)


def refusal(per_owner: int, total: bool) -> bytes:
    """The 503 a connection over its cap gets (before it has sent anything: a browser shows it anyway)."""
    why = ("the dashboard has too many connections open; try again in a minute" if total else
           f"you have {per_owner} connections to the dashboard open already (the most one person may hold); "
           "close some tabs or wait a minute")
    body = why.encode() + b"\n"
    return (b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: text/plain; charset=utf-8\r\n"
            b"Connection: close\r\nRetry-After: 60\r\nContent-Length: " + str(len(body)).encode() + b"\r\n\r\n" + body)


class _Conn:
    __slots__ = ("owner", "active", "timer", "unsent", "cut")

    def __init__(self, owner: Hashable):
        self.owner = owner
        self.active = 0                       # requests in progress on it
        self.timer: asyncio.TimerHandle | None = None
        self.unsent = -1                      # bytes of its answer still unsent at the last deadline (-1: none)
        self.cut = False                      # closed when its request in progress leaves (_Door._cut)


class Gate:
    def __init__(self, owner: Callable[[Any], Hashable], per_owner: int = PER_OWNER, total: int = TOTAL,
                 idle: float = IDLE, kind_totals: dict[Hashable, int] | None = None):
        self.owner = owner                    # transport -> who it counts against: (kind, who) or anything
        self.per_owner = per_owner
        self.total = total
        # caps on all the owners of one kind together (an owner (kind, who) is of that kind)
        self.kind_totals = {FAR: FAR_TOTAL} if kind_totals is None else kind_totals
        self.kinds: dict[Hashable, int] = {}  # kind -> connections open
        self.idle = idle
        self.open: dict[Hashable, int] = {}   # owner -> connections open
        self._conns: dict[Any, _Conn] = {}    # transport -> its state
        self.refused = 0                      # connections turned away (for the journal and tests)
        self.stalled = 0                      # connections cut for not reading their answer
        self.cut = 0                          # connections cut for sending too many requests ahead

    def protocol(self, inner: Callable[[], asyncio.Protocol], tls: ssl.SSLContext | None = None
                 ) -> Callable[[], asyncio.Protocol]:
        """A protocol factory for loop.create_server (with no ssl= of its own): aiohttp's, behind this gate,
        over TLS with `tls` once the gate has admitted the connection."""
        return lambda: _Door(self, inner, tls)

    def rekey(self, old: Any, new: Any) -> None:
        """A connection's transport is now `new` (its TLS one, after the handshake)."""
        conn = self._conns.pop(old, None)
        if conn is not None:
            self._conns[new] = conn
            if conn.timer:
                self._arm(new, conn)

    def owner_of(self, transport: Any) -> Hashable | None:
        """Whom an admitted connection counts against, as found when it was accepted (None: not admitted)."""
        conn = self._conns.get(transport)
        return conn.owner if conn is not None else None

    # --- called by the door -------------------------------------------------------------------------------

    def admit(self, transport: Any) -> bytes:
        """Count a new connection in; b"" if admitted, else the refusal to send before closing it."""
        owner = self.owner(transport)
        kind = _kind(owner)
        if len(self._conns) >= self.total or self.kinds.get(kind, 0) >= self.kind_totals.get(kind, self.total):
            self.refused += 1
            return refusal(self.per_owner, total=True)
        if self.open.get(owner, 0) >= self.per_owner:
            self.refused += 1
            return refusal(self.per_owner, total=False)
        self.open[owner] = self.open.get(owner, 0) + 1
        self.kinds[kind] = self.kinds.get(kind, 0) + 1
        conn = self._conns[transport] = _Conn(owner)
        self._arm(transport, conn)
        return b""

    def gone(self, transport: Any) -> None:
        conn = self._conns.pop(transport, None)
        if conn is None:
            return
        if conn.timer:
            conn.timer.cancel()
        _down(self.open, conn.owner)
        _down(self.kinds, _kind(conn.owner))

    # --- called around each request (server.py's guard) ---------------------------------------------------

    def enter(self, transport: Any) -> None:
        conn = self._conns.get(transport)
        if conn:
            conn.active += 1
            conn.unsent = -1
            if conn.timer:
                conn.timer.cancel()
                conn.timer = None

    def leave(self, transport: Any) -> None:
        conn = self._conns.get(transport)
        if conn:
            conn.active = max(0, conn.active - 1)
            if conn.active == 0:
                if conn.cut:
                    transport.close()
                self._arm(transport, conn)        # (a closed one whose answer is stuck is aborted then)

    def cut_off(self, transport: Any, now: bool) -> None:
        """Close a connection once the request in progress on it leaves, or now if none is and `now` (none
        is about to start either)."""
        conn = self._conns.get(transport)
        if conn is None:
            return
        self.cut += 1
        conn.cut = True
        if now and conn.active == 0:
            transport.close()

    def _arm(self, transport: Any, conn: _Conn) -> None:
        if conn.timer:
            conn.timer.cancel()
        conn.timer = asyncio.get_running_loop().call_later(self.idle, self._expire, transport)

    def _expire(self, transport: Any) -> None:
        conn = self._conns.get(transport)
        if not conn or conn.active:
            return
        conn.timer = None
        unsent = _unsent(transport)
        if not transport.get_write_buffer_size():
            transport.close()                 # what is left is the kernel's to deliver (or give up on)
        elif 0 <= conn.unsent <= unsent:      # none of it taken since the last deadline: a reader that stalls
            self.stalled += 1
            transport.abort()
        else:                                 # a slow reader that is still reading: another period
            conn.unsent = unsent
            self._arm(transport, conn)


def _down(counts: dict[Hashable, int], key: Hashable) -> None:
    left = counts.get(key, 1) - 1
    if left > 0:
        counts[key] = left
    else:
        counts.pop(key, None)


def _kind(owner: Hashable) -> Hashable:
    return owner[0] if isinstance(owner, tuple) and owner else None


def far_owner(host: str) -> tuple[str, str]:
    """Whom a connection from beyond loopback counts against: its IPv4 address, or its IPv6 address's /64
    (an IPv4-mapped one as IPv4)."""
    ip = ipaddress.ip_address(normal(host))          # no scope; an IPv4-mapped one as IPv4
    if isinstance(ip, ipaddress.IPv6Address):
        return FAR, str(ipaddress.IPv6Network((ip, 64), strict=False))
    return FAR, str(ip)


def _unsent(transport: Any) -> int:
    """Bytes of a connection's answers not yet taken by its reader: asyncio's buffer and the kernel's send
    queue (which grows to megabytes, so progress shows there first)."""
    queued = 0
    sock = transport.get_extra_info("socket")
    if sock is not None:
        try:
            queued = struct.unpack("i", fcntl.ioctl(sock.fileno(), termios.TIOCOUTQ, b"\0\0\0\0"))[0]
        except OSError:
            pass
    return transport.get_write_buffer_size() + queued


class _Door(asyncio.Protocol):
    """aiohttp's protocol for one connection, behind the gate: created only once the gate admits it (and
    its TLS handshake, if any, is done)."""

    def __init__(self, gate: Gate, inner: Callable[[], asyncio.Protocol], tls: ssl.SSLContext | None = None):
        self.gate = gate
        self.make_inner = inner
        self.tls = tls
        self.inner: Any = None
        self.transport: Any = None
        self.handshake: asyncio.Task | None = None
        self.early = b""                      # what came over TLS before start_tls returned (for aiohttp)
        self.stopped = False                  # cut: what it sends is no longer read

    def connection_made(self, transport: Any) -> None:
        self.transport = transport
        refused = self.gate.admit(transport)
        if refused:
            if self.tls is None:
                transport.write(refused)      # beyond loopback it could only go in clear: just closed
            transport.close()
            return
        if self.tls is None:
            self._serve(transport)
            return
        transport.pause_reading()             # the ClientHello waits in the kernel for the TLS layer
        self.handshake = asyncio.ensure_future(self._start_tls(transport))

    async def _start_tls(self, raw: Any) -> None:
        try:
            transport = await asyncio.get_running_loop().start_tls(
                raw, self, self.tls, server_side=True, ssl_handshake_timeout=HANDSHAKE)
        except (OSError, ssl.SSLError, asyncio.TimeoutError, ConnectionError, RuntimeError):
            raw.abort()
            self.gate.gone(raw)
            return
        if transport is None:                 # lost as the handshake ended
            self.gate.gone(raw)
            return
        self.gate.rekey(raw, transport)
        self.transport = transport
        self._serve(transport)
        early, self.early = self.early, b""
        if early:
            self.data_received(early)

    def _serve(self, transport: Any) -> None:
        self.inner = self.make_inner()
        self.inner.connection_made(transport)

    def connection_lost(self, exc: BaseException | None) -> None:
        if self.inner is not None:
            self.gate.gone(self.transport)
            self.inner.connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if self.stopped:
            return
        if self.inner is None:
            if self.handshake is not None:    # decrypted before start_tls has returned: kept for aiohttp
                self.early += data
                if len(self.early) > CHUNK * PIPELINE:
                    self.transport.abort()
            return
        for at in range(0, len(data), CHUNK):
            if self.stopped or self.transport.is_closing():
                return
            self.inner.data_received(data if len(data) <= CHUNK else data[at:at + CHUNK])
            # aiohttp's queue of parsed requests not yet answered (RequestHandler._messages, aiohttp 3.x;
            # tests/test_web_gate.py fails if it goes): past PIPELINE the connection is cut
            queued = getattr(self.inner, "_messages", ())
            if len(queued) > PIPELINE:
                self._cut(queued)
                return

    def _cut(self, queued: Any) -> None:
        """Stop reading, drop the queue and close the connection once the request in progress (if any) has
        left the guard. Not at once: aiohttp would start the next request on a connection already gone (an
        assertion in its handler), or find its queue empty after being woken for it. So the queue keeps one
        request where aiohttp has been woken for it (it answers that one), none otherwise."""
        self.stopped = True
        self.transport.pause_reading()
        waiter = getattr(self.inner, "_waiter", None)
        keep = 1 if waiter is not None and waiter.done() else 0
        while len(queued) > keep:
            queued.pop()
        self.gate.cut_off(self.transport, now=not keep)

    def eof_received(self) -> bool | None:
        return self.inner.eof_received() if self.inner is not None else None

    def pause_writing(self) -> None:
        if self.inner is not None:
            self.inner.pause_writing()

    def resume_writing(self) -> None:
        if self.inner is not None:
            self.inner.resume_writing()
